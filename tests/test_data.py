"""Toy mixtures: PacGAN's geometry, seeded streams."""

from __future__ import annotations

import itertools

import pytest
import torch

from lit_gan.data import GridGaussians, RingGaussians


def test_ring_defaults_are_pacgans():
    ring = RingGaussians()
    assert ring.centers.shape == (8, 2)
    assert torch.allclose(ring.centers.norm(dim=1), torch.ones(8))
    assert ring.std == 0.01 and ring.batch_size == 100


def test_grid_defaults_are_pacgans():
    grid = GridGaussians()
    expected = {(x, y) for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)}
    assert {tuple(c) for c in grid.centers.round().int().tolist()} == expected
    assert grid.std == 0.05


def first_batches(datamodule, n=3):
    return list(itertools.islice(iter(datamodule.train_dataloader()), n))


def test_streams_are_seeded():
    a, b, c = first_batches(GridGaussians(seed=5)), first_batches(GridGaussians(seed=5)), first_batches(GridGaussians(seed=6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (100, 2)


@pytest.mark.parametrize("make, key", [
    (lambda: RingGaussians(std=0), "data.std"), (lambda: GridGaussians(batch_size=0), "data.batch_size"),
    (lambda: RingGaussians(num_modes=1), "data.num_modes"),
])
def test_bad_settings_name_the_key(make, key):
    with pytest.raises(ValueError, match=key):
        make()
