"""Building blocks shared by the networks."""

from __future__ import annotations

import math

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
    require(name in ACTIVATIONS, "MLPDiscriminator.activation", name, f"one of {sorted([*ACTIVATIONS, 'maxout'])}")
    return ACTIVATIONS[name]()


def require_sizes(owner: str, **sizes: int) -> None:
    """Refuse a network size (``latent_dim``, ``channels``, ``width``) below 1, naming ``owner.key``."""
    for key, value in sizes.items():
        require(isinstance(value, int) and value >= 1, f"{owner}.{key}", value, "an integer >= 1")


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

    def init_head(self, head: nn.Linear) -> None:
        """Initialise a new head (a minibatch layer's, wider than this one's) as this network initialises its
        own: here PyTorch's default, as an MLP's."""


def with_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every linear and conv layer of ``module``."""
    for child in list(module.modules()):
        if isinstance(child, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            spectral_norm(child)
    return module


def dcgan_init(module: nn.Module) -> nn.Module:
    """DCGAN's initialisation (Radford et al. 2015, Sec. 4): every conv and linear weight from N(0, 0.02),
    batch-norm scales from N(1, 0.02) (as PyTorch's DCGAN example), biases 0. Call before spectral norm."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
        else:
            continue
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    return module


def sngan_init(module: nn.Module) -> nn.Module:
    """SNGAN's ResNet initialisation (Miyato et al. 2018, their released code): Glorot-uniform weights, with
    gain sqrt(2) for the 3x3 convolutions inside residual branches and 1 elsewhere (1x1 shortcuts, the
    linear layers, G's output convolution), biases 0. Call before spectral norm."""
    residual = {id(layer) for branch in module.modules() if hasattr(branch, "residual")
                for layer in branch.residual.modules()}
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(layer.weight, math.sqrt(2) if id(layer) in residual else 1.0)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module
