"""One LightningModule per GAN objective; all share :class:`GANModule`'s schedule."""

from lit_gan.objectives.base import GANModule, optimizer_steps
from lit_gan.objectives.classic import DRAGAN, LSGAN, MinimaxGAN, NonSaturatingGAN
from lit_gan.objectives.hinge import HingeGAN
from lit_gan.objectives.wasserstein import WGAN, WGANGP, Wasserstein

__all__ = [
    "DRAGAN",
    "GANModule",
    "HingeGAN",
    "LSGAN",
    "MinimaxGAN",
    "NonSaturatingGAN",
    "WGAN",
    "WGANGP",
    "Wasserstein",
    "optimizer_steps",
]
