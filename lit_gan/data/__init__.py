"""LightningDataModules; nothing here knows about models."""

from lit_gan.data.digits import Digits, StackedDigits
from lit_gan.data.toy import GaussianMixture, GridGaussians, RingGaussians

__all__ = ["Digits", "GaussianMixture", "GridGaussians", "RingGaussians", "StackedDigits"]
