"""Deadline: one time limit for everything a call does, across attempts, waits and services.

``async with deadline(2.0):`` (or ``@deadline(2.0)``) sets an ambient deadline for the block,
kept in a context variable, so it holds in the tasks the block starts and in no other task or
thread. Every failsafe wait inside respects what is left of it:

* a timeout fires at the earlier of its own delay and the deadline (and raises
  :class:`DeadlineExceeded` when the deadline is the cause);
* retry starts no attempt, and no backoff sleep, that would end past the deadline: it gives
  up at once with :class:`DeadlineExceeded`, from the last failure;
* bulkhead and rate-limiter waits end at the deadline, and a wait for a token that would end
  past it is not taken;
* a hedge starts no attempt once the deadline has passed.

The block itself is cancelled at the deadline, as ``asyncio.timeout`` would, and leaving it
raises one :class:`DeadlineExceeded` (a :class:`failsafe.timeout.TimeoutError`). Nested
deadlines only shrink it: an inner ``deadline(10)`` inside ``deadline(1)`` still ends at 1 s.
``deadline.remaining()`` tells user code what is left (None outside any deadline).

Time is failsafe's clock (``failsafe.testing.FakeClock`` moves it); the block's own
cancellation and the timeouts run on the event loop's clock, as every timeout does.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import Context, ContextVar
from types import TracebackType
from typing import Any, Final

from failsafe import _native
from failsafe._core import check_number
from failsafe.timeout import Timeout, TimeoutError

__all__ = [
    "Deadline",
    "DeadlineExceeded",
    "deadline",
    "format_grpc_timeout",
    "format_seconds",
    "parse_grpc_timeout",
    "parse_seconds",
]

_NS: Final = 1_000_000_000

# The current frame: [when_ns, outer frame, the block's timeout, the Deadline entered], or
# None; when_ns a float (math.inf: no limit). A list: the C side reads (and, once the deadline
# has fired, lowers) when_ns in place.
_frame: Final[ContextVar[list[Any] | None]] = ContextVar("failsafe_deadline", default=None)
_WHEN, _OUTER, _TIMEOUT, _OWNER = 0, 1, 2, 3


class DeadlineExceeded(TimeoutError):
    """The ambient deadline passed. A :class:`failsafe.timeout.TimeoutError` (and so a builtin
    ``TimeoutError``); its ``__cause__`` is what the deadline interrupted."""

    def __init__(self, message: str = "deadline exceeded", *args: object) -> None:
        super().__init__(message, *args)


_native._deadline_bind(_frame)


def left(context: Context | None = None) -> float | None:
    """Seconds left before the deadline of the current context (or of ``context``), >= 0;
    None when there is none."""
    frame = _frame.get() if context is None else context.get(_frame)
    if frame is None:
        return None
    when: float = frame[_WHEN]
    return max(0.0, (when - _native.now_ns()) / _NS)


class Deadline:
    """``deadline(seconds)``: an ambient deadline ``seconds`` from entry (``math.inf``: none of
    its own; an enclosing deadline still holds), usable as ``async with`` and as a decorator of
    async functions. The object holds no per-entry state: one may be shared by any number of
    tasks and nested blocks."""

    __slots__ = ("_ns", "seconds")

    def __init__(self, seconds: float) -> None:
        value = check_number(seconds, "seconds", allow_inf=True)
        self.seconds = float(value)
        self._ns = self.seconds * _NS

    @staticmethod
    def remaining() -> float | None:
        """Seconds left before the current deadline (>= 0); None when no deadline is set."""
        return left()

    async def __aenter__(self) -> Deadline:
        outer = _frame.get()
        when = _native.now_ns() + self._ns
        if outer is not None and outer[_WHEN] < when:
            when = outer[_WHEN]
        # A timeout without a delay of its own: capped at the deadline just set, it cancels
        # the block then and raises DeadlineExceeded.
        block = Timeout(math.inf, name="deadline")
        _frame.set([when, outer, block, self])
        _native._deadline_scopes(1)
        try:
            await block.__aenter__()
        except BaseException:
            _frame.set(outer)
            _native._deadline_scopes(-1)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        frame = _frame.get()
        if frame is None or frame[_OWNER] is not self:
            raise RuntimeError("Deadline.__aexit__ without a matching __aenter__ in this context")
        try:
            await frame[_TIMEOUT].__aexit__(exc_type, exc, tb)
        finally:
            _frame.set(frame[_OUTER])
            _native._deadline_scopes(-1)

    def __call__[**P, T](
        self, fn: Callable[P, Awaitable[T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"deadline() decorates async functions, not {fn!r}")

        @functools.wraps(fn)
        async def bounded(*args: P.args, **kwargs: P.kwargs) -> T:
            async with self:
                return await fn(*args, **kwargs)

        return bounded

    def __repr__(self) -> str:
        return f"deadline({self.seconds!r})"


# The factory is the class: `async with deadline(0.5):` builds one per use.
deadline = Deadline


# -- the deadline on the wire ----------------------------------------------------------------

# gRPC's TimeoutValue: at most 8 digits, then the unit.
_GRPC_TIMEOUT: Final = re.compile(r"\s*([0-9]{1,8})([HMSmun])\s*")
_GRPC_UNITS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_GRPC_MAX: Final = 99_999_999


def parse_grpc_timeout(value: str) -> float:
    """Seconds of a ``grpc-timeout`` header value (``"500m"``, ``"2S"``; units H M S m u n);
    ValueError when it is not one."""
    match = _GRPC_TIMEOUT.fullmatch(value)
    if match is None:
        raise ValueError(f"grpc-timeout must be 1 to 8 digits and a unit (H M S m u n): {value!r}")
    return int(match.group(1)) * _GRPC_UNITS[match.group(2)]


def format_grpc_timeout(seconds: float) -> str:
    """A ``grpc-timeout`` value for seconds (>= 0), rounded down in the finest unit that fits
    8 digits (``0.4996`` → ``"499m"``): the receiver never gets more time than is left."""
    if seconds < 1e-3:
        return f"{max(math.floor(seconds * 1e6), 0)}u"
    for unit, size in (("m", 1e-3), ("S", 1.0), ("M", 60.0)):
        count = math.floor(seconds / size)
        if count <= _GRPC_MAX:
            return f"{count}{unit}"
    return f"{min(math.floor(seconds / 3600.0), _GRPC_MAX)}H"


def parse_seconds(value: str) -> float:
    """Seconds of an ``X-Request-Timeout``-style header value (a finite number >= 0);
    ValueError when it is not one."""
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"a timeout in seconds must be a number: {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a timeout in seconds must be finite and >= 0: {value!r}")
    return seconds


def format_seconds(seconds: float) -> str:
    """Seconds as a header value, rounded down to the millisecond (``0.4996`` → ``"0.499"``)."""
    return f"{math.floor(max(seconds, 0.0) * 1000) / 1000:.3f}"
