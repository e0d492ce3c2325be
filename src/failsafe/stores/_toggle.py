"""A feature toggle whose switch and rollout are shared through a store: ``featuretoggle(store=)``.

Evaluation stays local: the policy is the in-process C toggle, and the store only updates it.
The state lives in one hash (``enabled``, ``rollout``); a change is written by a script that
also publishes on the policy's channel, and every process re-reads the hash on that message and
every ``_POLL`` seconds (the safety net when a message is lost).

Each flip carries a version (its wall-clock time in ns and a per-process tie-break, stored
beside the field as ``enabled_v`` / ``rollout_v``): the store keeps a field's value only from a
flip newer than the stored one, so the last flip by time wins in every process, whatever order
the writes arrive in. A flip the store did not take (down, slow) stays due: the watcher's next
turn stores it with its read, and until then a read does not undo it locally unless the stored
flip is newer. A hash without versions (written by an earlier release) reads as version 0.

Until a process has read the state once, its calls take the Python path, which reads it first;
after that they cost what an in-process toggle costs.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, Final, Self

from failsafe import _core, _native
from failsafe.featuretoggle import FeatureToggle
from failsafe.stats import SharedFeatureToggleStats
from failsafe.stores._base import Store, StoreUnavailable, check_store, start_watching, text
from failsafe.stores._version import NEWER_LUA, newer, stamp

__all__ = ["SharedFeatureToggle"]

# The C toggle's own flag (the subclass's property sets it through enable()/disable()).
_FLAG: Final[Any] = _native.FeatureToggle.__dict__["enabled"]
_POLL: Final = 0.5  # seconds between re-reads of the stored state (pub/sub is the fast path)

_FIELDS: Final = ("enabled", "rollout")

# KEYS: state hash. ARGV: channel, seed enabled (0|1), seed rollout ('' when none), then
# (field, value, version) per flip to store. Seeds the state when absent (unversioned: any flip
# is newer); stores each flip newer than its field's stored version (none: ''); publishes when
# it stored one.
# Replies {enabled, rollout, enabled_v, rollout_v}.
_SYNC: Final = (
    NEWER_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'enabled', ARGV[2], 'rollout', ARGV[3])
end
local stored = false
for i = 4, #ARGV, 3 do
  if newer(ARGV[i + 2], redis.call('HGET', KEYS[1], ARGV[i] .. '_v') or '') then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1], ARGV[i] .. '_v', ARGV[i + 2])
    stored = true
  end
end
if stored then
  redis.call('PUBLISH', ARGV[1], '1')
end
return redis.call('HMGET', KEYS[1], 'enabled', 'rollout', 'enabled_v', 'rollout_v')
"""
)


def _gate(*args: Any, **kwargs: Any) -> bool:  # pragma: no cover - never called: a marker
    """Stands for "state not read yet": sends the C guard to the Python path."""
    return True


class _Stored:
    """The awaitable enable()/disable()/set_rollout() return; it gives None and never raises.
    It is done once the store has answered (it took the change, or kept a newer flip made
    elsewhere, which then applies here too), or once it failed to answer (down, slower than
    ``op_timeout``): then the change acts locally, stays due and the watcher stores it when the
    store answers again, unless a newer flip made elsewhere was stored meanwhile. Made outside
    an event loop, it is done at once and the first call stores the change."""

    __slots__ = ("_task",)

    def __init__(self, task: asyncio.Task[None] | None) -> None:
        self._task = task

    def __await__(self) -> Generator[Any, None, None]:
        if self._task is not None:
            yield from asyncio.shield(self._task).__await__()


