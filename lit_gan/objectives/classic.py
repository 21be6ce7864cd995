"""The original GAN objective, its non-saturating variant, DRAGAN and LSGAN.

``D`` outputs a logit ``l``; the probability that the input is real is
``sigmoid(l)``, and ``log sigmoid(l) = -softplus(-l)``,
``log(1 - sigmoid(l)) = -softplus(l)`` keep every loss numerically stable.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lit_gan.errors import require
from lit_gan.objectives.base import GANModule, is_finite_number
from lit_gan.penalties import DRAGANPenalty


class MinimaxGAN(GANModule):
    """The minimax GAN (Goodfellow et al. 2014, Eq. 1).

    D maximises ``E log D(x) + E log(1 - D(G(z)))``; G minimises
    ``E log(1 - D(G(z)))``, whose gradient vanishes when D rejects G's samples.

    ``real_label < 1`` is one-sided label smoothing (Salimans et al. 2016,
    Sec. 3.4): D's target for real samples becomes ``real_label``, fake
    targets stay 0.
    """

    decision_threshold = 0.0  # logit 0 is D(x) = 1/2

    def __init__(self, *args, real_label: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        require(0 < real_label <= 1, "model.real_label", real_label, "a number in (0, 1]")
        self.real_label = real_label

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        a = self.real_label
        real_term = F.softplus(-real_logits)
        if a < 1:  # a tiny MLP's step is mostly per-op overhead: no smoothing term when it is 0
            real_term = a * real_term + (1 - a) * F.softplus(real_logits)
        return real_term.mean() + F.softplus(fake_logits).mean()

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        return -F.softplus(fake_logits).mean()


class NonSaturatingGAN(MinimaxGAN):
    """The non-saturating GAN (Goodfellow et al. 2014, Sec. 3): G maximises ``E log D(G(z))``."""

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        return F.softplus(-fake_logits).mean()


class DRAGAN(NonSaturatingGAN):
    """DRAGAN (Kodali et al. 2017): the non-saturating GAN plus a local gradient penalty around the data.

    ``dragan_weight`` is lambda of the paper's Eq. 1 (10 in its experiments);
    see :class:`lit_gan.penalties.DRAGANPenalty`. The defaults are the authors' code's: lambda = 10,
    Adam ``lr = 1e-4``, ``betas = [0.5, 0.9]``.
    """

    def __init__(self, *args, dragan_weight: float = 10.0, lr_d: float = 1e-4, lr_g: float = 1e-4,
                 betas_d: tuple[float, float] = (0.5, 0.9), betas_g: tuple[float, float] = (0.5, 0.9), **kwargs):
        require(is_finite_number(dragan_weight) and dragan_weight >= 0, "model.dragan_weight", dragan_weight,
                "a number >= 0")
        super().__init__(*args, lr_d=lr_d, lr_g=lr_g, betas_d=betas_d, betas_g=betas_g, **kwargs)
        self.add_own_penalty(DRAGANPenalty(weight=dragan_weight))


class LSGAN(GANModule):
    """Least-squares GAN (Mao et al. 2017, Eq. 2).

    D minimises ``1/2 E (D(x) - b)^2 + 1/2 E (D(G(z)) - a)^2`` and G minimises
    ``1/2 E (D(G(z)) - c)^2``; the defaults ``a=0, b=c=1`` are the paper's
    0-1 coding.
    """

    def __init__(self, *args, fake_target: float = 0.0, real_target: float = 1.0,
                 generator_target: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        require(fake_target != real_target, "model.fake_target/real_target", (fake_target, real_target),
                "two different numbers")
        self.fake_target = fake_target
        self.real_target = real_target
        self.generator_target = generator_target

    @property
    def decision_threshold(self) -> float | None:
        """Halfway between the two targets (when real's target is the larger one)."""
        if self.real_target > self.fake_target:
            return (self.real_target + self.fake_target) / 2
        return None

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return 0.5 * ((real_logits - self.real_target) ** 2).mean() + 0.5 * (
            (fake_logits - self.fake_target) ** 2
        ).mean()

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        return 0.5 * ((fake_logits - self.generator_target) ** 2).mean()
