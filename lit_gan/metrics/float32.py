"""Feature extractors in IEEE float32 on every device."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """Convolutions and matrix products in true float32 inside, the caller's settings after.

    On Ampere and later GPUs cuDNN convolutions default to TF32 (10-bit mantissas), which moves an
    extractor's features: scores would differ from a CPU's and from the papers', and a real set's
    cached features made on one device would be compared with samples' features made another way.
    Set through the settings Lightning and Inductor read (``allow_tf32``, the matmul precision):
    PyTorch refuses a read of those after a write through its newer per-backend API.
    """
    try:
        saved_cudnn = torch.backends.cudnn.allow_tf32
    except RuntimeError:  # the caller set cuDNN's flags per backend (the newer API): leave them alone
        saved_cudnn = None
    saved_matmul = torch.get_float32_matmul_precision()
    if saved_cudnn is not None:
        torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        if saved_cudnn is not None:
            torch.backends.cudnn.allow_tf32 = saved_cudnn
        torch.set_float32_matmul_precision(saved_matmul)
