"""The alternating D/G schedule that every objective shares."""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import random
import warnings
from typing import Callable, Iterator, Literal, Optional, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from lit_gan.draws import GLOBAL, Draws, rank_seed
from lit_gan.errors import ConfigError, plain, require
from lit_gan.nets import MinibatchDiscrimination
from lit_gan.optim import ContiguousAdam
from lit_gan.penalties import Penalty
from lit_gan.stabilizers import HistoricalAverage, annealed_std, make_ema, unrolled_discriminator, update_ema

# training_step(dataloader_iter) is Lightning's way for a step to draw its own batches (n_critic of them);
# its warning is about batch_idx, which nothing here reads (the first wording is Lightning < 2.2's).
warnings.filterwarnings("ignore", "Found `dataloader_iter` argument in the `training_step`")
warnings.filterwarnings("ignore", "You are using the `dataloader_iter` step flavor")


# The look-ahead updates take D's objective alone (Metz et al. 2017, Eq. 6-7); a penalty or historical
# average left out of them would let G differentiate through a D the real updates never make.
UNROLLED_ALONE = "0 with gradient penalties or historical averaging (the look-ahead updates take D's loss only)"


def optimizer_steps(generator_steps: int, n_critic: int) -> int:
    """Lightning's ``global_step`` after ``generator_steps`` generator iterations.

    Under manual optimisation Lightning counts every optimizer step (both
    optimizers), and one generator iteration here is ``n_critic`` discriminator
    steps followed by one generator step.
    """
    return generator_steps * (n_critic + 1)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No gradients accumulate in ``module``'s parameters; gradients still flow through it."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)


def gradient_norm(module: nn.Module) -> Tensor:
    """L2 norm of all of ``module``'s current gradients, as one tensor (no host sync)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(module.parameters()).device)
    return torch.nn.utils.get_total_norm(grads)


def rng_states() -> dict:
    """The global random states that training draws from (noise for G, instance noise, penalties).

    Only tensors and plain Python values, so checkpoints load with ``torch.load(weights_only=True)``.
    """
    kind, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached)
    states = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    # The current GPU's alone (one per visible GPU could not be restored where fewer are visible), and only
    # where this process uses CUDA (asking would start CUDA in a CPU run on a GPU machine).
    if torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def rank_rng_state() -> Tensor:
    """This process's torch random state (CPU, and the current CUDA device's), as one byte tensor."""
    states = [torch.get_rng_state()]
    if torch.cuda.is_initialized():
        states.append(torch.cuda.get_rng_state())
    return torch.cat(states)


def set_rank_rng_state(state: Tensor) -> None:
    cpu_bytes = torch.get_rng_state().numel()
    torch.set_rng_state(state[:cpu_bytes].clone())
    if torch.cuda.is_initialized() and state.numel() > cpu_bytes:
        torch.cuda.set_rng_state(state[cpu_bytes:].clone())


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    cuda = states.get("cuda")
    if cuda is None or not torch.cuda.is_initialized():
        return
    if isinstance(cuda, (list, tuple)):  # checkpoints before 2026-11-29: every visible GPU's; this one's is ours
        index = torch.cuda.current_device()
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None:
        torch.cuda.set_rng_state(cuda)


def plain_single_device(trainer: pl.Trainer) -> bool:
    """One device, no distributed strategy, plain fp32: where lit-gan may leave out Lightning's idle paths."""
    return type(trainer.strategy) is SingleDeviceStrategy and type(trainer.precision_plugin) is Precision


def lightning_wrappers_idle(trainer: pl.Trainer) -> bool:
    """Whether Lightning's ``manual_backward`` and optimizer-step wrappers would only call hooks nobody overrides.

    True on one device in plain fp32 when neither the module nor a callback overrides ``backward``,
    ``on_before_backward``, ``on_after_backward`` or ``on_before_optimizer_step``. False under a
    distributed strategy (DDP prepares its reducer in ``manual_backward``) or another precision
    plugin (16-mixed scales the loss and unscales before the step).
    """
    hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
    module = trainer.lightning_module
    return (plain_single_device(trainer)
            and not any(is_overridden(hook, module, pl.LightningModule) for hook in ("backward", *hooks))
            and not any(is_overridden(hook, callback, Callback) for callback in trainer.callbacks for hook in hooks))


