"""What a decorated function is to a type checker: the same async callable, plus ``.policy``.

At run time a decorated function is a C guard (``failsafe._native.Guard``); these protocols
describe it: called with the function's own parameters it returns a coroutine of the function's
result, ``.policy`` is the policy that decorated it (of that policy's own type), on a method it
binds like a function, and ``async with fn:`` enters the policy's block form when the policy has
one (a type error when it has none, as for retry).
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, Protocol, Self, overload

__all__ = ["AsyncBlock", "CachedFunction", "Decorated"]


class AsyncBlock[E](Protocol):
    """A policy with an ``async with`` form whose ``as`` target is an ``E``."""

    def __aenter__(self) -> Awaitable[E]: ...

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Awaitable[bool | None]: ...


class Decorated[**P, T, PolicyT](Protocol):
    """An async function with parameters ``P`` returning ``T``, guarded by a ``PolicyT``."""

    @property
    def policy(self) -> PolicyT:
        """The policy guarding this function (``stats()``, state, controls)."""
        ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]: ...

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None, /) -> Self: ...
    @overload
    def __get__[S, **Q](
        self: Decorated[Concatenate[S, Q], T, PolicyT],
        instance: S,
        owner: type[Any] | None = None,
        /,
    ) -> Decorated[Q, T, PolicyT]: ...

    def __aenter__[E](self: Decorated[..., Any, AsyncBlock[E]]) -> Coroutine[Any, Any, E]:
        """``async with fn:`` enters the policy's block form."""
        ...

    def __aexit__(
        self: Decorated[..., Any, AsyncBlock[Any]],
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Coroutine[Any, Any, bool | None]: ...


class CachedFunction[**P, T, PolicyT](Decorated[P, T, PolicyT], Protocol):
    """A function decorated with ``@cache``: also ``invalidate(*args, **kwargs)`` and
    ``clear()``."""

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Forgets the entry of these arguments; whether there was one."""
        ...

    def clear(self) -> None:
        """Forgets every entry."""
        ...

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None, /) -> Self: ...
    @overload
    def __get__[S, **Q](
        self: CachedFunction[Concatenate[S, Q], T, PolicyT],
        instance: S,
        owner: type[Any] | None = None,
        /,
    ) -> CachedFunction[Q, T, PolicyT]: ...
