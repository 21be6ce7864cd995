"""The hinge objective of SNGAN, SAGAN and BigGAN."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lit_gan.objectives.base import GANModule


class HingeGAN(GANModule):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018, Eq. 16-17).

    D minimises ``E relu(1 - D(x)) + E relu(1 + D(G(z)))``; G minimises
    ``-E D(G(z))``. Pair it with a spectrally normalised D
    (``spectral_norm: true``) as SNGAN and BigGAN do.
    """

    decision_threshold = 0.0  # the hinge's margins are +1 (real) and -1 (fake)

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()
