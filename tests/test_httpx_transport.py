"""failsafe.integrations.httpx.ResilientTransport against a real uvicorn upstream in another
process (tests/httpx_upstream.py): faults, 429 and 503 with Retry-After, stalls, dropped
connections; no response left open, no connection left in use, no POST retried by default.

Waits are instant on a FakeClock where the test is about how long failsafe waits; stalls and
the one real Retry-After wait run in real time, asserting lower bounds only.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from failsafe.circuitbreaker import BreakerFailing, circuitbreaker
from failsafe.integrations.httpx import ResilientTransport, RetryableStatus, host_of
from failsafe.keyed import RegistryFull
from failsafe.ratelimit import RateLimitExceeded, tokenbucket
from failsafe.retry import RetryListener, retry
from failsafe.testing import FakeClock
from failsafe.timeout import TimeoutError as FsTimeoutError
from failsafe.timeout import timeout
from http_servers import listening_socket, serving

UPSTREAM = Path(__file__).with_name("httpx_upstream.py")


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, str]]:
    """Two base URLs (two hosts: two ports) of one upstream process."""
    with serving(UPSTREAM, "/hits/ready") as (a, b):
        yield a, b


class Recording(httpx.AsyncBaseTransport):
    """The real transport, remembering every response it produced."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.responses: list[httpx.Response] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.responses.append(response)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def assert_nothing_left_open(self) -> None:
        assert all(r.is_closed for r in self.responses), "a response was left open"
        pool: Any = self.inner._pool
        assert not pool._requests, "a request still holds the pool"
        assert all(c.is_idle() or c.is_closed() for c in pool.connections), "a connection in use"


@pytest.fixture
async def recording() -> AsyncIterator[Recording]:
    rec = Recording()
    yield rec
    rec.assert_nothing_left_open()
    await rec.aclose()


def key() -> str:
    return uuid.uuid4().hex


async def hits(base: str, k: str) -> list[float]:
    async with httpx.AsyncClient() as plain:
        answer: list[float] = json.loads((await plain.get(f"{base}/hits/{k}")).text)["hits"]
        return answer


def client(transport: ResilientTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, timeout=60)


# ------------------------------------------------------------------------------------------
# Retries, statuses and Retry-After


@pytest.mark.usefixtures("instant")
async def test_retries_5xx_answers_and_returns_the_success(
    upstream: tuple[str, str], recording: Recording, clock: FakeClock
) -> None:
    base, _ = upstream
    k = key()
    async with client(ResilientTransport(recording)) as c:
        response = await c.get(f"{base}/status/{k}?n=2&code=502")
    assert (response.status_code, response.text) == (200, "ok 3")
    assert len(await hits(base, k)) == 3
    assert len(recording.responses) == 3  # both retried answers were read and closed


@pytest.mark.usefixtures("instant")
async def test_a_429_with_retry_after_makes_the_retry_wait_that_long(
    upstream: tuple[str, str], recording: Recording, clock: FakeClock
) -> None:
    base, _ = upstream
    k = key()
    transport = ResilientTransport(recording, backoff=0.01)
    async with client(transport) as c:
        response = await c.get(f"{base}/status/{k}?code=429&retry_after=1")
    assert response.status_code == 200
    assert clock.now() >= 1.0  # the wait retry took, on the fake clock
    assert len(await hits(base, k)) == 2


async def test_a_real_429_with_retry_after_1_delays_the_next_attempt_by_a_second(
    upstream: tuple[str, str], recording: Recording
) -> None:
    base, _ = upstream
    k = key()
    async with client(ResilientTransport(recording, backoff=0.01)) as c:
        response = await c.get(f"{base}/status/{k}?code=429&retry_after=1")
    assert response.status_code == 200
    first, second = await hits(base, k)  # the upstream's own clock
    assert second - first >= 1.0


@pytest.mark.usefixtures("instant")
async def test_a_retry_after_beyond_the_deadline_returns_the_answer_at_once(
    upstream: tuple[str, str], recording: Recording, clock: FakeClock
) -> None:
    base, _ = upstream
    k = key()
    async with client(ResilientTransport(recording, timeout=30)) as c:
        response = await c.get(f"{base}/status/{k}?code=503&retry_after=120&n=5")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "120"
    assert response.text == "busy " * 200  # the body of a retried-status answer, kept whole
    assert clock.now() == 0.0
    assert len(await hits(base, k)) == 1


