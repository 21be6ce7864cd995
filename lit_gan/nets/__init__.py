"""Plain ``nn.Module`` networks; nothing here knows about Lightning."""

from lit_gan.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from lit_gan.nets.layers import FeatureDiscriminator, Maxout, with_spectral_norm
from lit_gan.nets.minibatch import MinibatchDiscrimination, MinibatchStdDev, Packed
from lit_gan.nets.mlp import MLPDiscriminator, MLPGenerator
from lit_gan.nets.resnet import ResNetDiscriminator, ResNetGenerator

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "FeatureDiscriminator",
    "MLPDiscriminator",
    "MLPGenerator",
    "Maxout",
    "MinibatchDiscrimination",
    "MinibatchStdDev",
    "Packed",
    "ResNetDiscriminator",
    "ResNetGenerator",
    "with_spectral_norm",
]
