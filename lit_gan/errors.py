"""One exception type for mistakes in a user's configuration, and the checks that raise it."""

import numpy as np


class ConfigError(ValueError):
    """A configuration value that lit-gan cannot use.

    The message names the key, the value given and what would be accepted, so
    the command line can print it as one sentence instead of a stack trace.
    """


def require(condition: bool, key: str, value, accepted: str) -> None:
    """Raise :class:`ConfigError` for ``key`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{key}={value!r} is not valid: expected {accepted}.")


def plain(value):
    """``value`` with NumPy numbers as Python ones, in lists and tuples too: checkpoints are loaded with
    ``weights_only``, which refuses NumPy scalars (a run given ``lr_d=np.float32(...)`` could not resume)."""
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):  # np.True_ too
        return value.item()
    return value
