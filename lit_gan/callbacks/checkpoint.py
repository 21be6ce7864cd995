"""Checkpoints on the generator-iteration clock, written atomically."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Literal, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_gan.callbacks.evaluation import Evaluation, evaluation_goals, take_rank_zero_buffers
from lit_gan.callbacks.output import find_callback, run_directory
from lit_gan.errors import require
from lit_gan.files import replacing


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the message says why and that the previous one is kept.
    ``elsewhere``: another DDP rank failed to write it (that rank's error tells the user)."""

    def __init__(self, message: str, elsewhere: bool = False):
        super().__init__(message)
        self.elsewhere = elsewhere


def all_finite(module: pl.LightningModule) -> bool:
    """Whether every parameter and buffer is finite (one host sync)."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


def ready_to_save(trainer: pl.Trainer, module: pl.LightningModule) -> bool:
    """Every rank takes rank 0's buffers (what the checkpoint keeps) and the moving average of G its own
    batch-norm statistics (unless an evaluation at this iteration just gave them: between evaluations it carries
    G's, which a user sampling from the checkpoint's average would get), then whether the parameters and buffers
    are finite on every rank: a save is collective, so the ranks save, or skip saving, together."""
    take_rank_zero_buffers(trainer, module)
    evaluation = find_callback(trainer, Evaluation)
    if (getattr(module, "generator_ema", None) is not None and evaluation is not None
            and evaluation.latest.get("generator_step") != module.generator_step):
        evaluation.give_ema_its_statistics(trainer, module)
    finite = all_finite(module)
    return trainer.strategy.reduce_boolean_decision(finite, all=True) if trainer.world_size > 1 else finite


NUMBERED = re.compile(r"generator_step=(\d+)\.ckpt")


def prune_numbered(directory: Path, step: int, keep: int) -> None:
    """Delete the oldest numbered checkpoints in ``directory`` beyond ``keep``, among those up to generator
    iteration ``step``: a run resumed from an earlier checkpoint leaves the later ones of the trajectory it
    abandoned alone (until it overwrites them). Ordered by number, not name: past 10^7 iterations the names
    outgrow their seven digits."""
    numbered = sorted((int(match[1]), path) for path in directory.iterdir()
                      if (match := NUMBERED.fullmatch(path.name)) and int(match[1]) <= step)
    for _, old in numbered[:-keep]:
        old.unlink()


class GeneratorCheckpoint(Callback):
    """Saves ``<run>/checkpoints/generator_step=0003000.ckpt`` (the generator iteration, seven digits or more)
    every ``every_n_generator_steps`` generator iterations, and ``last.ckpt``; ``dirpath`` puts them elsewhere.

    Each file is written under a temporary name and renamed into place, so a
    crash mid-write never leaves a truncated file under a final name. Only the
    newest ``keep`` numbered checkpoints are kept (``last.ckpt`` always is).
    A model with non-finite parameters is never saved, so after a divergence
    ``last.ckpt`` still holds the last good state.
    With ``monitor`` (an evaluation score such as ``eval/fid``), ``best.ckpt``
    holds the generator with the best score so far; ``mode`` (min or max) defaults to the score's own
    goal, and a name the evaluation does not log or a mode against its goal is refused before training.
    """

    def __init__(self, every_n_generator_steps: int = 1000, keep: int = 2, dirpath: str | None = None,
                 monitor: str | None = None, mode: Optional[Literal["min", "max"]] = None):
        require(every_n_generator_steps >= 1, "checkpoint.every_n_generator_steps", every_n_generator_steps,
                "an integer >= 1")
        require(keep >= 0, "checkpoint.keep", keep, "an integer >= 0")
        self.every_n_generator_steps = every_n_generator_steps
        self.keep = keep
        self.dirpath = dirpath
        self.monitor, self.requested_mode = monitor, mode
        self.mode = mode or "min"  # settled in setup(), from the score's goal
        self.best_score: float | None = None
        self.last_saved_step: int | None = None
        self.interrupted = False
        self.terminated = False  # SIGTERM, taken at the iteration's end too
        self.stopping_cleanly = False  # a Ctrl-C taken at an iteration's end, whose state resumes exactly
        self.says = True
        self.previous_sigint = None

    def directory(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else run_directory(trainer) / "checkpoints"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.check_monitor(trainer.datamodule, pl_module)

    def check_monitor(self, datamodule, pl_module: pl.LightningModule) -> None:
        """Refuse a ``monitor`` that would silently never write ``best.ckpt`` (a typo, a score not logged)."""
        goals = evaluation_goals(datamodule, pl_module) if self.monitor is not None else None
        if goals is None:  # no monitor, or a datamodule of one's own whose scores are unknown
            return
        require(self.monitor in goals, "checkpoint.monitor", self.monitor,
                f"a score the evaluation logs for {type(datamodule).__name__}: {', '.join(sorted(goals))}")
        goal = "min" if goals[self.monitor] == "minimize" else "max"
        require(self.requested_mode in (None, goal), "checkpoint.mode", self.requested_mode,
                f"'{goal}' ({self.monitor} is a score to {goals[self.monitor]}), or leave it out")
        self.mode = goal

    def on_train_start(self, trainer, pl_module) -> None:
        self.interrupted = self.terminated = self.stopping_cleanly = False  # (one callback may serve a second fit)
        # Ctrl-C lands anywhere in an iteration (between D's step and the clock, inside Adam's update, in a
        # seed group while member 0 writes this run's weights), where a saved state would not resume exactly:
        # take it at the end of the iteration, as SIGTERM below. A second Ctrl-C stops at once.
        self.says = trainer.is_global_zero  # a terminal's Ctrl-C reaches every DDP rank: one line, not one each
        if threading.current_thread() is threading.main_thread():
            self.previous_sigint = signal.signal(signal.SIGINT, self._interrupt)
            # SIGTERM too (a cluster's preemption or time limit, `kill`): Lightning's handler broadcasts from
            # inside the signal, wherever each rank is, and 2 DDP ranks hung (always with SIGTERM to both, as
            # SLURM sends it; at times to rank 0 alone). Recorded here; the ranks agree at the iteration's end.
            signal.signal(signal.SIGTERM, self._terminate)

    def _interrupt(self, signum, frame) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        if self.says:
            print("\nCtrl-C: stopping after this generator iteration, with a checkpoint (Ctrl-C again stops at once)",
                  file=sys.stderr, flush=True)

    def _terminate(self, signum, frame) -> None:
        self.terminated = True

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self.previous_sigint)  # training is over: Ctrl-C as usual again
            self.previous_sigint = None
        self.give_back_sigterm()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.save_on_exception(trainer, pl_module, exception)
        self.give_back_sigterm()  # (Lightning calls no teardown of callbacks after an exception)

    def give_back_sigterm(self) -> None:
        # Lightning's teardown, before a callback's, puts back the handler from before the fit: ours is taken
        # out only where nothing replaced it since.
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) == self._terminate):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    # best.ckpt first: a checkpoint written at this iteration then holds the best score that includes this
    # iteration's evaluation, which a run resumed from it does not repeat.
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.save_if_best(trainer, pl_module)
        step = pl_module.generator_step
        if step > 0 and step % self.every_n_generator_steps == 0 and step != self.last_saved_step:
            self.save(trainer, pl_module, numbered=True)
        interrupted, terminated = self.interrupted, self.terminated
        if trainer.world_size > 1:  # signals reach ranks in different iterations: all stop at the same one
            flags = torch.tensor([interrupted, terminated], dtype=torch.int32, device=trainer.strategy.root_device)
            interrupted, terminated = (bool(flag) for flag in trainer.strategy.reduce(flags, reduce_op="sum"))
        if terminated:
            self.terminated = False
            raise SIGTERMException  # as Lightning raises it: on_exception below saves last.ckpt, the run stops
        if interrupted:
            self.interrupted = False
            self.stopping_cleanly = True
            raise KeyboardInterrupt  # Lightning's own handling: on_exception below saves last.ckpt, the run stops

    def on_train_end(self, trainer, pl_module) -> None:
        self.save_if_best(trainer, pl_module)
        if pl_module.generator_step != self.last_saved_step:
            self.save(trainer, pl_module, numbered=False)

    def save_on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Ctrl-C (SIGINT) or SIGTERM: keep the work done so far in ``last.ckpt``, ready to resume."""
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        step = pl_module.generator_step
        if step == 0 and self.last_saved_step is None:  # stopped during start-up: nothing trained to keep
            return
        last = self.directory(trainer) / "last.ckpt"
        if isinstance(exception, KeyboardInterrupt) and not self.stopping_cleanly:
            # A second Ctrl-C (or one outside the main thread, which has no handler of ours) stops mid-iteration,
            # say between D's Adam step and the clock: that state would not resume exactly (D would train on
            # its batch twice), so last.ckpt keeps the last whole iteration's. No save: the other DDP ranks,
            # still training, would not join it.
            if trainer.is_global_zero:
                kept = f"resume from {last}, the last checkpoint saved" if last.exists() else "no checkpoint was saved"
                print(f"\nStopped at once, inside generator iteration {step + 1}: nothing saved; {kept}",
                      file=sys.stderr, flush=True)
            return
        if step != self.last_saved_step:
            self.save(trainer, pl_module, numbered=False)
        if trainer.is_global_zero and last.exists():
            print(f"\nInterrupted ({type(exception).__name__}) at generator iteration {step}. Saved {last}; resume "
                  f"with the same command plus --ckpt_path {last}", file=sys.stderr, flush=True)

    def save_if_best(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After an evaluation at this very iteration, keep ``best.ckpt`` if the monitored score improved."""
        if self.monitor is None:
            return
        evaluation = find_callback(trainer, Evaluation)
        latest = evaluation.latest if evaluation is not None else {}
        if latest.get("generator_step") != pl_module.generator_step or self.monitor not in latest:
            return
        score = latest[self.monitor]
        better = self.best_score is None or (score < self.best_score if self.mode == "min" else score > self.best_score)
        if better and math.isfinite(score) and ready_to_save(trainer, pl_module):
            self.best_score = score
            self._atomic_save(trainer, self.directory(trainer) / "best.ckpt")

    def state_dict(self) -> dict:
        return {"best_score": self.best_score}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_score = state_dict.get("best_score")

    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule, numbered: bool) -> None:
        directory = self.directory(trainer)
        step = pl_module.generator_step
        self.last_saved_step = step
        if not ready_to_save(trainer, pl_module):
            last = directory / "last.ckpt"
            kept = f"{last} keeps the last good state" if last.exists() else "no earlier checkpoint exists"
            rank_zero_warn(f"Checkpoint at generator iteration {step} not written: the model has non-finite "
                           f"parameters or buffers; {kept}")
            return
        copy = directory / f"generator_step={step:07d}.ckpt" if numbered and self.keep else None
        self._atomic_save(trainer, directory / "last.ckpt", copy=copy,
                          prune=lambda: prune_numbered(directory, step, self.keep))

    @staticmethod
    def _atomic_save(trainer: pl.Trainer, path: Path, copy: Path | None = None, prune=None) -> None:
        """Write the checkpoint to ``path`` (rank 0 also copies it to ``copy``, then calls ``prune``); when a
        write fails (an ``OSError``) every rank raises :class:`CheckpointWriteError` together. (Any other error
        on rank 0 is an error of rank 0 alone: ``lit_gan.cli.stop_local_ranks`` ends the others.)

        The file is written on rank 0 alone: a failure there (disk full, read-only folder) must reach the other
        ranks, which would otherwise wait for rank 0 in their next collective until the process group's timeout
        (30 minutes under NCCL). So the pieces of ``Trainer.save_checkpoint`` are called here without its
        barrier, whose rank 0 a raising write skips, and the ranks agree on the outcome instead.
        """
        temporary = path.with_name(f".{path.name}.tmp")
        failure: OSError | None = None
        target = path  # the file being written when a write fails
        try:
            # Every rank dumps (a module's hook gathers every rank's random state); the strategy writes on rank 0.
            # Not weights only: optimizers and callbacks resume too.
            checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            trainer.strategy.save_checkpoint(checkpoint, temporary)
            if trainer.is_global_zero:
                if not temporary.is_file():  # Lightning's file system layer swallows a PermissionError
                    raise OSError("nothing was written")
                os.replace(temporary, path)
                if copy is not None:
                    target = copy
                    with replacing(copy) as copy_temporary:
                        shutil.copyfile(path, copy_temporary)
                    try:
                        prune()
                    except OSError as error:  # this one is written: an old one left behind is no reason to stop
                        rank_zero_warn(f"Old numbered checkpoints in {copy.parent} not deleted "
                                       f"({error.strerror or error})")
        except OSError as error:  # disk full, read-only or missing folder: say so, keep the previous file
            failure = error
            if trainer.is_global_zero and temporary.is_file():
                temporary.unlink()
        written = failure is None
        if trainer.world_size > 1:  # also the barrier after the write: the file is in place when any rank reads it
            written = trainer.strategy.reduce_boolean_decision(written, all=True)
        if written:
            return
        if failure is None:
            raise CheckpointWriteError(f"cannot write checkpoint {path} on another process", elsewhere=True)
        if target == copy:
            kept = f"{path.name} holds this generator iteration"
        else:
            kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written before"
        raise CheckpointWriteError(
            f"cannot write checkpoint {target} ({failure.strerror or failure}); {kept}. Free space, check that the "
            "folder is writable, or choose another with --checkpoint.dirpath") from failure

