"""LightningDataModules; nothing here knows about models."""

from lit_gan.data.digits import Digits, StackedDigits
from lit_gan.data.toy import GaussianMixture, GridGaussians, RingGaussians
from lit_gan.data.vision import ImageFolder, TorchvisionImages

__all__ = ["Digits", "GaussianMixture", "GridGaussians", "ImageFolder", "RingGaussians", "StackedDigits",
           "TorchvisionImages"]
