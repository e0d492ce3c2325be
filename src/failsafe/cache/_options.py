"""A cache's parameters, checked once.

The in-process cache, and the layers a cache shared through a store keeps in front of it and
for its fallback, take their parameters from one CacheOptions: each has one default and one
check, naming it. The C index trusts what it is given.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from failsafe import _core

MAX_SIZE: Final = 2**30  # entries: what the C index holds
MAX_TTL_NS: Final = 2**62


@dataclass(frozen=True, slots=True)
class CacheOptions:
    """Checked parameters of one cache, and the units the C index takes."""

    maxsize: int | None = None  # entries; None: unbounded
    ttl: float | None = None  # seconds from when an entry is stored; None: forever
    ttl_ns: int = -1  # the same in the C index's unit; -1: forever
    stale_if_error: float | None = None  # seconds past ttl an entry may answer a failure
    stale_ns: int = -1
    key_func: Callable[..., Any] | None = None  # (*args, **kwargs) -> key; None: the arguments

    @classmethod
    def check(
        cls,
        *,
        maxsize: object = None,
        ttl: object = None,
        key_func: object = None,
        stale_if_error: object = None,
    ) -> CacheOptions:
        size = _core.check_int(maxsize, "maxsize", maximum=MAX_SIZE, allow_none=True)
        ttl_ns = -1
        if ttl is not None:
            ttl_ns = _core.check_ns(ttl, "ttl", max_ns=MAX_TTL_NS)
        stale_ns = -1
        if stale_if_error is not None:
            stale_ns = _core.check_ns(stale_if_error, "stale_if_error", max_ns=MAX_TTL_NS)
            if ttl is None:
                raise ValueError("stale_if_error needs a ttl: entries without one never go stale")
        if key_func is not None:
            if not callable(key_func):
                raise TypeError(f"key_func must be a callable, not {key_func!r}")
            if inspect.iscoroutinefunction(key_func):
                raise TypeError("key_func must be a sync function, not an async function")
        return cls(
            maxsize=size,
            ttl=None if ttl is None else float(ttl),  # type: ignore[arg-type]
            ttl_ns=ttl_ns,
            stale_if_error=None if stale_if_error is None else float(stale_if_error),  # type: ignore[arg-type]
            stale_ns=stale_ns,
            key_func=key_func,
        )

    def with_ttl(self, ttl: object, param: str) -> CacheOptions:
        """The same cache with another ttl, checked as ``param`` (a shared cache's
        ``local_ttl``): no stale_if_error."""
        ttl_ns = _core.check_ns(ttl, param, max_ns=MAX_TTL_NS)
        return dataclasses.replace(
            self,
            ttl=float(ttl),  # type: ignore[arg-type]
            ttl_ns=ttl_ns,
            stale_if_error=None,
            stale_ns=-1,
        )

    def configuration(self) -> tuple[int, int, Callable[..., Any] | None, int]:
        """The arguments of the C index's _configure."""
        return (self.maxsize or 0, self.ttl_ns, self.key_func, self.stale_ns)
