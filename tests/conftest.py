"""Shared test set-up: W&B offline and silent, writing under a temporary folder."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _shared_cache(tmp_path_factory):
    """One cache (real statistics, folder scans) per test session, never the user's own."""
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
    random.seed(0)  # W&B's sweep engine draws from Python's and NumPy's global generators
    np.random.seed(0)
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


def start_training(tmp_path: Path, *args: str) -> subprocess.Popen:
    """``train.py ARGS`` in a child process, returned once its first evaluation is written (a few hundred
    iterations in). SIGINT keeps its default disposition, as in a terminal: a shell that starts jobs in the
    background (as CI may) makes them ignore it, and the child would inherit that."""
    command = [sys.executable, "train.py", *args, "--generator_steps=100000", "--trainer.enable_progress_bar=false",
               f"--trainer.logger.init_args.save_dir={tmp_path}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("lit-gan/*/evaluation.json")):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"train.py ended or stalled before its first evaluation:\n{process.communicate()[1][-3000:]}")
        time.sleep(0.5)
    time.sleep(2)  # some hundreds of iterations in, of 100,000: it cannot finish first
    return process
