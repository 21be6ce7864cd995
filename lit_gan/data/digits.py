"""scikit-learn's handwritten digits (shipped with scikit-learn, no download) and their stacked 1000-mode version."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from lit_gan.data.position import ResumableDataModule
from lit_gan.draws import derived_seed
from lit_gan.errors import require
from lit_gan.metrics.digits import DigitFrechetDistance, StackedDigitModes


def load_digits_tensors(resolution: int = 8) -> tuple[Tensor, Tensor]:
    """All 1,797 digits as ``(N, 1, resolution, resolution)`` floats in [-1, 1], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # pixels are 0..16
    if resolution != 8:
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return images.clamp(-1, 1), torch.as_tensor(digits.target)


def split(n: int, held_out: float, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded train / held-out split of ``range(n)``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = n - int(round(held_out * n))
    return order[:cut], order[cut:]


class EpochShuffle(DistributedSampler):
    """A new order of the dataset each epoch, drawn from ``(seed, epoch)`` alone (Lightning calls ``set_epoch``).

    So a resumed run draws the epoch it stopped in again, where a shuffling DataLoader's generator, started
    afresh, would replay the first epoch's order; ``skip`` then leaves out the samples the run had already
    trained on in that epoch (once). Under DDP each of the ``num_replicas`` ranks takes every
    ``num_replicas``-th index of the one order, padded by its first indices to a multiple of the ranks as
    ``DistributedSampler`` pads it, and skips within its own share. A ``DistributedSampler``, so Lightning keeps
    it (its own, put in place of any other sampler, restarted a resumed epoch from its start).
    """

    def __init__(self, data_source: Dataset, seed: int, epoch: int = 0, skip: int = 0, num_replicas: int = 1,
                 rank: int = 0):
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(
            derived_seed(self.seed, self.epoch))).tolist()
        order = (order * math.ceil(self.total_size / len(order)))[:self.total_size]
        share = order[self.rank::self.num_replicas]
        skip, self.skip = self.skip, 0
        yield from share[skip:]


class ImageDataModule(ResumableDataModule):
    """Shared loader settings for the image datamodules: shuffled by epoch, full batches only, resumable."""

    def __init__(self, batch_size: int, num_workers: int, seed: int):
        super().__init__()
        require(batch_size >= 1, "data.batch_size", batch_size, "an integer >= 1")
        require(num_workers >= 0, "data.num_workers", num_workers, "an integer >= 0")
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset()
        processes = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        per_process = math.ceil(len(dataset) / processes)  # each DDP rank's share of an epoch
        share = (f"{per_process} images each of {processes} processes gets of the {len(dataset)}" if processes > 1
                 else f"{len(dataset)} images")
        require(per_process >= self.batch_size, "data.batch_size", self.batch_size,
                f"at most the {share} of {type(self).__name__}")
        batches_per_epoch = per_process // self.batch_size  # (batches_consumed counts this rank's)
        # The resumed epoch from the start: worker processes take indices from the sampler as soon as the
        # loader's iterator exists, before Lightning calls set_epoch.
        epoch, done = divmod(self.batches_consumed, batches_per_epoch)
        sampler = EpochShuffle(dataset, self.seed, epoch=epoch, skip=done * self.batch_size, num_replicas=processes,
                               rank=rank)
        # Full batches only: batch norm and the per-batch losses assume a constant batch size. The loader's
        # own generator: without it each epoch's iterator draws a seed from the global stream, which a run
        # resumed at an epoch's start would draw before its saved random state comes back, and G's noise
        # would shift by one draw. Pinned host memory for a GPU: a pageable batch's copy blocks the host.
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=on_gpu, generator=torch.Generator().manual_seed(self.seed))

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if self.trainer is not None:
            # Lightning warns that a loader without state_dict() cannot resume mid-epoch; this one can.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch",
                                    category=PossibleUserWarning)


class Digits(ImageDataModule):
    """The 1,797 8x8 handwritten digits of scikit-learn, one channel, scaled to [-1, 1].

    ``resolution`` resizes them (bilinear) for networks that need e.g. 16 or 32
    px. Scored by a Fréchet distance on the features of the shipped digit
    classifier (:mod:`lit_gan.metrics.digits`).
    """

    metric_goals = DigitFrechetDistance.goals  # logged as eval/<key>

    def __init__(self, batch_size: int = 64, resolution: int = 8, num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size, num_workers, seed)
        require(resolution >= 8, "data.resolution", resolution, "an image size >= 8")
        self.resolution = resolution
        self.images, self.labels = load_digits_tensors(resolution)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (1, self.resolution, self.resolution)

    def train_dataset(self) -> Dataset:
        return TensorDataset(self.images)

    def evaluation_metric(self):
        return DigitFrechetDistance(self.images)


class StackedDigitsDataset(Dataset):
    """``size`` images, each three digits stacked as colour channels; the triple of labels is its mode."""

    def __init__(self, images: Tensor, labels: Tensor, size: int, seed: int):
        self.images, self.labels = images, labels
        self.index = torch.randint(len(images), (size, 3), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        chosen = self.index[i]
        return self.images[chosen].squeeze(1), self.labels[chosen]


# The 2,000 real stacks every Fréchet distance compares with, drawn from a stream of their own: the training
# stacks of data.seed s are stream s, so a small integer here would be some seed's own training data.
FRECHET_REFERENCE_SEED = derived_seed(1000, 2000)


class StackedDigits(ImageDataModule):
    """Stacked digits: 1000 modes, the offline counterpart of Stacked MNIST (Metz et al. 2017; PacGAN Table 2).

    Each image stacks three random digits as its R, G and B channels, so there
    are 10^3 = 1000 modes. Scored by counting the distinct class triples that
    the digit classifier sees among the samples, KL(p_gen || uniform) over the
    1000 triples, and a Fréchet distance on classifier features to 2,000 real
    stacks, the same for every run.
    """

    metric_goals = StackedDigitModes.goals  # logged as eval/<key>

    def __init__(self, batch_size: int = 64, resolution: int = 8, size: int = 60000, num_workers: int = 0,
                 seed: int = 0):
        super().__init__(batch_size, num_workers, seed)
        require(resolution >= 8, "data.resolution", resolution, "an image size >= 8")
        require(size >= 1, "data.size", size, "an integer >= 1")
        self.resolution, self.size = resolution, size
        self.images, self.labels = load_digits_tensors(resolution)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (3, self.resolution, self.resolution)

    num_modes = 1000

    def train_dataset(self) -> Dataset:
        return StackedDigitsDataset(self.images, self.labels, self.size, self.seed)

    def evaluation_metric(self):
        # One reference for every run, whatever its data.seed, so Fréchet distances compare across seeds and
        # configs (drawn from seed + 1 until 2026-11-28, each seed met its own 2,000 stacks: 5.9-8.1 between
        # real sets; then from stream 1 until 2026-11-29, data.seed 1's own first 2,000 training stacks).
        return StackedDigitModes(StackedDigitsDataset(self.images, self.labels, 2000, FRECHET_REFERENCE_SEED))