class SharedFeatureToggle(FeatureToggle):
    """A feature toggle shared by every process using the same store and ``name``.

    ``enable()``, ``disable()`` and ``set_rollout()`` act locally at once and return an awaitable
    done once the store has answered (then every process sees it within about a second; not
    awaiting it still propagates); a change the store did not take stays due and is stored
    when it answers again. The last flip by wall-clock time wins. A process reads the stored
    state before its first call; the first process to read it seeds it with its ``enabled`` /
    ``rollout``. When the store cannot answer, ``on_error`` decides: ``"local"`` and
    ``"allow"`` keep the last known state, ``"deny"`` refuses every call until the store
    answers again.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        predicate: Callable[..., Any] | None = None,
        rollout: float | None = None,
        key: Callable[..., str | bytes | int] | None = None,
        name: str | None = None,
        listeners: Iterable[Any] | None = None,
        event_manager: Any = None,
        store: Any = None,
    ) -> None:
        self._store: Store = check_store(store, name, "featuretoggle")
        super().__init__(
            enabled=enabled,
            predicate=predicate,
            rollout=rollout,
            key=key,
            name=name,
            listeners=listeners,
            event_manager=event_manager,
        )
        assert name is not None
        self._key_fn = key
        self._hash = self._store.key(name, "toggle")
        self._channel = self._store.key(name, "toggle", "changed")
        self._remote_enabled = enabled  # the last state known from the store (or set here)
        self._loaded = False
        # The version of each field's local value ('' for the built state) and the fields whose
        # local flip the store has not taken yet.
        self._versions = dict.fromkeys(_FIELDS, "")
        self._due: set[str] = set()
        self._denied = False  # on_error="deny" while the store is down
        self._watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]]
        self._watchers = weakref.WeakKeyDictionary()
        self._reading: asyncio.Task[None] | None = None  # a read started by reading the state
        self._apply(gate=True)

    # -- local state -------------------------------------------------------------------------

    def _apply(self, *, gate: bool = False) -> None:
        """Sets the C toggle to the known state (the gate: every call asks Python first)."""
        percent = self._rollout
        user = self._predicate
        flag = bool(_FLAG.__get__(self))
        self._configure(
            enabled=True if gate else flag,
            predicate=_gate if gate else user,
            pred_async=gate or (user is not None and _core.is_async_callable(user)),
            key=self._key_fn,
            rollout=100.0 if percent is None else percent,
        )
        if not gate:  # the C flag reports on_feature_toggled when it changes
            _FLAG.__set__(self, self._remote_enabled and not self._denied)

    def _update(self, enabled: bool, rollout: float | None) -> None:
        if self._key_fn is None:
            rollout = None
        changed = not self._loaded or (enabled, rollout) != (self._remote_enabled, self._rollout)
        self._remote_enabled, self._rollout = enabled, rollout
        if changed or self._denied:
            self._denied = False
            self._loaded = True
            self._apply()

    # -- the store ---------------------------------------------------------------------------

    def _value(self, field: str) -> str:
        if field == "enabled":
            return "1" if self._remote_enabled else "0"
        return "" if self._rollout is None else repr(self._rollout)

    async def _sync(self) -> None:
        """Stores the flips still due and reads the stored state (seeding it when absent)."""
        args = [self._channel, self._value("enabled"), self._value("rollout")]
        for field in self._due:
            args += (field, self._value(field), self._versions[field])
        reply = await self._store._submit(_script(_SYNC), (self._hash,), tuple(args))
        raw_enabled, raw_rollout, v_enabled, v_rollout = (text(v) for v in reply)
        enabled, rollout = self._remote_enabled, self._rollout
        if self._take("enabled", v_enabled):
            enabled = raw_enabled == "1"
        if self._take("rollout", v_rollout):
            rollout = float(raw_rollout) if raw_rollout else None
        self._update(enabled, rollout)

    def _take(self, field: str, stored: str) -> bool:
        """Whether a field's stored value replaces the local one: not when the local flip is
        newer (a flip of ours the store has not taken, or a reply overtaken by a later one:
        it stays, or becomes, due)."""
        if newer(self._versions[field], stored):
            self._due.add(field)
            return False
        self._due.discard(field)
        self._versions[field] = stored
        return True

    async def _refresh(self) -> None:
        try:
            await self._sync()
        except StoreUnavailable:
            self._store._fell_back()
            if self._store.on_error == "deny" and not self._denied:
                self._denied = True
                self._apply()
            elif not self._loaded:  # "local"/"allow": start from the built state
                self._loaded = True
                self._apply()

    def _watch(self) -> None:
        """Starts this loop's watcher (pub/sub plus poll) once."""
        start_watching(self, _POLL)

    def _unwatched(self) -> None:
        """A watcher ended (its loop is closing): until the state is read again (the next call
        or read, from any loop, does it and watches it from there), calls take the Python
        path; the last known state stays meanwhile."""
        self._loaded = False
        self._apply(gate=True)

    async def ready(self) -> Self:
        """Reads the stored state now (a call does it anyway before the first call)."""
        self._watch()
        await self._refresh()
        return self

    def _flip(self, field: str) -> _Stored:
        """Versions a local flip of a field, marks it due and stores it in the background."""
        self._versions[field] = stamp()
        self._due.add(field)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the first call (Python path until read) stores it
            self._apply(gate=not self._loaded)
            return _Stored(None)
        self._loaded = True
        self._apply()
        self._watch()

        async def store() -> None:
            try:
                await self._sync()
            except StoreUnavailable:  # stays due: the watcher's next turn stores it
                self._store._fell_back()

        return _Stored(loop.create_task(store()))

    # -- switching ---------------------------------------------------------------------------

    def enable(self) -> Awaitable[None]:
        self._remote_enabled = True
        return self._flip("enabled")

    def disable(self) -> Awaitable[None]:
        self._remote_enabled = False
        return self._flip("enabled")

    def _start(self) -> None:
        """A read of the state before any call: starts watching it from this event loop and
        reads it now, in the background (``await ready()`` waits for the stored state)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the first call (or read within a loop) does it
            return
        if start_watching(self, _POLL):  # else a call, ready() or an earlier read started it
            self._reading = loop.create_task(self._refresh())

    @property
    def enabled(self) -> bool:
        if not self._loaded:  # the C flag is the gate's until the state is read
            self._start()
            return self._remote_enabled and not self._denied
        return bool(_FLAG.__get__(self))

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"enabled must be a bool, not {type(value).__name__}")
        self.enable() if value else self.disable()

    @property
    def rollout(self) -> float | None:
        if not self._loaded:
            self._start()
        return self._rollout

    def set_rollout(self, percent: float) -> Awaitable[None]:
        """Changes the rollout percentage in every process (the toggle needs ``key=``)."""
        if self._key_fn is None:
            raise ValueError("set_rollout needs a toggle built with rollout= and key=")
        value = _core.check_number(percent, "percent")
        if value > 100:
            raise ValueError(f"percent must be a percentage from 0 to 100, got {value}")
        self._rollout = float(value)
        return self._flip("rollout")

    # -- calls before the state is known -----------------------------------------------------

    async def _first(self) -> None:
        self._watch()
        if not self._loaded:
            await self._refresh()

    async def _call_slow(
        self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> Any:
        await self._first()
        verdict: Any = True
        if self._predicate is not None:
            verdict = self._predicate(*args, **kwargs)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        self._decide(verdict, args, kwargs)
        return await fn(*args, **kwargs)

    async def __aenter__(self) -> Self:
        if not self._loaded:
            await self._first()
        return await super().__aenter__()

    def stats(self) -> SharedFeatureToggleStats:
        return SharedFeatureToggleStats(
            **self._stat_values(), loaded=self._loaded, store_up=self._store.up
        )


if TYPE_CHECKING:  # the methods C calls by name
    _slow_call: type[_native.SlowCall] = SharedFeatureToggle


_SCRIPTS: dict[str, Any] = {}


def _script(source: str) -> Any:
    """The store's script object of a source (made once)."""
    script = _SCRIPTS.get(source)
    if script is None:
        from failsafe.stores.redis import Script

        script = _SCRIPTS[source] = Script(source)
    return script
