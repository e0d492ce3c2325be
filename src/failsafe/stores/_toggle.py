"""A feature toggle whose switch and rollout are shared through a store: ``featuretoggle(store=)``.

Evaluation stays local: the policy is the in-process C toggle, and the store only updates it.
The state lives in one hash (``enabled``, ``rollout``); a change is written by a script that
also publishes on the policy's channel, and every process re-reads the hash on that message and
every ``_POLL`` seconds (the safety net when a message is lost). Until a process has read the
state once, its calls take the Python path, which reads it first; after that they cost what an
in-process toggle costs.
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
from failsafe.stores._base import Store, StoreUnavailable, check_store, watch

__all__ = ["SharedFeatureToggle"]

# The C toggle's own flag (the subclass's property sets it through enable()/disable()).
_FLAG: Final[Any] = _native.FeatureToggle.__dict__["enabled"]
_POLL: Final = 0.5  # seconds between re-reads of the stored state (pub/sub is the fast path)

# KEYS: state hash. ARGV: enabled (0|1), rollout ('' when none). Seeds the state when absent;
# replies {enabled, rollout}.
_READ: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'enabled', ARGV[1], 'rollout', ARGV[2])
end
return redis.call('HMGET', KEYS[1], 'enabled', 'rollout')
"""

# KEYS: state hash. ARGV: channel, field, value. Stores one change and tells every process.
_WRITE: Final = """
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""


def _gate(*args: Any, **kwargs: Any) -> bool:  # pragma: no cover - never called: a marker
    """Stands for "state not read yet": sends the C guard to the Python path."""
    return True


class _Stored:
    """The awaitable enable()/disable() return: done once the store has the change (or could
    not take it: the change stays local and is retried by the next change or a reconnect)."""

    __slots__ = ("_task",)

    def __init__(self, task: asyncio.Task[None] | None) -> None:
        self._task = task

    def __await__(self) -> Generator[Any, None, None]:
        if self._task is not None:
            yield from asyncio.shield(self._task).__await__()


class SharedFeatureToggle(FeatureToggle):
    """A feature toggle shared by every process using the same store and ``name``.

    ``enable()``, ``disable()`` and ``set_rollout()`` act locally at once and return an awaitable
    done once the change is stored (then every process sees it within about a second; not
    awaiting it still propagates). A process reads the stored state before its first call; the
    first process to read it seeds it with its ``enabled`` / ``rollout``. When the store cannot
    answer, ``on_error`` decides: ``"local"`` and ``"allow"`` keep the last known state,
    ``"deny"`` refuses every call until the store answers again.
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
        self._writes = 0  # changes of this process not yet stored: refreshes wait for them
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

    async def _read(self) -> None:
        """Reads the stored state (seeding it when absent) and applies it."""
        seed_rollout = "" if self._rollout is None else repr(self._rollout)
        writes = self._writes
        reply = await self._store._submit(
            _script(_READ), (self._hash,), ("1" if self._remote_enabled else "0", seed_rollout)
        )
        if self._writes or writes:  # a change of ours is in flight: it wins when stored
            return
        raw_enabled, raw_rollout = (_text(v) for v in reply)
        rollout = float(raw_rollout) if raw_rollout else None
        self._update(raw_enabled == "1", rollout)

    async def _refresh(self) -> None:
        try:
            await self._read()
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
        loop = asyncio.get_running_loop()
        if loop in self._watchers:
            return
        self._watchers[loop] = loop.create_task(watch(weakref.ref(self), self._store, _POLL))

    async def ready(self) -> Self:
        """Reads the stored state now (a call does it anyway before the first call)."""
        self._watch()
        await self._refresh()
        return self

    def _write(self, field: str, value: str) -> _Stored:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop: stored by the watcher of the first loop that runs
            return _Stored(None)
        self._watch()
        self._writes += 1

        async def store() -> None:
            try:
                await self._store._submit(
                    _script(_WRITE), (self._hash,), (self._channel, field, value)
                )
            except StoreUnavailable:
                self._store._fell_back()
            finally:
                self._writes -= 1

        return _Stored(asyncio.get_running_loop().create_task(store()))

    # -- switching ---------------------------------------------------------------------------

    def enable(self) -> Awaitable[None]:
        self._remote_enabled = True
        self._loaded = True
        self._apply()
        return self._write("enabled", "1")

    def disable(self) -> Awaitable[None]:
        self._remote_enabled = False
        self._loaded = True
        self._apply()
        return self._write("enabled", "0")

    def _start(self) -> None:
        """A read of the state before any call: starts watching it from this event loop and
        reads it now, in the background (``await ready()`` waits for the stored state)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the first call (or read within a loop) does it
            return
        if loop in self._watchers:  # a call, ready() or an earlier read started it
            return
        self._watch()
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
        self._loaded = True
        self._apply()
        return self._write("rollout", repr(float(value)))

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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else "" if value is None else str(value)
