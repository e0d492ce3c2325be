"""Client-side adaptive throttling (see failsafe.adaptive)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Final

from failsafe import _native, events
from failsafe._core import Component, check_number
from failsafe.adaptive import _priority
from failsafe.adaptive.exceptions import Throttled
from failsafe.events import EventManager
from failsafe.stats import ThrottleStats

SENT, THROTTLED, ACCEPTED, NOT_ACCEPTED = range(4)  # C order (adaptive.c)
_MAX_WINDOW: Final = 1e9


class ThrottleListener:
    """Base class of throttle listeners: override the events you want."""

    def on_throttled(self, throttle: Throttle) -> Any:
        """A call was refused locally with Throttled."""


def register_throttle_listener(listener: object) -> None:
    """Adds a listener (or listener factory) of every throttle, existing or future."""
    events.register_listener("throttle", listener)


class Throttle(Component, _native.AdaptiveThrottle):
    """``throttle(*, k=2.0, window=120, accept=None, ...)``: client-side adaptive throttling.
    See the module's docstring and docs/patterns/adaptive.md.

    Metrics (C counters): ``sent`` (calls let through), ``throttled`` (calls refused locally),
    ``accepted`` and ``not_accepted`` (outcomes of the calls sent). ``stats()`` adds the
    window's requests and accepts and the refusal probability now.
    """

    PATTERN: ClassVar[str] = "throttle"
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["throttle"]

    def __init__(
        self,
        *,
        k: float = 2.0,
        window: float = 120.0,
        accept: Callable[[Any, BaseException | None], bool] | None = None,
        max_reject: float = 0.9,
        priority: Callable[..., int] | Any | None = None,
        name: str | None = None,
        listeners: Iterable[object] | None = None,
        event_manager: EventManager | None = None,
    ) -> None:
        kk = check_number(k, "k", allow_zero=False, maximum=1e6)
        if kk < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        win = check_number(window, "window", allow_zero=False, maximum=_MAX_WINDOW)
        if win < 40e-9:
            raise ValueError(f"window must be at least 40 ns, got {window!r}")
        reject = check_number(max_reject, "max_reject", allow_zero=False, maximum=1)
        if accept is not None and not callable(accept):
            raise TypeError(f"accept must be a callable (result, exception), not {accept!r}")
        self._priority = _priority.check_source(priority, "priority")
        _native.AdaptiveThrottle.__init__(self, float(kk), float(reject), float(win), accept)
        self._slow = 0 if self._priority is None else 1
        self._init_component(name, listeners, event_manager)

    def _refusal(self) -> Throttled:
        """The refusal of a call (C's admit raises it too): reported, then returned."""
        if events.is_listening(self):
            events.emit(self, "on_throttled")
        return Throttled(
            f"throttle {self._name!r} refused the call locally (requests={self.requests},"
            f" accepts={self.accepts}, k={self.k})",
            retry_after=self._retry_after,
        )

    def _admit_priority(self, priority: int) -> bool:
        # Each level above 0 halves the refusal probability, each level below doubles it.
        return self._admit(2.0 ** -max(-64, min(64, priority)))

    async def _call_slow(
        self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> Any:
        """A call of a throttle with priorities (C refuses the others with _refusal())."""
        if not self._admit_priority(_priority.priority_of(self._priority, args, kwargs)):
            raise self._refusal()
        result: Any = None
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            self._end(None, exc)
            raise
        self._end(result, None)
        return result

    async def __aenter__(self) -> None:
        if not self._admit_priority(_priority.priority_of(self._priority, (), {})):
            refusal = self._refusal()
            if self._latency is not None:  # timed only while set: a slot read otherwise
                self._block_refused(_native.now_ns(), refusal)
            raise refusal
        if self._latency is not None:
            self._block_open(_native.now_ns())

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._latency is not None:
            self._block_exited(exc)
        if exc is None or isinstance(exc, Exception):
            self._end(None, exc)

    def stats(self) -> ThrottleStats:
        """Counters, then the window: requests, accepts, the refusal probability now."""
        return ThrottleStats(
            **self._stat_values(),
            requests=self.requests,
            accepts=self.accepts,
            probability=self.probability,
            k=self.k,
            window=self.window,
            max_reject=self.max_reject,
        )

    def __repr__(self) -> str:
        return (
            f"<throttle {self._name!r} p={self.probability:.3f} requests={self.requests}"
            f" accepts={self.accepts}>"
        )


if TYPE_CHECKING:  # the methods C calls by name
    _slow_call: type[_native.SlowCall] = Throttle
    _throttle_refusal: type[_native.ThrottleRefusal] = Throttle


throttle = Throttle
