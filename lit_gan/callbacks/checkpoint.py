"""Checkpoints on the generator-iteration clock, written atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from lit_gan.callbacks.output import run_directory
from lit_gan.errors import require


class GeneratorCheckpoint(Callback):
    """Saves ``<run>/checkpoints/generator_step=N.ckpt`` every N generator iterations and ``last.ckpt``.

    Each file is written under a temporary name and renamed into place, so a
    crash mid-write never leaves a truncated file under a final name. Only the
    newest ``keep`` numbered checkpoints are kept (``last.ckpt`` always is).
    """

    def __init__(self, every_n_generator_steps: int = 1000, keep: int = 2, dirpath: str | None = None):
        require(every_n_generator_steps >= 1, "checkpoint.every_n_generator_steps", every_n_generator_steps,
                "an integer >= 1")
        require(keep >= 0, "checkpoint.keep", keep, "an integer >= 0")
        self.every_n_generator_steps = every_n_generator_steps
        self.keep = keep
        self.dirpath = dirpath
        self.last_saved_step: int | None = None

    def directory(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else run_directory(trainer) / "checkpoints"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = pl_module.generator_step
        if step > 0 and step % self.every_n_generator_steps == 0 and step != self.last_saved_step:
            self.save(trainer, pl_module, numbered=True)

    def on_train_end(self, trainer, pl_module) -> None:
        if pl_module.generator_step != self.last_saved_step:
            self.save(trainer, pl_module, numbered=False)

    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule, numbered: bool) -> None:
        directory = self.directory(trainer)
        step = pl_module.generator_step
        self.last_saved_step = step
        self._atomic_save(trainer, directory / "last.ckpt")
        if numbered and self.keep and trainer.is_global_zero:
            numbered_path = directory / f"generator_step={step:07d}.ckpt"
            temporary = numbered_path.with_name(f".{numbered_path.name}.tmp")
            shutil.copyfile(directory / "last.ckpt", temporary)
            os.replace(temporary, numbered_path)
            for old in sorted(directory.glob("generator_step=*.ckpt"))[: -self.keep]:
                old.unlink()

    @staticmethod
    def _atomic_save(trainer: pl.Trainer, path: Path) -> None:
        temporary = path.with_name(f".{path.name}.tmp")
        trainer.save_checkpoint(temporary)  # every rank calls it; the strategy writes on rank 0
        if trainer.is_global_zero:
            os.replace(temporary, path)
        trainer.strategy.barrier("lit_gan_checkpoint")
