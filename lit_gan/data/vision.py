"""Real image datasets: MNIST, Fashion-MNIST, CIFAR-10 and CelebA through torchvision, and any folder of images."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset

from lit_gan.data.digits import ImageDataModule
from lit_gan.errors import ConfigError, require
from lit_gan.files import write_atomically
from lit_gan.metrics.fidelity import SCORES, FidelityMetrics, Score, score_switches

# Those Pillow reads; the Netpbm ones (ORL and Yale faces are .pgm) are in torchvision's IMG_EXTENSIONS too.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm")

# name -> (torchvision class, channels, native size, centre crop before resizing)
TORCHVISION = {
    "mnist": ("MNIST", 1, 28, None),
    "fashion_mnist": ("FashionMNIST", 1, 28, None),
    "cifar10": ("CIFAR10", 3, 32, None),
    "celeba": ("CelebA", 3, 64, 140),  # the usual 64 px face crop: centre 140 px of the 178 x 218 images
}


class ToMode:
    """A PIL image in mode ``L`` or ``RGB``, 16-bit and float images scaled down first (``convert`` clips them).

    A class, not a lambda, so the transform pickles for DataLoader workers started by spawn or forkserver.
    """

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, image):
        from PIL import Image

        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            pixels = np.asarray(image, dtype=np.float64)
            if image.mode.startswith("I;16") or image.format == "PPM":
                top = 65535.0  # declared 16-bit (Pillow scales a Netpbm file's maxval above 255 to 65535)
            elif image.mode == "F" and pixels.max() <= 1:
                top = 1.0  # floats in [0, 1]
            else:  # 32-bit integers or floats, depth not declared: the smallest usual full scale that holds them
                top = next((t for t in (255.0, 65535.0) if pixels.max() <= t), pixels.max())
            image = Image.fromarray((pixels.clip(0, top) / top * 255).round().astype(np.uint8), mode="L")
        return image.convert(self.mode)

    def __repr__(self) -> str:
        return f"ToMode({self.mode!r})"


def image_transform(resolution: int, channels: int, crop: Optional[int] = None):
    """PIL image -> float tensor in [-1, 1] with ``channels`` channels, centre-cropped and resized."""
    from torchvision import transforms

    steps = [ToMode("L" if channels == 1 else "RGB")]
    if crop:
        steps.append(transforms.CenterCrop(crop))
    steps += [transforms.Resize(resolution, antialias=True), transforms.CenterCrop(resolution),
              transforms.ToTensor(), transforms.Normalize([0.5] * channels, [0.5] * channels)]
    return transforms.Compose(steps)


class FirstItem(Dataset):
    """Drops the labels of a labelled dataset: a GAN trains on images only."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Tensor:
        return self.dataset[i][0]


class InceptionScoredImages(ImageDataModule):
    """Images scored by FidelityMetrics: ``inception_weights`` (a local copy of torch-fidelity's Inception
    weights; null downloads them) and ``scores``, the subset of fid, kid, isc (Inception Score) and prc
    (precision/recall) to compute at each evaluation."""

    def __init__(self, batch_size: int, num_workers: int, seed: int, inception_weights: Optional[str],
                 scores: tuple[Score, ...]):
        super().__init__(batch_size, num_workers, seed)
        self.inception_weights = inception_weights
        self.score_switches = score_switches(scores)

    @property
    def metric_goals(self) -> dict[str, str]:  # logged as eval/<key>
        return FidelityMetrics.goals_of(self.score_switches)

    def fidelity_metric(self, real: Dataset, cache_name: str) -> FidelityMetrics:
        return FidelityMetrics(real, cache_name=cache_name, weights_path=self.inception_weights, **self.score_switches)


