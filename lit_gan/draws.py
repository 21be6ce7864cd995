"""Where a training step's random numbers come from: one run's global generator, or one generator per stacked seed."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor


def derived_seed(seed: int, *keys: int) -> int:
    """A seed mixed from ``seed`` and the non-negative integers ``keys`` by NumPy's SeedSequence, the keys as
    its spawn key: distinct ``(seed, *keys)`` give unrelated streams, where sums such as ``seed + rank`` meet
    (rank 1 of seed 0 would replay seed 1), and so would a plain entropy list (``(7, 0)`` pads to ``(7,)``)."""
    return int(np.random.SeedSequence(seed, spawn_key=keys).generate_state(1, np.uint64)[0]) >> 1  # 63 bits


def rank_seed(seed: int, rank: int) -> int:
    """The seed of DDP rank ``rank``'s own random stream in a run seeded ``seed``.

    Rank 0 keeps ``seed``, so a one-process run and rank 0 of a DDP run draw alike; the other ranks get
    :func:`derived_seed` ``(seed, rank)``.
    """
    return seed if rank == 0 else derived_seed(seed, rank)


class Draws:
    """The source of a training step's random tensors.

    ``Draws()`` is one run's: torch's global generator, as ``torch.randn`` uses it. ``Draws(generators)``
    serves K seeds trained as one stack (:class:`lit_gan.stacking.SeedStack`): every tensor gains a leading
    seed dimension, and seed ``k``'s slice is drawn from ``generators[k]``, so each seed gets exactly the
    numbers its own run would have drawn from the global generator in the same state.

    ``shape`` is always one seed's shape; :attr:`seed_dims` (0 or 1) says how many leading dimensions of
    a stacked tensor index seeds.
    """

    def __init__(self, generators: Optional[Sequence[torch.Generator]] = None):
        self.generators = None if generators is None else list(generators)
        self.seed_dims = 0 if generators is None else 1

    def randn(self, shape: Sequence[int], **options) -> Tensor:
        """``torch.randn(shape, **options)`` (``dtype``, ``device``), once per seed when stacked."""
        return self._draw(torch.randn, shape, options)

    def rand(self, shape: Sequence[int], **options) -> Tensor:
        """``torch.rand(shape, **options)``, once per seed when stacked."""
        return self._draw(torch.rand, shape, options)

    def _draw(self, sample, shape, options: dict) -> Tensor:
        if self.generators is None:
            return sample(tuple(shape), **options)
        return torch.stack([sample(tuple(shape), generator=g, **options) for g in self.generators])

    def per_sample(self, x: Tensor) -> tuple[int, ...]:
        """One seed's shape of a draw per sample of ``x`` that broadcasts over ``x``: ``(batch, 1, ...)``."""
        sample = x.shape[self.seed_dims:]
        return (sample[0],) + (1,) * (len(sample) - 1)


GLOBAL = Draws()
