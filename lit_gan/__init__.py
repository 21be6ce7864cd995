"""lit-gan: GAN training and stability measurement on PyTorch Lightning."""

__version__ = "0.1.0"
