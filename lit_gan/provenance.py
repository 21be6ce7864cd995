"""Which code produced a number: the commit of the lit-gan checkout that ran it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    """The checked-out commit, with ``+ uncommitted changes`` when code differs from it (docs/ aside: the
    benchmarks and studies write there); ``unknown`` outside a git checkout (an installed package)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", ":(exclude)docs"], cwd=ROOT,
                                 capture_output=True).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes" if changed else "")
