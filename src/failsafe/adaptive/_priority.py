"""Per-call keys of adaptive policies: a priority or a tenant, from a function of the call's
arguments or from a context variable."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from contextvars import ContextVar
from typing import Any

KeySource = Callable[..., Any] | ContextVar[Any]


def check_source(value: object, param: str) -> KeySource | None:
    """None, a ContextVar, or a callable; TypeError naming param otherwise."""
    if value is None or isinstance(value, ContextVar) or callable(value):
        return value
    raise TypeError(f"{param} must be a callable or a contextvars.ContextVar, not {value!r}")


def read(
    source: KeySource | None, default: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The key of a call: source(*args, **kwargs), or the context variable's value (default
    when it is unset), or default without a source."""
    if source is None:
        return default
    if isinstance(source, ContextVar):
        return source.get(default)
    return source(*args, **kwargs)


def priority_of(source: KeySource | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """A call's priority: an int (higher is more important), 0 by default."""
    value = read(source, 0, args, kwargs)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"priority must be an int, got {value!r}")
    return value


def tenant_of(source: KeySource | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
    value = read(source, None, args, kwargs)
    hash(value)  # TypeError for an unhashable key
    return value  # type: ignore[no-any-return]
