"""What every store shares: the ``on_error`` choice, the per-operation timeout, a breaker around
the store itself, and counters of its errors and fallbacks (exported like any policy's)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from typing import Any, ClassVar, Final, Protocol, Self

from failsafe import _core, _native
from failsafe.stats import StoreStats
from failsafe.stores._version import newer, stamp

__all__ = ["ON_ERROR", "Store", "StoreUnavailable"]

ON_ERROR: Final = ("local", "allow", "deny")

# Counter indexes of a store's metrics (the C module defines their order).
ROUND_TRIPS, DECISIONS, ERRORS, FALLBACKS, OPENED = _core.counter_indexes(
    "store",
    "round_trips",
    "decisions",
    "errors",
    "fallbacks",
    "opened",
    table=_native.STORE_METRICS,
)


class StoreUnavailable(Exception):  # internal: never reaches a guarded call
    """The store could not answer in time (down, slow, restarting, or its breaker is open)."""


class _Metrics(_core.Component, _native.Outcome):
    """A store's C counters, so the OpenTelemetry instrumentor exports them as
    ``{namespace}.{store name}.store.{metric}``."""

    PATTERN: ClassVar[str] = "store"
    METRICS: ClassVar[tuple[str, ...]] = _native.STORE_METRICS["store"]

    def __new__(cls, name: str) -> _Metrics:
        # The pattern index only selects global listener flags, which a store never reads.
        return super().__new__(cls, _core.PATTERNS["fallback"])

    def __init__(self, name: str) -> None:
        self._init_component(name, None)

    def __repr__(self) -> str:
        return f"<store metrics {self._name!r}>"  # the store's stats() has them


class Store:
    """Base of the stores accepted by ``store=``.

    ``on_error`` says what a policy does when the store cannot answer within ``op_timeout``
    seconds: ``"local"`` decides with the same policy kept in this process, ``"allow"`` admits,
    ``"deny"`` refuses with the pattern's own exception. After a failure the store is not asked
    again for ``retry_interval`` seconds (every decision falls back at once meanwhile), then one
    batch probes it; sharing resumes with the first answer.
    """

    retry_interval: float = 1.0

    def __init__(self, *, name: str, on_error: object, op_timeout: object) -> None:
        if not isinstance(on_error, str):
            raise TypeError(f"on_error must be a str, not {type(on_error).__name__}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        timeout = _core.check_number(op_timeout, "op_timeout", allow_zero=False)
        if math.isinf(timeout):
            raise ValueError("op_timeout must be finite")
        self.on_error: str = on_error
        self.op_timeout: float = float(timeout)
        self._metrics = _Metrics(name)
        self._down_until = 0.0  # time.monotonic() before which the store is not asked
        self._probing = False

    # -- what a store provides to the policies (RedisStore implements them) --------------------

    def key(self, name: str, *parts: object) -> str:
        """The store key of a policy named name (or of one of its parts)."""
        raise NotImplementedError

    def _submit(self, script: Any, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """Queues one atomic decision; returns a future of its reply (or StoreUnavailable)."""
        raise NotImplementedError

    def _subscribe(self, channel: str, callback: Any) -> Any:
        """Calls callback on each message of channel; returns the unsubscribe function."""
        raise NotImplementedError

    # -- the breaker around the store ----------------------------------------------------------

    def _may_ask(self) -> bool:
        """Whether a request now would be sent (no side effect, unlike _available)."""
        return self._down_until == 0.0 or (
            time.monotonic() >= self._down_until and not self._probing
        )

    def _available(self) -> bool:
        """False while the store is known down: decide without it, at once."""
        if self._down_until == 0.0:
            return True
        if time.monotonic() < self._down_until or self._probing:
            return False
        self._probing = True  # this batch probes; the others fall back until it answers
        return True

    def _succeeded(self) -> None:
        self._down_until = 0.0
        self._probing = False

    def _failed(self) -> None:
        self._count(ERRORS)
        if self._down_until == 0.0:
            self._count(OPENED)
        self._down_until = time.monotonic() + self.retry_interval
        self._probing = False

    def _retry_in(self) -> float:
        """Seconds until the store is asked again (0.0: it is asked now)."""
        return max(0.0, self._down_until - time.monotonic()) if self._down_until else 0.0

    def _count(self, index: int, n: int = 1) -> None:
        self._metrics._count(index, n)

    def _fell_back(self) -> None:
        self._count(FALLBACKS)

    @property
    def up(self) -> bool:
        """Whether the last operation succeeded (False while the breaker around it is open)."""
        return self._down_until == 0.0

    def _stat_values(self) -> dict[str, Any]:
        return {
            **self._metrics._stat_values(),
            "up": self.up,
            "retry_in": self._retry_in(),
            "on_error": self.on_error,
            "op_timeout": self.op_timeout,
        }

    def stats(self) -> StoreStats:
        """Counters (round trips, decisions, errors, fallbacks, times the breaker opened) and
        the state."""
        return StoreStats(**self._stat_values())

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<{type(self).__name__} {s['name']!r} up={s['up']} on_error={self.on_error!r}"
            f" errors={s['errors']} fallbacks={s['fallbacks']}>"
        )


def check_lease(value: object, param: str, default: float) -> float:
    """A duration the store keeps something for (a permit's lease, a lock): finite seconds,
    at least 0.01 (``default`` when None)."""
    secs = _core.check_number(default if value is None else value, param, allow_zero=False)
    if math.isinf(secs) or secs < 0.01:
        raise ValueError(f"{param} must be a finite number of seconds >= 0.01, got {secs}")
    return float(secs)


def check_store(store: object, name: object, pattern: str) -> Store:
    """Validates ``store=`` (a Store) and the explicit ``name=`` it requires."""
    if not isinstance(store, Store):
        raise TypeError(f"store must be a failsafe store (e.g. RedisStore), not {store!r}")
    if name is None:
        raise ValueError(
            f"{pattern} with store= needs an explicit name= (it names the shared keys)"
        )
    return store


class Watched(Protocol):
    """A shared policy whose state changes rarely: a channel announces changes, _refresh()
    reads the state again; one watcher per event loop, in _watchers; _unwatched() is told when
    one ends while the policy lives (its loop is closing)."""

    _channel: str
    _store: Store
    _watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]]

    async def _refresh(self) -> None: ...

    def _unwatched(self) -> None: ...


def start_watching(policy: Watched, poll: float) -> bool:
    """Starts the running event loop's watcher of policy; False when one runs already (or no
    loop runs). The watcher belongs to its loop: a later loop (a second ``asyncio.run``) gets
    its own."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    watchers = policy._watchers
    if loop in watchers:
        return False
    for closed in [other for other in watchers if other.is_closed()]:
        del watchers[closed]  # closed without ending its tasks: its watcher never runs again
    watchers[loop] = loop.create_task(watch(weakref.ref(policy), policy._store, poll))
    return True


