"""lit-gan: GAN training and stability measurement on PyTorch Lightning."""

import os

import lightning  # noqa: F401  (sets PYTORCH_NVML_BASED_CUDA_CHECK=1 when imported)
import torch

__version__ = "0.1.0"

# Lightning makes torch count GPUs through NVML so that counting never initialises CUDA. Where NVML
# cannot be loaded (no NVIDIA driver) torch then falls back to the CUDA runtime's count anyway, but
# only after trying to load NVML again, at every call; Adam asks at every step (~90 µs a step on a
# CPU, 6% of a toy MLP's iteration: docs/PERFORMANCE.md). Same answer, without the retries:
if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and torch.cuda._device_count_nvml() < 0:
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
