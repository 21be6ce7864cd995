"""Files that readers (the study runner, a resumed run, another process) never see half-written."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; moved over ``path`` when the block ends.

    The move is atomic (same folder, ``os.replace``), so ``path`` is always the old file or the new one;
    if the block fails, ``path`` is untouched and the temporary file removed.
    """
    temporary = path.with_name(f".{path.name}.tmp")
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