async def watch(ref: weakref.ref[Any], store: Store, poll: float) -> None:
    """Re-reads a shared policy's state on each message of its channel and every poll seconds
    (the safety net when a message is lost); ends when the policy is gone (only a weak
    reference is held between reads) or when its loop ends it (then the policy is told)."""
    policy: Watched | None = ref()
    if policy is None:
        return
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    wake = asyncio.Event()
    unsubscribe = store._subscribe(policy._channel, wake.set)
    del policy
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await wake.wait()
            wake.clear()
            policy = ref()
            if policy is None:
                return
            await policy._refresh()
            del policy
    finally:
        unsubscribe()
        policy = ref()
        if policy is not None:  # (no loop may run here: closed when its task was collected)
            if policy._watchers.get(loop) is task:
                del policy._watchers[loop]  # (its task holds the loop)
            policy._unwatched()


# A change of a shared latch: (script, its arguments, time.monotonic() after which it no
# longer matters or None, its version); its first argument is the version; with an end, the
# last argument is the µs left, computed per attempt.
type Change = tuple[str, tuple[int | str, ...], float | None, str]


class SharedLatch:
    """The plumbing of a shared breaker or fail-fast latch: one watcher per event loop (pub/sub
    plus a poll every ``_POLL`` seconds), reads of the shared state, and changes stored in the
    background. The policy provides ``_ask`` (runs a script and settles its reply),
    ``_apply`` (sets the local state from a reply) and ``_unavailable`` (what ``on_error``
    decides when the store cannot answer).

    A change the store did not take (down, slow, still connecting) stays due: the watcher's
    next turn stores it instead of reading, until it is stored, a newer change replaces it or
    its end passes. Otherwise a trip made while the store was slow would stay in this process
    and the fleet would never learn of it. Each change carries a version (``_version.stamp``)
    and the store keeps it only when it is newer than the stored state's, so a change due from
    an outage never undoes a later one made elsewhere; every script replies the stored version
    last, and a reply older than the local state (a change of ours not stored yet, or a reply
    overtaken by a later change here) does not replace it."""

    _POLL: ClassVar[float] = 0.25
    _READ: ClassVar[str]  # the script reading the state
    _store: Store
    _channel: str
    _watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]]
    _due: Change | None = None  # the last change, until the store has taken it
    _version = ""  # the version of the local state: the last change made here or read
    _gate: int
    _rewatch = 0  # the gate is up only to watch from a new loop (not for a shared opening)

    async def _ask(self, source: str, *args: int | str) -> Any:
        raise NotImplementedError

    def _apply(self, reply: Any) -> None:
        raise NotImplementedError

    def _unavailable(self) -> None:
        raise NotImplementedError

    def _settle(self, reply: Any) -> bool:
        """Applies a reply unless the local state is newer; whether it applied it."""
        stored = text(reply[-1])
        if newer(self._version, stored):
            return False
        self._version = stored
        due = self._due
        if due is not None and not newer(due[3], stored):
            self._due = None  # stored, or overtaken by a newer change made elsewhere
        self._apply(reply)
        return True

    async def _refresh(self) -> None:
        """Stores the change still due (its reply is the state), else reads the state."""
        try:
            change = self._due
            if change is None or not await self._store_change(change):
                await self._ask(self._READ)
        except StoreUnavailable:
            self._unavailable()

    async def _store_change(self, change: Change) -> bool:
        """Sends change (raises StoreUnavailable); False if its end has passed (not sent)."""
        source, args, until, version = change
        if until is not None:
            left = until - time.monotonic()
            if left <= 0:
                if self._due is change:
                    self._due = None
                    if self._version == version:  # its effect ended here too: reads apply
                        self._version = ""
                return False
            args = (*args[:-1], max(1, int(left * 1_000_000)))
        await self._ask(source, *args)
        if self._due is change:
            self._due = None
        return True

    def _watch(self) -> None:
        start_watching(self, self._POLL)

    def _unwatched(self) -> None:
        """A watcher ended (its loop is closing): the next call, from any loop, takes the
        Python path, which reads the state and watches it from there."""
        if not self._gate:
            self._gate = self._rewatch = 1

    async def ready(self) -> Self:
        """Reads the shared state now (and keeps watching it from this event loop)."""
        self._watch()
        await self._refresh()
        return self

    def _send(
        self, source: str, *args: int | str, until: float | None = None
    ) -> asyncio.Task[None] | None:
        """Stores a change in the background (None outside an event loop: the first watcher
        stores it). ``until``: the time.monotonic() of its end; its last argument is then the
        µs left when it is sent. The change is versioned now (its first argument)."""
        version = self._version = stamp()
        self._rewatch = 0
        change = self._due = (source, (version, *args), until, version)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        self._watch()

        async def send() -> None:
            try:
                await self._store_change(change)
            except StoreUnavailable:
                self._unavailable()

        return loop.create_task(send())


def text(value: Any) -> str:
    """A script's reply value as a str ('' for nil)."""
    return value.decode() if isinstance(value, bytes) else "" if value is None else str(value)
