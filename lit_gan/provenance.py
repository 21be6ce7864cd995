"""Which code produced a number: the commit of the lit-gan checkout that ran it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    """The checked-out commit, with ``+ uncommitted changes`` when files differ from it or are new (docs/
    aside: the benchmarks and studies write there); ``unknown`` where lit-gan is not a checkout of its own
    (an installed package, even one inside another project's repository)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != ROOT:
            return "unknown"
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--", ".", ":(exclude)docs")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes" if changed else "")
