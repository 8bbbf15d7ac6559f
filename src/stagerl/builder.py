"""Deferred construction: the optimizer needs the model's parameters, the scheduler the
optimizer."""

import copy
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def _merged(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated by `update`, nested dicts merged key by key (as AllenAct's Builder does)."""
    result = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _merged(dict(result[key]), value)
        else:
            result[key] = value
    return result


class Builder(Generic[T]):
    """`Builder(cls, kwargs, default)` builds `cls(*args, **arguments)` when called, where the
    arguments are `default` updated by `kwargs` updated by the call's own keyword arguments.

    `default` is deep-copied for every build, so no build changes what the next one gets;
    the objects in `kwargs` are passed as they are (as in AllenAct).
    """

    def __init__(
        self,
        class_type: type[T],
        kwargs: dict[str, Any] | None = None,
        default: dict[str, Any] | None = None,
    ) -> None:
        if not callable(class_type):
            raise TypeError(f"Builder needs a class or callable, got {class_type!r}")
        self.class_type = class_type
        self.kwargs = dict(kwargs or {})
        self.default = dict(default or {})

    def __call__(self, *args: Any, **more: Any) -> T:
        arguments = _merged(_merged(copy.deepcopy(self.default), self.kwargs), more)
        return self.class_type(*args, **arguments)

    def __repr__(self) -> str:
        name = getattr(self.class_type, "__name__", self.class_type)
        default = f", default={self.default}" if self.default else ""
        return f"Builder({name}, {self.kwargs}{default})"
