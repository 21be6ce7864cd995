"""Fully connected generator and discriminator for 2D points and small images."""

from __future__ import annotations

import math
from typing import Literal, Sequence

from torch import Tensor, nn

from lit_gan.errors import require
from lit_gan.nets.layers import FeatureDiscriminator, Maxout, make_activation, with_spectral_norm


class MLPGenerator(nn.Module):
    """``depth`` hidden layers of ``width`` units, ReLU (+ batch norm), then a linear output.

    Defaults follow PacGAN's 2D experiments (Lin et al. 2018, App. D): 4 x 400
    ReLU with batch norm and a 2D latent.
    """

    def __init__(
        self,
        latent_dim: int = 2,
        output_shape: Sequence[int] = (2,),
        width: int = 400,
        depth: int = 4,
        batch_norm: bool = True,
        output_activation: Literal["none", "tanh"] = "none",
    ):
        super().__init__()
        require(latent_dim >= 1, "MLPGenerator.latent_dim", latent_dim, "an integer >= 1")
        require(width >= 1 and depth >= 1, "MLPGenerator.width/depth", (width, depth), "integers >= 1")
        self.latent_dim = latent_dim
        self.output_shape = tuple(output_shape)
        layers: list[nn.Module] = []
        features = latent_dim
        for _ in range(depth):
            layers.append(nn.Linear(features, width, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            features = width
        layers.append(nn.Linear(features, math.prod(self.output_shape)))
        if output_activation == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.output_shape)


class MLPDiscriminator(FeatureDiscriminator):
    """``depth`` hidden layers of ``width`` units and one unbounded output (a logit or critic value).

    ``activation="maxout"`` gives PacGAN's 2D discriminator (3 x 200 maxout, 5
    pieces); ``spectral_norm=True`` normalises every layer (Miyato et al. 2018).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (2,),
        width: int = 200,
        depth: int = 3,
        activation: Literal["relu", "leaky_relu", "elu", "tanh", "maxout"] = "leaky_relu",
        maxout_pieces: int = 5,
        spectral_norm: bool = False,
    ):
        super().__init__()
        require(width >= 1 and depth >= 1, "MLPDiscriminator.width/depth", (width, depth), "integers >= 1")
        require(activation != "maxout" or maxout_pieces >= 1, "MLPDiscriminator.maxout_pieces", maxout_pieces,
                "an integer >= 1")
        self.input_shape = tuple(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        features = math.prod(self.input_shape)
        for _ in range(depth):
            if activation == "maxout":
                layers.append(Maxout(features, width, maxout_pieces))
            else:
                layers += [nn.Linear(features, width), make_activation(activation)]
            features = width
        self.body = nn.Sequential(*layers)
        self.feature_dim = width
        self.head = nn.Linear(width, 1)
        if spectral_norm:
            with_spectral_norm(self)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

