"""Which code produced a number: the commit of the lit-gan checkout that ran it."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    """The checked-out commit, with ``+ uncommitted changes DIGEST`` when files differ from it or are new
    (docs/ aside: the benchmarks and studies write there), the digest telling one set of changes from
    another; where lit-gan is not a checkout of its own (an installed package, even one inside another
    project's repository, or a copy without .git on a GPU machine), ``$LIT_GAN_COMMIT`` or ``unknown``."""

    def git(*args: str, text: bool = True):
        output = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=text, check=True).stdout
        return output.strip() if text else output

    outside_docs = ("--", ".", ":(exclude)docs")
    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != ROOT:
            return os.environ.get("LIT_GAN_COMMIT", "unknown")
        head = git("rev-parse", "--short", "HEAD")
        if not git("status", "--porcelain", *outside_docs):
            return head
        digest = hashlib.sha256(git("diff", "HEAD", "--binary", *outside_docs, text=False))
        # -z: names as they are (git quotes non-ASCII ones otherwise); a nested repository is listed as "name/"
        for name in sorted(filter(None, git("ls-files", "-z", "--others", "--exclude-standard", *outside_docs,
                                            text=False).decode().split("\0"))):
            path = ROOT / name  # a symbolic link (to a folder, say) is its target's name, as git stores it
            content = (os.readlink(path).encode() if path.is_symlink() else b"" if path.is_dir()
                       else path.read_bytes())
            digest.update(name.encode() + b"\0" + content)
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("LIT_GAN_COMMIT", "unknown")
    return f"{head} + uncommitted changes {digest.hexdigest()[:8]}"
