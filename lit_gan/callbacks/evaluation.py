"""Scores the generator on a fixed noise batch every N generator iterations."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from lit_gan.callbacks.output import log_images, run_directory
from lit_gan.callbacks.samples import image_grid, scatter_over_modes
from lit_gan.errors import ConfigError, require
from lit_gan.files import write_atomically
from lit_gan.metrics.float32 import ieee_float32
from lit_gan.stabilizers import recompute_batch_norm


def score_prefixes(pl_module) -> dict[str, bool]:
    """Where G's scores go (``eval/``), and its moving average's (``eval_ema/``) when the module keeps one."""
    return {"eval": False, **({"eval_ema": True} if getattr(pl_module, "generator_ema", None) is not None else {})}


def evaluation_goals(datamodule, pl_module) -> dict[str, str] | None:
    """Every score the Evaluation logs for this data and module (``eval/fid``, ...) with its goal (minimize or
    maximize); ``None`` for a datamodule that does not declare ``metric_goals``."""
    goals = getattr(datamodule, "metric_goals", None)
    if goals is None:
        return None
    return {f"{prefix}/{key}": goal for prefix in score_prefixes(pl_module) for key, goal in goals.items()}


def rank_share(noise: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """The DDP rank's consecutive slice of the fixed noise: the metric gathers the slices in rank order, so it
    scores the samples in the single-process order (KID's subsets and IS's splits depend on the order)."""
    return torch.tensor_split(noise, world_size)[rank]


def take_rank_zero_buffers(trainer: pl.Trainer, module: torch.nn.Module) -> None:
    """Give every DDP rank rank 0's buffers (batch-norm running statistics), the ones a checkpoint keeps.

    DDP broadcasts rank 0's buffers before each forward pass, but not under Lightning's manual optimisation
    (its forward redirection turns gradient sync off after the inner forward, and DDP then skips the next
    broadcast): each rank's statistics follow its own batches. Scored as they were, each rank's share of the
    fixed noise met other statistics than the saved model's (2 CPU ranks, ring, batch-norm G, 20 iterations:
    reverse KL 0.1818 logged, 0.1722 for the checkpoint). Called before every evaluation and checkpoint.
    """
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer, src=0)


class Evaluation(Callback):
    """Before training, every ``every_n_generator_steps`` generator iterations and at the end:
    generate ``num_samples`` samples from a fixed noise batch, score them with
    the datamodule's ``evaluation_metric()``, log the scores under ``eval/``,
    plot the samples, and append the scores to ``evaluation.json`` in the run
    directory. A module with a moving average of G (``ema_decay``) has it
    scored the same way under ``eval_ema/`` and plotted as ``<step>_ema.png``.

    The noise is drawn once from ``seed``, so successive evaluations (and
    different runs) score the same z and differences come from G alone.
    ``at_start: false`` leaves out the untrained generator's evaluation (the baseline of every curve; a
    10,000-sample FID on a CPU takes most of an hour).
    """

    def __init__(self, every_n_generator_steps: int = 500, num_samples: int = 2500, seed: int = 1234,
                 plot: bool = True, at_start: bool = True):
        require(every_n_generator_steps >= 1, "evaluation.every_n_generator_steps", every_n_generator_steps,
                "an integer >= 1")
        require(num_samples >= 1, "evaluation.num_samples", num_samples, "an integer >= 1")
        self.every_n_generator_steps = every_n_generator_steps
        self.num_samples = num_samples
        self.seed = seed
        self.plot = plot
        self.at_start = at_start
        self.history: list[dict[str, float]] = []

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))

    @property
    def latest(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Runs before a checkpoint's state is restored (which brings back ``history``)."""
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "evaluation_metric"):
            raise ConfigError(
                f"data={type(datamodule).__name__} has no evaluation_metric(): the Evaluation callback "
                "needs a lit-gan datamodule (e.g. lit_gan.data.RingGaussians)"
            )
        self.metric = datamodule.evaluation_metric()  # moved to the module's device when training starts
        if hasattr(self.metric, "check_sample_count"):  # before training, not at the first evaluation
            self.metric.check_sample_count(self.num_samples)
        if hasattr(self.metric, "fetch_weights"):
            self.metric.fetch_weights()
        self.centers = getattr(datamodule, "centers", None)
        generator = torch.Generator().manual_seed(self.seed)
        self.noise = torch.randn(self.num_samples, pl_module.generator.latent_dim, generator=generator)
        self.statistics_noise = torch.randn(self.num_samples, pl_module.generator.latent_dim, generator=generator)
        self.history = []

    def on_train_start(self, trainer, pl_module) -> None:
        # Here, not in setup(): Lightning moves the module to its GPU after the setup hooks, and a metric left
        # on the CPU fed CUDA samples (the digit classifier's convolutions) fails at the first evaluation.
        self.metric.to(pl_module.device)
        if pl_module.generator_step == 0:
            if self.at_start:
                self.evaluate(trainer, pl_module)  # the untrained generator: the baseline of every curve
        elif trainer.is_global_zero:
            # Resumed from an earlier checkpoint: the file may hold the abandoned trajectory's later evaluations,
            # which a run diverging before its next evaluation would have left for the study to read.
            self._write_history(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = pl_module.generator_step
        if step % self.every_n_generator_steps == 0 and step != self.latest.get("generator_step"):
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if getattr(pl_module, "diverged", None):
            return  # stopped by the stability monitor: the generator is not finite any more
        if pl_module.generator_step != self.latest.get("generator_step"):
            self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Score G (and its moving average, ``eval_ema/``, when the module keeps one) on the fixed noise."""
        step = pl_module.generator_step
        take_rank_zero_buffers(trainer, pl_module)
        row: dict[str, float] = {}
        images: dict[str, torch.Tensor] = {}  # by score prefix
        for prefix, ema in score_prefixes(pl_module).items():
            if ema:
                self.give_ema_its_statistics(trainer, pl_module)
            samples = pl_module.generate(rank_share(self.noise, trainer.global_rank, trainer.world_size), ema=ema)
            finite = bool(torch.isfinite(samples).all())
            if trainer.world_size > 1:  # every rank scores, or none does: the metric's sync is collective
                finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
            if not finite:
                rank_zero_warn(f"Evaluation at generator iteration {step}: the generator's samples are not "
                               f"finite, so {prefix}/ is not scored")
                continue
            self.metric.reset()
            with ieee_float32():  # the extractors' features as on a CPU (Inception, the digit classifier)
                self.metric.update(samples)
                row.update({f"{prefix}/{k}": float(v) for k, v in self.metric.compute().items()})
            if trainer.is_global_zero and trainer.world_size > 1 and samples.dim() == 2:
                samples = pl_module.generate(self.noise, ema=ema)  # the scatter plot shows all; an image grid, rank 0's first 64
            images[prefix] = samples
        row["generator_step"] = step
        self.history.append(row)
        if trainer.is_global_zero:
            self._write(trainer, pl_module, images, row)
        return row

    def give_ema_its_statistics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The moving average's own batch-norm statistics, from fixed noise in batches of the training size (it
        carries G's copies between evaluations); before each evaluation and each checkpoint."""
        batch_size = getattr(trainer.datamodule, "batch_size", 64)
        recompute_batch_norm(pl_module.generator_ema, self.statistics_noise.to(pl_module.device), batch_size)

    def _write_history(self, trainer) -> Path:
        directory = run_directory(trainer)
        directory.mkdir(parents=True, exist_ok=True)
        write_atomically(directory / "evaluation.json", json.dumps(self.history, indent=1))  # read by the study runner
        return directory

    def _write(self, trainer, pl_module, images: dict[str, torch.Tensor], row: dict[str, float]) -> None:
        directory = self._write_history(trainer)
        step = row["generator_step"]
        paths = {}
        for prefix, samples in images.items() if self.plot else ():
            suffix = "_ema" if prefix == "eval_ema" else ""  # W&B key samples[_ema], file <step>[_ema].png
            path = directory / "samples" / f"{step:07d}{suffix}.png"
            if samples.dim() == 2 and samples.shape[1] == 2:
                label = "moving average of G" if suffix else type(pl_module).__name__
                title = f"{label}, generator iteration {step}\n" + ", ".join(
                    f"{k.removeprefix(prefix + '/')} {v:.3g}" for k, v in row.items() if k.startswith(prefix + "/"))
                paths[f"samples{suffix}"] = scatter_over_modes(samples, self.centers, path, title)
            elif samples.dim() == 4:
                paths[f"samples{suffix}"] = image_grid(samples, path)
        log_images(trainer, paths, row, step)
