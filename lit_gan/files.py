"""Files that readers (the study runner, a resumed run, another process) never see half-written."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; moved over ``path`` when the block ends.

    The move is atomic (same folder, ``os.replace``), so ``path`` is always the old file or the new one;
    if the block fails, ``path`` is untouched and the temporary file removed.
    """
    # A name of its own per write: processes writing the same file (a study's parallel runs on one folder,
    # nodes sharing $HOME) must not write into, or move away, each other's temporary file. Random, not
    # mkstemp: mkstemp's file is mode 0600, which os.replace would give the result, hiding it from the group.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`replacing`."""
    with replacing(path) as temporary:
        temporary.write_text(text, newline="")
