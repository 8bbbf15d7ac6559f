"""Exceptions users see. Each message says what was wrong, where, and what to do."""


class StagerlError(Exception):
    """Base class for errors stagerl reports to the user without a traceback."""

    exit_code = 2  # bad input; failures during training use 1


class ConfigError(StagerlError):
    """An experiment file or training pipeline is invalid; the message names the field."""


class WorkerError(StagerlError):
    """A sampler worker process raised, died or stopped answering."""

    exit_code = 1


class CheckpointError(StagerlError):
    """A checkpoint is unreadable or belongs to another experiment."""


def require(condition: bool, field: str, value: object, expected: str) -> None:
    """Raise a ConfigError naming `field` and `value` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{field}={value!r} is invalid: expected {expected}")
