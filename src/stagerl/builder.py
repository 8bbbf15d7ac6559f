"""Deferred construction: the optimizer needs the model's parameters, the scheduler the optimizer."""

from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Builder(Generic[T]):
    """`Builder(cls, kwargs)` builds `cls(*args, **kwargs, **more)` when called."""

    def __init__(self, class_type: type[T], kwargs: dict[str, Any] | None = None) -> None:
        if not callable(class_type):
            raise TypeError(f"Builder needs a class or callable, got {class_type!r}")
        self.class_type = class_type
        self.kwargs = dict(kwargs or {})

    def __call__(self, *args: Any, **more: Any) -> T:
        return self.class_type(*args, **{**self.kwargs, **more})

    def __repr__(self) -> str:
        return f"Builder({getattr(self.class_type, '__name__', self.class_type)}, {self.kwargs})"