class TorchvisionImages(InceptionScoredImages):
    """MNIST, Fashion-MNIST, CIFAR-10 or CelebA from ``root`` (torchvision's layout), scaled to [-1, 1].

    ``download: true`` fetches missing files; without it (clusters without
    internet) a missing dataset stops the run before training with the
    folder that was searched and how to provide it. ``fid_split`` is the split
    FID/KID/IS/precision-recall compare with (default: the training ``split``);
    ``test`` gives the 10k-test-image protocol of Miyato et al. 2018 and Kurach
    et al. 2019 without training on the test images.
    """

    def __init__(self, name: Literal["mnist", "fashion_mnist", "cifar10", "celeba"] = "cifar10", root: str = "data",
                 split: Literal["train", "test"] = "train", resolution: Optional[int] = None, download: bool = False,
                 batch_size: int = 64, num_workers: int = 4, seed: int = 0,
                 inception_weights: Optional[str] = None, fid_split: Optional[Literal["train", "test"]] = None,
                 scores: tuple[Score, ...] = SCORES):
        super().__init__(batch_size, num_workers, seed, inception_weights, scores)
        # Not split == "train" alone: "training" would load the test set.
        require(split in ("train", "test"), "data.split", split, "'train' or 'test'")
        require(fid_split in (None, "train", "test"), "data.fid_split", fid_split, "null (the split), 'train' or 'test'")
        self.fid_split = fid_split or split
        require(name in TORCHVISION, "data.name", name, f"one of {sorted(TORCHVISION)}")
        self.name, self.root, self.split, self.download = name, root, split, download
        require(resolution is None or resolution >= 1, "data.resolution", resolution,
                "null (the dataset's own size) or an image size >= 1")
        class_name, self.channels, native, self.crop = TORCHVISION[name]
        self.resolution = native if resolution is None else resolution

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.channels, self.resolution, self.resolution)

    def prepare_data(self) -> None:
        for split in {self.split, self.fid_split}:  # on one process: downloads if allowed, or fails with the clear message
            self._load(split)

    def _load(self, split: str) -> Dataset:
        import torchvision

        cls = getattr(torchvision.datasets, TORCHVISION[self.name][0])
        transform = image_transform(self.resolution, self.channels, self.crop)
        chosen = {"split": split} if self.name == "celeba" else {"train": split == "train"}
        try:
            return cls(self.root, download=self.download, transform=transform, **chosen)
        except (RuntimeError, FileNotFoundError) as error:
            # The folder torchvision reads: <root>/cifar-10-batches-py, <root>/celeba, <root>/MNIST/raw ...
            where = Path(self.root).resolve() / getattr(cls, "base_folder", f"{cls.__name__}/raw")
            if "gdown" in str(error):  # torchvision fetches CelebA from Google Drive, through a package of its own
                raise ConfigError(
                    f"data.download=True is not valid for {self.name} without the gdown package: expected "
                    f"`pip install gdown` (torchvision downloads it from Google Drive with it), or the files "
                    f"copied into {where} and data.download=false") from None
            raise ConfigError(
                f"data.root={self.root!r} is not valid: expected the {self.name} files in {where} "
                f"(torchvision's layout; torchvision said: {error}). Set data.download=true on a machine with "
                f"internet access, or copy the dataset there and point data.root at it"
            ) from None

    def train_dataset(self) -> Dataset:
        return FirstItem(self._load(self.split))

    def evaluation_metric(self):
        return self.fidelity_metric(FirstItem(self._load(self.fid_split)),
                                    cache_name=f"{self.name}-{self.fid_split}-{self.resolution}px")


def find_images(root: Path) -> tuple[list[Path], Counter]:
    """Every image file under ``root``, following symlinked folders (class folders linked in from shared
    storage; ``Path.rglob`` skips them before Python 3.13), each real folder once (a link loop ends);
    and how many other files there are of each suffix ("" for none), hidden ones (.DS_Store, the
    contents of .git or .ipynb_checkpoints) not counted: never a dataset's images."""
    found, others, seen = [], Counter(), set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        hidden = any(part.startswith(".") for part in Path(folder).relative_to(root).parts)
        for name in names:
            suffix = Path(name).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                found.append(Path(folder) / name)
            elif not hidden and not name.startswith(".") and os.path.isfile(os.path.join(folder, name)):
                others[suffix] += 1
    return sorted(path for path in found if path.is_file()), others


def suffix_counts(counts: Counter) -> str:
    """``.txt x2, .xyz x1``: the commonest five suffixes first."""
    shown = ", ".join(f"{suffix or 'no suffix'} x{n}" for suffix, n in
                      sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:5])
    return shown + (" ..." if len(counts) > 5 else "")


class FolderDataset(Dataset):
    """Every image file under a folder (sub-folders included), as ``channels`` x resolution x resolution."""

    def __init__(self, files: list[Path], transform):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        from PIL import Image

        with Image.open(self.files[i]) as image:
            return self.transform(upright(image))


def upright(image):
    """``image`` as image viewers show it: a camera stores a portrait photo as landscape pixels plus an EXIF
    orientation tag, which decoding alone ignores. The file's format is kept (:class:`ToMode` reads it)."""
    from PIL import ImageOps

    turned = ImageOps.exif_transpose(image)
    turned.format = image.format
    return turned


