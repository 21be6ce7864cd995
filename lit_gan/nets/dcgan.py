"""DCGAN generator and discriminator (Radford et al. 2015) for any resolution 4*2^n or 7*2^n."""

from __future__ import annotations

from torch import Tensor, nn

from lit_gan.errors import require
from lit_gan.nets.layers import FeatureDiscriminator, dcgan_init, require_sizes, with_spectral_norm


def stages(resolution: int, key: str) -> tuple[int, int]:
    """``(base, n)`` with ``resolution = base * 2**n`` and base 4 (8, 16, 32, 64 ...) or 7 (14, 28 ...)."""
    for base in (4, 7):
        n, size = 0, base
        while size < resolution:
            size, n = size * 2, n + 1
        if size == resolution and n >= 1:
            return base, n
    require(False, key, resolution, "an image size 4*2^n or 7*2^n with n >= 1 (8, 14, 16, 28, 32, 64, 128 ...)")


class DCGANGenerator(nn.Module):
    """Project z to ``base x base`` features, then ``n`` stride-2 transposed convolutions up to ``resolution``.

    Batch norm and ReLU after every layer but the last, which has tanh
    (Radford et al. 2015, Sec. 3); weights initialised as in the paper
    (:func:`dcgan_init`). Channels halve at each upsampling, from
    ``width * 2^(n-1)`` down to ``width``, then ``channels`` image planes.
    """

    def __init__(self, latent_dim: int = 100, resolution: int = 32, channels: int = 3, width: int = 64,
                 batch_norm: bool = True):
        super().__init__()
        require_sizes("DCGANGenerator", latent_dim=latent_dim, channels=channels, width=width)
        base, n = stages(resolution, "DCGANGenerator.resolution")
        self.latent_dim = latent_dim
        self.output_shape = (channels, resolution, resolution)
        features = width * 2 ** (n - 1)
        norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
        self.project = nn.Sequential(
            nn.Linear(latent_dim, features * base * base, bias=not batch_norm),
            nn.Unflatten(1, (features, base, base)), norm(features), nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(features, features // 2, 4, 2, 1, bias=not batch_norm),
                       norm(features // 2), nn.ReLU()]
            features //= 2
        layers += [nn.ConvTranspose2d(features, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.project(z))


class DCGANDiscriminator(FeatureDiscriminator):
    """``n`` stride-2 convolutions with LeakyReLU(0.2), then one linear output.

    Channels double from ``width``. Batch norm (not on the first layer, as in
    DCGAN) is off by default: WGAN-GP's penalty is per-sample and batch norm
    couples samples (Gulrajani et al. 2017, Sec. 4); ``spectral_norm`` puts
    spectral normalisation (Miyato et al. 2018) on every layer; weights from N(0, 0.02). (This is a DCGAN
    discriminator with spectral norm, not SNGAN's 7-layer "standard CNN".)
    """

    def __init__(self, resolution: int = 32, channels: int = 3, width: int = 64, batch_norm: bool = False,
                 spectral_norm: bool = False):
        super().__init__()
        require_sizes("DCGANDiscriminator", channels=channels, width=width)
        base, n = stages(resolution, "DCGANDiscriminator.resolution")
        self.input_shape = (channels, resolution, resolution)
        layers: list[nn.Module] = []
        features_in, features = channels, width
        for stage in range(n):
            layers.append(nn.Conv2d(features_in, features, 4, 2, 1))
            if batch_norm and stage > 0:
                layers.append(nn.BatchNorm2d(features))
            layers.append(nn.LeakyReLU(0.2))
            features_in, features = features, features * 2
        layers.append(nn.Flatten())
        self.body = nn.Sequential(*layers)
        self.feature_dim = features_in * base * base
        self.head = nn.Linear(self.feature_dim, 1)
        dcgan_init(self)
        if spectral_norm:
            with_spectral_norm(self)

    def init_head(self, head: nn.Linear) -> None:
        dcgan_init(head)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)
