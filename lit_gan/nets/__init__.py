"""Plain ``nn.Module`` networks; nothing here knows about Lightning."""

from lit_gan.nets.layers import Maxout, with_spectral_norm
from lit_gan.nets.mlp import MLPDiscriminator, MLPGenerator

__all__ = ["MLPDiscriminator", "MLPGenerator", "Maxout", "with_spectral_norm"]
