"""LightningDataModules; nothing here knows about models."""

from lit_gan.data.toy import GaussianMixture, GridGaussians, RingGaussians

__all__ = ["GaussianMixture", "GridGaussians", "RingGaussians"]
