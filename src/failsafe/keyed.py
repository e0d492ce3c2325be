"""Policies per key: a breaker per host, a limiter per user.

``keyed(factory, key=...)`` routes each call to the policy of its key (``key(*args,
**kwargs)``), made by ``factory(key)`` on first use; ``factory`` may also be a circuit breaker,
a template copied for each new key (its configuration, none of its state) without running the
Python construction again. The registry is bounded (``max_keys``) and
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

A call of a known key is routed in C (``_native.KeyedRoute``): the key function (not even
called when it only returns one of the arguments, as ``lambda host: host`` does), the lookup
and the key's own policy, with no coroutine of the registry's. ``stats()`` and the ``keyed``
metrics count policies made, evicted (forgotten to make room), expired (idle) and refused new
keys: ``evicted`` growing with ``created`` shows a ``max_keys`` below the live keys.
"""

from __future__ import annotations

import dis
import inspect
import threading
import types
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Final, overload

from failsafe import _core, _native
from failsafe.exceptions import FailsafeError
from failsafe.stats import KeyedStats

if TYPE_CHECKING:
    from failsafe.circuitbreaker import CircuitBreaker

__all__ = ["Keyed", "KeyedStats", "RegistryFull", "keyed"]

# Places looked at (oldest first) for one to free when a new key needs one: bounded work per
# call. Policies that hold state are moved to the recent end, so later looks reach the others.
_SCAN: Final = 64
# The least time between two looks for idle keys from the C route, as a fraction of idle_after.
_LOOK_EVERY: Final = 16

_CREATED, _EVICTED, _EXPIRED, _REFUSED = _core.counter_indexes(
    "keyed", "created", "evicted", "expired", "refused"
)

_Entry = _native.KeyedEntry
_COMPONENT_CALL: Final = _core.Component.__call__


class RegistryFull(FailsafeError):
    """Every place of a keyed registry holds a policy that still holds state."""


class _Counts(_native.KeyedRoute, _core.Component):
    """A registry's counters, reported as the ``keyed`` pattern's metrics."""

    PATTERN: ClassVar[str] = "keyed"
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["keyed"]


def _holds_state(policy: Any) -> bool:
    check = getattr(policy, "_holds_state", None)
    return bool(check()) if check is not None else False


