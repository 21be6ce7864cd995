"""Shared test set-up: W&B offline and silent, writing under a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _shared_cache(tmp_path_factory):
    """One cache (digit classifier, real statistics) per test session, never the user's own."""
    directory = tmp_path_factory.mktemp("lit_gan_cache")
    previous = os.environ.get("LIT_GAN_CACHE")
    os.environ["LIT_GAN_CACHE"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("LIT_GAN_CACHE", None)
    else:
        os.environ["LIT_GAN_CACHE"] = previous


@pytest.fixture(autouse=True)
def _seed_and_isolate(tmp_path, monkeypatch):
    """Every test starts from the same seed and writes into its own temporary folder."""
    torch.manual_seed(0)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    # An in-process W&B run exports its service's address; a training subprocess that inherits it
    # shares this process's service, where a killed run's id stays "in use" and its resume fails.
    os.environ.pop("WANDB_SERVICE", None)
    monkeypatch.chdir(ROOT)
    yield


def quiet_args(tmp_path: Path, *extra: str) -> list[str]:
    """Command-line flags that keep a test run small: no progress bar, outputs under ``tmp_path``."""
    return [
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.default_root_dir={tmp_path}",
        *extra,
    ]