@pytest.mark.usefixtures("instant")
async def test_retries_end_on_the_last_answer(
    upstream: tuple[str, str], recording: Recording, clock: FakeClock
) -> None:
    base, _ = upstream
    k = key()
    async with client(ResilientTransport(recording, retry=2, breaker=False)) as c:
        response = await c.get(f"{base}/status/{k}?code=504&n=10")
    assert response.status_code == 504
    assert len(await hits(base, k)) == 3


@pytest.mark.usefixtures("instant", "clock")
async def test_post_is_not_retried_unless_listed(
    upstream: tuple[str, str], recording: Recording
) -> None:
    base, _ = upstream
    k = key()
    async with client(ResilientTransport(recording)) as c:
        response = await c.post(f"{base}/status/{k}?code=503", content=b"payload")
        assert response.status_code == 503
        assert len(await hits(base, k)) == 1
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await c.post(f"{base}/reset/{k}x", content=b"payload")
        assert len(await hits(base, f"{k}x")) == 1
    methods = [*ResilientTransport.__init__.__kwdefaults__["retry_methods"], "POST"]
    async with client(ResilientTransport(recording, retry_methods=methods)) as c:
        response = await c.post(f"{base}/status/{k}y?code=503", content=b"payload")
    assert response.status_code == 200
    assert len(await hits(base, f"{k}y")) == 2


@pytest.mark.usefixtures("instant", "clock")
async def test_a_body_that_cannot_be_sent_again_is_not_retried(
    upstream: tuple[str, str], recording: Recording
) -> None:
    base, _ = upstream
    k = key()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"streamed"

    async with client(ResilientTransport(recording)) as c:
        response = await c.put(f"{base}/status/{k}?code=503", content=chunks())
    assert response.status_code == 503
    assert len(await hits(base, k)) == 1


# ------------------------------------------------------------------------------------------
# Connection faults, stalls, deadlines


@pytest.mark.usefixtures("instant", "clock")
async def test_connection_resets_are_retried(
    upstream: tuple[str, str], recording: Recording
) -> None:
    base, _ = upstream
    k = key()
    async with client(ResilientTransport(recording)) as c:
        response = await c.get(f"{base}/reset/{k}?n=2")
    assert (response.status_code, response.text) == (200, "ok 3")


@pytest.mark.usefixtures("instant", "clock")
async def test_a_body_dropped_after_the_head_is_the_clients_to_read(
    upstream: tuple[str, str], recording: Recording
) -> None:
    # The answer's head came: the transport returns it; the body's fault reaches the reader,
    # and the connection is not left in use.
    base, _ = upstream
    k = key()
    async with client(ResilientTransport(recording)) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(f"{base}/drop/{k}")
    assert len(await hits(base, k)) == 1


@pytest.mark.usefixtures("instant", "clock")
async def test_connection_errors_end_with_the_last_one_then_the_breaker_opens(
    recording: Recording,
) -> None:
    closed = listening_socket()
    url = f"http://127.0.0.1:{closed.getsockname()[1]}/x"
    closed.close()  # nothing listens there now: every connection is refused
    transport = ResilientTransport(
        recording,
        retry=2,
        breaker=lambda host: circuitbreaker(failure_threshold=4, recovery_time=60),
    )
    async with client(transport) as c:
        with pytest.raises(httpx.ConnectError) as info:
            await c.get(url)
        assert any("gave up after 3 attempt(s)" in note for note in info.value.__notes__)
        assert transport.breaker(host_of(httpx.Request("GET", url))).state == "working"
        # The 4th failure opens the breaker for 60 s, more than the 30 s deadline: no wait.
        with pytest.raises(BreakerFailing) as refused:
            await c.get(url)
        assert refused.value.retry_after is not None
        assert 59 < refused.value.retry_after <= 60  # less the backoff before the refusal


async def test_a_stall_is_cut_by_the_attempt_timeout_and_retried(
    upstream: tuple[str, str], recording: Recording
) -> None:
    base, _ = upstream
    k = key()
    transport = ResilientTransport(recording, attempt_timeout=1.0, backoff=0)
    async with client(transport) as c:
        response = await c.get(f"{base}/stall/{k}?seconds=60")
    assert (response.status_code, response.text) == (200, "ok 2")


