"""A stability monitor: the numbers that show a GAN run going wrong, and alarms when it does."""

from __future__ import annotations

import functools
import json
import math
from typing import Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lit_gan.callbacks.checkpoint import GeneratorCheckpoint
from lit_gan.callbacks.evaluation import Evaluation
from lit_gan.callbacks.output import find_callback, log_row, run_directory
from lit_gan.errors import require
from lit_gan.files import write_atomically


class StabilityAlarm(UserWarning):
    """Warning category of the monitor's alarms (filter or catch it like any warning)."""


def mean_pairwise_distance(x: Tensor) -> Tensor:
    """Mean Euclidean distance between distinct samples of a batch."""
    return torch.pdist(x.flatten(1).float()).mean()


@torch.no_grad()
def spectral_norms(network: nn.Module) -> dict[str, Tensor]:
    """Largest singular value of every linear and conv layer's weight (reshaped to a matrix, as SNGAN does).

    The network is read in eval mode, so spectral-norm parametrisations do
    not run (and change) their power iteration.
    """
    was_training = network.training
    network.eval()
    try:
        return {
            name: torch.linalg.matrix_norm(module.weight.flatten(1).float(), ord=2)
            for name, module in network.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
        }
    finally:
        network.train(was_training)


@functools.lru_cache(maxsize=None)
def data_effective_modes(num_modes: int, num_samples: int, draws: int = 64) -> float:
    """exp(entropy) of the mode histogram of ``num_samples`` draws spread evenly over ``num_modes`` modes
    (mean of ``draws`` seeded histograms): what the data itself scores with that many samples. Few samples
    per mode make any histogram uneven: 2,000 samples of 1,000 equally likely modes give ~753, not 1,000."""
    modes = torch.randint(num_modes, (draws, num_samples), generator=torch.Generator().manual_seed(0))
    counts = torch.zeros(draws, num_modes, dtype=torch.float64).scatter_add_(1, modes, torch.ones_like(modes, dtype=torch.float64))
    p = counts / num_samples
    return float((-(p * p.clamp_min(1e-300).log()).sum(1)).exp().mean())


def coverage_reason(reverse_kl: float, num_modes: int, num_samples: int, collapse_coverage: float) -> Optional[str]:
    """Why the samples count as collapsed, or None: their mode histogram's exp(entropy) (= num_modes *
    exp(-reverse KL), the number of equally used modes with the same spread) below ``collapse_coverage`` of
    what the data's own samples score. Unlike the count of modes hit, it does not flag a run whose samples
    are still blurry but spread over every mode."""
    effective = num_modes * math.exp(-reverse_kl)
    data = data_effective_modes(num_modes, num_samples)
    if effective >= collapse_coverage * data:
        return None
    return (f"the samples spread over the equivalent of {effective:.1f} of {num_modes} modes (reverse KL "
            f"{reverse_kl:.3g}; alarm below {collapse_coverage:.0%} of the {data:.1f} that {num_samples} samples of "
            "the data itself spread over)")