def batch_transfer_idle(trainer: pl.Trainer) -> bool:
    """Whether Lightning's path for a batch (precision conversion, ``on_before_batch_transfer``,
    ``transfer_batch_to_device``, ``on_after_batch_transfer``) would return a CPU batch as it is.

    True in plain fp32 on one CPU device when neither the module nor the datamodule overrides a batch
    hook. The path costs ~0.1 ms a batch on a CPU (docs/PERFORMANCE.md), 1% of a toy MLP's iteration.
    """
    hooks = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
    datamodule = trainer.datamodule
    return (plain_single_device(trainer) and trainer.strategy.root_device.type == "cpu"
            and not any(is_overridden(hook, trainer.lightning_module, pl.LightningModule) for hook in hooks)
            and not (datamodule is not None
                     and any(is_overridden(hook, datamodule, pl.LightningDataModule) for hook in hooks)))


def step_without_hooks(optimizer) -> None:
    """``step()`` of a LightningOptimizer's wrapped optimizer, with what the wrapper does around it
    (counting the step for ``global_step``, timing it in the profiler) but not its hook calls."""
    optimizer._on_before_step()
    optimizer.optimizer.step()
    optimizer._on_after_step()


def count_step(optimizer) -> None:
    """What a LightningOptimizer's wrapper does around a step made elsewhere (in a seed group's stack):
    count it for ``global_step``, which ends training at ``max_steps``."""
    optimizer._on_before_step()
    optimizer._on_after_step()


