"""Shared by the benchmark scripts: the machine they ran on, and their sections of docs/PERFORMANCE.md."""

from __future__ import annotations

import os
import platform
import re
import shlex
import statistics
import sys
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset
from torchmetrics import Metric

from lit_gan.data.digits import ImageDataModule
from lit_gan.provenance import commit  # noqa: F401 (the benchmarks' reports name it)

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "PERFORMANCE.md"


# The benchmarks build runs with LitGANCLI(args=...) inside a script that has its own arguments, on purpose.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter")


def machine() -> str:
    """CPU model, cores torch uses, GPU (if any) and library versions, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    import lightning

    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores ({torch.get_num_threads()} torch threads), {gpu}; "
            f"torch {torch.__version__}, lightning {lightning.__version__}")


def command() -> str:
    """This benchmark's command line as it was given: every argument that shaped its table."""
    return shlex.join(["python", "-m", f"benchmarks.{Path(sys.argv[0]).stem}", *sys.argv[1:]])


def median_ms(seconds: list[float]) -> float:
    return 1000 * statistics.median(seconds)


def write_section(name: str, markdown: str) -> None:
    """Replace this benchmark's section of docs/PERFORMANCE.md (between its markers), keeping the rest."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = REPORT.read_text() if REPORT.exists() else "# Performance\n"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    REPORT.write_text(text)
    print(f"wrote the {name} section of {REPORT.relative_to(ROOT)}")


def publish(name: str, report: str, write: bool) -> None:
    """Print a benchmark's report; with ``write``, also make it the ``name`` section of docs/PERFORMANCE.md."""
    print(report)
    if write:
        write_section(name, report)


class MeanPixel(Metric):
    """A near-free stand-in score for random images (FID's own cost is measured by benchmarks/evaluation.py)."""

    goals = {"mean_pixel": "maximize"}

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images):
        self.total += images.double().sum()
        self.count += images.numel()

    def compute(self):
        return {"mean_pixel": (self.total / self.count).float()}


class RandomImages(ImageDataModule):
    """``size`` fixed random images in [-1, 1]: a data loader that costs (almost) nothing, for timing."""

    metric_goals = MeanPixel.goals

    def __init__(self, size: int = 4096, channels: int = 3, resolution: int = 32, batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size, num_workers, seed)
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(size, channels, resolution, resolution, generator=generator) * 2 - 1
        self.sample_shape = (channels, resolution, resolution)

    def train_dataset(self) -> Dataset:
        return TensorDataset(self.images)

    def evaluation_metric(self) -> MeanPixel:
        return MeanPixel()