def _returned_arg(key: Callable[..., Any]) -> tuple[int, int] | None:
    """(i, n) when key is a plain function of n positional parameters whose whole body returns
    its parameter i (``lambda host: host``, ``lambda self, user: user``): called with exactly n
    positional arguments it returns argument i, so the C route reads it without the call."""
    code = getattr(key, "__code__", None)
    if (
        not isinstance(key, types.FunctionType)
        or not isinstance(code, types.CodeType)
        or code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)
        or code.co_kwonlyargcount
        or code.co_freevars
        or code.co_cellvars
    ):
        return None
    ops = [(i.opname, i.arg) for i in dis.get_instructions(code)]
    if ops and ops[0][0] == "RESUME":
        ops = ops[1:]
    if len(ops) != 2 or ops[1][0] != "RETURN_VALUE" or ops[0][0] != "LOAD_FAST":
        return None
    index = ops[0][1]
    if not isinstance(index, int) or not 0 <= index < code.co_argcount:
        return None
    return index, code.co_argcount


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
        name: str | None = None,
    ) -> None:
        if isinstance(factory, _core.Component):
            if not callable(getattr(factory, "_clone", None)):
                raise TypeError(
                    f"factory must be a callable key -> policy, or a circuit breaker to copy"
                    f" per key, not {factory!r}"
                )
            self._template: Any = factory
            # The C copy itself when the breaker's class copies as CircuitBreaker does.
            clone = getattr(factory, "_clone")  # noqa: B009
            copy = getattr(factory, "_copy", None)
            plain = getattr(getattr(type(factory), "_clone"), "_copies_only", False)  # noqa: B009
            self._copy: Callable[[], Any] = copy if plain and copy is not None else clone
        elif not callable(factory):
            raise TypeError(f"factory must be a callable key -> policy, not {factory!r}")
        else:
            self._template = None
        if not callable(key):
            raise TypeError(f"key must be a callable (*args, **kwargs) -> key, not {key!r}")
        self._factory = factory
        self._key = key
        self.max_keys: int = _core.check_int(max_keys, "max_keys")
        self._idle_ns: int | None = (
            None if idle_after is None else _core.check_ns(idle_after, "idle_after")
        )
        self.idle_after: float | None = idle_after
        # Read by the C routes too (the same dict for life: clear() empties it).
        self._entries: OrderedDict[Any, _native.KeyedEntry] = OrderedDict()
        self._counts = _Counts()
        self._counts._init_component(name, None)
        # Every change of the registry's membership (creating, forgetting) happens under this
        # lock, so threads sharing the registry build one policy per key. Re-entrant: a factory
        # may use the registry. Known keys are found without it.
        self._lock = threading.RLock()

    # -- registry ----------------------------------------------------------------------------

    def _entry(self, key: Any) -> _native.KeyedEntry:
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

    def _create(self, key: Any, now: int) -> _native.KeyedEntry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:  # made by another thread meanwhile
                self._entries.move_to_end(key)
                entry.used_ns = now
                return entry
            return self._make_locked(key, now)

    def _make_locked(self, key: Any, now: int) -> _native.KeyedEntry:
        """A new entry for key, which has none (lock held)."""
        entries = self._entries
        if self._idle_ns is not None:
            self._expire_one(now)
        if len(entries) >= self.max_keys:
            self._free_one()
        if self._template is not None:
            policy: Any = self._copy()
        elif not callable(policy := self._factory(key)):
            raise TypeError(
                f"keyed factory {_name_of(self._factory)} returned {policy!r} for key"
                f" {key!r}: not a policy (a decorator of async functions, such as"
                " bulkhead(...) or tokenbucket(...))"
            )
        entry = _Entry(policy)
        entry.used_ns = now
        entries[key] = entry
        self._counts._count(_CREATED)
        return entry

    def _forget(self, key: Any, entry: _native.KeyedEntry) -> bool:
        """Forgets key's entry unless it holds state or a call runs through it (lock held)."""
        entries = self._entries
        if entry.pins or _holds_state(entry.policy):
            entries.move_to_end(key)
            return False
        del entries[key]
        if entry.pins:  # a call found it just before: it stays (see _pinned)
            entries[key] = entry
            return False
        return True

    def _expire_one(self, now: int) -> None:
        """Forgets the least recently used policy when it has been idle for idle_after, and
        tells the C routes when to look again (when the oldest may be idle, and not more often
        than idle_after / _LOOK_EVERY)."""
        idle_ns = self._idle_ns
        if idle_ns is None:
            return
        entries = self._entries
        try:
            key, entry = next(iter(entries.items()))
        except (StopIteration, RuntimeError):  # empty, or changed by another thread
            self._counts._check_at = now + idle_ns
            return
        if now - entry.used_ns >= idle_ns:
            with self._lock:
                if (
                    entries.get(key) is entry
                    and now - entry.used_ns >= idle_ns
                    and self._forget(key, entry)
                ):
                    self._counts._count(_EXPIRED)
            try:
                entry = next(iter(entries.values()))
            except (StopIteration, RuntimeError):
                self._counts._check_at = now + idle_ns
                return
        self._counts._check_at = max(entry.used_ns + idle_ns, now + idle_ns // _LOOK_EVERY + 1)

    def _free_one(self) -> None:
        entries = self._entries
        for _ in range(min(_SCAN, len(entries))):
            key, entry = next(iter(entries.items()))
            if self._forget(key, entry):
                self._counts._count(_EVICTED)
                return
        self._counts._count(_REFUSED)
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

    @property
    def name(self) -> str:
        """The name the registry's metrics report under."""
        name: str = self._counts._name
        return name

    def stats(self) -> KeyedStats:
        """Policies made, evicted, expired, new keys refused; the keys held and max_keys."""
        return KeyedStats(
            **self._counts._stat_values(), held_keys=len(self._entries), max_keys=self.max_keys
        )

    # -- decorator ---------------------------------------------------------------------------

    def __call__[**A, T](
        self, fn: Callable[A, Awaitable[T]]
    ) -> Callable[A, Coroutine[Any, Any, T]]:
        """Decorates an async function: each call runs under the policy of its key."""
        _core.check_async(fn, "keyed")
        self._counts._adopt_name(fn)
        if self._template is not None:  # its copies report under fn's name, as made ones do
            self._template._adopt_name(fn)
        arg = _returned_arg(self._key)
        route = _native.KeyedRoute(
            self,
            self._entries,
            self._key,
            fn,
            self._counts,
            self._idle_ns is not None,
            -1 if arg is None else arg[0],
            0 if arg is None else arg[1],
        )
        guard: Callable[A, Coroutine[Any, Any, T]] = _core.make_guard(fn, route)
        return guard

    def _admit(self, fn: Callable[..., Any], key: Any) -> _native.KeyedEntry:
        """For the C route: key's entry (made if missing; a look for idle keys when due) with
        its guard for fn, pinned for a call. Under the lock, so nothing forgets it first."""
        with self._lock:
            entries = self._entries
            entry = entries.get(key)
            now = _native.now_ns()
            if entry is None:
                entry = self._make_locked(key, now)
            else:
                entries.move_to_end(key)
                entry.used_ns = now
                if self._idle_ns is not None:
                    self._expire_one(now)
            self._guard_locked(entry, fn)
            entry._pin()
            return entry

    async def _routed(self, fn: Callable[..., Any], key: Any, *args: Any, **kwargs: Any) -> Any:
        """A call the C route hands over: a policy written in Python (or a key whose entry
        was forgotten while the route looked at it)."""
        entry = self._pinned(key)
        try:
            guard = entry._guard_of(fn)
            if guard is None:
                guard = self._guard(entry, fn)
            if guard is entry.policy:  # a C policy the route calls directly
                guard = _native.Guard(fn, guard)
            return await guard(*args, **kwargs)
        finally:
            entry._unpin()

    async def _hold(self, entry: _native.KeyedEntry, aw: Awaitable[Any]) -> Any:
        """Awaits aw (a call the C route made but does not observe) with entry pinned."""
        entry._pin()
        try:
            return await aw
        finally:
            entry._unpin()

    def _pinned(self, key: Any) -> _native.KeyedEntry:
        """key's entry, pinned for a call. Pinned, then checked: a thread forgetting an entry
        looks at its pins after taking it out, so either it sees this pin and puts the entry
        back, or this sees the entry gone and looks again."""
        while True:
            entry = self._entry(key)
            entry._pin()
            if self._entries.get(key) is entry:
                return entry
            entry._unpin()

    def _guard(self, entry: _native.KeyedEntry, fn: Callable[..., Any]) -> Any:
        """The entry's policy applied to fn, once (a cache may decorate only one function):
        its guard, or the policy itself when the route calls it directly."""
        with self._lock:
            return self._guard_locked(entry, fn)

    def _guard_locked(self, entry: _native.KeyedEntry, fn: Callable[..., Any]) -> Any:
        guard = entry._guard_of(fn)
        if guard is None:
            policy = entry.policy
            if type(policy).__call__ is _COMPONENT_CALL:
                # What Component.__call__ does, less the guard (the route calls a C policy
                # directly; the registry's own guard is the one handed out).
                if not policy._explicit_name:  # a copy of a template has its name already
                    policy._adopt_name(fn)
                entry._set_guard(fn, None)
                return policy  # what _guard_of answers for a policy called directly
            guard = policy(fn)
            entry._set_guard(fn, guard)
        return guard

    def __repr__(self) -> str:
        return f"<keyed {len(self._entries)}/{self.max_keys} keys idle_after={self.idle_after}>"


@overload
def keyed[P: CircuitBreaker](
    factory: P,
    *,
    key: Callable[..., Hashable],
    max_keys: int = 10_000,
    idle_after: float | None = None,
    name: str | None = None,
) -> Keyed[P]: ...
@overload
def keyed[P](
    factory: Callable[[Any], P],
    *,
    key: Callable[..., Hashable],
    max_keys: int = 10_000,
    idle_after: float | None = None,
    name: str | None = None,
) -> Keyed[P]: ...
def keyed[P](
    factory: Any,
    *,
    key: Callable[..., Hashable],
    max_keys: int = 10_000,
    idle_after: float | None = None,
    name: str | None = None,
) -> Keyed[P]:
    """A registry of ``factory(key)`` policies, one per ``key(*args, **kwargs)``, as a
    decorator (``.get(key)`` gives a key's policy, e.g. for ``async with``); ``name`` names
    its metrics (default: the first decorated function's)."""
    return Keyed(factory, key=key, max_keys=max_keys, idle_after=idle_after, name=name)


if TYPE_CHECKING:  # the methods C calls by name
    _routes: type[_native.KeyedRoutes] = Keyed
