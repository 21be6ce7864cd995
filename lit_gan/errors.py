"""One exception type for mistakes in a user's configuration."""


class ConfigError(ValueError):
    """A configuration value that lit-gan cannot use.

    The message names the key, the value given and what would be accepted, so
    the command line can print it as one sentence instead of a stack trace.
    """


def require(condition: bool, key: str, value, accepted: str) -> None:
    """Raise :class:`ConfigError` for ``key`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{key}={value!r} is not valid: expected {accepted}.")
