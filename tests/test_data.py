"""Toy mixtures: PacGAN's geometry, seeded streams."""

from __future__ import annotations

import itertools

import pytest
import torch

from lit_gan.data import GridGaussians, RingGaussians
from lit_gan.data.toy import MixtureStream
from lit_gan.draws import rank_seed


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


def test_ddp_ranks_draw_streams_no_other_seed_draws():
    # Rank 0 keeps the run's seed (a one-process run and rank 0 of a DDP run see the same batches); the
    # other ranks' streams meet neither each other nor any seed's rank 0, as ``seed + rank`` did.
    assert rank_seed(5, 0) == 5
    seeds = {rank_seed(seed, rank) for seed in range(50) for rank in range(8)}
    assert len(seeds) == 400
    centers = GridGaussians().centers
    rank1_of_seed0 = next(iter(MixtureStream(centers, 0.05, 100, rank_seed(0, 1))))
    rank0_of_seed1 = next(iter(MixtureStream(centers, 0.05, 100, rank_seed(1, 0))))
    assert not torch.equal(rank1_of_seed0, rank0_of_seed1)


def test_derived_seeds_of_distinct_keys_differ():
    # As a plain entropy list, (7, 0) was padded to (7,), and 3 + 2**32 split into the words (3, 1).
    from lit_gan.draws import derived_seed

    assert derived_seed(7, 0) != derived_seed(7)
    assert derived_seed(3, 1) != derived_seed(3 + 2 ** 32)
    epochs = {derived_seed(seed, epoch) for seed in range(20) for epoch in range(20)}
    assert len(epochs) == 400 and all(0 <= s < 2 ** 63 for s in epochs)


@pytest.mark.parametrize("make, key", [
    (lambda: RingGaussians(std=0), "data.std"), (lambda: GridGaussians(batch_size=0), "data.batch_size"),
    (lambda: RingGaussians(num_modes=1), "data.num_modes"), (lambda: RingGaussians(radius=0), "data.radius"),
    (lambda: GridGaussians(spacing=-2.0), "data.spacing"),
])
def test_bad_settings_name_the_key(make, key):
    with pytest.raises(ValueError, match=key):
        make()
