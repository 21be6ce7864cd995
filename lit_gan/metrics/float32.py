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
    (PyTorch's newer per-backend API: the legacy ``allow_tf32`` flags cannot be mixed with it.)
    """
    if not hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision"):  # torch < 2.9: legacy flags
        saved_flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_flags
        return
    settings = [torch.backends.cudnn.conv, torch.backends.cuda.matmul]
    saved = [backend.fp32_precision for backend in settings]
    for backend in settings:
        backend.fp32_precision = "ieee"
    try:
        yield
    finally:
        for backend, value in zip(settings, saved):
            backend.fp32_precision = value
