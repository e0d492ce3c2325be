"""An httpx transport guarding every request: ``AsyncClient(transport=ResilientTransport())``.

Each request goes through, outermost first:

* ``timeout`` (default 30 s): one deadline for the whole request, retries included (a
  :func:`failsafe.deadline.deadline`: an ambient deadline already set, by the caller or by
  :class:`~failsafe.integrations.fastapi.DeadlineMiddleware` for the request being served, cuts
  it shorter);
* ``retry`` (default 3 retries, exponential backoff with jitter) of connection errors, attempt
  timeouts and ``retry_statuses`` (default 429, 502, 503, 504), for ``retry_methods`` only
  (idempotent ones by default: a POST is never retried unless listed). The wait before a
  retry is at least the response's ``Retry-After`` (at most ``max_retry_after``); a wait that
  would outlast the deadline is not taken: the response is returned at once;
* ``hedge`` (off by default): a second GET after that many seconds without an answer;
* per host (scheme, host, port), in registries of at most ``max_hosts`` hosts that never forget
  a host still holding state: a circuit breaker (5xx answers, connection errors and attempt
  timeouts are failures; a 5xx with ``Retry-After`` opens it for that long) and a limiter (a
  429 with ``Retry-After`` pauses the host for every request of the process);
* ``attempt_timeout`` (default 10 s) around each attempt.

Each attempt tells the server how long it has: what is left of the deadline, in the
``deadline_header`` (default ``X-Request-Timeout``, in seconds; ``grpc-timeout`` in gRPC's
syntax; None sends nothing).

The timeouts bound the wait for a response's head; reading its body is the client's (httpx's
own ``timeout`` still bounds it). Only requests whose body can be sent again (bytes, or none)
are retried or hedged. Bodies of responses that are not returned (retried answers, hedge losers)
are read and closed, so their connections go back to the pool.

What the client sees: the last response when retrying ends on a status (even a 503); the last
attempt's httpx exception when it ends on an error; ``BreakerFailing`` when a host's breaker is
open (and the break outlasts the deadline); ``RateLimitExceeded`` when its limiter refuses; and
``failsafe.deadline.DeadlineExceeded`` (a ``failsafe.timeout.TimeoutError``) when the deadline
passes.

Each option takes a failsafe policy instead of its default (``retry=retry(...)``,
``timeout=timeout(5)``, ``hedge=hedge(...)``, or any decorator of async functions, a stack of
policies included); ``breaker=`` and ``limiter=`` take a factory ``host -> policy`` (``host``
as ``"https://example.com:443"``); False or None turns a part off.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Final

import httpx

from failsafe import _core, deadline
from failsafe.circuitbreaker import BreakerFailing, CircuitBreaker
from failsafe.hedge import Hedge, HedgeAllFailed
from failsafe.keyed import Keyed
from failsafe.ratelimit import KeyedTokenBucketLimiter, RateLimitExceeded
from failsafe.retry import AttemptsExceeded, Retry, backoffs, jitters
from failsafe.signals import parse_retry_after
from failsafe.timeout import Timeout
from failsafe.timeout import TimeoutError as FsTimeoutError

__all__ = ["IDEMPOTENT_METHODS", "RETRY_STATUSES", "ResilientTransport", "RetryableStatus"]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})

_Send = Callable[[httpx.Request, "_Exchange"], Awaitable[httpx.Response]]
_DEFAULT: Any = object()
_NS: Final = 1_000_000_000


class RetryableStatus(httpx.HTTPStatusError):
    """An answer with one of the transport's retry statuses, as the policies inside the
    transport see it (a failure of the attempt carrying its ``Retry-After``); the client gets
    the response itself."""


def host_of(request: httpx.Request) -> str:
    """The key of a request's host: ``"scheme://host:port"`` (port made explicit)."""
    url = request.url
    port = url.port
    if port is None:
        port = 443 if url.scheme == "https" else 80
    return f"{url.scheme}://{url.host}:{port}"


def _key(request: httpx.Request, exchange: _Exchange) -> str:
    return exchange.host


def _replayable(request: httpx.Request) -> bool:
    return isinstance(request.stream, httpx.ByteStream)


def _host_failure(exc: BaseException) -> bool:
    """What counts against a host: 5xx answers, transport errors, attempt timeouts."""
    if isinstance(exc, RetryableStatus):
        return exc.response.status_code >= 500
    return _transport_failure(exc) or isinstance(exc, FsTimeoutError)


def _transport_failure(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError) and not isinstance(
        exc, (httpx.LocalProtocolError, httpx.UnsupportedProtocol)
    )


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (RetryableStatus, FsTimeoutError)) or _transport_failure(exc):
        return True
    # A refusal of the host's own breaker or limiter: retried when it says when to come back.
    return isinstance(exc, (BreakerFailing, RateLimitExceeded)) and exc.retry_after is not None


