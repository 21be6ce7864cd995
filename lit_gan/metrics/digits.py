"""A digit classifier trained on the shipped digits, and the metrics built on it.

The classifier plays the role Inception plays for natural images and the
MNIST classifier plays in PacGAN's Stacked MNIST experiments: it labels each
generated digit (mode counting) and embeds it (a domain Fréchet distance,
computed by torchmetrics' FID code on the classifier's features).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance

from lit_gan.errors import require
from lit_gan.metrics.modes import kl_to_uniform

SHIPPED_CLASSIFIER = Path(__file__).with_name("digit_classifier.pt")
TRAINING_THREADS = 2  # a thread count changes how sums are split, hence their rounding and the trained weights
FEATURES = 128


def cache_directory() -> Path:
    """``$LIT_GAN_CACHE`` or ``~/.cache/lit_gan``: where real-data statistics and folder scans live."""
    return Path(os.environ.get("LIT_GAN_CACHE", Path.home() / ".cache" / "lit_gan"))


class DigitClassifier(nn.Module):
    """A small CNN for one-channel digits in [-1, 1]; any input size is resized to the native 8x8."""

    num_features = FEATURES  # read by torchmetrics when this module is its feature extractor

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 4 * 4, FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, 10)

    def features(self, x: Tensor) -> Tensor:
        x = x.float()
        if x.shape[-1] != 8 or x.shape[-2] != 8:
            x = F.interpolate(x, size=(8, 8), mode="area")
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_digit_classifier(seed: int = 0, epochs: int = 15) -> tuple[DigitClassifier, float]:
    """Train on 85% of the digits; return the model and its accuracy on the held-out 15%.

    The recipe of the shipped classifier (``scripts/train_digit_classifier.py``). In
    ``TRAINING_THREADS`` threads whatever the machine's cores, drawing from a forked CPU stream only:
    the caller's random numbers, on every device, are as they were.
    """
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(TRAINING_THREADS)
        try:
            return _train_digit_classifier(seed, epochs)
        finally:
            torch.set_num_threads(threads)


def _train_digit_classifier(seed: int, epochs: int) -> tuple[DigitClassifier, float]:
    from lit_gan.data.digits import load_digits_tensors, split

    images, labels = load_digits_tensors()
    train, held_out = split(len(images), 0.15, seed)
    generator = torch.Generator().manual_seed(seed)
    torch.default_generator.manual_seed(seed)  # the CPU's alone (torch.manual_seed reseeds every GPU too)
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for batch in train[torch.randperm(len(train), generator=generator)].split(64):
            # small random shifts make the classifier robust to a generator's imperfect centring
            x = torch.roll(images[batch], shifts=tuple(torch.randint(-1, 2, (2,), generator=generator).tolist()),
                           dims=(2, 3))
            loss = F.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[held_out]).argmax(1) == labels[held_out]).float().mean().item()
    return model, accuracy


def load_digit_classifier(path: Path = SHIPPED_CLASSIFIER) -> DigitClassifier:
    """The classifier shipped with lit-gan: every machine scores digits with the same network (one
    trained on each machine would differ with its cores and CPU, and so would the scores)."""
    if not path.is_file():
        raise FileNotFoundError(f"digit classifier {path} not found: reinstall lit-gan, or write it again with "
                                f"python scripts/train_digit_classifier.py --out {path} (on another CPU it may come "
                                "out slightly different: the script says)")
    model = DigitClassifier()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    return model.eval().requires_grad_(False)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 (12 hex digits) of a network's weights: equal digests, the same network to the bit."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode() + tensor.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


class _ChannelFeatures(nn.Module):
    """Classifier features of each channel, concatenated (one channel: 128 features; stacked RGB: 384)."""

    def __init__(self, classifier: DigitClassifier, channels: int):
        super().__init__()
        self.classifier, self.channels = classifier, channels
        self.num_features = FEATURES * channels

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        # (b, num_features), not (b, -1): a DDP rank's share of fewer samples than ranks is empty
        return self.classifier.features(x.reshape(b * self.channels, 1, *x.shape[-2:])).reshape(b, self.num_features)


def check_frechet_sample_count(num_samples: int) -> None:
    """A covariance needs 2 samples: refuse fewer before training, not at the first evaluation."""
    require(num_samples >= 2, "evaluation.num_samples", num_samples,
            "at least 2 samples (the Fréchet distance needs their covariance)")


def first_copy(gathered: Tensor) -> Tensor:
    """A state every process holds alike, synchronised: one copy (a sum would count it once per process)."""
    return gathered[0]


def frechet_distance_metric(classifier: DigitClassifier, real: Tensor) -> FrechetInceptionDistance:
    """torchmetrics' FID on classifier features, with the real statistics accumulated once."""
    metric = FrechetInceptionDistance(feature=_ChannelFeatures(classifier, real.shape[1]), reset_real_features=False)
    # Every DDP process fills the same reference statistics; torchmetrics sums them over processes, which
    # makes the covariance W(n-1)/(Wn-1) of the real one. Kept once instead (the generated ones still sum).
    for name in ("real_features_sum", "real_features_cov_sum", "real_features_num_samples"):
        metric.add_state(name, getattr(metric, name).clone(), dist_reduce_fx=first_copy)  # still empty
    for chunk in real.split(500):
        metric.update(chunk, real=True)
    return metric


class DigitFrechetDistance(Metric):
    """Fréchet distance between generated and real digits in the digit classifier's feature space."""

    full_state_update = False
    goals = {"frechet_distance": "minimize"}  # keys of compute()

    def __init__(self, real: Tensor, **kwargs):
        super().__init__(**kwargs)
        self.frechet = frechet_distance_metric(load_digit_classifier(), real)

    def update(self, samples: Tensor) -> None:
        self.frechet.update(samples, real=False)

    check_sample_count = staticmethod(check_frechet_sample_count)

    def compute(self) -> dict[str, Tensor]:
        return {"frechet_distance": self.frechet.compute()}

    def reset(self) -> None:
        super().reset()
        self.frechet.reset()  # keeps the real statistics


class StackedDigitModes(Metric):
    """Modes (distinct class triples), KL(p_gen || uniform) over the 1000 triples, and a Fréchet distance.

    As in PacGAN Table 2 for Stacked MNIST: each channel of a sample is
    classified, the triple of labels is its mode.
    """

    full_state_update = False
    goals = {"modes": "maximize", "reverse_kl": "minimize", "frechet_distance": "minimize"}  # keys of compute()

    def __init__(self, reference: Dataset, **kwargs):
        super().__init__(**kwargs)
        self.classifier = load_digit_classifier()
        real = torch.stack([reference[i][0] for i in range(len(reference))])
        self.frechet = frechet_distance_metric(self.classifier, real)
        self.add_state("counts", torch.zeros(1000, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        b = samples.shape[0]
        digits = self.classifier(samples.reshape(b * 3, 1, *samples.shape[-2:])).argmax(1).reshape(b, 3)
        modes = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]
        self.counts += torch.bincount(modes, minlength=1000)
        self.frechet.update(samples, real=False)

    check_sample_count = staticmethod(check_frechet_sample_count)

    def compute(self) -> dict[str, Tensor]:
        return {"modes": (self.counts > 0).sum().float(), "reverse_kl": kl_to_uniform(self.counts),
                "frechet_distance": self.frechet.compute()}

    def reset(self) -> None:
        super().reset()
        self.frechet.reset()
