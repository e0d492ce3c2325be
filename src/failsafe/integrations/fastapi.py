"""FastAPI (Starlette) exception handlers for failsafe's rejections.

``install_exception_handlers(app)`` maps each failsafe exception to an HTTP answer with a short
JSON body (``{"detail": ..., "error": <class name>}``):

* ``RateLimitExceeded`` → 429, with ``Retry-After`` when the limiter knows it;
* ``BreakerFailing``, ``FailFastOpen``, ``BulkheadFull``, ``LimitExceeded``, ``Throttled`` → 503,
  with ``Retry-After`` when known;
* ``failsafe.timeout.TimeoutError``, ``HedgeTimeout`` → 504;
* ``FeatureDisabled`` → 403.

``Retry-After`` is in whole seconds, rounded up, at least 1 and at most ``MAX_RETRY_AFTER``
(one day: a longer wait is no useful hint to a client). Patterns whose module is not installed
are skipped; handlers match subclasses too (``EmptyBucket`` is a 429).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = [
    "HANDLED",
    "MAX_RETRY_AFTER",
    "exception_response",
    "install_exception_handlers",
    "retry_after_header",
]

# The largest Retry-After sent, in seconds (one day).
MAX_RETRY_AFTER: Final = 86_400

# (module, class, status, detail); the retry delay is read from `retry_after_seconds` or
# `retry_after` (seconds or None).
HANDLED: Final[tuple[tuple[str, str, int, str], ...]] = (
    ("failsafe.ratelimit", "RateLimitExceeded", 429, "rate limit exceeded"),
    ("failsafe.circuitbreaker", "BreakerFailing", 503, "circuit breaker open"),
    ("failsafe.failfast", "FailFastOpen", 503, "fail-fast open"),
    ("failsafe.bulkhead", "BulkheadFull", 503, "bulkhead full"),
    ("failsafe.adaptive", "LimitExceeded", 503, "concurrency limit reached"),
    ("failsafe.adaptive", "Throttled", 503, "throttled"),
    ("failsafe.timeout", "TimeoutError", 504, "timed out"),
    ("failsafe.hedge", "HedgeTimeout", 504, "hedged call timed out"),
    ("failsafe.featuretoggle", "FeatureDisabled", 403, "feature disabled"),
)


def retry_after_header(exc: BaseException) -> str | None:
    """``Retry-After`` for exc: whole seconds rounded up, between 1 and MAX_RETRY_AFTER; None
    when unknown."""
    seconds = getattr(exc, "retry_after_seconds", None)
    if seconds is None:
        seconds = getattr(exc, "retry_after", None)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return None
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return str(min(max(1, math.ceil(seconds)), MAX_RETRY_AFTER))


def exception_response(exc: BaseException, status: int, detail: str) -> JSONResponse:
    """The JSON answer for a failsafe exception."""
    headers: dict[str, str] = {}
    retry_after = retry_after_header(exc)
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return JSONResponse(
        {"detail": detail, "error": type(exc).__name__}, status_code=status, headers=headers
    )


def _handler(status: int, detail: str) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        return exception_response(exc, status, detail)

    return handle


def _exception_class(module: str, name: str) -> type[Exception] | None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and module.startswith(e.name):
            return None  # this pattern is not part of the installed failsafe
        raise
    cls = getattr(mod, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, Exception) else None


def install_exception_handlers(app: Starlette) -> dict[type[Exception], int]:
    """Installs the handlers on a FastAPI or Starlette app; returns {exception class: status}
    for the classes handled."""
    installed: dict[type[Exception], int] = {}
    for module, name, status, detail in HANDLED:
        cls = _exception_class(module, name)
        if cls is not None:
            app.add_exception_handler(cls, _handler(status, detail))
            installed[cls] = status
    return installed
