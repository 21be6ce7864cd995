"""Metrics as torchmetrics ``Metric`` subclasses, so DDP synchronisation comes for free."""

from lit_gan.metrics.modes import ModeCoverage

__all__ = ["ModeCoverage"]
