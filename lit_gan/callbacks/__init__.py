"""Callbacks read from a GANModule; they never change how it trains."""

from lit_gan.callbacks.checkpoint import GeneratorCheckpoint
from lit_gan.callbacks.evaluation import Evaluation
from lit_gan.callbacks.monitor import StabilityAlarm, StabilityMonitor
from lit_gan.callbacks.output import run_directory
from lit_gan.callbacks.progress import GeneratorProgressBar

__all__ = [
    "Evaluation",
    "GeneratorCheckpoint",
    "GeneratorProgressBar",
    "StabilityAlarm",
    "StabilityMonitor",
    "run_directory",
]