async def test_hundreds_of_requests_cancelled_in_flight_leave_nothing_held(
    upstream: tuple[str, str], recording: Recording
) -> None:
    """200 GETs at once, all stalled upstream (half holding a connection, half queued for
    one), cancelled: no failure counted by the host's breaker, no connection left in use,
    and 200 requests right after all succeed."""
    base, _ = upstream
    k = key()
    transport = ResilientTransport(recording)
    async with client(transport) as c:
        stalled = [
            asyncio.create_task(c.get(f"{base}/stall/{k}?seconds=60&n=1000")) for _ in range(200)
        ]
        deadline = time.monotonic() + 20
        while len(await hits(base, k)) < 100 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(await hits(base, k)) >= 100  # the pool's 100 connections are all in use
        for t in stalled:
            t.cancel()
        results = await asyncio.gather(*stalled, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        breaker = transport.breaker(host_of(httpx.Request("GET", base)))
        assert (breaker.state, breaker.stats().failure) == ("working", 0)

        answers = await asyncio.gather(*(c.get(f"{base}/ok/{k}ok") for _ in range(200)))
    assert sorted(int(r.text.split()[1]) for r in answers) == list(range(1, 201))
    assert all(r.status_code == 200 for r in answers)


async def test_the_deadline_bounds_the_whole_request(
    upstream: tuple[str, str], recording: Recording
) -> None:
    base, _ = upstream
    k = key()
    transport = ResilientTransport(recording, timeout=0.5, attempt_timeout=None)
    start = time.monotonic()
    async with client(transport) as c:
        with pytest.raises(FsTimeoutError):
            await c.get(f"{base}/stall/{k}?seconds=60&n=100")
    assert time.monotonic() - start < 30


async def test_a_hedged_get_answers_from_the_second_attempt(
    upstream: tuple[str, str], recording: Recording
) -> None:
    base, _ = upstream
    k = key()
    transport = ResilientTransport(recording, hedge=0.2, attempt_timeout=None)
    async with client(transport) as c:
        response = await c.get(f"{base}/stall/{k}?seconds=60")
        assert (response.status_code, response.text) == (200, "ok 2")
        # A POST is never hedged.
        response = await c.post(f"{base}/ok/{k}p", content=b"")
    assert len(await hits(base, k)) == 2
    assert len(await hits(base, f"{k}p")) == 1


async def test_a_status_answer_ends_the_hedge_race(
    upstream: tuple[str, str], recording: Recording
) -> None:
    # A failed attempt sets off the next one at once, but a 429 or 503 is an answer: no
    # second request before the retry's wait.
    base, _ = upstream
    k = key()
    transport = ResilientTransport(recording, hedge=5, retry=0, breaker=False)
    async with client(transport) as c:
        response = await c.get(f"{base}/status/{k}?code=503&n=5")
    assert response.status_code == 503
    assert len(await hits(base, k)) == 1


# ------------------------------------------------------------------------------------------
# Per-host breaker and limiter


@pytest.mark.usefixtures("instant")
async def test_a_429_pauses_its_host_for_every_caller_and_no_other_host(
    upstream: tuple[str, str], recording: Recording, clock: FakeClock
) -> None:
    a, b = upstream
    k = key()
    async with client(ResilientTransport(recording, retry=0)) as c:
        response = await c.get(f"{a}/status/{k}?code=429&retry_after=5")
        assert response.status_code == 429
        with pytest.raises(RateLimitExceeded) as info:
            await c.post(f"{a}/ok/{k}", content=b"")  # another caller, another route
        assert info.value.retry_after == 5.0
        assert (await c.get(f"{b}/ok/{k}b")).status_code == 200
        clock.advance(5)
        assert (await c.post(f"{a}/ok/{k}", content=b"")).status_code == 200
    assert len(await hits(a, k)) == 2


@pytest.mark.usefixtures("instant")
async def test_a_503_with_retry_after_opens_the_host_breaker_for_that_long(
    upstream: tuple[str, str], recording: Recording, clock: FakeClock
) -> None:
    a, _ = upstream
    k = key()
    transport = ResilientTransport(recording, retry=0)
    async with client(transport) as c:
        assert (await c.get(f"{a}/status/{k}?code=503&retry_after=20")).status_code == 503
        breaker = transport.breaker(host_of(httpx.Request("GET", a)))
        assert breaker.state == "failing"
        assert breaker.stats()["retry_after"] == 20.0
        with pytest.raises(BreakerFailing):
            await c.get(f"{a}/ok/{k}")
        clock.advance(20)
        assert (await c.get(f"{a}/ok/{k}")).status_code == 200
    assert len(await hits(a, k)) == 2


@pytest.mark.usefixtures("instant", "clock")
async def test_hosts_are_bounded_and_an_open_breaker_is_never_forgotten(
    upstream: tuple[str, str], recording: Recording
) -> None:
    a, b = upstream
    k = key()
    transport = ResilientTransport(recording, retry=0, max_hosts=1, limiter=False)
    async with client(transport) as c:
        assert (await c.get(f"{b}/ok/{k}b")).status_code == 200  # b's working breaker...
        assert (await c.get(f"{a}/status/{k}?code=503&retry_after=20")).status_code == 503
        with pytest.raises(RegistryFull):  # ...made room for a's, which is open: kept
            await c.get(f"{b}/ok/{k}b")


# ------------------------------------------------------------------------------------------
# Policies of one's own, validation


@pytest.mark.usefixtures("instant", "clock")
async def test_policies_of_ones_own_replace_the_defaults(
    upstream: tuple[str, str], recording: Recording
) -> None:
    base, _ = upstream
    k = key()
    closed_at_retry: list[bool] = []

    class Check(RetryListener):
        def on_retry(self, *args: Any) -> None:  # the answer retried is closed before the wait
            closed_at_retry.append(all(r.is_closed for r in recording.responses))

    own_retry = retry(on=RetryableStatus, attempts=5, backoff=0, listeners=[Check()])
    transport = ResilientTransport(
        recording,
        retry=own_retry,
        timeout=timeout(20),
        attempt_timeout=timeout(5),
        breaker=False,
        limiter=lambda host: tokenbucket(100, 1),
    )
    async with client(transport) as c:
        response = await c.get(f"{base}/status/{k}?code=503&n=4")
    assert response.status_code == 200
    assert own_retry.stats()["attempt"] == 4
    assert closed_at_retry == [True] * 4
    assert transport.limiter.get(host_of(httpx.Request("GET", base))).stats()["admitted"] == 5


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"transport": object()}, TypeError, "transport must be an httpx.AsyncBaseTransport"),
        ({"retry_statuses": 503}, TypeError, "retry_statuses must be a collection"),
        ({"retry_statuses": [503, 1000]}, ValueError, "1000 is not an HTTP status"),
        ({"retry_methods": "GET"}, TypeError, "retry_methods must be a collection"),
        ({"retry_methods": [""]}, ValueError, "is not a method name"),
        ({"retry": -1}, ValueError, "retry: attempts must be >= 0"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"attempt_timeout": "1"}, TypeError, "attempt_timeout"),
        ({"max_retry_after": 0}, ValueError, "max_retry_after must be > 0"),
        ({"max_hosts": 0}, ValueError, "max_hosts must be > 0"),
        ({"breaker": 3}, TypeError, "breaker must be True, False, None or a factory"),
        ({"hedge": -1}, ValueError, "hedge: delay must be >= 0"),
    ],
)
def test_options_are_validated(kwargs: dict[str, Any], err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        ResilientTransport(**kwargs)


def test_host_keys_make_the_port_explicit() -> None:
    assert host_of(httpx.Request("GET", "https://example.com/a")) == "https://example.com:443"
    assert host_of(httpx.Request("GET", "http://example.com/a")) == "http://example.com:80"
    assert host_of(httpx.Request("GET", "http://h:8080/")) == "http://h:8080"


async def test_the_default_inner_transport_is_closed_with_the_client(
    upstream: tuple[str, str],
) -> None:
    base, _ = upstream
    transport = ResilientTransport()
    async with client(transport) as c:
        assert (await c.get(f"{base}/ok/{key()}")).status_code == 200
    inner: Any = transport._transport
    assert inner._pool.connections == []
    await asyncio.sleep(0)
