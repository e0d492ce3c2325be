"""A circuit breaker whose open state, break and probes are shared through a store:
``circuitbreaker(..., store=, name=)`` and ``consecutive_breaker(..., store=, name=)``.

Failures are counted per process, by the in-process C breaker: the closed state costs what it
costs today (no round trip, one more flag test). When a process's breaker trips, it writes the
break into the store (its end on the server's clock) and publishes it; every process then
sends its calls to the Python path (the gate), which rejects them with ``BreakerFailing`` until
the break ends. Then at most ``half_open_max_calls`` probes run across all processes (a script
hands out the probe slots atomically); ``recovery_threshold`` successes close it for all, one
failure reopens it for all. Each process re-reads the state on every message of the breaker's
channel and every ``_POLL`` seconds (the safety net).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

from failsafe import _native
from failsafe.circuitbreaker import CircuitBreaker
from failsafe.circuitbreaker.exceptions import BreakerFailing
from failsafe.stats import SharedBreakerStats
from failsafe.stores._base import SharedLatch, Store, StoreUnavailable, check_store
from failsafe.stores._toggle import _script
from failsafe.stores._version import VERSIONED_HASH_LUA, stamp

__all__ = ["SharedBreaker"]

_US: Final = 1_000_000
CLOSED, OPEN, HALF_OPEN = 0, 1, 2

# The state hash: until (break end, server µs; absent: closed), isolated, probes (slots taken),
# ok (successful probes), v (the version of the last change stored; absent in a hash written by
# an earlier release: older than any). A change (trip, outcome, isolate, reset) is stored only
# when its version (ARGV[1]) is newer, and published only then. Every script replies {state, µs
# left of the break or -1, ..., stored version}.
_STATE: Final = (
    VERSIONED_HASH_LUA
    + """
local function state(now)
  if redis.call('HGET', KEYS[1], 'isolated') == '1' then return {1, -1} end
  local stop = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
  if stop == 0 then return {0, -1} end
  if now < stop then return {1, stop - now} end
  return {2, 0}
end
local function close()
  redis.call('HDEL', KEYS[1], 'until', 'isolated', 'probes', 'ok')
end
local function open(now, us)
  redis.call('HSET', KEYS[1], 'until', string.format('%d', now + tonumber(us)), 'probes', 0,
    'ok', 0)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""
)

# ARGV: version, channel, recovery µs. A trip: opens (unless already open or isolated).
_TRIP: Final = (
    _STATE
    + """
if take(ARGV[1]) and state(now)[1] ~= 1 then
  open(now, ARGV[3])
  redis.call('PUBLISH', ARGV[2], 'open')
end
return reply(state(now))
"""
)

_READ: Final = _STATE + "return reply(state(now))\n"

# ARGV: half_open_max_calls. Reply {state, left, granted (0|1), version}.
_PROBE: Final = (
    _STATE
    + """
local s = state(now)
if s[1] ~= 2 then return reply({s[1], s[2], 0}) end
if tonumber(redis.call('HGET', KEYS[1], 'probes') or '0') >= tonumber(ARGV[1]) then
  return reply({2, 0, 0})
end
redis.call('HINCRBY', KEYS[1], 'probes', 1)
return reply({2, 0, 1})
"""
)

# ARGV: version, channel, success (0|1), recovery_threshold, recovery µs. A probe's outcome:
# decided by the stored state (half-open), it stamps its version when newer.
_OUTCOME: Final = (
    _STATE
    + """
local s = state(now)
if s[1] ~= 2 then return reply(s) end
if ARGV[3] == '1' then
  local ok = redis.call('HINCRBY', KEYS[1], 'ok', 1)
  redis.call('HINCRBY', KEYS[1], 'probes', -1)
  if ok >= tonumber(ARGV[4]) then
    close()
    take(ARGV[1])
    redis.call('PUBLISH', ARGV[2], 'closed')
  end
else
  open(now, ARGV[5])
  take(ARGV[1])
  redis.call('PUBLISH', ARGV[2], 'open')
end
return reply(state(now))
"""
)

# ARGV: version, channel, isolate (1) or reset (0).
_FORCE: Final = (
    _STATE
    + """
if take(ARGV[1]) then
  if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'isolated', '1') else close() end
  redis.call('PUBLISH', ARGV[2], 'forced')
end
return reply(state(now))
"""
)