class _Exchange:
    """One request's state: its host and every response its attempts produced."""

    __slots__ = ("buffer", "host", "responses")

    def __init__(self, host: str, buffer: bool) -> None:
        self.host = host
        self.buffer = buffer
        self.responses: list[httpx.Response] = []

    async def close_all_but(self, keep: httpx.Response | None) -> None:
        for response in self.responses:
            if response is not keep:
                await response.aclose()


async def _buffered(response: httpx.Response, request: httpx.Request) -> httpx.Response:
    """A copy of response over its raw body, read now; the original is closed (its connection
    is free again)."""
    try:
        raw = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
    finally:
        await response.aclose()
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(raw),
        extensions={k: v for k, v in response.extensions.items() if k != "network_stream"},
        request=request,
    )


def _policy(value: Any, param: str, build: Callable[[Any], Any]) -> Any:
    """None for off; value itself when it is a policy or decorator; else build(value)."""
    if value is None or value is False:
        return None
    if callable(value):
        return value
    try:
        return build(value)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{param}: {e}") from None


def _per_host(value: Any, param: str, max_hosts: int) -> Keyed[Any] | None:
    if value is None or value is False:
        return None
    if not callable(value):
        raise TypeError(f"{param} must be True, False, None or a factory host -> policy")
    return Keyed(value, key=_key, max_keys=max_hosts)


def _default_breaker(host: str) -> CircuitBreaker:
    return CircuitBreaker(
        on=_host_failure,
        failure_threshold=5,
        recovery_time=5,
        recovery_backoff=2,
        max_recovery_time=120,
        retry_after=True,
        name="httpx",
    )


