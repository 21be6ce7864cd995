"""Mode coverage on Gaussian-mixture benchmarks (PacGAN, Lin et al. 2018, Sec. 6.1)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class ModeCoverage(Metric):
    """Modes covered, % high-quality samples and reverse KL for a mixture of isotropic Gaussians.

    Each sample belongs to its nearest mode centre. It is *high quality* when
    it lies within ``threshold_stds`` standard deviations (Euclidean) of that
    centre; a mode is *covered* when at least one high-quality sample belongs
    to it. Reverse KL is ``KL(p_gen || uniform)`` of the histogram of samples
    over their nearest modes (0 when G hits every mode equally, ``log K`` when
    it collapses to one). These are the columns of PacGAN's Table 1.

    States are sums, so the metric is exact across DDP ranks and batches.
    """

    full_state_update = False
    higher_is_better = None
    goals = {"modes": "maximize", "high_quality_pct": "maximize", "reverse_kl": "minimize"}  # keys of compute()

    def __init__(self, centers: Tensor, std: float, threshold_stds: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        centers = torch.as_tensor(centers, dtype=torch.float32)
        self.register_buffer("centers", centers)
        self.radius = threshold_stds * std
        num_modes = centers.shape[0]
        self.add_state("nearest_counts", torch.zeros(num_modes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("high_quality_counts", torch.zeros(num_modes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        samples = samples.reshape(samples.shape[0], -1).float()
        distances, nearest = torch.cdist(samples, self.centers).min(dim=1)
        num_modes = self.centers.shape[0]
        self.nearest_counts += torch.bincount(nearest, minlength=num_modes)
        self.high_quality_counts += torch.bincount(nearest[distances <= self.radius], minlength=num_modes)

    def compute(self) -> dict[str, Tensor]:
        total = self.nearest_counts.sum()
        p = self.nearest_counts.double() / total
        num_modes = p.numel()
        reverse_kl = torch.where(p > 0, p * torch.log(p * num_modes), torch.zeros_like(p)).sum()
        return {
            "modes": (self.high_quality_counts > 0).sum().float(),
            "high_quality_pct": 100.0 * self.high_quality_counts.sum().float() / total,
            "reverse_kl": reverse_kl.float(),
        }
