"""Shipped digits, stacked digits, the digit classifier and the metrics built on it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import TensorDataset

from lit_gan.data import Digits, StackedDigits
from lit_gan.data.digits import EpochShuffle, StackedDigitsDataset, load_digits_tensors
from lit_gan.metrics.digits import load_digit_classifier, train_digit_classifier, weights_digest


def test_digits_are_scaled_to_minus_one_one_and_resized():
    images, labels = load_digits_tensors()
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert images.min() == -1.0 and images.max() == 1.0  # pixel values 0..16 map onto [-1, 1]
    resized, _ = load_digits_tensors(16)
    assert resized.shape == (1797, 1, 16, 16) and -1 <= resized.min() < resized.max() <= 1
    assert Digits(resolution=16).sample_shape == (1, 16, 16)


def test_stacked_digits_stack_three_digits_whose_labels_are_the_mode():
    images, labels = load_digits_tensors()
    dataset = StackedDigitsDataset(images, labels, size=10, seed=0)
    image, triple = dataset[3]
    assert image.shape == (3, 8, 8) and triple.shape == (3,)
    for channel in range(3):
        matches = [i for i in range(len(images)) if torch.equal(images[i, 0], image[channel])]
        assert any(labels[i] == triple[channel] for i in matches)


def test_the_shipped_classifier_is_accurate_on_held_out_digits_and_unchanged():
    """The published digit numbers were scored with this network: replacing it changes them all."""
    from lit_gan.data.digits import split

    images, labels = load_digits_tensors()
    _, held_out = split(len(images), 0.15, 0)
    classifier = load_digit_classifier()
    with torch.no_grad():
        accuracy = (classifier(images[held_out]).argmax(1) == labels[held_out]).float().mean().item()
    assert accuracy == pytest.approx(262 / 270, abs=1e-6)  # 262 of the 270 held-out digits: 97.04%
    assert weights_digest(classifier) == "29255fe868d5"


def test_training_the_classifier_leaves_every_random_stream_and_the_thread_count_as_they_were(monkeypatch):
    import lit_gan.metrics.digits as digits

    seeded, training_threads = [], []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)  # torch.manual_seed reseeds every GPU
    train = digits._train_digit_classifier
    monkeypatch.setattr(digits, "_train_digit_classifier",
                        lambda *args: training_threads.append(torch.get_num_threads()) or train(*args))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(7)
        seeded.clear()
        state = torch.get_rng_state()
        first, _ = train_digit_classifier(epochs=1)
        second, _ = train_digit_classifier(epochs=1)
        assert torch.equal(torch.get_rng_state(), state) and seeded == []
        assert training_threads == [2, 2] and torch.get_num_threads() == 1  # the recipe's 2, then the caller's
    finally:
        torch.set_num_threads(threads)
    assert weights_digest(first) == weights_digest(second)  # trained the same way both times


def test_a_missing_classifier_file_names_the_way_to_write_it_again(tmp_path):
    with pytest.raises(FileNotFoundError, match="python scripts/train_digit_classifier.py"):
        load_digit_classifier(tmp_path / "digit_classifier.pt")


def all_triples(resolution=8):
    """One stacked image for every one of the 1000 class triples, from real digits."""
    images, labels = load_digits_tensors(resolution)
    classifier = load_digit_classifier()
    with torch.no_grad():
        correct = classifier(images).argmax(1) == labels
    exemplar = [images[(labels == d) & correct][0] for d in range(10)]
    return torch.stack([torch.cat([exemplar[a], exemplar[b], exemplar[c]])
                        for a in range(10) for b in range(10) for c in range(10)])


def test_stacked_mode_count_covers_all_1000_triples():
    metric = StackedDigits().evaluation_metric()
    metric.update(all_triples())
    result = {k: v.item() for k, v in metric.compute().items()}
    assert result["modes"] == 1000
    assert result["reverse_kl"] == pytest.approx(0.0, abs=1e-9)


def test_stacked_mode_count_of_a_single_repeated_triple():
    metric = StackedDigits().evaluation_metric()
    metric.update(all_triples()[123].expand(500, 3, 8, 8))
    result = {k: v.item() for k, v in metric.compute().items()}
    assert result["modes"] == 1
    assert result["reverse_kl"] == pytest.approx(math.log(1000), rel=1e-6)
    assert metric.counts[123] == 500  # the right triple: 1, 2, 3


def test_frechet_distance_is_small_for_real_digits_and_grows_with_a_shift():
    digits = Digits()
    metric = digits.evaluation_metric()
    distances = []
    for shift in (0.0, 0.5, 1.0):
        metric.reset()
        metric.update((digits.images + shift).clamp(-1, 1))
        distances.append(metric.compute()["frechet_distance"].item())
    assert distances[0] == pytest.approx(0.0, abs=1e-2)
    assert distances[0] < distances[1] < distances[2]


def test_batch_larger_than_the_dataset_is_refused():
    with pytest.raises(ValueError, match="data.batch_size=5000 is not valid"):
        Digits(batch_size=5000).train_dataloader()


def test_epoch_shuffle_orders_each_epoch_from_seed_and_epoch_alone():
    dataset = TensorDataset(torch.arange(50))
    sampler = EpochShuffle(dataset, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and list(sampler) == first  # the same epoch, the same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == list(range(50)) and second != first
    fresh = EpochShuffle(dataset, seed=3, skip=20)  # a run resumed 20 samples into epoch 1
    fresh.set_epoch(1)
    assert list(fresh) == second[20:] and list(fresh) == second  # the skip applies once
    assert list(EpochShuffle(dataset, seed=4)) != first


def test_a_batch_larger_than_each_ddp_process_share_is_refused():
    # 1,797 digits over 4 processes: 450 each, so a batch of 500 would leave every rank without a full batch.
    trainer = pl.Trainer(accelerator="cpu", devices=4, strategy="ddp", logger=False, enable_checkpointing=False)
    datamodule = Digits(batch_size=500)
    datamodule.trainer = trainer
    with pytest.raises(ValueError, match="data.batch_size=500 is not valid: expected at most the 450 images each "
                                         "of 4 processes gets of the 1797 of Digits"):
        datamodule.train_dataloader()
    assert len(Digits(batch_size=500).train_dataloader()) == 3  # one process: 1,797 // 500 full batches


def test_every_seed_is_scored_against_one_reference_set():
    # Each data.seed drew its own 2,000 reference stacks (seed + 1): the same samples scored 5.9-8.1 by seed.
    samples = torch.stack([StackedDigits(seed=9).train_dataset()[i][0] for i in range(500)])
    distances = []
    for seed in (0, 3):
        metric = StackedDigits(seed=seed).evaluation_metric()
        metric.update(samples)
        distances.append(metric.compute()["frechet_distance"].item())
    assert distances[0] == distances[1]


def test_no_seed_is_scored_against_its_own_training_stacks():
    # The reference was stream 1: data.seed 1's first 2,000 training stacks, its Fréchet distance partly a
    # distance to what it trained on.
    from lit_gan.data.digits import FRECHET_REFERENCE_SEED, StackedDigitsDataset

    datamodule = StackedDigits()
    reference = StackedDigitsDataset(datamodule.images, datamodule.labels, 2000, FRECHET_REFERENCE_SEED).index
    for seed in range(5):
        training = StackedDigits(seed=seed, size=2000).train_dataset().index
        shared = (training.unsqueeze(1) == reference.unsqueeze(0)).all(-1).any(1).sum().item()
        assert shared < 20, (seed, shared)  # by chance ~2,000 x 2,000 / 1,797^3 = 0.7 stacks


@pytest.mark.parametrize("device, pinned", [("cpu", False), ("cuda", True)])
def test_image_loaders_pin_host_memory_for_a_gpu_alone(device, pinned):
    """A pageable batch's copy to a GPU blocks the host; pinning on a CPU run would only cost memory."""
    datamodule = Digits(batch_size=64)
    datamodule.trainer = SimpleNamespace(world_size=1, global_rank=0,
                                         strategy=SimpleNamespace(root_device=torch.device(device)))
    assert datamodule.train_dataloader().pin_memory is pinned


def test_a_ddp_rank_with_an_empty_share_of_the_noise_scores_nothing_and_the_rest_as_one_process():
    """3 ranks and 2 samples: one rank's share is empty (its features' reshape once failed on 0 elements)."""
    samples = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    metric = StackedDigits(size=300).evaluation_metric()
    metric.update(samples)
    whole = {k: float(v) for k, v in metric.compute().items()}
    metric.reset()
    for share in torch.tensor_split(samples, 3):  # [1], [1], [] as lit_gan.callbacks.evaluation.rank_share makes them
        metric.update(share)
    assert {k: float(v) for k, v in metric.compute().items()} == pytest.approx(whole, rel=1e-6)


@pytest.mark.parametrize("datamodule", [Digits(), StackedDigits(size=300)], ids=["digits", "stacked_digits"])
def test_a_single_sample_for_the_digit_frechet_distance_is_refused_before_training(datamodule):
    metric = datamodule.evaluation_metric()
    with pytest.raises(ValueError, match=r"evaluation.num_samples=1 is not valid: expected at least 2 samples "
                                         r"\(the Fréchet distance needs their covariance\)"):
        metric.check_sample_count(1)  # torchmetrics: "More than one sample is required", at the first evaluation
    metric.check_sample_count(2)
