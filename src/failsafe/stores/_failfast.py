"""A fail-fast latch shared through a store: ``failfast(..., store=, name=)``.

Failures are counted per process by the in-process C latch (no round trip while closed). When a
process's latch opens (or ``open()`` is called), the opening is stored, with its end on the
server's clock when ``recovery_time`` is set, and published; every process then sends its calls
to the Python path (the gate), which rejects them with ``FailFastOpen`` until it closes (at
``recovery_time``, or ``close()`` anywhere). Each process re-reads the state on every message of
the latch's channel and every ``_POLL`` seconds (the safety net).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

from failsafe import _native
from failsafe.failfast import FailFast
from failsafe.failfast.exceptions import FailFastOpen
from failsafe.stats import SharedFailFastStats
from failsafe.stores._base import SharedLatch, Store, check_store
from failsafe.stores._breaker import _Done
from failsafe.stores._toggle import _script
from failsafe.stores._version import VERSIONED_HASH_LUA

__all__ = ["SharedFailFast"]

_US: Final = 1_000_000
REJECTED = 2  # counter index

# The latch hash: open ('1'), stop (server µs of its end; absent: until close()), v (the version
# of the last change stored; absent in a hash written by an earlier release: older than any).
# A change (open, close) is stored only when its version (ARGV[1]) is newer, and published only
# then. Every script replies {open (0|1), µs left or -1, stored version}.
_STATE: Final = (
    VERSIONED_HASH_LUA
    + """
local function state(now)
  if redis.call('HGET', KEYS[1], 'open') ~= '1' then return {0, -1} end
  local stop = tonumber(redis.call('HGET', KEYS[1], 'stop') or '0')
  if stop == 0 then return {1, -1} end
  if now < stop then return {1, stop - now} end
  redis.call('HDEL', KEYS[1], 'open', 'stop')
  return {0, -1}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""
)

_READ: Final = _STATE + "return reply(state(now))\n"

# ARGV: version, channel, recovery µs (-1: until close()). Opens unless open already.
_OPEN: Final = (
    _STATE
    + """
if take(ARGV[1]) and state(now)[1] == 0 then
  redis.call('HSET', KEYS[1], 'open', '1')
  if tonumber(ARGV[3]) >= 0 then
    redis.call('HSET', KEYS[1], 'stop', string.format('%d', now + tonumber(ARGV[3])))
  end
  redis.call('PUBLISH', ARGV[2], 'open')
end
return reply(state(now))
"""
)

# ARGV: version, channel.
_CLOSE: Final = (
    _STATE
    + """
if take(ARGV[1]) then
  redis.call('HDEL', KEYS[1], 'open', 'stop')
  redis.call('PUBLISH', ARGV[2], 'closed')
end
return reply(state(now))
"""
)


class SharedFailFast(SharedLatch, FailFast):
    """A fail-fast latch shared by every process using the same store and ``name``.

    ``on_error`` when the store cannot answer: ``"local"``: this process's own latch decides;
    ``"allow"``: calls are admitted as by a closed latch; ``"deny"``: calls are refused with
    ``FailFastOpen``.
    """

    _READ: ClassVar[str] = _READ

    def __init__(
        self,
        *,
        failure_threshold: int | None = None,
        predicate: Callable[..., Any] | None = None,
        recovery_time: float | None = None,
        on: Any = Exception,
        name: str | None = None,
        listeners: Iterable[Any] | None = None,
        event_manager: Any = None,
        store: Any = None,
    ) -> None:
        super().__init__(
            failure_threshold=failure_threshold,
            predicate=predicate,
            recovery_time=recovery_time,
            on=on,
            name=name,
            listeners=listeners,
            event_manager=event_manager,
        )
        self._store: Store = check_store(store, name, "failfast")
        self._hash = self._store.key(self.name, "failfast")
        self._channel = self._store.key(self.name, "failfast", "changed")
        self._open_shared = False
        self._until = 0.0  # time.monotonic() of the shared latch's end (0.0: none known)
        rt = self._recovery_time
        self._recovery_us = -1 if rt is None else int(rt * _US)
        self._watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]]
        self._watchers = weakref.WeakKeyDictionary()
        self._stored: asyncio.Task[None] | None = None
        self._shared = 1
        self._gate = 1  # the first call reads the shared state (and starts watching it)

    # -- the shared state, applied locally ---------------------------------------------------

    def _apply(self, reply: Any) -> None:
        is_open, left = int(reply[0]), int(reply[1])
        self._open_shared = bool(is_open)
        self._until = time.monotonic() + left / _US if left >= 0 else 0.0
        if is_open:
            self._gate = 1
        elif self._gate:
            self._gate = 0
            if self.is_open and not self._rewatch:
                FailFast.close(self)  # the fleet's latch closed: so does this process's
        self._rewatch = 0

    async def _ask(self, source: str, *args: int | str) -> None:
        self._settle(await self._store._submit(_script(source), (self._hash,), args))

    def _unavailable(self) -> None:
        self._store._fell_back()
        mode = self._store.on_error
        if mode == "deny":
            self._open_shared, self._until, self._gate = True, 0.0, 1
            return
        self._gate = 0
        if mode == "allow" and self.is_open:
            FailFast.close(self)

    def _tripped(self) -> None:
        """Called by the C latch when it opens here: open it for all."""
        self._open_shared, self._gate = True, 1
        rt = self._recovery_time
        self._until = 0.0 if rt is None else time.monotonic() + rt
        self._stored = self._send(_OPEN, self._channel, self._recovery_us, until=self._ends())

    def _ends(self) -> float | None:
        """The time.monotonic() at which an opening made now ends (None: at close())."""
        rt = self._recovery_time
        return None if rt is None else time.monotonic() + rt

    def open(self) -> Awaitable[None]:  # type: ignore[override]
        """Opens it in every process; awaitable: done once stored."""
        self._stored = None
        FailFast.open(self)  # calls _tripped (when it was closed here), which stores it
        if self._stored is None:
            self._stored = self._send(_OPEN, self._channel, self._recovery_us, until=self._ends())
        return _Done(self._stored)

    def close(self) -> Awaitable[None]:  # type: ignore[override]
        """Closes it in every process; awaitable: done once stored."""
        FailFast.close(self)
        self._open_shared, self._until, self._gate = False, 0.0, 0
        return _Done(self._send(_CLOSE, self._channel))

    # -- calls while the shared latch is open or unknown -------------------------------------

    async def _admit(self) -> None:
        """While the gate is up: rejects while the shared latch is open, else reads it (the
        first call, or the end of the shared latch) until it is known closed."""
        while self._gate:
            self._watch()
            if self._open_shared and (self._until == 0.0 or time.monotonic() < self._until):
                self._count(REJECTED)
                left = None if self._until == 0.0 else max(0.0, self._until - time.monotonic())
                raise FailFastOpen("Fail-fast is open", retry_after=left)
            await self._refresh()

    async def _call_slow(
        self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> Any:
        if not self._gate:  # an async predicate of a closed latch
            return await super()._call_slow(fn, *args, **kwargs)
        await self._admit()
        return await self(fn)(*args, **kwargs)

    async def __aenter__(self) -> Self:
        # The shared latch first (the C latch only knows this process's failures).
        if self._gate:
            await self._admit()
        return await super().__aenter__()

    def stats(self) -> SharedFailFastStats:
        return SharedFailFastStats(
            **self._stat_values(), shared_state="open" if self._open_shared else "closed"
        )


if TYPE_CHECKING:  # the methods C calls by name
    _tripped: type[_native.Tripped] = SharedFailFast