def unreadable(path: Path) -> str | None:
    """Why PIL cannot read ``path`` (not an image, corrupt, truncated), or None when it can."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()  # structure and checksums, without decoding every pixel
        with Image.open(path) as image:
            image = upright(image)  # as training reads it: a malformed EXIF block fails here
            for mode in ("L", "RGB"):  # decodable is not enough: the transform must convert it (LAB cannot)
                ToMode(mode)(image)
    except Exception as error:  # PIL raises several types (UnidentifiedImageError, OSError, SyntaxError ...)
        return f"{type(error).__name__}: {error}"
    return None


class ImageFolder(InceptionScoredImages):
    """Any folder of images (png, jpg, ...; sub-folders included, class folders not needed).

    Grayscale, RGBA and RGB files can be mixed: each is converted to
    ``channels`` channels, centre-cropped to a square and resized to ``resolution``.
    Every file is checked once before training: unreadable ones (not an
    image, corrupt, truncated) are skipped with one warning that counts them
    (``bad_files: skip``) or stop the run naming the first (``bad_files: fail``).
    """

    def __init__(self, root: str, resolution: int = 64, channels: Literal[1, 3] = 3, batch_size: int = 64,
                 num_workers: int = 4, seed: int = 0, inception_weights: Optional[str] = None,
                 bad_files: Literal["skip", "fail"] = "skip", scores: tuple[Score, ...] = SCORES):
        super().__init__(batch_size, num_workers, seed, inception_weights, scores)
        require(resolution >= 1, "data.resolution", resolution, "an image size >= 1")
        # Checked here: 2 channels would fail only at the first batch, with a tensor size error.
        require(isinstance(channels, int) and not isinstance(channels, bool) and channels in (1, 3),
                "data.channels", channels, "1 (grayscale) or 3 (RGB)")
        require(bad_files in ("skip", "fail"), "data.bad_files", bad_files, "'skip' or 'fail'")
        self.root, self.resolution, self.channels = Path(root), resolution, channels
        self.bad_files = bad_files
        self._readable: list[Path] | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.channels, self.resolution, self.resolution)

    def prepare_data(self) -> None:
        self.files()  # on one process: under DDP the other ranks then read the scan's cached answer

    def files(self) -> list[Path]:
        """The readable image files, checked once."""
        if self._readable is not None:
            return self._readable
        require(self.root.is_dir(), "data.root", str(self.root), "an existing folder of images")
        files, others = find_images(self.root)
        require(len(files) > 0, "data.root", str(self.root),
                f"a folder containing image files ({', '.join(IMAGE_SUFFIXES)}); it has none"
                + (f" (other files: {suffix_counts(others)})" if others else ""))
        if others:  # a format Pillow may read but not listed (.heic, .jfif ...) would otherwise vanish unseen
            rank_zero_warn(f"data.root={self.root}: skipping {others.total()} file(s) whose suffix is not an "
                           f"image's ({suffix_counts(others)}); images are {', '.join(IMAGE_SUFFIXES)}")
        problems = self.scan(files)
        if problems and self.bad_files == "fail":
            first, reason = next(iter(problems.items()))
            require(False, "data.root", str(self.root), f"only readable images, but {first} is not ({reason}); "
                    f"{len(problems)} such file(s) in all. Remove them, or set data.bad_files: skip")
        if problems:
            shown = ", ".join(str(f.relative_to(self.root)) for f in list(problems)[:5])
            rank_zero_warn(f"data.root={self.root}: skipping {len(problems)} unreadable file(s) of {len(files)} "
                           f"({shown}{' ...' if len(problems) > 5 else ''})")
        self._readable = [f for f in files if f not in problems]
        require(len(self._readable) > 0, "data.root", str(self.root), "at least one readable image; none can be read")
        return self._readable

    @staticmethod
    def fingerprint(files: list[Path]) -> str:
        """Changes when any file is added, removed or modified."""
        listing = "\n".join(f"{f.resolve()}|{f.stat().st_size}|{f.stat().st_mtime_ns}" for f in files)
        return hashlib.sha256(listing.encode()).hexdigest()[:12]

    def scan(self, files: list[Path]) -> dict[Path, str]:
        """Unreadable files and why; decoding every image is slow, so the answer is cached per folder state."""
        from lit_gan.metrics.digits import cache_directory

        cache = cache_directory() / f"folder-scan-v4-{self.fingerprint(files)}.json"  # v4: EXIF read too
        try:  # paths relative to the folder: the same however the root is spelled
            cached = json.loads(cache.read_text())
        except (OSError, ValueError):  # missing, or unreadable (torn by a crash, an older writer): scanned again
            cached = None
        if isinstance(cached, dict):
            return {self.root / f: reason for f, reason in cached.items()}
        problems = {f: reason for f in files if (reason := unreadable(f)) is not None}
        cache.parent.mkdir(parents=True, exist_ok=True)
        # Atomically: other processes (DDP ranks, a study's runs) may read it while this one writes.
        write_atomically(cache, json.dumps({str(f.relative_to(self.root)): reason for f, reason in problems.items()}))
        return problems

    def train_dataset(self) -> Dataset:
        return FolderDataset(self.files(), image_transform(self.resolution, self.channels))

    def evaluation_metric(self):
        # Changes when the folder does; v2: images turned upright by their EXIF orientation, as training sees them.
        name = "folder-v2-" + self.fingerprint(self.files())
        return self.fidelity_metric(self.train_dataset(), cache_name=f"{name}-{self.resolution}px-{self.channels}ch")