class ResilientTransport(httpx.AsyncBaseTransport):
    """Guards every request sent through ``transport`` (see the module docstring)."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        retry: int | Any = 3,
        backoff: Any = _DEFAULT,
        max_retry_after: float | None = 60.0,
        retry_statuses: Collection[int] = RETRY_STATUSES,
        retry_methods: Collection[str] = IDEMPOTENT_METHODS,
        attempt_timeout: float | Any = 10.0,
        timeout: float | Any = 30.0,
        breaker: bool | Callable[[str], Any] | None = True,
        limiter: bool | Callable[[str], Any] | None = True,
        hedge: float | Any = None,
        max_hosts: int = 1_000,
        deadline_header: str | None = "x-request-timeout",
    ) -> None:
        if transport is None:
            transport = httpx.AsyncHTTPTransport()
        if not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(f"transport must be an httpx.AsyncBaseTransport, not {transport!r}")
        self._transport = transport
        self._statuses = _statuses(retry_statuses)
        self._methods = _methods(retry_methods)
        max_hosts = _core.check_number(max_hosts, "max_hosts", allow_zero=False, integer=True)
        self._deadline_header, self._format = _deadline_header(deadline_header)

        overall = _policy(timeout, "timeout", deadline.Deadline)
        seconds = float(timeout) if isinstance(timeout, (int, float)) else None
        if backoff is _DEFAULT:
            backoff = backoffs.expo(min_delay_secs=0.1, max_delay_secs=10, jitter=jitters.full)
        retrier = _policy(
            retry,
            "retry",
            lambda n: Retry(
                on=_retryable,
                attempts=n,
                backoff=backoff,
                max_duration=seconds,
                max_retry_after=max_retry_after,
                name="httpx",
            ),
        )
        hedger = _policy(hedge, "hedge", lambda d: Hedge(attempts=2, delay=d, name="httpx"))
        per_attempt = _policy(attempt_timeout, "attempt_timeout", Timeout)
        self._breakers = _per_host(
            _default_breaker if breaker is True else breaker, "breaker", max_hosts
        )
        self._limiter: KeyedTokenBucketLimiter | Keyed[Any] | None = None
        if limiter is True:
            # No rate of its own, only the pauses a 429 asks for: a token per ns, in bursts of
            # 1e9 (so even calls at one instant of a fake clock pass).
            self._limiter = KeyedTokenBucketLimiter(
                _NS, 1, _NS, key=_key, max_keys=max_hosts, name="httpx"
            )
        else:
            self._limiter = _per_host(limiter, "limiter", max_hosts)

        attempt: _Send = self._send
        for layer in (per_attempt, self._limiter, self._breakers):
            if layer is not None:
                attempt = layer(attempt)
        retried = attempt if retrier is None else retrier(attempt)
        hedged = retried
        if hedger is not None:
            hedged = _hedged(hedger, attempt)
            hedged = hedged if retrier is None else retrier(hedged)
        chains = (attempt, retried, hedged)
        if overall is not None:
            chains = (overall(attempt), overall(retried), overall(hedged))
        self._once, self._retrying, self._hedged = chains

    # -- one attempt ----------------------------------------------------------------------

    async def _send(self, request: httpx.Request, exchange: _Exchange) -> httpx.Response:
        if self._deadline_header is not None:
            left = deadline.left()
            if left is not None and left < math.inf:
                request.headers[self._deadline_header] = self._format(left)
        response = await self._transport.handle_async_request(request)
        exchange.responses.append(response)
        status = response.status_code
        if status not in self._statuses:
            return response
        if status == 429:
            self._pause(exchange.host, response)
        if exchange.buffer:
            response = await _buffered(response, request)
            exchange.responses.append(response)
        raise RetryableStatus(f"{status} from {exchange.host}", request=request, response=response)

    def _pause(self, host: str, response: httpx.Response) -> None:
        delay = parse_retry_after(response.headers.get("retry-after"))
        if not delay or self._limiter is None:
            return
        if isinstance(self._limiter, KeyedTokenBucketLimiter):
            self._limiter.pause(host, delay)
            return
        pause = getattr(self._limiter.get(host), "pause", None)
        if pause is not None:
            pause(delay)

    # -- the request ----------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        retrying = request.method in self._methods and _replayable(request)
        exchange = _Exchange(host_of(request), buffer=retrying)
        send = self._once
        if retrying:
            send = self._hedged if request.method == "GET" else self._retrying
        gave_up: AttemptsExceeded | deadline.DeadlineExceeded | None = None
        response: httpx.Response | None = None
        try:
            response = await send(request, exchange)
        except RetryableStatus as answer:
            response = answer.response
        except deadline.DeadlineExceeded as e:
            # Retry stopped short of the deadline: a status answer stands, and an error of the
            # last attempt (not a timeout) is raised as when the attempts run out.
            last = e.__cause__
            if isinstance(last, RetryableStatus):
                response = last.response
            elif isinstance(last, Exception) and not isinstance(last, FsTimeoutError):
                gave_up = e
            else:
                raise
        except AttemptsExceeded as e:
            last = e.last_exception
            if isinstance(last, RetryableStatus):
                response = last.response
            elif last is None:
                raise
            else:
                gave_up = e
        finally:
            await exchange.close_all_but(response)
        if gave_up is not None:
            last = gave_up.__cause__
            assert isinstance(last, Exception)
            last.add_note(f"failsafe: {gave_up}")
            raise last
        assert response is not None
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()

    # -- inspection -----------------------------------------------------------------------

    def breaker(self, host: str) -> Any:
        """The breaker of host (``"scheme://host:port"``), made if there is none; None when
        the transport has no breakers."""
        return None if self._breakers is None else self._breakers.get(host)

    @property
    def limiter(self) -> Any:
        """The per-host limiter (a keyed token bucket, or a keyed registry), or None."""
        return self._limiter


class _Answered:
    """A status answer carried through a hedge as a result: an answer ends the race (a 429 or
    503 must not set off another attempt at once)."""

    __slots__ = ("status",)

    def __init__(self, status: RetryableStatus) -> None:
        self.status = status


def _hedged(hedger: Any, attempt: _Send) -> _Send:
    """attempt under hedger; every hedged attempt failed: the last failure is the outcome (so
    retry judges it)."""

    async def answered(request: httpx.Request, exchange: _Exchange) -> httpx.Response | _Answered:
        try:
            return await attempt(request, exchange)
        except RetryableStatus as status:
            return _Answered(status)

    raced = hedger(answered)

    async def hedged(request: httpx.Request, exchange: _Exchange) -> httpx.Response:
        try:
            outcome = await raced(request, exchange)
        except HedgeAllFailed as e:
            if not e.errors:
                raise
            raise e.errors[-1] from None
        if isinstance(outcome, _Answered):
            raise outcome.status
        response: httpx.Response = outcome
        return response

    return hedged


def _deadline_header(value: object) -> tuple[str | None, Callable[[float], str]]:
    """The header name and its syntax: gRPC's for ``grpc-timeout``, else seconds."""
    name = _core.check_header_name(value, "deadline_header")
    grpc = name == "grpc-timeout"
    return name, deadline.format_grpc_timeout if grpc else deadline.format_seconds


def _statuses(value: Collection[int]) -> frozenset[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise TypeError(f"retry_statuses must be a collection of ints, not {value!r}")
    for status in value:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"retry_statuses: {status!r} is not an HTTP status (100..599)")
    return frozenset(value)


def _methods(value: Collection[str]) -> frozenset[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise TypeError(f"retry_methods must be a collection of method names, not {value!r}")
    for method in value:
        if not isinstance(method, str) or not method:
            raise ValueError(f"retry_methods: {method!r} is not a method name")
    return frozenset(m.upper() for m in value)
