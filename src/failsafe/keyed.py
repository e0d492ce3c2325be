"""Policies per key: a breaker per host, a limiter per user.

``keyed(factory, key=...)`` routes each call to the policy of its key (``key(*args,
**kwargs)``), made by ``factory(key)`` on first use. The registry is bounded (``max_keys``) and
forgets idle policies (``idle_after`` seconds without a call), least recently used first, but
never one that still holds state: a policy whose ``_holds_state()`` returns True (an open
breaker, a limiter whose bucket is not full again) stays. A policy without ``_holds_state`` is
forgettable whenever it is idle.

When every place is taken by policies that hold state, a call with a new key raises
:class:`RegistryFull` rather than forget one of them (which would reset a breaker or a limit).
Time is failsafe's clock (``failsafe.testing.FakeClock`` drives it).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterator
from typing import Any, Final

from failsafe import _core, _native
from failsafe.exceptions import FailsafeError

__all__ = ["Keyed", "RegistryFull", "keyed"]

# Places looked at (oldest first) for one to free when a new key needs one: bounded work per
# call. Policies that hold state are moved to the recent end, so later looks reach the others.
_SCAN: Final = 64


class RegistryFull(FailsafeError):
    """Every place of a keyed registry holds a policy that still holds state."""


class _Entry:
    __slots__ = ("guards", "policy", "used_ns")

    def __init__(self, policy: Any, now: int) -> None:
        self.policy = policy
        self.used_ns = now
        self.guards: dict[Any, Any] = {}


def _holds_state(policy: Any) -> bool:
    check = getattr(policy, "_holds_state", None)
    return bool(check()) if check is not None else False


class Keyed[P]:
    """A bounded registry of policies by key; decorate async functions with it."""

    def __init__(
        self,
        factory: Callable[[Any], P],
        *,
        key: Callable[..., Hashable],
        max_keys: int = 10_000,
        idle_after: float | None = None,
    ) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be a callable key -> policy, not {factory!r}")
        if not callable(key):
            raise TypeError(f"key must be a callable (*args, **kwargs) -> key, not {key!r}")
        self._factory = factory
        self._key = key
        self.max_keys: int = _core.check_int(max_keys, "max_keys")
        self._idle_ns: int | None = (
            None if idle_after is None else _core.check_ns(idle_after, "idle_after")
        )
        self.idle_after: float | None = idle_after
        self._entries: OrderedDict[Any, _Entry] = OrderedDict()

    # -- registry ----------------------------------------------------------------------------

    def _entry(self, key: Any) -> _Entry:
        entries = self._entries
        now = _native.now_ns()
        entry = entries.get(key)
        if entry is not None:
            entries.move_to_end(key)
            entry.used_ns = now
            self._expire_one(now)
            return entry
        self._expire_one(now)
        if len(entries) >= self.max_keys:
            self._free_one()
        entry = _Entry(self._factory(key), now)
        entries[key] = entry
        return entry

    def _expire_one(self, now: int) -> None:
        """Forgets the least recently used policy when it has been idle for idle_after."""
        if self._idle_ns is None or not self._entries:
            return
        key, entry = next(iter(self._entries.items()))
        if now - entry.used_ns >= self._idle_ns:
            if _holds_state(entry.policy):
                self._entries.move_to_end(key)
            else:
                del self._entries[key]

    def _free_one(self) -> None:
        entries = self._entries
        for _ in range(min(_SCAN, len(entries))):
            key, entry = next(iter(entries.items()))
            if not _holds_state(entry.policy):
                del entries[key]
                return
            entries.move_to_end(key)
        raise RegistryFull(f"all {self.max_keys} keyed policies hold state; refusing a new key")

    def get(self, key: Hashable) -> P:
        """The policy of key, made by factory(key) if the registry has none."""
        policy: P = self._entry(key).policy
        return policy

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._entries))

    def clear(self) -> None:
        """Forgets every policy."""
        self._entries.clear()

    # -- decorator ---------------------------------------------------------------------------

    def __call__[**A, T](
        self, fn: Callable[A, Awaitable[T]]
    ) -> Callable[A, Coroutine[Any, Any, T]]:
        """Decorates an async function: each call runs under the policy of its key."""
        _core.check_async(fn, "keyed")
        key_of = self._key

        @functools.wraps(fn)
        async def routed(*args: A.args, **kwargs: A.kwargs) -> T:
            entry = self._entry(key_of(*args, **kwargs))
            guard = entry.guards.get(fn)
            if guard is None:
                guard = entry.guards[fn] = entry.policy(fn)
            result: T = await guard(*args, **kwargs)
            return result

        return routed

    def __repr__(self) -> str:
        return f"<keyed {len(self._entries)}/{self.max_keys} keys idle_after={self.idle_after}>"


def keyed[P](
    factory: Callable[[Any], P],
    *,
    key: Callable[..., Hashable],
    max_keys: int = 10_000,
    idle_after: float | None = None,
) -> Keyed[P]:
    """A registry of ``factory(key)`` policies, one per ``key(*args, **kwargs)``, as a
    decorator (``.get(key)`` gives a key's policy, e.g. for ``async with``)."""
    return Keyed(factory, key=key, max_keys=max_keys, idle_after=idle_after)
