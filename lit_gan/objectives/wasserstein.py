"""Wasserstein GANs: a critic estimates the earth-mover distance, G descends it."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_gan.errors import require
from lit_gan.objectives.base import GANModule, is_finite_number
from lit_gan.penalties import GradientPenalty


class Wasserstein(GANModule):
    """Kantorovich-Rubinstein dual (Arjovsky et al. 2017, Eq. 3).

    The critic maximises ``E D(x) - E D(G(z))`` (the Wasserstein estimate,
    logged as ``wasserstein_estimate``); G minimises ``-E D(G(z))``. The
    critic must be kept near 1-Lipschitz: :class:`WGAN` clips its weights,
    :class:`WGANGP` penalises its gradient.
    """

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return fake_logits.mean() - real_logits.mean()

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()

    def discriminator_metrics(self, real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
        return {"wasserstein_estimate": real_logits.mean() - fake_logits.mean()}


class WGAN(Wasserstein):
    """WGAN with weight clipping (Arjovsky et al. 2017, Algorithm 1).

    After every critic step each critic weight is clipped to
    ``[-clip_value, clip_value]``. The defaults are the paper's: c = 0.01,
    ``n_critic = 5``, learning rate 5e-5 without momentum (it warns against
    momentum). Adam with ``betas = [0, 0.999]`` stands in for RMSProp: no momentum, but its squared-gradient
    average spans ~1000 steps where the authors' RMSProp (alpha 0.99) spans ~100, and it is bias-corrected.
    """

    def __init__(self, *args, clip_value: float = 0.01, lr_d: float = 5e-5, lr_g: float = 5e-5,
                 betas_d: tuple[float, float] = (0.0, 0.999), betas_g: tuple[float, float] = (0.0, 0.999),
                 n_critic: int = 5, **kwargs):
        super().__init__(*args, lr_d=lr_d, lr_g=lr_g, betas_d=betas_d, betas_g=betas_g, n_critic=n_critic, **kwargs)
        require(clip_value > 0, "model.clip_value", clip_value, "a number > 0")
        require(not self.hparams.unrolled_steps, "model.unrolled_steps", self.hparams.unrolled_steps,
                "0 with weight clipping (the look-ahead updates do not clip)")
        self.clip_value = clip_value

    @torch.no_grad()
    def after_discriminator_step(self) -> None:
        for parameter in self.discriminator.parameters():
            parameter.clamp_(-self.clip_value, self.clip_value)


class WGANGP(Wasserstein):
    """WGAN-GP (Gulrajani et al. 2017, Algorithm 1): the Wasserstein loss plus a gradient penalty.

    ``gradient_penalty_weight`` is lambda of Eq. 3. The defaults are the
    paper's: lambda = 10, ``n_critic = 5``, Adam ``lr = 1e-4``, ``betas = [0, 0.9]``.
    """

    def __init__(self, *args, gradient_penalty_weight: float = 10.0, lr_d: float = 1e-4, lr_g: float = 1e-4,
                 betas_d: tuple[float, float] = (0.0, 0.9), betas_g: tuple[float, float] = (0.0, 0.9),
                 n_critic: int = 5, **kwargs):
        require(is_finite_number(gradient_penalty_weight) and gradient_penalty_weight >= 0,
                "model.gradient_penalty_weight", gradient_penalty_weight, "a number >= 0")
        super().__init__(*args, lr_d=lr_d, lr_g=lr_g, betas_d=betas_d, betas_g=betas_g, n_critic=n_critic, **kwargs)
        self.add_own_penalty(GradientPenalty(weight=gradient_penalty_weight))
