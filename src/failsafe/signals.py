"""Server signals: the wait an error asks for before the next call.

A delay travels on failsafe's own refusals (``RateLimitExceeded.retry_after_seconds``,
``BreakerFailing.retry_after``, ``FailFastOpen.retry_after``) and on an
``httpx.HTTPStatusError`` whose response carries ``Retry-After`` (delta-seconds or an HTTP
date). :func:`retry_after_of` reads it; ``retry`` waits at least that long and
``circuitbreaker(retry_after=True)`` breaks for that long. A callable
``exc -> seconds | None`` given as ``retry_after=`` replaces the reading.
"""

from __future__ import annotations

import email.utils
import inspect
import math
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from failsafe import _core

__all__ = ["RetryAfterFn", "parse_retry_after", "retry_after_of"]

RetryAfterFn = Callable[[BaseException], float | None]

_MAX_SECONDS: Final = 1e9
_own: tuple[type[Exception], ...] = ()


def _own_refusals() -> tuple[type[Exception], ...]:
    """failsafe's refusals that carry a delay; imported on first use, so that importing retry
    does not import every pattern."""
    global _own
    if not _own:
        from failsafe.circuitbreaker.exceptions import BreakerFailing
        from failsafe.failfast.exceptions import FailFastOpen
        from failsafe.ratelimit.exceptions import RateLimitExceeded

        _own = (RateLimitExceeded, BreakerFailing, FailFastOpen)
    return _own


def parse_retry_after(value: str | bytes | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header value asks for: delta-seconds (``"120"``) or an HTTP
    date (``"Wed, 21 Oct 2026 07:28:00 GMT"``, measured from ``now``, default the wall clock).
    None when absent or unreadable; 0.0 for a date in the past."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return min(float(int(text)), _MAX_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is read so too
        return None
    delta = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, delta), _MAX_SECONDS)


def _http_status_delay(exc: BaseException) -> float | None:
    httpx = sys.modules.get("httpx")
    if httpx is None or not isinstance(exc, httpx.HTTPStatusError):
        return None
    return parse_retry_after(exc.response.headers.get("retry-after"))


def retry_after_of(exc: BaseException) -> float | None:
    """The delay ``exc`` asks for, in seconds, or None when it carries none."""
    if isinstance(exc, _own or _own_refusals()):
        after: Any = getattr(exc, "retry_after", None)
        return None if after is None or not after > 0 else float(after)
    return _http_status_delay(exc)


def _carries_signal(tp: type) -> bool:
    """Whether exceptions of type tp may carry a delay (asked by the C retry loop, once per
    type, before it re-attempts at once)."""
    if issubclass(tp, _own or _own_refusals()):
        return True
    httpx = sys.modules.get("httpx")
    return httpx is not None and issubclass(tp, httpx.HTTPStatusError)


def check_retry_after(value: object, param: str = "retry_after") -> RetryAfterFn | None:
    """Validates a ``retry_after`` option: True (read the built-in signals), False or None
    (ignore them) or a sync callable exc -> seconds | None. Returns the reader or None."""
    if value is True:
        return retry_after_of
    if value is False or value is None:
        return None
    if not callable(value):
        raise TypeError(
            f"{param} must be True, False or a callable exc -> seconds | None, not {value!r}"
        )
    if inspect.iscoroutinefunction(value):
        raise TypeError(f"{param} must be a sync callable, not an async function")
    fn: RetryAfterFn = value
    return fn


def check_max_retry_after(value: object, reader: RetryAfterFn | None) -> float | None:
    """Validates ``max_retry_after`` (seconds > 0, or None); it needs a retry_after reader."""
    if value is None:
        return None
    seconds = float(_core.check_number(value, "max_retry_after", allow_zero=False))
    if seconds > _MAX_SECONDS:
        raise ValueError(f"max_retry_after must be at most {_MAX_SECONDS:g} seconds, got {seconds}")
    if reader is None:
        raise ValueError("max_retry_after needs retry_after (it caps the delay retry_after reads)")
    return seconds


def read_delay(reader: RetryAfterFn, exc: BaseException, cap: float | None) -> float:
    """The delay the reader finds in exc (0.0 when none), capped; a bad answer is a
    ValueError naming retry_after."""
    got: Any = reader(exc)
    if got is None:
        return 0.0
    if isinstance(got, bool) or not isinstance(got, (int, float)) or math.isnan(got):
        raise ValueError(f"retry_after must return seconds (a number >= 0) or None, not {got!r}")
    delay = max(0.0, float(got))
    if cap is not None and delay > cap:
        return cap
    return min(delay, _MAX_SECONDS)
