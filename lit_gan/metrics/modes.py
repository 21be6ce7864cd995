"""Mode coverage on Gaussian-mixture benchmarks (PacGAN, Lin et al. 2018, Sec. 6.1)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lit_gan.errors import require


class ModeCoverage(Metric):
    """Modes covered, % high-quality samples and reverse KL for a mixture of isotropic Gaussians.

    Each sample belongs to its nearest mode centre. It is *high quality* when
    it lies within ``threshold_stds`` standard deviations (Euclidean) of that
    centre; a mode is *covered* when at least one high-quality sample belongs
    to it. Two reverse KLs, ``KL(p || uniform)`` of a histogram over the modes
    (0 when G hits every mode equally, ``log K`` when it collapses to one):

    - ``reverse_kl``: of every sample, over its nearest mode;
    - ``reverse_kl_hq``: of the high-quality samples only, as PacGAN's released
      code computes its Table 1 column (``MetricLogger`` in fjxmlzn/PacGAN's
      synthetic experiments: the entropy of the high-quality histogram). NaN
      when no sample is high quality. With few high-quality samples it is
      biased upward (a histogram of N samples over K modes is uneven by
      chance, about (K - 1) / 2N), so compare it with PacGAN's column only
      where most samples are high quality, as theirs were (91-98%).

    The two agree when nearly every sample is high quality. States are sums,
    so the metric is exact across DDP ranks and batches.
    """

    full_state_update = False
    higher_is_better = None
    goals = {"modes": "maximize", "high_quality_pct": "maximize", "reverse_kl": "minimize",  # keys of compute()
             "reverse_kl_hq": "minimize"}

    def __init__(self, centers: Tensor, std: float, threshold_stds: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        require(std > 0, "ModeCoverage.std", std, "a standard deviation > 0")
        require(threshold_stds > 0, "ModeCoverage.threshold_stds", threshold_stds, "a number of standard deviations > 0")
        centers = torch.as_tensor(centers, dtype=torch.float32)
        self.register_buffer("centers", centers)
        self.radius = threshold_stds * std
        num_modes = centers.shape[0]
        self.add_state("nearest_counts", torch.zeros(num_modes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("high_quality_counts", torch.zeros(num_modes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        # On the CPU (a few thousand 2-D points; Apple GPUs have no float64). A DDP share may hold no sample.
        samples = samples.detach().flatten(1).cpu().double()
        bad = int((~torch.isfinite(samples).all(dim=1)).sum())
        if bad:  # a NaN's nearest mode would be the first one: refuse rather than count it there
            raise ValueError(f"ModeCoverage.update: {bad} of {len(samples)} samples are not finite (NaN or inf); "
                             "expected finite samples")
        # Exact differences in float64: cdist's default matrix-product route (|x|^2 + |c|^2 - 2x.c, taken for
        # batches over 25, and in TF32 on GPUs that allow it) loses the small distances the 3-std test reads.
        distances, nearest = torch.cdist(samples, self.centers.cpu().double(),
                                         compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
        num_modes = self.centers.shape[0]
        device = self.nearest_counts.device
        self.nearest_counts += torch.bincount(nearest, minlength=num_modes).to(device)
        self.high_quality_counts += torch.bincount(nearest[distances <= self.radius], minlength=num_modes).to(device)

    def compute(self) -> dict[str, Tensor]:
        total = self.nearest_counts.sum()
        return {
            "modes": (self.high_quality_counts > 0).sum().float(),
            "high_quality_pct": 100.0 * self.high_quality_counts.sum().float() / total,
            "reverse_kl": kl_to_uniform(self.nearest_counts),
            "reverse_kl_hq": kl_to_uniform(self.high_quality_counts),
        }


def kl_to_uniform(counts: Tensor) -> Tensor:
    """``KL(p || uniform)`` of the histogram ``counts`` (``log K - H(p)``); NaN for an empty one."""
    device, counts = counts.device, counts.cpu()  # in float64, which Apple GPUs lack
    total = counts.sum()
    p = counts.double() / total
    kl = torch.where(p > 0, p * torch.log(p * p.numel()), torch.zeros_like(p)).sum()
    return torch.where(total > 0, kl, torch.nan).float().to(device)
