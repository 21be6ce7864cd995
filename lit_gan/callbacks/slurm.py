"""SLURM auto-requeue that is safe under DDP."""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

SLURM_JOB_KEY = "slurm_job_id"  # in every checkpoint saved inside a SLURM job: a requeue resumes only its own


class DeferredSlurmRequeue(Callback):
    """Runs Lightning's own SLURM auto-requeue handler at a batch boundary instead of inside the signal.

    Lightning saves ``hpc_ckpt_N.ckpt`` and calls ``scontrol requeue`` from
    within the SIGUSR1 handler. Under DDP the signal reaches each rank at a
    different point: a rank that is waiting in a gradient all-reduce cannot run
    Python handlers, while the rank that did run it waits in the checkpoint's
    barrier, and the job hangs until it is killed (seen with 2 CPU ranks).
    This callback keeps Lightning's handler but only records the signal; after
    every training batch the ranks agree (one boolean all-reduce) whether any of
    them got it, and then all call Lightning's handler at the same point. A signal
    after the last batch (final evaluation, checkpoint) is not acted on: the run is finishing.
    Without SLURM auto-requeue it does nothing.
    """

    def __init__(self):
        self.lightning_handler = None
        self.requested = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        handler = signal.getsignal(signal.SIGUSR1)
        if not callable(handler) or handler is self.record:
            return  # no auto-requeue handler installed (not on SLURM, or auto_requeue=False)
        self.lightning_handler, self.requested = handler, False
        signal.signal(signal.SIGUSR1, self.record)

    def record(self, signum, frame) -> None:
        self.requested = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.lightning_handler is None:
            return
        requested = self.requested
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            self.requested = False
            # Saves the hpc checkpoint and rank 0 requeues; SLURM then ends this attempt, as without DDP.
            self.lightning_handler(signal.SIGUSR1, None)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if "SLURM_JOB_ID" in os.environ:
            checkpoint[SLURM_JOB_KEY] = os.environ["SLURM_JOB_ID"]

    def teardown(self, trainer, pl_module, stage: str) -> None:
        # Kept through every callback's on_train_end: a signal during the final evaluation and checkpoint is
        # recorded and not acted on (the run is finishing; acting inside them is the hang this class prevents).
        self.give_back()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.give_back()  # (Lightning calls no teardown of callbacks after an exception)

    def give_back(self) -> None:
        # Lightning's own teardown, before a callback's, puts back the handler from before the fit: give back
        # the one taken only where nothing did, never leaving a finished trainer's handler installed.
        if self.lightning_handler is not None and signal.getsignal(signal.SIGUSR1) is self.record:
            signal.signal(signal.SIGUSR1, self.lightning_handler)
        self.lightning_handler = None
