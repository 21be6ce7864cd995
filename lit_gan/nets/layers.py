"""Building blocks shared by the networks."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from lit_gan.errors import require


class Maxout(nn.Module):
    """Maxout unit (Goodfellow et al. 2013): the max over ``pieces`` linear maps."""

    def __init__(self, in_features: int, out_features: int, pieces: int):
        super().__init__()
        self.pieces = pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).unflatten(-1, (-1, self.pieces)).amax(-1)


ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "elu": nn.ELU,
    "tanh": nn.Tanh,
}


def make_activation(name: str) -> nn.Module:
    require(name in ACTIVATIONS, "activation", name, f"one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class FeatureDiscriminator(nn.Module):
    """A discriminator as ``head(features(x))``: ``features`` maps a batch to ``(n, feature_dim)``
    vectors and ``head`` is one linear unit.

    The split lets remedies see D's features (feature matching) or insert a
    layer between the two (minibatch discrimination, minibatch stddev).
    """

    head: nn.Module
    feature_dim: int

    def features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(1)


def with_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every linear and conv layer of ``module``."""
    for child in list(module.modules()):
        if isinstance(child, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            spectral_norm(child)
    return module