def is_finite_number(value) -> bool:
    """A finite real number: an int or a float, NumPy's included, not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return isinstance(value, numbers.Integral) or math.isfinite(value)  # (isfinite overflows on huge ints)


def is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _floats(betas) -> tuple[float, float]:
    return tuple(float(b) for b in betas)  # Adam rejects a mix of ints and floats such as (0, 0.9)


class GANModule(pl.LightningModule):
    """Alternating GAN training with manual optimisation.

    One ``training_step`` is one generator iteration: ``n_critic``
    discriminator updates, each on its own real batch, then one generator
    update (Goodfellow et al. 2014, Algorithm 1, with the critic schedule of
    Arjovsky et al. 2017, Algorithm 1). Lightning's hooks such as
    ``on_train_batch_end`` therefore run once per generator iteration. D and G have
    their own Adam learning rates and betas, which gives the two time-scale
    update rule (TTUR, Heusel et al. 2017). ``lr_decay: linear`` takes both
    learning rates linearly to 0 over the run.

    A subclass is an objective: it defines :meth:`discriminator_loss` and
    :meth:`generator_loss` on the discriminator's raw outputs, and may
    override :meth:`after_discriminator_step`. Regularisers of D come in as
    ``penalties``.

    Remedies that work with every objective (off by default):

    - ``feature_matching``: G minimises ``||E f(x) - E f(G(z))||^2`` on D's
      features instead of the objective's G loss (Salimans et al. 2016, Sec. 3.1).
    - ``historical_averaging``: weight of ``||theta - mean of past theta||^2``
      added to both players' losses (Salimans et al. 2016, Sec. 3.3).
    - ``unrolled_steps``: G's loss is taken against D after that many
      look-ahead updates, differentiated through them (Metz et al. 2017).
    - ``instance_noise``: std of Gaussian noise added to every input of D,
      annealed linearly to 0 over ``instance_noise_steps`` generator
      iterations, default the whole run (Sønderby et al. 2017, Sec. 5; Arjovsky & Bottou 2017).
    - ``ema_decay``: an exponential moving average of G's weights (not D's),
      a plain copy until ``ema_start``, evaluated beside the raw G
      (Yazıcı et al. 2019).

    Both Adams are :class:`lit_gan.optim.ContiguousAdam`: on a CPU, torch's Adam arithmetic to the
    bit in one pass over all of a network's parameters; elsewhere torch's multi-tensor (``foreach``)
    Adam. ``fused_adam`` builds them with PyTorch's fused kernel instead: a little faster still, but
    it rounds differently, so a run is no longer digit-for-digit the default's (docs/PERFORMANCE.md).

    The clock is ``generator_step``, the number of generator updates so far:
    training length, evaluation, checkpoints and the logged x-axis all count
    it. Metrics reach the loggers every ``trainer.log_every_n_steps``
    generator iterations.

    ``generator_batch_size`` sets how many samples G's update draws (default: as many as the real batch);
    SNGAN's code and WGAN-GP's CIFAR-10 ResNet script draw twice D's batch (128 against 64).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        lr_d: float = 2e-4,
        lr_g: float = 2e-4,
        betas_d: tuple[float, float] = (0.5, 0.999),
        betas_g: tuple[float, float] = (0.5, 0.999),
        n_critic: int = 1,
        generator_batch_size: Optional[int] = None,
        penalties: Sequence[Penalty] = (),
        lr_decay: Literal["constant", "linear"] = "constant",
        feature_matching: bool = False,
        historical_averaging: float = 0.0,
        unrolled_steps: int = 0,
        instance_noise: float = 0.0,
        instance_noise_steps: Optional[int] = None,
        ema_decay: Optional[float] = None,
        ema_start: int = 0,
        fused_adam: bool = False,
    ):
        super().__init__()
        require(hasattr(generator, "latent_dim"), "model.generator", type(generator).__name__,
                "a network with a `latent_dim` attribute (the size of z)")
        # (The command line checks types; these also keep Python callers from a TypeError or a silent float.)
        for key, lr in (("lr_d", lr_d), ("lr_g", lr_g)):
            require(is_finite_number(lr) and lr > 0, f"model.{key}", lr, "a learning rate > 0")
        for key, betas in (("betas_d", betas_d), ("betas_g", betas_g)):
            require(isinstance(betas, (list, tuple)) and len(betas) == 2
                    and all(is_finite_number(b) and 0 <= b < 1 for b in betas), f"model.{key}", betas,
                    "two numbers in [0, 1)")
        require(is_integer(n_critic) and n_critic >= 1, "model.n_critic", n_critic, "an integer >= 1")
        require(generator_batch_size is None or (is_integer(generator_batch_size) and generator_batch_size >= 1),
                "model.generator_batch_size", generator_batch_size, "null (the data's batch size) or an integer >= 1")
        # Its closeness features are sums over the batch: D would judge G's batches on another scale than the
        # fake batches it learnt from (Salimans et al.'s code draws both alike).
        require(generator_batch_size is None
                or not any(isinstance(m, MinibatchDiscrimination) for m in discriminator.modules()),
                "model.generator_batch_size", generator_batch_size,
                "null (G's batches as large as the real ones) with a MinibatchDiscrimination discriminator, "
                "whose features sum over the batch")
        require(lr_decay in ("constant", "linear"), "model.lr_decay", lr_decay, "'constant' or 'linear'")
        require(not feature_matching or hasattr(discriminator, "features"), "model.feature_matching", True,
                "a discriminator with features(x), e.g. any lit_gan.nets discriminator")
        require(is_finite_number(historical_averaging) and historical_averaging >= 0, "model.historical_averaging",
                historical_averaging, "a weight >= 0")
        require(is_integer(unrolled_steps) and unrolled_steps >= 0, "model.unrolled_steps", unrolled_steps,
                "an integer >= 0")
        require(not (feature_matching and unrolled_steps), "model.unrolled_steps", unrolled_steps,
                "0 when feature_matching is on (the two replace the generator loss in different ways)")
        require(not (unrolled_steps and (penalties or historical_averaging)), "model.unrolled_steps", unrolled_steps,
                UNROLLED_ALONE)
        require(is_finite_number(instance_noise) and instance_noise >= 0, "model.instance_noise", instance_noise,
                "a standard deviation >= 0")
        require(instance_noise_steps is None or (is_integer(instance_noise_steps) and instance_noise_steps >= 1),
                "model.instance_noise_steps", instance_noise_steps, "null (the whole run) or an integer >= 1")
        require(ema_decay is None or (is_finite_number(ema_decay) and 0 <= ema_decay < 1), "model.ema_decay", ema_decay,
                "null (off) or a number in [0, 1)")
        require(is_integer(ema_start) and ema_start >= 0, "model.ema_start", ema_start, "an integer >= 0")
        # In checkpoints (a resume compares them), not in the loggers: they get the whole config (LoggedConfig),
        # where these flat copies (and Lightning's _instantiator) would repeat model.init_args.
        self.save_hyperparameters(ignore=["generator", "discriminator", "penalties"], logger=False)
        for hparams in (self.hparams, self._hparams_initial):  # (a subclass's own arguments are in them too)
            hparams.update({key: plain(value) for key, value in hparams.items()})
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.n_critic = n_critic
        self.penalties = list(penalties)
        self.historical_average_d = HistoricalAverage(discriminator) if historical_averaging else None
        self.historical_average_g = HistoricalAverage(generator) if historical_averaging else None
        self.generator_ema = make_ema(generator) if ema_decay is not None else None
        self.generator_step = 0
        self.discriminator_step = 0
        self.logged_values: dict[str, float] = {}
        self.step_losses: dict[str, Tensor] = {}  # this iteration's losses, read by the stability monitor
        self.real_batch: Tensor | None = None  # this iteration's last real batch, read by the stability monitor
        self.direct_steps = False  # set at fit start: see lightning_wrappers_idle
        self.direct_batches = False  # set at fit start: see batch_transfer_idle
        self.diverged: str | None = None  # set by the stability monitor when training must stop
        self.pending_rng_states: dict | None = None  # from a checkpoint, restored at the first batch
        self.pending_rank_rng_states: Tensor | None = None  # DDP: every rank's torch state, (world_size, bytes)
        self.seed_group = None  # while this run updates together with others of its config (lit_gan.seed_group)

    # ----------------------------------------------------------------- objective
    decision_threshold: float | None = None
    """D's output above which an input is called real (for D's accuracy); None where the output is a
    critic value with no such threshold (WGAN)."""

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def discriminator_metrics(self, real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
        """Extra quantities worth logging after a D update (e.g. a Wasserstein estimate)."""
        return {}

    def after_discriminator_step(self) -> None:
        """Runs after each discriminator optimizer step (WGAN clips weights here)."""

    # ------------------------------------------------------------------ sampling
    def sample_noise(self, batch_size: int, draws: Draws = GLOBAL) -> Tensor:
        """``batch_size`` latent vectors z ~ N(0, I) (one set per seed under stacked ``draws``)."""
        return draws.randn((batch_size, self.generator.latent_dim), device=self.device)

    def forward(self, z: Tensor) -> Tensor:
        return self.generator(z)

    @torch.no_grad()
    def generate(self, z: Tensor, batch_size: int = 1000, ema: bool = False) -> Tensor:
        """Samples for evaluation: G (or its moving average) in eval mode, in chunks, mode restored after."""
        generator = self.generator_ema if ema else self.generator
        was_training = generator.training
        generator.eval()
        try:
            # In the generator's dtype: under bf16-true its weights are bfloat16, and callbacks (evaluation,
            # monitor) run outside the precision plugin's context that makes training's noise so.
            dtype = next(generator.parameters()).dtype
            samples = torch.cat([generator(chunk.to(self.device, dtype)) for chunk in z.split(batch_size)])
            return samples.to(torch.promote_types(dtype, torch.float32))  # scored in float32 at least
        finally:
            generator.train(was_training)

    def check_data_shape(self, sample_shape: Sequence[int]) -> None:
        """Refuse networks that cannot produce (G) or read (D) samples of the data's shape, before training."""
        sample_shape = tuple(sample_shape)
        z = torch.randn(2, self.generator.latent_dim, generator=torch.Generator().manual_seed(0))
        produced = tuple(self.generate(z).shape[1:])  # eval mode: batch-norm statistics are not touched
        require(produced == sample_shape, "model.generator", f"{type(self.generator).__name__} making {list(produced)}",
                f"a generator of the data's sample shape {list(sample_shape)} (check channels/resolution/output_shape)")
        accepts = getattr(self.discriminator, "input_shape", None)
        require(accepts is None or tuple(accepts) == sample_shape, "model.discriminator",
                f"{type(self.discriminator).__name__} reading {list(accepts or ())}",
                f"a discriminator of the data's sample shape {list(sample_shape)} (check channels/resolution/input_shape)")

    def settings(self) -> dict:
        """What this run's updates follow besides its weights: the hyperparameters and the penalties (by repr).
        A resume must find the same in its checkpoint, and the runs of one seed stack must share them."""
        return dict(self.hparams) | {"penalties": [repr(p) for p in self.penalties]}

    def total_generator_steps(self) -> int:
        """The run's length in generator iterations (from ``trainer.max_steps``)."""
        return self.trainer.max_steps // optimizer_steps(1, self.n_critic)

    def run_length_schedules(self) -> list[str]:
        """The settings scheduled over the whole run's length, which another length would move mid-run."""
        hp = self.hparams
        return ((["model.lr_decay=linear"] if hp.lr_decay == "linear" else [])
                + (["model.instance_noise annealed over the run"] if hp.instance_noise and not hp.instance_noise_steps
                   else []))

    def with_instance_noise(self, x: Tensor, draws: Draws = GLOBAL) -> Tensor:
        """``x`` plus this iteration's instance noise (unchanged when ``instance_noise`` is 0)."""
        initial = self.hparams.instance_noise
        if not initial:
            return x
        std = annealed_std(initial, self.generator_step, self.hparams.instance_noise_steps or self.total_generator_steps())
        if std <= 0:
            return x
        return x + std * draws.randn(x.shape[draws.seed_dims:], dtype=x.dtype, device=x.device)

    def feature_matching_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        """``||E f(x) - E f(G(z))||_2^2`` on D's features (Salimans et al. 2016, Sec. 3.1)."""
        with torch.no_grad():
            real_features = self.discriminator.features(self.with_instance_noise(real)).mean(0)
        fake_features = self.discriminator.features(self.with_instance_noise(fake)).mean(0)
        return ((real_features - fake_features) ** 2).sum()

    # ------------------------------------------------------------------ training
    def add_own_penalty(self, penalty) -> None:
        """The objective's own penalty (WGAN-GP's, DRAGAN's), first in ``penalties`` and refused with
        unrolled D like one given in the config."""
        require(not self.hparams.unrolled_steps, "model.unrolled_steps", self.hparams.unrolled_steps, UNROLLED_ALONE)
        self.penalties.insert(0, penalty)

    def configure_optimizers(self):
        hp = self.hparams
        # ContiguousAdam gives the per-tensor loop's exact numbers in fewer operations on a CPU (tests compare
        # them bit for bit), and elsewhere is Adam with the multi-tensor kernels (foreach), torch's own GPU
        # default. fused is faster still but rounds differently.
        if hp.fused_adam:
            adam = functools.partial(torch.optim.Adam, fused=True)
        else:
            adam = functools.partial(ContiguousAdam, foreach=True)
        opt_d = adam(self.discriminator.parameters(), lr=hp.lr_d, betas=_floats(hp.betas_d))
        opt_g = adam(self.generator.parameters(), lr=hp.lr_g, betas=_floats(hp.betas_g))
        if hp.lr_decay == "constant":
            return [opt_d, opt_g]
        # Linear decay to 0 over the run, stepped once per generator iteration (as in WGAN-GP's and
        # SNGAN's code), so both learning rates reach 0 at the last generator iteration.
        total = self.total_generator_steps()
        require(total >= 1, "model.lr_decay", "linear", "a run of known length: set generator_steps")
        schedulers = [LambdaLR(opt, lambda step: max(0.0, 1.0 - step / total)) for opt in (opt_d, opt_g)]
        return [opt_d, opt_g], schedulers

    def on_fit_start(self) -> None:
        # Under DDP every process was seeded alike: without this each rank would draw the same noise for G
        # (and the same penalty and instance-noise draws), and every fake batch would be one batch repeated.
        # Rank 0 keeps the run's stream. (A resumed run then takes each rank's own saved state.)
        if self.trainer.global_rank > 0:
            torch.manual_seed(rank_seed(torch.initial_seed(), self.trainer.global_rank))
        # Gradient penalties differentiate D's output themselves: under 16-mixed they must scale it.
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        for penalty in self.penalties:
            penalty.scaler = scaler
        # Adam on float16 weights: eps 1e-8 is 0 in float16 and small squared gradients underflow, so a zero
        # gradient steps by 0/0 (NaN) and a tiny one by x/0 (inf). bfloat16 keeps float32's range.
        require(next(self.generator.parameters()).dtype != torch.float16, "trainer.precision", self.trainer.precision,
                "16-mixed (float32 weights, float16 arithmetic) or bf16-true: Adam's steps on float16 weights are "
                "NaN or inf wherever a gradient is 0 or tiny")
        # The averages move by a small fraction of a step (1 - ema_decay, 1 / t): in 16-bit weights that rounds to 0.
        averaged = [f"model.{key}={self.hparams[key]!r}" for key in ("ema_decay", "historical_averaging")
                    if self.hparams[key] not in (None, 0)]
        require(not averaged or next(self.generator.parameters()).dtype not in (torch.float16, torch.bfloat16),
                "trainer.precision", self.trainer.precision,
                f"32-true, 64-true, bf16-mixed or 16-mixed with {' and '.join(averaged)} (in 16-bit weights "
                "the averages' updates round away)")
        self.direct_steps = lightning_wrappers_idle(self.trainer)
        self.direct_batches = batch_transfer_idle(self.trainer)
        # Annealed over the whole run by default, which needs its length (a Trainer built in Python has
        # max_steps=-1 unless told, and the noise would grow instead of fading).
        require(not self.hparams.instance_noise or bool(self.hparams.instance_noise_steps)
                or self.total_generator_steps() >= 1, "model.instance_noise_steps", self.hparams.instance_noise_steps,
                "an integer >= 1, or a run of known length (generator_steps, trainer.max_steps) to anneal over")

    def step_if_any_gradient(self, optimizer) -> None:
        """``optimizer.step()``, skipped when no parameter got a gradient (a GradScaler refuses such steps).

        With :attr:`direct_steps` the hooks nobody listens to are left out (:func:`step_without_hooks`).
        """
        if not any(p.grad is not None for group in optimizer.param_groups for p in group["params"]):
            return
        if self.direct_steps:
            step_without_hooks(optimizer)
        else:
            optimizer.step()

    def backpropagate(self, loss: Tensor) -> None:
        """``loss.backward()``, through Lightning's ``manual_backward`` unless :attr:`direct_steps`.

        Lightning's wrappers of the backward pass and the optimizer step cost ~0.5 ms an iteration on
        a CPU, where a toy MLP's whole iteration is ~8 ms (docs/PERFORMANCE.md).
        """
        if self.direct_steps:
            loss.backward()
        else:
            self.manual_backward(loss)

    def next_real_batch(self, dataloader_iter) -> Optional[Tensor]:
        """The next batch of real samples on this device, or None when the epoch's data ran out.

        The batch takes the path Lightning's loop gives a ``training_step(batch)``: precision
        conversion, ``on_before_batch_transfer``, ``transfer_batch_to_device``, ``on_after_batch_transfer``,
        except with :attr:`direct_batches`, where that path would return it as it is.
        """
        try:
            batch, _, _ = next(dataloader_iter)
        except StopIteration:
            return None
        if not self.direct_batches:
            batch = self._on_before_batch_transfer(self.trainer.precision_plugin.convert_input(batch), dataloader_idx=0)
            batch = self.trainer.strategy.batch_to_device(batch, dataloader_idx=0)
        return batch[0] if isinstance(batch, (list, tuple)) else batch

    def training_step(self, dataloader_iter) -> None:
        """One generator iteration: ``n_critic`` D steps, each on its own real batch, then one G step.

        The step draws its batches itself, so Lightning's per-batch loop runs once per generator
        iteration rather than ``n_critic`` times. When an epoch's data runs out mid-cycle the cycle
        goes on in the next epoch (``discriminator_step`` counts D steps across epochs).
        """
        opt_d, opt_g = self.optimizers()
        # Metrics cost extra kernels, so they are gathered only in iterations that get logged.
        every = self.trainer.log_every_n_steps
        measure = every > 0 and (self.generator_step + 1) % every == 0
        self.step_losses = {}
        while True:
            real = self.next_real_batch(dataloader_iter)
            if real is None:
                return
            self.real_batch = real
            metrics = self.update_discriminator(real, opt_d, measure)
            self.discriminator_step += 1
            if self.discriminator_step % self.n_critic == 0:
                break
        metrics.update(self.update_generator(real, opt_g, measure))
        self.generator_step += 1
        if self.generator_ema is not None:
            decay = self.hparams.ema_decay if self.generator_step > self.hparams.ema_start else 0.0
            update_ema(self.generator_ema, self.generator, decay)
        for scheduler in self.lr_schedulers() or []:
            scheduler.step()
        if measure:
            self.log_to_loggers(metrics)
        self.step_losses = {k: v for k, v in metrics.items() if k.startswith(("loss/", "penalty/"))}

    def update_discriminator(self, real: Tensor, optimizer, measure: bool = True) -> dict[str, Tensor]:
        """One D step. Returns its losses, and when ``measure`` also what is worth logging."""
        if self.seed_group is not None:
            together = self.seed_group.update_discriminator(real, measure)
            if together is not None:  # made in the group's stack; None: the group is gone, make it here
                count_step(optimizer)
                return together
        with torch.no_grad():
            fake = self.generator(self.sample_noise(real.shape[0]))
        real, fake = self.with_instance_noise(real), self.with_instance_noise(fake)
        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(fake)
        loss = self.discriminator_loss(real_logits, fake_logits)
        penalties = {f"penalty/{p.name}": p(self.discriminator, real, fake) for p in self.penalties}
        if self.historical_average_d is not None:
            penalties["penalty/historical_average"] = (
                self.hparams.historical_averaging * self.historical_average_d.penalty(self.discriminator))
        optimizer.zero_grad(set_to_none=True)
        self.backpropagate(loss + sum(penalties.values()) if penalties else loss)
        self.step_if_any_gradient(optimizer)
        self.after_discriminator_step()
        if self.historical_average_d is not None:
            self.historical_average_d.update(self.discriminator)
        losses = {"loss/discriminator": loss.detach(), **{k: v.detach() for k, v in penalties.items()}}
        if not measure:
            return losses
        return {**losses, **self.discriminator_step_metrics(real_logits.detach(), fake_logits.detach(),
                                                            gradient_norm(self.discriminator))}

    def discriminator_step_metrics(self, real_logits: Tensor, fake_logits: Tensor, grad_norm: Tensor) -> dict[str, Tensor]:
        """What is worth logging after a D update, besides its losses (also for a stack of seeds: lit_gan.stacking)."""
        metrics = {
            "grad_norm/discriminator": grad_norm,
            "discriminator/real": real_logits.mean(),
            "discriminator/fake": fake_logits.mean(),
            **self.discriminator_metrics(real_logits, fake_logits),
        }
        if self.decision_threshold is not None:
            metrics["discriminator/accuracy_real"] = (real_logits > self.decision_threshold).float().mean()
            metrics["discriminator/accuracy_fake"] = (fake_logits <= self.decision_threshold).float().mean()
        return metrics

    def update_generator(self, real: Tensor, optimizer, measure: bool = True) -> dict[str, Tensor]:
        """One G step. Returns its loss, and when ``measure`` also what is worth logging."""
        if self.seed_group is not None:
            together = self.seed_group.update_generator(real, measure)
            if together is not None:  # made in the group's stack; None: the group is gone, make it here
                count_step(optimizer)
                return together
        fake = self.generator(self.sample_noise(self.hparams.generator_batch_size or real.shape[0]))
        with frozen(self.discriminator):
            if self.hparams.feature_matching:
                loss = self.feature_matching_loss(real, fake)
            else:
                loss = self.generator_loss(self.discriminator_for_generator(real, fake)(self.with_instance_noise(fake)))
        total = loss
        if self.historical_average_g is not None:
            historical = self.hparams.historical_averaging * self.historical_average_g.penalty(self.generator)
            total = loss + historical
        optimizer.zero_grad(set_to_none=True)
        self.backpropagate(total)
        self.step_if_any_gradient(optimizer)
        losses = {"loss/generator": loss.detach()}
        if self.historical_average_g is not None:
            self.historical_average_g.update(self.generator)
            losses["penalty/historical_average_generator"] = historical.detach()
        if not measure:
            return losses
        return {**losses, "grad_norm/generator": gradient_norm(self.generator),
                "lr/generator": torch.tensor(optimizer.param_groups[0]["lr"])}

    def discriminator_for_generator(self, real: Tensor, fake: Tensor) -> Callable[[Tensor], Tensor]:
        """The D that G's loss is taken against: D itself, or D after ``unrolled_steps`` look-ahead updates."""
        steps = self.hparams.unrolled_steps
        if not steps:
            return self.discriminator
        optimizer = self.optimizers()[0]
        real, unrolled_fake = self.with_instance_noise(real), self.with_instance_noise(fake)
        return unrolled_discriminator(
            self.discriminator, getattr(optimizer, "optimizer", optimizer),
            lambda d: self.discriminator_loss(d(real), d(unrolled_fake)), steps,
            scaler=getattr(self.trainer.precision_plugin, "scaler", None))

    # ------------------------------------------------------------------- logging
    def log_to_loggers(self, metrics: dict[str, Tensor]) -> None:
        """Send ``metrics`` to every logger at x = generator iterations (one host sync).

        Under DDP each value is the mean over the ranks (one all-reduce): each rank's losses, D outputs and
        accuracies are means over its own share of the batch, so the mean over ranks is the whole batch's, as one
        process would log it; gradient norms and learning rates are alike on every rank already. Every rank
        then holds the same ``logged_values``, and the monitor's verdicts from them agree.
        """
        values = torch.stack([v.float().to(self.device) for v in metrics.values()])
        if self.trainer.world_size > 1:
            values = self.trainer.strategy.reduce(values, reduce_op="mean")
        values = values.tolist()
        from lit_gan.callbacks.output import log_row  # here: lit_gan.callbacks imports this module

        self.logged_values = dict(zip(metrics, values), generator_step=self.generator_step)
        log_row(self.loggers, self.logged_values, self.generator_step)

    # --------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gan_clock"] = {
            "generator_step": self.generator_step,
            "discriminator_step": self.discriminator_step,  # also the place in the n_critic cycle
            "run_length": self.total_generator_steps(),  # what linear decay and annealed noise are scheduled over
        }
        checkpoint["rng_states"] = rng_states()
        checkpoint["penalties"] = self.settings()["penalties"]  # a resume with other penalties is refused
        if self.trainer.world_size > 1:  # every rank saves (the strategy writes rank 0's file): gather theirs
            gathered = self.trainer.strategy.all_gather(rank_rng_state().to(self.device))
            checkpoint["rank_rng_states"] = gathered.cpu()
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                checkpoint["wandb_run_id"] = logger.version  # the CLI resumes this W&B run

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        clock = checkpoint.get("gan_clock")
        if clock is None:
            raise ConfigError("checkpoint has no 'gan_clock' entry: it was not written by a lit-gan GANModule")
        self.generator_step = clock["generator_step"]
        self.discriminator_step = clock["discriminator_step"]
        # Restored at the first training batch: starting the data loader draws from the global RNG.
        self.pending_rng_states = checkpoint.get("rng_states")
        self.pending_rank_rng_states = checkpoint.get("rank_rng_states")

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self.pending_rng_states is not None:
            set_rng_states(self.pending_rng_states)
            self.pending_rng_states = None
            self.restore_rank_rng_state()

    def restore_rank_rng_state(self) -> None:
        """Under DDP, each rank's own saved stream (rank 0's is the one just restored with the rest)."""
        rank, saved = self.trainer.global_rank, self.pending_rank_rng_states
        self.pending_rank_rng_states = None
        saved_by = len(saved) if saved is not None else 1
        if saved_by != self.trainer.world_size:
            rank_zero_warn(f"Resumed in {self.trainer.world_size} DDP process(es) from a checkpoint of "
                           f"{saved_by}: the run goes on, but not as the uninterrupted run would (each process's "
                           "random stream and its share of the data depend on their number)")
        if rank == 0:
            return
        if saved_by == self.trainer.world_size:
            set_rank_rng_state(saved[rank])
        else:  # saved by another number of processes: a stream of this rank's own from rank 0's state
            torch.manual_seed(rank_seed(int(torch.randint(2**62, ())), rank))
