"""Plain ``nn.Module`` networks; nothing here knows about Lightning."""

from lit_gan.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from lit_gan.nets.layers import Maxout, with_spectral_norm
from lit_gan.nets.mlp import MLPDiscriminator, MLPGenerator
from lit_gan.nets.resnet import ResNetDiscriminator, ResNetGenerator

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "MLPDiscriminator",
    "MLPGenerator",
    "Maxout",
    "ResNetDiscriminator",
    "ResNetGenerator",
    "with_spectral_norm",
]