class SharedBreaker(SharedLatch, CircuitBreaker):
    """A circuit breaker shared by every process using the same store and ``name``.

    ``on_error`` when the store cannot answer: ``"local"``: this process's own breaker decides
    (its gate opens only on its own trips); ``"allow"``: calls are admitted as by a closed
    breaker; ``"deny"``: calls are refused with ``BreakerFailing``.
    """

    _READ: ClassVar[str] = _READ

    def __init__(self, *, store: Any = None, **kw: Any) -> None:
        super().__init__(**kw)
        self._store: Store = check_store(store, kw.get("name"), "circuitbreaker")
        self._hash = self._store.key(self.name, "breaker")
        self._channel = self._store.key(self.name, "breaker", "changed")
        self._shared_state = CLOSED
        self._until = 0.0  # time.monotonic() of the shared break's end (0.0: unknown or none)
        self._probes = self._options.half_open_max_calls
        self._watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]]
        self._watchers = weakref.WeakKeyDictionary()
        self._recovery_us = int(self._options.recovery_time * _US)
        # The `async with` blocks entered while the shared state was not closed, per task, in
        # order: True for a shared probe (its exit stores the outcome), False for the C breaker's.
        self._blocks: dict[asyncio.Task[Any] | None, list[bool]] = {}
        self._shared = 1
        self._gate = 1  # the first call reads the shared state (and starts watching it)

    # -- the shared state, applied locally ---------------------------------------------------

    def _apply(self, reply: Any) -> None:
        state, left = int(reply[0]), int(reply[1])
        self._shared_state = state
        self._until = time.monotonic() + left / _US if left >= 0 else 0.0
        if state == CLOSED:
            if self._gate:
                self._gate = 0
                if not self._rewatch:
                    CircuitBreaker.reset(self)  # the fleet closed: so does this process
        else:
            self._gate = 1
        self._rewatch = 0

    async def _ask(self, source: str, *args: int | str) -> Any:
        reply = await self._store._submit(_script(source), (self._hash,), args)
        if source is not _PROBE:
            self._settle(reply)
        return reply

    def _closed(self, reply: Any) -> bool:
        """A probe's reply of a closed shared state: applied unless the local state is newer
        (a change of ours not stored yet); whether calls now go to the C breaker."""
        return self._settle((CLOSED, -1, reply[-1])) or not self._gate

    def _unavailable(self) -> None:
        self._store._fell_back()
        mode = self._store.on_error
        if mode == "allow":
            self._gate = 0
            CircuitBreaker.reset(self)
        elif mode == "deny":
            self._shared_state, self._until, self._gate = OPEN, 0.0, 1
        else:  # "local": this process's breaker alone
            self._gate = 0

    def _tripped(self) -> None:
        """Called by the C breaker when this process's breaker trips: open it for all."""
        self._gate = 1
        self._shared_state = OPEN
        self._until = time.monotonic() + self._options.recovery_time
        self._send(_TRIP, self._channel, self._recovery_us, until=self._until)

    # -- calls while the shared state is not closed ------------------------------------------

    def _reject(self) -> BreakerFailing:
        self._count_rejected()
        left = None if self._until == 0.0 else max(0.0, self._until - time.monotonic())
        return BreakerFailing("Circuit Breaker is in the failing state", retry_after=left)

    def _count_rejected(self) -> None:
        self._count(5)

    async def _call_slow(
        self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> Any:
        self._watch()
        if not await self._shared_gate():  # closed for the fleet (or the store unreachable)
            return await self(fn)(*args, **kwargs)
        try:  # a probe slot of the fleet's
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, Exception) and self._is_failure(exc):
                await self._outcome(False)
            else:  # not a failure (or cancelled): the slot is given back as a success would
                await self._outcome(True)
            raise
        await self._outcome(True)
        return result

    # -- the block form ---------------------------------------------------------------------

    def __aenter__(self) -> Awaitable[Self]:
        if not self._gate and not self._blocks:  # closed for the fleet: the C breaker's own
            return _native.Breaker.__aenter__(self)
        return self._enter_shared()

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Awaitable[None]:
        if not self._blocks:
            return _native.Breaker.__aexit__(self, exc_type, exc, tb)
        return self._exit_shared(exc_type, exc, tb)

    async def _enter_shared(self) -> Self:
        """An `async with` entered while the shared state is not closed: rejected while open,
        a shared probe slot when half-open, else the C breaker's admission."""
        self._watch()
        # Timed (latency histograms) only while _latency is set; the C breaker's own admission
        # times itself.
        t0 = None if self._latency is None else _native.now_ns()
        probe = False
        if self._gate:
            try:
                probe = await self._shared_gate()
            except BaseException as exc:
                if t0 is not None:
                    self._block_refused(t0, exc)
                raise
        if not probe:
            await _native.Breaker.__aenter__(self)
        self._blocks.setdefault(asyncio.current_task(), []).append(probe)
        if probe and t0 is not None:
            self._block_open(t0)
        return self

    async def _shared_gate(self) -> bool:
        """The shared state's verdict on a call or block: True for a probe slot, False for the
        local (C) breaker to decide (closed for the fleet: the first call, or a stale gate; or
        the store unreachable and on_error allows); raises the rejection."""
        if self._shared_state == OPEN and (self._until == 0.0 or time.monotonic() < self._until):
            raise self._reject()
        try:
            reply = await self._ask(_PROBE, self._probes)
        except StoreUnavailable:
            self._unavailable()
            if self._store.on_error == "deny":
                raise self._reject() from None
            return False
        state, _, granted = reply[:3]
        if int(state) == CLOSED:
            if not self._closed(reply):
                raise self._reject()
            return False
        if not int(granted):
            if int(state) == OPEN:
                await self._refresh()
            raise self._reject()
        return True

    async def _exit_shared(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = asyncio.current_task()
        marks = self._blocks.get(task)
        if not marks:  # entered by the C breaker before this task had a shared block
            await _native.Breaker.__aexit__(self, exc_type, exc, tb)
            return
        probe = marks.pop()
        if not marks:
            del self._blocks[task]
        if not probe:
            await _native.Breaker.__aexit__(self, exc_type, exc, tb)
            return
        if self._latency is not None:
            self._block_exited(exc)
        # Not a failure (or cancelled): the slot is given back as a success would.
        await self._outcome(not (isinstance(exc, Exception) and self._is_failure(exc)))

    def _is_failure(self, exc: Exception) -> bool:
        on = self.exceptions
        if isinstance(on, tuple):
            return isinstance(exc, on)
        if isinstance(on, type):
            return isinstance(exc, on)
        return bool(on(exc))

    async def _outcome(self, success: bool) -> None:
        with contextlib.suppress(StoreUnavailable):
            await asyncio.shield(
                self._ask(
                    _OUTCOME,
                    stamp(),
                    self._channel,
                    "1" if success else "0",
                    self.recovery_threshold,
                    self._recovery_us,
                )
            )

    # -- forced states -----------------------------------------------------------------------

    def isolate(self) -> Awaitable[None]:  # type: ignore[override]
        """Forces it failing in every process until ``reset()``; awaitable: done once stored."""
        CircuitBreaker.isolate(self)
        self._shared_state, self._until, self._gate = OPEN, 0.0, 1
        return _Done(self._send(_FORCE, self._channel, "1"))

    def reset(self) -> Awaitable[None]:  # type: ignore[override]
        """Closes it in every process; awaitable: done once stored."""
        CircuitBreaker.reset(self)
        self._shared_state, self._until, self._gate = CLOSED, 0.0, 0
        return _Done(self._send(_FORCE, self._channel, "0"))

    def stats(self) -> SharedBreakerStats:
        return SharedBreakerStats(
            **self._stat_values(),
            shared_state=("closed", "open", "half_open")[self._shared_state],
        )


if TYPE_CHECKING:  # the methods C calls by name
    _tripped: type[_native.Tripped] = SharedBreaker
    _slow_call: type[_native.SlowCall] = SharedBreaker


class _Done:
    """Awaitable of a change being stored (already done when there was no event loop)."""

    __slots__ = ("_task",)

    def __init__(self, task: asyncio.Task[None] | None) -> None:
        self._task = task

    def __await__(self) -> Any:
        if self._task is not None:
            yield from asyncio.shield(self._task).__await__()
