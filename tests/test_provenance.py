"""The commit a number was measured at: a checkout's own, or unknown."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def provenance_in(package_parent: Path):
    """lit_gan/provenance.py copied to ``package_parent/lit_gan/``, imported from there."""
    (package_parent / "lit_gan").mkdir(parents=True)
    shutil.copy(ROOT / "lit_gan" / "provenance.py", package_parent / "lit_gan" / "provenance.py")
    spec = importlib.util.spec_from_file_location("copied_provenance", package_parent / "lit_gan" / "provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_a_checkout_names_its_commit_and_new_files_mark_it_changed(tmp_path):
    module = provenance_in(tmp_path)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "first")
    head = git(tmp_path, "rev-parse", "--short", "HEAD")
    assert module.commit() == head
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "RESULTS.md").write_text("written by a study")
    assert module.commit() == head  # docs/ is where results are written
    (tmp_path / "lit_gan" / "new_objective.py").write_text("")
    new_file = module.commit()  # a new module changes the code (was unnoticed)
    assert new_file.startswith(f"{head} + uncommitted changes ")
    (tmp_path / "lit_gan" / "new_objective.py").write_text("class KLGAN: ...")
    edited = module.commit()
    (tmp_path / "lit_gan" / "new_objective.py").unlink()
    (tmp_path / "lit_gan" / "provenance.py").write_text((tmp_path / "lit_gan" / "provenance.py").read_text() + "#")
    tracked_edit = module.commit()
    # One set of changes from another (a study kept rows of other uncommitted code as its own).
    assert len({new_file, edited, tracked_edit}) == 3 and all(c.startswith(head) for c in (edited, tracked_edit))
    assert module.commit() == tracked_edit  # the same changes, the same label
    (tmp_path / "venv").symlink_to(tmp_path / "lit_gan", target_is_directory=True)  # an untracked link to a folder
    assert module.commit().startswith(f"{head} + uncommitted changes ")  # was unknown: read as a file, it failed
    (tmp_path / "résumé.txt").write_text("notes")  # git quotes such a name unless -z
    nested = tmp_path / "vendored"
    nested.mkdir()
    git(nested, "init", "-q")  # a repository inside: listed as "vendored/"
    (nested / "x.py").write_text("")
    assert module.commit().startswith(f"{head} + uncommitted changes ")


def test_an_installed_copy_inside_another_repository_is_unknown(tmp_path, monkeypatch):
    # A virtual environment inside a project's checkout: git answered with the project's commit.
    git(tmp_path, "init", "-q")
    (tmp_path / "README").write_text("someone else's project")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "theirs")
    module = provenance_in(tmp_path / ".venv" / "site-packages")
    assert module.commit() == "unknown"
    monkeypatch.setenv("LIT_GAN_COMMIT", "abc1234")  # a copy without .git (a GPU machine) told its commit
    assert module.commit() == "abc1234"
