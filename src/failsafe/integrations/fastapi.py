"""FastAPI (Starlette): exception handlers for failsafe's rejections, and the inbound deadline.

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

``app.add_middleware(DeadlineMiddleware)`` runs each request under the deadline its caller sent
(:mod:`failsafe.deadline`): ``grpc-timeout`` (``500m``, ``2S``) or ``X-Request-Timeout``
(seconds), the nearer when both come. A request whose deadline passes before its answer has
started gets a 504; a malformed header a 400.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from failsafe._core import check_header_name, check_number
from failsafe.deadline import DeadlineExceeded, deadline, parse_grpc_timeout, parse_seconds

__all__ = [
    "HANDLED",
    "MAX_RETRY_AFTER",
    "DeadlineMiddleware",
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


_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


def _header_name(value: object, param: str) -> bytes | None:
    name = check_header_name(value, param)
    return None if name is None else name.encode("ascii")


class DeadlineMiddleware:
    """ASGI middleware: each HTTP request runs under ``failsafe.deadline.deadline(seconds)``,
    seconds read from the ``grpc_header`` (gRPC syntax, default ``grpc-timeout``) or the
    ``seconds_header`` (a number, default ``X-Request-Timeout``); None turns one off. With
    neither header, ``default`` seconds (None: no deadline). ``max_seconds`` caps what a caller
    may ask for.

    A deadline that passes before the answer has started is answered ``504`` with failsafe's
    JSON body; a header that does not parse, ``400``.
    """

    def __init__(
        self,
        app: _App,
        *,
        grpc_header: str | None = "grpc-timeout",
        seconds_header: str | None = "x-request-timeout",
        default: float | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self.app = app
        self._grpc = _header_name(grpc_header, "grpc_header")
        self._seconds = _header_name(seconds_header, "seconds_header")
        self._default = check_number(default, "default", allow_none=True, allow_inf=True)
        self._max = check_number(max_seconds, "max_seconds", allow_none=True, allow_inf=True)

    def seconds(self, headers: list[tuple[bytes, bytes]]) -> float | None:
        """The deadline a request asks for (capped at max_seconds), or the default; ValueError
        when a header of it does not parse."""
        found: float | None = None
        for name, value in headers:
            name = name.lower()
            if name == self._grpc:
                seconds = parse_grpc_timeout(value.decode("latin-1"))
            elif name == self._seconds:
                seconds = parse_seconds(value.decode("latin-1"))
            else:
                continue
            found = seconds if found is None else min(found, seconds)
        if found is None:
            found = self._default
        if found is not None and self._max is not None:
            found = min(found, self._max)
        return found

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            seconds = self.seconds(scope["headers"])
        except ValueError as e:
            await _answer(scope, receive, send, 400, str(e), "ValueError")
            return
        if seconds is None:
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: _Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            async with deadline(seconds):
                await self.app(scope, receive, tracked)
        except DeadlineExceeded:
            if started:
                raise
            await _answer(scope, receive, send, 504, "deadline exceeded", "DeadlineExceeded")


async def _answer(
    scope: _Scope, receive: _Receive, send: _Send, status: int, detail: str, error: str
) -> None:
    response = JSONResponse({"detail": detail, "error": error}, status_code=status)
    await response(scope, receive, send)
