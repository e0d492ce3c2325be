"""Policies per key: a breaker per host, a limiter per user.

``keyed(factory, key=...)`` routes each call to the policy of its key (``key(*args,
**kwargs)``), made by ``factory(key)`` on first use. The registry is bounded (``max_keys``) and
forgets idle policies (``idle_after`` seconds without a call), least recently used first, but
never one that still holds state: a policy whose ``_holds_state()`` returns True stays (a
breaker not back to a clean closed state, a limiter whose bucket is not full again, a bulkhead
with calls running or queued, a fail-fast latch open or counting failures, a cache with a call
in flight, a toggle switched at runtime, ``bucket_retry``'s bucket short of tokens), and so
does any policy while a call decorated through the registry runs. A policy without
``_holds_state`` is forgettable whenever no such call runs (timeout, fallback and plain retry
keep nothing; a hedge's learned delay starts again from its fallback, its extra-load budget
from empty). ``get(key)`` only looks a policy up: a block ``async with registry.get(key)`` is
not a call of the registry, and relies on the policy's own ``_holds_state``.

When every place is taken by policies that hold state, a call with a new key raises
:class:`RegistryFull` rather than forget one of them (which would reset a breaker or a limit).
A registry may be shared by threads, each with its own event loop: one policy is made per
key. Time is failsafe's clock (``failsafe.testing.FakeClock`` drives it).
"""

from __future__ import annotations

import functools
import threading
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
    __slots__ = ("guards", "pins", "policy", "used_ns")

    def __init__(self, policy: Any, now: int) -> None:
        self.policy = policy
        self.used_ns = now
        self.guards: dict[Any, Any] = {}
        # One item per call running through the registry (list append/pop are atomic under
        # the GIL, an int += is not): a pinned entry is never forgotten.
        self.pins: list[None] = []


def _holds_state(policy: Any) -> bool:
    check = getattr(policy, "_holds_state", None)
    return bool(check()) if check is not None else False


def _name_of(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


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
        # Every change of the registry's membership (creating, forgetting) happens under this
        # lock, so threads sharing the registry build one policy per key. Re-entrant: a factory
        # may use the registry. Known keys are found without it.
        self._lock = threading.RLock()

    # -- registry ----------------------------------------------------------------------------

    def _entry(self, key: Any) -> _Entry:
        entries = self._entries
        now = _native.now_ns()
        entry = entries.get(key)
        if entry is not None:
            try:
                entries.move_to_end(key)
            except KeyError:  # forgotten meanwhile by another thread
                return self._create(key, now)
            entry.used_ns = now
            if self._idle_ns is not None:
                self._expire_one(now)
            return entry
        return self._create(key, now)

    def _create(self, key: Any, now: int) -> _Entry:
        with self._lock:
            entries = self._entries
            entry = entries.get(key)
            if entry is not None:  # made by another thread meanwhile
                entries.move_to_end(key)
                entry.used_ns = now
                return entry
            self._expire_one(now)
            if len(entries) >= self.max_keys:
                self._free_one()
            policy = self._factory(key)
            if not callable(policy):
                raise TypeError(
                    f"keyed factory {_name_of(self._factory)} returned {policy!r} for key"
                    f" {key!r}: not a policy (a decorator of async functions, such as"
                    " bulkhead(...) or tokenbucket(...))"
                )
            entry = _Entry(policy, now)
            entries[key] = entry
            return entry

    def _forget(self, key: Any, entry: _Entry) -> bool:
        """Forgets key's entry unless it holds state or a call runs through it (lock held)."""
        entries = self._entries
        if entry.pins or _holds_state(entry.policy):
            entries.move_to_end(key)
            return False
        del entries[key]
        if entry.pins:  # a call found it just before: it stays (see routed)
            entries[key] = entry
            return False
        return True

    def _expire_one(self, now: int) -> None:
        """Forgets the least recently used policy when it has been idle for idle_after."""
        idle_ns = self._idle_ns
        if idle_ns is None:
            return
        try:
            key, entry = next(iter(self._entries.items()))
        except (StopIteration, RuntimeError):  # empty, or changed by another thread
            return
        if now - entry.used_ns < idle_ns:
            return
        with self._lock:
            if self._entries.get(key) is entry and now - entry.used_ns >= idle_ns:
                self._forget(key, entry)

    def _free_one(self) -> None:
        entries = self._entries
        for _ in range(min(_SCAN, len(entries))):
            key, entry = next(iter(entries.items()))
            if self._forget(key, entry):
                return
        raise RegistryFull(f"all {self.max_keys} keyed policies hold state; refusing a new key")

    def _holds_state(self) -> bool:
        """For a registry inside a registry: whether any of its policies holds state."""
        return any(e.pins or _holds_state(e.policy) for e in list(self._entries.values()))

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
        with self._lock:
            self._entries.clear()

    # -- decorator ---------------------------------------------------------------------------

    def __call__[**A, T](
        self, fn: Callable[A, Awaitable[T]]
    ) -> Callable[A, Coroutine[Any, Any, T]]:
        """Decorates an async function: each call runs under the policy of its key."""
        _core.check_async(fn, "keyed")
        key_of = self._key
        entries = self._entries
        now_ns = _native.now_ns
        timed = self._idle_ns is not None

        @functools.wraps(fn)
        async def routed(*args: A.args, **kwargs: A.kwargs) -> T:
            key = key_of(*args, **kwargs)
            entry = entries.get(key)
            if entry is None:
                entry = self._pinned(key)
            else:  # the known key (_entry and _pinned, inline)
                entry.pins.append(None)
                if entries.get(key) is not entry:  # forgotten meanwhile by another thread
                    entry.pins.pop()
                    entry = self._pinned(key)
                else:
                    # Taken out by a forgetter, that puts it back (suppress() would cost a call).
                    try:  # noqa: SIM105
                        entries.move_to_end(key)
                    except KeyError:
                        pass
                    if timed:  # used_ns serves idle_after only
                        now = entry.used_ns = now_ns()
                        self._expire_one(now)
            try:
                guard = entry.guards.get(fn)
                if guard is None:
                    guard = self._guard(entry, fn)
                result: T = await guard(*args, **kwargs)
                return result
            finally:
                entry.pins.pop()

        return routed

    def _pinned(self, key: Any) -> _Entry:
        """key's entry, pinned for a call. Pinned, then checked: a thread forgetting an entry
        looks at its pins after taking it out, so either it sees this pin and puts the entry
        back, or this sees the entry gone and looks again."""
        while True:
            entry = self._entry(key)
            entry.pins.append(None)
            if self._entries.get(key) is entry:
                return entry
            entry.pins.pop()

    def _guard(self, entry: _Entry, fn: Callable[..., Any]) -> Any:
        """The entry's policy applied to fn, once (a cache may decorate only one function)."""
        with self._lock:
            guard = entry.guards.get(fn)
            if guard is None:
                guard = entry.guards[fn] = entry.policy(fn)
            return guard

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
