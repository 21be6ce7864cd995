"""Metrics as torchmetrics ``Metric`` subclasses, so DDP synchronisation comes for free."""

from lit_gan.metrics.digits import DigitFrechetDistance, StackedDigitModes
from lit_gan.metrics.fidelity import FidelityMetrics
from lit_gan.metrics.modes import ModeCoverage

__all__ = ["DigitFrechetDistance", "FidelityMetrics", "ModeCoverage", "StackedDigitModes"]
