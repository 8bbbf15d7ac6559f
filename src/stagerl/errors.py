"""Exceptions users see. Each message says what was wrong, where, and what to do."""

import math
import numbers
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


class StagerlError(Exception):
    """Base class for errors stagerl reports to the user without a traceback."""

    exit_code = 2  # bad input; failures during training use 1


class StoppedOutsideTraining(BaseException):
    """SIGTERM came while the run was starting up or closing down (training handles it
    itself). Not an Exception: no `except Exception` on the way out (a checkpoint's loading, a
    collective) may take it for its own failure."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} while not training (starting up or closing down)")
        self.signum, self.exit_code = signum, 128 + signum

    def __reduce__(self) -> tuple[type, tuple[int]]:
        return type(self), (self.signum,)  # sent to the other ranks as it is


class ConfigError(StagerlError):
    """An experiment file or training pipeline is invalid; the message names the field."""


class WorkerError(StagerlError):
    """A sampler worker process raised, died or stopped answering."""

    exit_code = 1


class CheckpointError(StagerlError):
    """A checkpoint is unreadable or belongs to another experiment."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (a full disk, say): a failure during training."""

    exit_code = 1


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file's contents are damaged (truncated, overwritten): not a stagerl
    checkpoint any more, whoever reads it."""


def require(condition: bool, field: str, *, value: object, expected: str) -> None:
    """Raise a ConfigError naming `field` and `value` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{field}={value!r} is invalid: expected {expected}")


def require_bool(field: str, value: object) -> None:
    """Raise a ConfigError naming `field` unless `value` is True or False (a string such as
    "no" would be truthy)."""
    require(isinstance(value, bool), field, value=value, expected="True or False")


def is_number(value: object, whole: bool = False) -> bool:
    """A real number (an integer if `whole`), numpy's included; not a bool."""
    kind = numbers.Integral if whole else numbers.Real
    return isinstance(value, kind) and not isinstance(value, bool)


def require_positive(
    field: str, value: object, *, whole: bool = False, allow_none: bool = False
) -> None:
    """Raise a ConfigError naming `field` unless `value` is a positive number (a positive
    integer if `whole`: a count that torch or range() will take), or None where allowed."""
    positive = is_number(value, whole) and value > 0  # type: ignore[operator]
    ok = (value is None and allow_none) or positive
    expected = "a positive " + ("integer" if whole else "number") + " or None" * allow_none
    require(ok, field, value=value, expected=expected)


def user_call(what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the experiment's code; an exception other than stagerl's own becomes a ConfigError
    saying what was called, the error and the line of user code it came from."""
    try:
        return function(*args, **kwargs)
    except StagerlError:
        raise
    except Exception as error:
        raise ConfigError(
            f"{what} raised {type(error).__name__}: {error}\n    at {_origin(error)}"
        ) from None


def user_number(what: str, schedule: Callable[[int], Any], *, steps: int, expected: str) -> float:
    """`schedule(steps)` through `user_call`, as a float; a ConfigError naming the call unless
    it gives a number (NaN is none)."""
    value = user_call(what, schedule, steps)
    if not is_number(value) or math.isnan(value):
        raise ConfigError(f"{what}({steps})={value!r} is invalid: expected {expected}")
    return float(value)


def _origin(error: BaseException) -> str:
    """The innermost frame outside stagerl and installed libraries (else the innermost)."""
    frames = traceback.extract_tb(error.__traceback__)[1:] or traceback.extract_tb(
        error.__traceback__
    )
    package = str(Path(__file__).parent)
    outside = [
        frame
        for frame in frames
        if not frame.filename.startswith((package, sys.base_prefix, sys.prefix))
        and "site-packages" not in frame.filename
    ]
    frame = (outside or frames)[-1]
    return f"{frame.filename}:{frame.lineno}"
