"""Mode coverage on constructed samples."""

from __future__ import annotations

import math

import pytest
import torch

from lit_gan.data import GridGaussians, RingGaussians
from lit_gan.cli import main
from lit_gan.metrics import ModeCoverage
from tests.conftest import quiet_args


def scores(datamodule, samples):
    metric = datamodule.evaluation_metric()
    metric.update(samples)
    return {k: v.item() for k, v in metric.compute().items()}


@pytest.mark.parametrize("datamodule", [RingGaussians(), GridGaussians()])
def test_true_distribution_covers_every_mode(datamodule):
    result = scores(datamodule, datamodule.sample(2500, seed=1))
    num_modes = len(datamodule.centers)
    assert result["modes"] == num_modes
    assert result["high_quality_pct"] > 98.0  # 3 sigma in 2D holds 98.9% of the mass
    assert result["reverse_kl"] < 0.02


def test_all_samples_on_one_mode_is_full_collapse():
    grid = GridGaussians()
    samples = grid.centers[7].expand(2500, 2) + 0.01 * torch.randn(2500, 2)
    result = scores(grid, samples)
    assert result["modes"] == 1
    assert result["high_quality_pct"] == pytest.approx(100.0)
    assert result["reverse_kl"] == pytest.approx(math.log(25), rel=1e-6)
    assert result["reverse_kl_hq"] == pytest.approx(math.log(25), rel=1e-6)


def test_off_mode_points_are_not_high_quality_and_cover_nothing():
    ring = RingGaussians()  # std 0.01: the high-quality radius is 0.03
    samples = torch.cat([ring.centers * 0.5, ring.centers + 0.031 * torch.tensor([1.0, 0.0])])
    result = scores(ring, samples)
    assert result["modes"] == 0
    assert result["high_quality_pct"] == 0.0


def test_exact_counts_on_a_hand_made_set():
    ring = RingGaussians(num_modes=4, std=0.1)  # modes at (1,0), (0,1), (-1,0), (0,-1); radius 0.3
    samples = torch.tensor([[1.0, 0.0], [1.2, 0.0], [0.0, 1.25], [0.0, 1.5], [-1.0, 0.05], [0.3, 0.3]])
    result = scores(ring, samples)
    # nearest modes: 0, 0, 1, 1, 2, and (0.3, 0.3) is equidistant from modes 0 and 1 (the first wins)
    assert result["modes"] == 3  # (0,-1) has no sample at all
    assert result["high_quality_pct"] == pytest.approx(100 * 4 / 6)
    p = torch.tensor([3, 2, 1, 0]) / 6
    expected_kl = sum(pi * math.log(pi * 4) for pi in p.tolist() if pi > 0)
    assert result["reverse_kl"] == pytest.approx(expected_kl, rel=1e-5)
    # high quality: (1,0) and (1.2,0) on mode 0, (0,1.25) on 1, (-1,0.05) on 2: p = (1/2, 1/4, 1/4, 0)
    assert result["reverse_kl_hq"] == pytest.approx(0.5 * math.log(2), rel=1e-5)


def test_the_high_quality_kl_is_undefined_without_high_quality_samples():
    ring = RingGaussians()
    result = scores(ring, ring.centers * 0.5)
    assert math.isnan(result["reverse_kl_hq"]) and result["reverse_kl"] == pytest.approx(0.0, abs=1e-6)


def test_updates_accumulate_across_batches():
    grid = GridGaussians()
    samples = grid.sample(1000, seed=3)
    metric = grid.evaluation_metric()
    for chunk in samples.split(100):
        metric.update(chunk)
    assert {k: v.item() for k, v in metric.compute().items()} == scores(grid, samples)


@pytest.mark.parametrize("bad", [{"std": 0.0}, {"std": 0.05, "threshold_stds": -1.0}])
def test_a_radius_that_holds_nothing_is_refused(bad):
    with pytest.raises(ValueError, match=r"ModeCoverage\.(std|threshold_stds)=.* is not valid: expected"):
        ModeCoverage(GridGaussians().centers, **bad)


def test_high_quality_is_exact_far_from_the_origin():
    # Modes on a ring of radius 100 (std 0.01, high quality within 0.03): cdist's matrix-product route, which it
    # takes for more than 25 samples, computed |x|^2 + |c|^2 - 2x.c in float32 and lost 0.03 against 10^4.
    ring = RingGaussians(num_modes=8, radius=100.0, std=0.01)
    modes = torch.arange(2400) % 8  # 300 per mode
    angle = torch.rand(2400, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    offsets = torch.stack([angle.cos(), angle.sin()], dim=1)
    for distance, expected in ((0.029, 100.0), (0.031, 0.0)):
        result = scores(ring, ring.centers[modes] + distance * offsets)
        assert result["high_quality_pct"] == expected
        assert result["reverse_kl"] == pytest.approx(0.0, abs=1e-6)


def test_non_finite_samples_are_refused_not_counted_on_the_first_mode():
    grid = GridGaussians()
    samples = grid.sample(100, seed=0)
    samples[:3, 0] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    with pytest.raises(ValueError, match="3 of 100 samples are not finite"):
        grid.evaluation_metric().update(samples)


def test_a_share_without_samples_adds_nothing():
    # Under DDP with fewer evaluation samples than ranks, a rank's share of the fixed noise is empty.
    grid = GridGaussians()
    samples = grid.sample(10, seed=0)
    metric = grid.evaluation_metric()
    metric.update(samples[:0])
    metric.update(samples)
    assert {k: v.item() for k, v in metric.compute().items()} == scores(grid, samples)


def test_evaluation_scores_with_ieee_float32_and_gives_the_callers_settings_back(tmp_path, monkeypatch):
    """On Ampere and later GPUs cuDNN convolutions default to TF32, which moves Inception's features."""
    seen = []
    update = ModeCoverage.update

    def recording(self, samples):
        seen.append((torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()))
        update(self, samples)

    monkeypatch.setattr(ModeCoverage, "update", recording)
    torch.set_float32_matmul_precision("medium")  # a user's choice for training, which evaluation gives back
    try:
        main(["--config", "configs/ring/nonsaturating.yaml", "--generator_steps=2", "--evaluation.num_samples=50",
              "--evaluation.every_n_generator_steps=2", *quiet_args(tmp_path)])
        assert seen == [(False, "highest")] * 2  # at the start and at iteration 2
        assert (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()) == (True, "medium")
    finally:
        torch.set_float32_matmul_precision("highest")
