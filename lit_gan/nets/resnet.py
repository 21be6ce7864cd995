"""SNGAN's ResNet generator and discriminator (Miyato et al. 2018, Appendix B, Table 4)."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from lit_gan.errors import require
from lit_gan.nets.dcgan import stages
from lit_gan.nets.layers import FeatureDiscriminator, require_sizes, sngan_init, with_spectral_norm


def resnet_stages(resolution: int, key: str) -> int:
    """``n`` with ``resolution = 4 * 2**n``: the ResNets start from (or pool down to) 4x4 / 8x8 grids."""
    base, n = stages(resolution, key)
    require(base == 4, key, resolution, "an image size 4*2^n with n >= 1 (8, 16, 32, 64, 128 ...)")
    return n


class UpBlock(nn.Module):
    """BN-ReLU-upsample-conv3-BN-ReLU-conv3, plus an upsampled 1x1 shortcut."""

    def __init__(self, channels: int):
        super().__init__()
        self.residual = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Upsample(scale_factor=2),
            nn.Conv2d(channels, channels, 3, 1, 1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1),
        )
        self.shortcut = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)


class DownBlock(nn.Module):
    """(ReLU)-conv3-ReLU-conv3-(avgpool), plus a 1x1 (+ avgpool) shortcut; ``first`` skips the leading ReLU."""

    def __init__(self, channels_in: int, channels: int, downsample: bool, first: bool = False):
        super().__init__()
        pool = [nn.AvgPool2d(2)] if downsample else []
        self.residual = nn.Sequential(
            *([] if first else [nn.ReLU()]),
            nn.Conv2d(channels_in, channels, 3, 1, 1), nn.ReLU(), nn.Conv2d(channels, channels, 3, 1, 1), *pool,
        )
        if first:
            self.shortcut = nn.Sequential(*pool, nn.Conv2d(channels_in, channels, 1))
        elif downsample or channels_in != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(channels_in, channels, 1), *pool)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)


class ResNetGenerator(nn.Module):
    """z -> linear to 4x4 -> ``n`` up-blocks -> BN-ReLU-conv3-tanh (256 channels and 32 px in the paper);
    weights initialised as SNGAN's code does (:func:`~lit_gan.nets.layers.sngan_init`)."""

    def __init__(self, latent_dim: int = 128, resolution: int = 32, channels: int = 3, width: int = 256):
        super().__init__()
        require_sizes("ResNetGenerator", latent_dim=latent_dim, channels=channels, width=width)
        n = resnet_stages(resolution, "ResNetGenerator.resolution")
        self.latent_dim = latent_dim
        self.output_shape = (channels, resolution, resolution)
        self.project = nn.Sequential(nn.Linear(latent_dim, width * 16), nn.Unflatten(1, (width, 4, 4)))
        self.blocks = nn.Sequential(*[UpBlock(width) for _ in range(n)])
        self.out = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, channels, 3, 1, 1), nn.Tanh())
        sngan_init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.blocks(self.project(z)))


class ResNetDiscriminator(FeatureDiscriminator):
    """Down-blocks to 8x8 (first one optimised), two more blocks, ReLU, global pooling, linear.

    Spectral norm on every layer by default, as in SNGAN; weights initialised as SNGAN's code does.
    ``pooling``: ``sum`` over the 8x8 positions as SNGAN's code, or ``mean`` as WGAN-GP's
    ``gan_cifar_resnet.py`` (and mimicry's WGAN-GP), whose features are then 64 times smaller.
    """

    def __init__(self, resolution: int = 32, channels: int = 3, width: int = 128, spectral_norm: bool = True,
                 pooling: Literal["sum", "mean"] = "sum"):
        super().__init__()
        require_sizes("ResNetDiscriminator", channels=channels, width=width)
        require(pooling in ("sum", "mean"), "ResNetDiscriminator.pooling", pooling, "'sum' or 'mean'")
        self.pooling = pooling
        n = resnet_stages(resolution, "ResNetDiscriminator.resolution")
        self.input_shape = (channels, resolution, resolution)
        downs = max(n - 1, 1)  # 32 px: two downsampling blocks to 8x8, as in the paper
        blocks = [DownBlock(channels, width, downsample=True, first=True)]
        blocks += [DownBlock(width, width, downsample=True) for _ in range(downs - 1)]
        blocks += [DownBlock(width, width, downsample=False) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = width
        self.head = nn.Linear(width, 1)
        sngan_init(self)
        if spectral_norm:
            with_spectral_norm(self)

    def init_head(self, head: nn.Linear) -> None:
        sngan_init(head)

    def features(self, x: Tensor) -> Tensor:
        h = F.relu(self.blocks(x))
        return h.sum(dim=(2, 3)) if self.pooling == "sum" else h.mean(dim=(2, 3))