def loss_scale(trainer: pl.Trainer) -> Optional[float]:
    """The GradScaler's current scale under ``16-mixed`` precision; ``None`` without one."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return scaler.get_scale() if scaler is not None and scaler.is_enabled() else None


class StabilityMonitor(Callback):
    """Watches a run every ``every_n_generator_steps`` generator iterations (default: the logging cadence).

    Logs ``monitor/diversity`` (mean pairwise distance of ``num_samples``
    samples from fixed noise, divided by that of real batches: near 1 when G
    is as varied as the data, near 0 when it collapses) and the spectral norm
    of each of D's layers (``monitor/spectral_norm/<layer>`` and their max).
    The module logs the rest at the same cadence: D and G gradient norms, D's
    accuracy on real and fake, the Wasserstein estimate.

    Alarms go to the console (a :class:`StabilityAlarm` warning), to W&B (an
    alert and ``monitor/alarms``) and to ``alarms.json`` in the run directory:

    - ``non_finite``: a NaN or infinite loss in any iteration, or parameter.
      Training stops cleanly; the message names the loss and the generator
      iteration; checkpoints of the non-finite state are never written, so
      the last good one survives.
    - ``collapse``: after ``warmup_generator_steps``, diversity below
      ``collapse_diversity`` for ``patience`` checks in a row, or (on data
      with known modes) an evaluation whose samples spread over fewer than
      ``collapse_coverage`` of the modes that as many samples of the data
      itself spread over (:func:`coverage_reason`). Each evaluation is read at the
      first check at or after it, and the final one when training ends, so
      the evaluation and monitor cadences need not divide each other. Under
      DDP rank 0's verdict holds for every rank.
      Training goes on unless ``stop_on_collapse``.
    - ``discriminator_wins``: D's accuracy on both real and fake at least
      ``win_accuracy`` for ``win_generator_steps`` generator iterations on end.
    """

    def __init__(
        self,
        every_n_generator_steps: Optional[int] = None,
        num_samples: int = 256,
        seed: int = 4321,
        warmup_generator_steps: int = 500,
        collapse_diversity: float = 0.1,
        collapse_coverage: float = 0.5,
        patience: int = 3,
        win_accuracy: float = 0.99,
        win_generator_steps: int = 1000,
        stop_on_collapse: bool = False,
    ):
        require(every_n_generator_steps is None or every_n_generator_steps >= 1, "stability.every_n_generator_steps",
                every_n_generator_steps, "null (the logging cadence) or an integer >= 1")
        require(num_samples >= 2, "stability.num_samples", num_samples, "an integer >= 2")
        require(warmup_generator_steps >= 0, "stability.warmup_generator_steps", warmup_generator_steps,
                "an integer >= 0")
        require(collapse_diversity >= 0, "stability.collapse_diversity", collapse_diversity, "a ratio >= 0")
        require(0 <= collapse_coverage <= 1, "stability.collapse_coverage", collapse_coverage, "a fraction in [0, 1]")
        require(patience >= 1, "stability.patience", patience, "an integer >= 1")
        require(0 < win_accuracy <= 1, "stability.win_accuracy", win_accuracy, "an accuracy in (0, 1]")
        require(win_generator_steps >= 1, "stability.win_generator_steps", win_generator_steps, "an integer >= 1")
        self.every_n_generator_steps = every_n_generator_steps
        self.num_samples = num_samples
        self.seed = seed
        self.warmup_generator_steps = warmup_generator_steps
        self.collapse_diversity = collapse_diversity
        self.collapse_coverage = collapse_coverage
        self.patience = patience
        self.win_accuracy = win_accuracy
        self.win_generator_steps = win_generator_steps
        self.stop_on_collapse = stop_on_collapse
        self.reset()

    # What a checkpoint keeps, so a resumed run raises the same alarms as an uninterrupted one.
    STATE = ("real_distance_total", "real_checks", "low_diversity_checks", "reasons", "win_since", "active", "alarms",
             "last_checked_step", "coverage_step", "accuracy_step")

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        self.noise = torch.randn(self.num_samples, pl_module.generator.latent_dim, generator=generator)
        self.reset()

    def reset(self) -> None:
        """A fresh run's state (also before setup: Ctrl-C during start-up saves a checkpoint, which reads it)."""
        self.window: list[tuple[int, dict[str, Tensor]]] = []
        self.real_distance_total = 0.0
        self.real_checks = 0
        self.low_diversity_checks = 0
        self.reasons: dict[str, str | None] = {"diversity": None, "coverage": None}
        self.win_since: int | None = None
        self.active: set[str] = set()  # alarms raised and not yet cleared, so each episode is reported once
        self.alarms: list[dict] = []
        self.last_checked_step: int | None = None
        # The evaluation and the logged D accuracies the checks last read: each is read once, at the first
        # check at or after it, whatever the three cadences (evaluation, logging, monitor) are.
        self.coverage_step: int | None = None
        self.accuracy_step: int | None = None

    def state_dict(self) -> dict:
        state = {name: getattr(self, name) for name in self.STATE}
        return state | {"active": sorted(self.active)}  # plain types: checkpoints load with weights_only

    def load_state_dict(self, state_dict: dict) -> None:
        for name in self.STATE:
            if name in state_dict:
                setattr(self, name, state_dict[name])
        self.active = set(self.active)

    def cadence(self, trainer: pl.Trainer) -> int:
        return self.every_n_generator_steps or max(trainer.log_every_n_steps, 1)

    # ----------------------------------------------------------------- hooks
    def on_train_start(self, trainer, pl_module) -> None:
        # A run resumed from an earlier checkpoint (the last good one after a non-finite stop, say) has the
        # alarms raised up to that point; alarms.json must say the same, not what the abandoned run raised.
        if trainer.is_global_zero:
            self.write_alarms(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.iteration = pl_module.generator_step + 1  # the generator iteration this batch belongs to

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = pl_module.generator_step
        self.window.append((self.iteration, pl_module.step_losses))
        if step % self.cadence(trainer) or step == self.last_checked_step or step == 0:
            return
        self.last_checked_step = step
        if not self.check_finite(trainer, pl_module):
            return
        values = self.measure(pl_module, pl_module.real_batch)
        self.check_collapse(trainer, pl_module, values["monitor/diversity"])
        self.check_discriminator_wins(trainer, pl_module)
        values["monitor/alarms"] = len(self.alarms)
        scale = loss_scale(trainer)
        if scale is not None:
            values["monitor/loss_scale"] = scale  # halved at each float16 overflow, grown after 2000 clean steps
        if trainer.is_global_zero:
            log_row(trainer.loggers, {**values, "generator_step": step}, step)

    def on_train_end(self, trainer, pl_module) -> None:
        # The final evaluation (made just before, by the Evaluation callback) is checked too.
        if not pl_module.diverged and self.check_finite(trainer, pl_module, ended=True):
            self.check_collapse(trainer, pl_module, diversity=None)

    # ------------------------------------------------------------------ checks
    def check_finite(self, trainer: pl.Trainer, pl_module: pl.LightningModule, ended: bool = False) -> bool:
        """One host sync for every loss since the last check and every parameter (``ended``: the check after
        the last iteration, which found the run at its end rather than stopped it).

        Under ``16-mixed`` a non-finite loss (a penalty's float16 inner gradient overflowing, most often)
        is what the GradScaler answers by skipping that step and halving its scale, so it counts as
        divergence only once the scale has fallen below 1, where even unscaled gradients overflow.
        """
        window, self.window = self.window, []
        scale = loss_scale(trainer)
        if scale is not None and scale >= 1.0:
            window = [(iteration, {}) for iteration, _ in window]  # overflows the scaler skipped
        losses = [torch.stack(list(l.values())).float() for _, l in window if l]
        parameters = [p.detach() for p in pl_module.parameters()]
        no_losses = torch.tensor(True, device=pl_module.device)  # on the parameters' device: stacked with them
        finite = torch.stack([torch.isfinite(torch.cat(losses)).all() if losses else no_losses,
                              *[torch.isfinite(p).all() for p in parameters]]).all()
        finite = bool(finite)
        if trainer.world_size > 1:  # every rank must stop together, or DDP hangs
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return True
        message = None
        for iteration, step_losses in window:
            bad = [name for name, value in step_losses.items() if not bool(torch.isfinite(value))]
            if bad:
                message = f"{bad[0]} became {float(step_losses[bad[0]])} at generator iteration {iteration}"
                break
        if message is None:
            names = [n for n, p in pl_module.named_parameters() if not bool(torch.isfinite(p).all())]
            message = (f"parameter {names[0]} became non-finite by generator iteration {pl_module.generator_step}"
                       if names else f"another rank saw a non-finite loss by generator iteration {pl_module.generator_step}")
        if scale is not None and scale < 1.0:
            message += f" and the 16-mixed loss scale fell to {scale:.3g} (every step overflowed float16)"
        pl_module.diverged = message
        checkpoint = find_callback(trainer, GeneratorCheckpoint)
        last = checkpoint.directory(trainer) / "last.ckpt" if checkpoint is not None else None
        kept = (f"the last good checkpoint, {last}, is kept" if last is not None and last.exists()
                else "no checkpoint had been written before this")
        self.raise_alarm(trainer, pl_module, "non_finite",
                         f"Training {'ended' if ended else 'stopped'}: {message}. This state is not checkpointed; "
                         f"{kept}. Lower the "
                         "learning rates, add a gradient penalty, or check the data for NaN.", stop=True)
        return False

    def measure(self, pl_module: pl.LightningModule, real: Tensor) -> dict[str, float]:
        # The data's spread is averaged over every check: one batch's estimate is noisy.
        self.real_distance_total += float(mean_pairwise_distance(real))
        self.real_checks += 1
        real_diversity = self.real_distance_total / self.real_checks
        samples = pl_module.generate(self.noise)
        diversity = float(mean_pairwise_distance(samples)) / max(real_diversity, 1e-12)
        norms = spectral_norms(pl_module.discriminator)
        values = {"monitor/diversity": diversity}
        if norms:
            stacked = torch.stack(list(norms.values())).tolist()
            values.update({f"monitor/spectral_norm/{name}": v for name, v in zip(norms, stacked)})
            values["monitor/spectral_norm_max"] = max(stacked)
        return values

    def check_collapse(self, trainer, pl_module, diversity: float | None) -> None:
        """Diversity (``None``: no new measurement) and the newest evaluation's mode coverage."""
        step = pl_module.generator_step
        if step < self.warmup_generator_steps:
            return
        if diversity is not None:
            self.low_diversity_checks = self.low_diversity_checks + 1 if diversity < self.collapse_diversity else 0
            self.reasons["diversity"] = (
                f"sample diversity is {diversity:.3g} of the data's (alarm below {self.collapse_diversity} for "
                f"{self.patience} checks)" if self.low_diversity_checks >= self.patience else None)
        evaluation = find_callback(trainer, Evaluation)
        latest = evaluation.latest if evaluation is not None else {}
        evaluated = latest.get("generator_step", -1)
        num_modes = getattr(trainer.datamodule, "num_modes", None)
        if (evaluated >= self.warmup_generator_steps and evaluated != self.coverage_step
                and "eval/reverse_kl" in latest and num_modes):
            self.coverage_step = evaluated
            reason = coverage_reason(latest["eval/reverse_kl"], num_modes, evaluation.num_samples,
                                     self.collapse_coverage)
            # Kept until the next evaluation; the alarm is raised at a check, which may come iterations later.
            self.reasons["coverage"] = reason and f"at the evaluation of generator iteration {evaluated}, {reason}"
        if trainer.world_size > 1:
            # Each rank measured diversity against its own real batches: rank 0's verdict holds for all, so
            # every rank stops (stop_on_collapse) at the same iteration instead of leaving the others hanging.
            self.reasons = trainer.strategy.broadcast(self.reasons, src=0)
        reasons = [r for r in self.reasons.values() if r]
        if not reasons:
            self.active.discard("collapse")
        elif "collapse" not in self.active:
            self.raise_alarm(trainer, pl_module, "collapse",
                             f"Mode collapse at generator iteration {step}: {'; '.join(reasons)}. Try PacGAN "
                             "packing, minibatch discrimination, unrolled D or a Wasserstein objective.",
                             stop=self.stop_on_collapse)

    def check_discriminator_wins(self, trainer, pl_module) -> None:
        """D's accuracies as last logged (read once each: the logging and monitor cadences may differ)."""
        values = pl_module.logged_values
        step = values.get("generator_step")
        if step is None or step == self.accuracy_step or "discriminator/accuracy_real" not in values:
            return
        self.accuracy_step = step
        winning = min(values["discriminator/accuracy_real"], values["discriminator/accuracy_fake"]) >= self.win_accuracy
        if not winning:
            self.win_since = None
            self.active.discard("discriminator_wins")
            return
        self.win_since = step if self.win_since is None else self.win_since
        if step - self.win_since >= self.win_generator_steps and "discriminator_wins" not in self.active:
            self.raise_alarm(trainer, pl_module, "discriminator_wins",
                             f"The discriminator has won outright since generator iteration {self.win_since} "
                             f"(accuracy >= {self.win_accuracy} on real and fake up to iteration {step}): G gets "
                             "little useful gradient. Try a gradient penalty, instance noise, label smoothing or "
                             "a lower D learning rate.", stop=False)

    # ------------------------------------------------------------------ alarms
    def raise_alarm(self, trainer: pl.Trainer, pl_module, kind: str, message: str, stop: bool) -> None:
        self.active.add(kind)
        self.alarms.append({"alarm": kind, "generator_step": pl_module.generator_step, "message": message})
        if stop:
            trainer.should_stop = True
        rank_zero_warn(f"[lit-gan stability monitor] {message}", category=StabilityAlarm)
        if not trainer.is_global_zero:
            return
        log_row(trainer.loggers, {"monitor/alarms": len(self.alarms), "generator_step": pl_module.generator_step},
                pl_module.generator_step)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                level = wandb.AlertLevel.ERROR if stop else wandb.AlertLevel.WARN
                logger.experiment.alert(title=f"lit-gan: {kind}", text=message, level=level)
        self.write_alarms(trainer)

    def write_alarms(self, trainer: pl.Trainer) -> None:
        """``alarms.json`` in the run directory: every alarm raised so far, or no file when there is none."""
        path = run_directory(trainer) / "alarms.json"
        if not self.alarms:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(self.alarms, indent=1))
