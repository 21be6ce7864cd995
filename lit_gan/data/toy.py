"""2D Gaussian-mixture benchmarks of mode collapse, sampled on the fly."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from lit_gan.data.position import ResumableDataModule
from lit_gan.draws import rank_seed
from lit_gan.errors import require
from lit_gan.metrics.modes import ModeCoverage


class MixtureStream(IterableDataset):
    """An endless stream of batches from an equal-weight mixture of isotropic Gaussians.

    ``skip`` batches are drawn and dropped first, so a resumed run sees exactly
    the batches an uninterrupted one would have (drawing is cheap).
    """

    def __init__(self, centers: Tensor, std: float, batch_size: int, seed: int, skip: int = 0):
        self.centers, self.std, self.batch_size = centers, std, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.skip = skip

    def __iter__(self):
        for _ in range(self.skip):
            sample_mixture(self.centers, self.std, self.batch_size, self.generator)
        while True:
            yield sample_mixture(self.centers, self.std, self.batch_size, self.generator)


def sample_mixture(centers: Tensor, std: float, n: int, generator: torch.Generator | None = None) -> Tensor:
    modes = torch.randint(len(centers), (n,), generator=generator)
    return centers[modes] + std * torch.randn(n, centers.shape[1], generator=generator)


class GaussianMixture(ResumableDataModule):
    """Training batches from a Gaussian mixture, and the mode-coverage metric that scores it.

    Each process draws its own stream, seeded by ``rank_seed(seed, global rank)``
    (:func:`lit_gan.draws.rank_seed`), so runs are reproducible and DDP ranks see different samples.
    """

    metric_goals = ModeCoverage.goals  # logged as eval/<key>

    def __init__(self, centers: Tensor, std: float, batch_size: int, seed: int):
        super().__init__()
        require(std > 0, "data.std", std, "a standard deviation > 0")
        require(batch_size >= 1, "data.batch_size", batch_size, "an integer >= 1")
        self.centers = torch.as_tensor(centers, dtype=torch.float32)
        self.std = std
        self.batch_size = batch_size
        self.seed = seed

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.centers.shape[1],)

    @property
    def num_modes(self) -> int:
        return len(self.centers)

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        seed = rank_seed(self.seed, rank)
        stream = MixtureStream(self.centers, self.std, self.batch_size, seed, skip=self.batches_consumed)
        return DataLoader(stream, batch_size=None)

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """``n`` reference samples from the true distribution."""
        return sample_mixture(self.centers, self.std, n, torch.Generator().manual_seed(seed))

    def evaluation_metric(self) -> ModeCoverage:
        return ModeCoverage(self.centers, self.std)


class RingGaussians(GaussianMixture):
    """``num_modes`` Gaussians evenly spaced on a circle; PacGAN's defaults: 8 modes, radius 1, std 0.01."""

    def __init__(self, num_modes: int = 8, radius: float = 1.0, std: float = 0.01,
                 batch_size: int = 100, seed: int = 0):
        require(num_modes >= 2, "data.num_modes", num_modes, "an integer >= 2")
        require(radius > 0, "data.radius", radius, "a radius > 0 (all modes would sit on one point)")
        angles = torch.arange(num_modes, dtype=torch.float64) * (2 * math.pi / num_modes)
        centers = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
        super().__init__(centers, std, batch_size, seed)


class GridGaussians(GaussianMixture):
    """A ``grid_size`` x ``grid_size`` grid of Gaussians; PacGAN's defaults: means {-4,-2,0,2,4}^2, std 0.05."""

    def __init__(self, grid_size: int = 5, spacing: float = 2.0, std: float = 0.05,
                 batch_size: int = 100, seed: int = 0):
        require(grid_size >= 2, "data.grid_size", grid_size, "an integer >= 2")
        require(spacing > 0, "data.spacing", spacing, "a distance between modes > 0 (all modes would sit on one point)")
        axis = (torch.arange(grid_size, dtype=torch.float64) - (grid_size - 1) / 2) * spacing
        centers = torch.cartesian_prod(axis, axis)
        super().__init__(centers, std, batch_size, seed)
