"""Pictures of generated samples."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402


def generated_label(points: Tensor, span: float | None) -> str:
    """The legend's name for the samples, with how many lie outside the frame ``[-span, span]^2``."""
    outside = 0 if span is None else int((points[:, :2].abs() > span).any(dim=1).sum())
    return f"generated ({outside} of {len(points)} outside the frame)" if outside else "generated"


def scatter_over_modes(samples: Tensor, centers: Tensor | None, path: Path, title: str) -> Path:
    """2D samples as dots, the true mode centres as red crosses, saved as a PNG."""
    points = samples.detach().float().cpu().reshape(samples.shape[0], -1)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    # One frame for every plot of a benchmark, so plots compare; what falls outside it is counted, not lost.
    span = (centers.abs().max().item() or 1.0) * 1.5 if centers is not None else None
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.4, color="tab:blue", label=generated_label(points, span))
    if centers is not None:
        ax.scatter(centers[:, 0], centers[:, 1], s=40, marker="x", color="tab:red", label="modes")
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    # Each line wrapped to the 4.5-inch figure: a one-line list of five scores ran off its edge.
    ax.set_title("\n".join(textwrap.fill(line, 60) for line in title.split("\n")), fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def image_grid(samples: Tensor, path: Path, count: int = 64) -> Path:
    """The first ``count`` images (values in [-1, 1]) as one PNG grid, 8 per row."""
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    images = samples[:count].detach().float().cpu()
    save_image(images, path, nrow=8, normalize=True, value_range=(-1, 1), padding=1)
    return path
