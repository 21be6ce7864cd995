"""Where a run writes its files, and images sent to whichever loggers are attached."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger

C = TypeVar("C")


def run_directory(trainer: pl.Trainer) -> Path:
    """``<save_dir>/<name>/<version>`` of the first logger (W&B: ``outputs/<project>/<run id>``).

    Checkpoints, sample plots and evaluation results of one run live here,
    next to each other and apart from every other run.
    """
    logger = trainer.logger
    if logger is None:
        return Path(trainer.default_root_dir)
    root = logger.save_dir or trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(root) / str(logger.name) / version


def find_callback(trainer: pl.Trainer, kind: type[C]) -> C | None:
    """The trainer's first callback of type ``kind`` (callbacks read each other's results through this)."""
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


def log_row(loggers, row: dict, step: int) -> None:
    """Log ``row`` (which holds ``generator_step``) to every logger at x = ``step`` generator iterations.

    W&B gets no ``step``: Lightning would add it as a ``trainer/global_step`` column, which would hold generator
    iterations under the name of Lightning's global step (``(n_critic + 1)`` times larger); its charts take
    ``generator_step`` from the row (LoggedConfig).
    """
    for logger in loggers:
        logger.log_metrics(row, step=None if isinstance(logger, WandbLogger) else step)


def log_images(trainer: pl.Trainer, paths: dict[str, Path], row: dict[str, float], step: int) -> None:
    """Log ``row`` to every logger; W&B also gets the images at ``paths`` (by key) in the same history row."""
    for logger in trainer.loggers:
        logged = row
        if isinstance(logger, WandbLogger) and paths:
            import wandb

            logged = {**row, **{key: wandb.Image(str(path)) for key, path in paths.items()}}
        log_row([logger], logged, step)
