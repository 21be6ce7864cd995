"""The alternating D/G schedule that every objective shares."""

from __future__ import annotations

import contextlib
from typing import Iterator, Literal, Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from lit_gan.errors import ConfigError, require
from lit_gan.penalties import Penalty


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


def _floats(betas) -> tuple[float, float]:
    return tuple(float(b) for b in betas)  # Adam rejects a mix of ints and floats such as (0, 0.9)


class GANModule(pl.LightningModule):
    """Alternating GAN training with manual optimisation.

    Each batch makes one discriminator update; after every ``n_critic``-th one
    the generator makes one update (Goodfellow et al. 2014, Algorithm 1, with
    the critic schedule of Arjovsky et al. 2017, Algorithm 1). D and G have
    their own Adam learning rates and betas, which gives the two time-scale
    update rule (TTUR, Heusel et al. 2017). ``lr_decay: linear`` takes both
    learning rates linearly to 0 over the run.

    A subclass is an objective: it defines :meth:`discriminator_loss` and
    :meth:`generator_loss` on the discriminator's raw outputs, and may
    override :meth:`after_discriminator_step`. Regularisers of D come in as
    ``penalties``.

    The clock is ``generator_step``, the number of generator updates so far:
    training length, evaluation, checkpoints and the logged x-axis all count
    it. Metrics reach the loggers every ``trainer.log_every_n_steps``
    generator iterations.
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
        penalties: Sequence[Penalty] = (),
        lr_decay: Literal["constant", "linear"] = "constant",
    ):
        super().__init__()
        require(hasattr(generator, "latent_dim"), "model.generator", type(generator).__name__,
                "a network with a `latent_dim` attribute (the size of z)")
        for key, lr in (("lr_d", lr_d), ("lr_g", lr_g)):
            require(lr > 0, f"model.{key}", lr, "a learning rate > 0")
        for key, betas in (("betas_d", betas_d), ("betas_g", betas_g)):
            require(len(betas) == 2 and all(0 <= b < 1 for b in betas), f"model.{key}", betas,
                    "two numbers in [0, 1)")
        require(isinstance(n_critic, int) and n_critic >= 1, "model.n_critic", n_critic, "an integer >= 1")
        require(lr_decay in ("constant", "linear"), "model.lr_decay", lr_decay, "'constant' or 'linear'")
        self.save_hyperparameters(ignore=["generator", "discriminator", "penalties"])
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.n_critic = n_critic
        self.penalties = list(penalties)
        self.generator_step = 0
        self.discriminator_step = 0
        self.logged_values: dict[str, float] = {}

    # ----------------------------------------------------------------- objective
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
    def sample_noise(self, batch_size: int) -> Tensor:
        return torch.randn(batch_size, self.generator.latent_dim, device=self.device)

    def forward(self, z: Tensor) -> Tensor:
        return self.generator(z)

    @torch.no_grad()
    def generate(self, z: Tensor, batch_size: int = 1000) -> Tensor:
        """Samples for evaluation: G in eval mode, in chunks, training mode restored after."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            return torch.cat([self.generator(chunk.to(self.device)) for chunk in z.split(batch_size)])
        finally:
            self.generator.train(was_training)

    # ------------------------------------------------------------------ training
    def configure_optimizers(self):
        hp = self.hparams
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr_d, betas=_floats(hp.betas_d))
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr_g, betas=_floats(hp.betas_g))
        if hp.lr_decay == "constant":
            return [opt_d, opt_g]
        # Linear decay to 0 over the run, stepped once per generator iteration (as in WGAN-GP's and
        # SNGAN's code), so both learning rates reach 0 at the last generator iteration.
        total = self.trainer.max_steps // optimizer_steps(1, self.n_critic)
        require(total >= 1, "model.lr_decay", "linear", "a run of known length: set generator_steps")
        schedulers = [LambdaLR(opt, lambda step: max(0.0, 1.0 - step / total)) for opt in (opt_d, opt_g)]
        return [opt_d, opt_g], schedulers

    def training_step(self, batch, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        opt_d, opt_g = self.optimizers()
        # Metrics cost extra kernels, so they are gathered only in iterations that get logged.
        every = self.trainer.log_every_n_steps
        measure = every > 0 and (self.generator_step + 1) % every == 0
        metrics = self.update_discriminator(real, opt_d, measure)
        self.discriminator_step += 1
        if self.discriminator_step % self.n_critic == 0:
            metrics.update(self.update_generator(real, opt_g, measure))
            self.generator_step += 1
            for scheduler in self.lr_schedulers() or []:
                scheduler.step()
            if measure:
                self.log_to_loggers(metrics)

    def update_discriminator(self, real: Tensor, optimizer, measure: bool = True) -> dict[str, Tensor]:
        with torch.no_grad():
            fake = self.generator(self.sample_noise(real.shape[0]))
        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(fake)
        loss = self.discriminator_loss(real_logits, fake_logits)
        penalties = {f"penalty/{p.name}": p(self.discriminator, real, fake) for p in self.penalties}
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss + sum(penalties.values()))
        optimizer.step()
        self.after_discriminator_step()
        if not measure:
            return {}
        real_logits, fake_logits = real_logits.detach(), fake_logits.detach()
        return {
            "loss/discriminator": loss.detach(),
            **{name: value.detach() for name, value in penalties.items()},
            "grad_norm/discriminator": gradient_norm(self.discriminator),
            "discriminator/real": real_logits.mean(),
            "discriminator/fake": fake_logits.mean(),
            **self.discriminator_metrics(real_logits, fake_logits),
        }

    def update_generator(self, real: Tensor, optimizer, measure: bool = True) -> dict[str, Tensor]:
        fake = self.generator(self.sample_noise(real.shape[0]))
        with frozen(self.discriminator):
            loss = self.generator_loss(self.discriminator(fake))
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        if not measure:
            return {}
        return {"loss/generator": loss.detach(), "grad_norm/generator": gradient_norm(self.generator),
                "lr/generator": torch.tensor(optimizer.param_groups[0]["lr"])}

    # ------------------------------------------------------------------- logging
    def log_to_loggers(self, metrics: dict[str, Tensor]) -> None:
        """Send ``metrics`` to every logger at x = generator iterations (one host sync)."""
        values = torch.stack([v.float().to(self.device) for v in metrics.values()]).tolist()
        self.logged_values = dict(zip(metrics, values), generator_step=self.generator_step)
        for logger in self.loggers:
            logger.log_metrics(self.logged_values, step=self.generator_step)

    # --------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gan_clock"] = {
            "generator_step": self.generator_step,
            "discriminator_step": self.discriminator_step,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        clock = checkpoint.get("gan_clock")
        if clock is None:
            raise ConfigError("checkpoint has no 'gan_clock' entry: it was not written by a lit-gan GANModule")
        self.generator_step = clock["generator_step"]
        self.discriminator_step = clock["discriminator_step"]
