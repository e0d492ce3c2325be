"""Server signals: retry waits the delay a failure asks for, a breaker breaks for it, a limiter
pauses a key for it (failsafe.signals).

Every test runs with a FakeClock and instant waits: a wait shows as the clock moving.
"""

from __future__ import annotations

import asyncio
import email.utils
from typing import Any

import httpx
import pytest

from failsafe.circuitbreaker import BreakerFailing, circuitbreaker
from failsafe.failfast import FailFastOpen
from failsafe.ratelimit import RateLimitExceeded, slidingwindow, tokenbucket
from failsafe.retry import AttemptsExceeded, Retry, retry
from failsafe.signals import parse_retry_after, retry_after_of
from failsafe.testing import FakeClock, instant_waits

pytestmark = pytest.mark.usefixtures("instant", "clock")


def status_error(status: int, retry_after: str | None) -> httpx.HTTPStatusError:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    request = httpx.Request("GET", "http://upstream.test/")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError("status", request=request, response=response)


class Failing:
    """Fails with the given exceptions in turn, then returns "ok"; records the clock at each
    call."""

    def __init__(self, clock: FakeClock, *errors: BaseException) -> None:
        self.clock = clock
        self.errors = list(errors)
        self.times: list[float] = []

    async def __call__(self) -> str:
        self.times.append(self.clock.now())
        await asyncio.sleep(0)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Handovers(Retry):
    """A retry counting hand-overs from the C re-attempt loop to the Python slow path."""

    handovers = 0

    def _on_error(self, *args: Any) -> Any:
        self.handovers += 1
        return super()._on_error(*args)


# ------------------------------------------------------------------------------------------
# Reading the signal


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(b" 7 ") == 7.0
    assert parse_retry_after("0") == 0.0
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    for bad in (None, "", "soon", "-5", "1.5", "Wed, 99 Foo 2026 07:28:00 GMT"):
        assert parse_retry_after(bad) is None


def test_retry_after_of_reads_failsafe_refusals_and_http_status_errors() -> None:
    assert retry_after_of(RateLimitExceeded(retry_after=1.5)) == 1.5
    assert retry_after_of(RateLimitExceeded()) is None
    assert retry_after_of(BreakerFailing("open", retry_after=4.0)) == 4.0
    assert retry_after_of(BreakerFailing("isolated")) is None
    assert retry_after_of(FailFastOpen("x", retry_after=2.0)) == 2.0
    assert retry_after_of(status_error(429, "3")) == 3.0
    assert retry_after_of(status_error(503, None)) is None
    assert retry_after_of(ValueError("plain")) is None


# ------------------------------------------------------------------------------------------
# retry


@pytest.mark.parametrize("backoff", [0, 0.5], ids=["C re-attempts", "Python loop"])
@pytest.mark.parametrize(
    "error",
    [
        RateLimitExceeded(retry_after=2.0),
        BreakerFailing("open", retry_after=2.0),
        FailFastOpen("open", retry_after=2.0),
        status_error(429, "2"),
    ],
    ids=["ratelimit", "breaker", "failfast", "http"],
)
async def test_retry_waits_the_delay_the_failure_asks_for(
    clock: FakeClock, backoff: float, error: Exception
) -> None:
    fn = Failing(clock, error)
    assert await retry(attempts=3, backoff=backoff)(fn)() == "ok"
    assert fn.times == [0.0, 2.0]


@pytest.mark.parametrize("backoff", [0, 0.5])
async def test_a_delay_shorter_than_the_backoff_waits_the_backoff(
    clock: FakeClock, backoff: float
) -> None:
    fn = Failing(clock, RateLimitExceeded(retry_after=0.25), RateLimitExceeded(retry_after=0.25))
    assert await retry(attempts=3, backoff=backoff)(fn)() == "ok"
    step = max(backoff, 0.25)
    assert fn.times == [0.0, step, 2 * step]


async def test_the_c_loop_hands_only_signal_carrying_failures_to_python(clock: FakeClock) -> None:
    # Plain failures are re-attempted at once in C; a refusal carrying a delay, even after
    # plain failures of another type were remembered, goes to the Python loop that waits.
    policy = Handovers(attempts=5, backoff=0)
    fn = Failing(clock, ValueError(1), ValueError(2), KeyError(3))
    assert await policy(fn)() == "ok"
    assert policy.handovers == 0
    assert fn.times == [0.0, 0.0, 0.0, 0.0]
    fn = Failing(clock, ValueError(1), RateLimitExceeded(retry_after=1.0), ValueError(2))
    assert await policy(fn)() == "ok"
    assert policy.handovers == 1
    assert fn.times == [0.0, 0.0, 1.0, 1.0]
    assert policy.stats()["attempt"] == 6


async def test_retry_after_false_ignores_the_signal(clock: FakeClock) -> None:
    policy = Handovers(attempts=3, backoff=0, retry_after=False)
    fn = Failing(clock, RateLimitExceeded(retry_after=5.0))
    assert await policy(fn)() == "ok"
    assert fn.times == [0.0, 0.0]
    assert policy.handovers == 0


async def test_a_user_reader_chooses_the_delay(clock: FakeClock) -> None:
    seen: list[BaseException] = []

    def reader(exc: BaseException) -> float | None:
        seen.append(exc)
        return 3.0 if isinstance(exc, KeyError) else None

    errors = [KeyError("k"), ValueError("v"), RateLimitExceeded(retry_after=9.0)]
    fn = Failing(clock, *errors)
    assert await retry(attempts=3, backoff=0, retry_after=reader)(fn)() == "ok"
    assert fn.times == [0.0, 3.0, 3.0, 3.0]  # the reader replaces the built-in reading
    assert seen == errors


async def test_max_retry_after_caps_the_wait(clock: FakeClock) -> None:
    fn = Failing(clock, status_error(503, "3600"))
    assert await retry(attempts=1, backoff=0.1, max_retry_after=2)(fn)() == "ok"
    assert fn.times == [0.0, 2.0]


@pytest.mark.parametrize("backoff", [0, 0.5])
async def test_a_wait_beyond_max_duration_gives_up_at_once(
    clock: FakeClock, backoff: float
) -> None:
    error = status_error(429, "30")
    fn = Failing(clock, error)
    with pytest.raises(AttemptsExceeded) as info:
        await retry(attempts=3, backoff=backoff, max_duration=10)(fn)()
    assert clock.now() == 0.0  # no sleep into a failure
    assert info.value.reason == "retry_after"
    assert info.value.retry_after == 30.0
    assert info.value.last_exception is error
    assert "30.0s wait asked for would exceed max_duration" in str(info.value)


async def test_a_backoff_beyond_max_duration_keeps_its_reason(clock: FakeClock) -> None:
    fn = Failing(clock, RateLimitExceeded(retry_after=1.0))
    with pytest.raises(AttemptsExceeded) as info:
        await retry(attempts=3, backoff=20, max_duration=10)(fn)()
    assert info.value.reason == "max_duration"


async def test_the_block_form_waits_the_delay(clock: FakeClock) -> None:
    times: list[float] = []
    errors = [status_error(503, "4"), RateLimitExceeded(retry_after=1.0)]
    async for attempt in retry(attempts=3, backoff=0.5):
        with attempt:
            times.append(clock.now())
            if errors:
                raise errors.pop(0)
    assert times == [0.0, 4.0, 5.0]


async def test_retry_waits_out_an_open_breaker_it_guards(clock: FakeClock) -> None:
    breaker = circuitbreaker(
        on=ValueError, failure_threshold=1, recovery_time=10, recovery_threshold=1
    )
    calls: list[float] = []

    @breaker
    async def call() -> str:
        calls.append(clock.now())
        if len(calls) == 1:
            raise ValueError("down")
        return "up"

    with pytest.raises(ValueError, match="down"):
        await call()  # opens the breaker for 10 s
    assert await retry(attempts=1, backoff=0)(call)() == "up"
    assert calls == [0.0, 10.0]  # refused at 0 with retry_after=10: retry waited, then probed


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"retry_after": "yes"}, TypeError, "retry_after must be True, False or a callable"),
        ({"retry_after": 3}, TypeError, "retry_after must be True, False or a callable"),
        ({"max_retry_after": 0}, ValueError, "max_retry_after must be > 0"),
        ({"max_retry_after": -1}, ValueError, "max_retry_after must be >= 0"),
        ({"max_retry_after": float("nan")}, ValueError, "max_retry_after must not be NaN"),
        ({"max_retry_after": "1"}, TypeError, "max_retry_after must be a number"),
        ({"max_retry_after": 2e9}, ValueError, "max_retry_after must be at most"),
        ({"retry_after": False, "max_retry_after": 1}, ValueError, "max_retry_after needs"),
    ],
)
def test_retry_validates_the_signal_options(kwargs: dict[str, Any], err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        retry(**kwargs)


def test_an_async_reader_is_refused() -> None:
    async def reader(exc: BaseException) -> float:
        return 1.0

    with pytest.raises(TypeError, match="retry_after must be a sync callable"):
        retry(retry_after=reader)


async def test_a_reader_answering_nonsense_fails_the_call_clearly(clock: FakeClock) -> None:
    fn = Failing(clock, ValueError("v"))
    with pytest.raises(ValueError, match="retry_after must return seconds"):
        await retry(backoff=0, retry_after=lambda e: "soon")(fn)()


# ------------------------------------------------------------------------------------------
# circuit breaker


async def test_a_failure_asking_for_a_break_opens_the_breaker_for_that_long(
    clock: FakeClock,
) -> None:
    breaker = circuitbreaker(
        failure_threshold=5, recovery_time=5, max_recovery_time=60, retry_after=True
    )

    @breaker
    async def call(error: Exception | None) -> str:
        if error is not None:
            raise error
        return "ok"

    with pytest.raises(httpx.HTTPStatusError):
        await call(status_error(503, "30"))
    assert breaker.state == "failing"
    with pytest.raises(BreakerFailing) as info:
        await call(None)
    assert info.value.retry_after == 30.0
    clock.advance(29.9)
    with pytest.raises(BreakerFailing):
        await call(None)
    clock.advance(0.1)
    assert await call(None) == "ok"  # a probe
    assert breaker.state == "recovering"


async def test_breaker_signal_breaks_are_capped_and_plain_failures_count_as_before(
    clock: FakeClock,
) -> None:
    breaker = circuitbreaker(failure_threshold=2, recovery_time=5, retry_after=True)

    @breaker
    async def call(error: Exception) -> None:
        raise error

    with pytest.raises(httpx.HTTPStatusError):
        await call(status_error(503, None))  # no delay asked: one failure of two
    assert breaker.state == "working"
    with pytest.raises(httpx.HTTPStatusError):
        await call(status_error(503, "3600"))
    assert breaker.stats()["retry_after"] == 5.0  # at most max_recovery_time (recovery_time)


async def test_a_breaker_without_retry_after_ignores_the_signal() -> None:
    breaker = circuitbreaker(failure_threshold=2)

    @breaker
    async def call() -> None:
        raise status_error(503, "30")

    with pytest.raises(httpx.HTTPStatusError):
        await call()
    assert breaker.state == "working"


async def test_breaker_user_reader_and_open_for(clock: FakeClock) -> None:
    breaker = circuitbreaker(
        on=KeyError, max_recovery_time=100, retry_after=lambda e: 7.0 if e.args == ("x",) else None
    )

    @breaker
    async def call(key: str) -> None:
        raise KeyError(key)

    with pytest.raises(KeyError):
        await call("y")
    assert breaker.state == "working"
    with pytest.raises(KeyError):
        await call("x")
    assert breaker.stats()["retry_after"] == 7.0
    breaker.open_for(50)  # extends the break
    assert breaker.stats()["retry_after"] == 50.0
    breaker.open_for(1)  # never shortens it
    assert breaker.stats()["retry_after"] == 50.0
    breaker.reset()
    breaker.open_for(2)
    assert breaker.state == "failing"
    assert breaker.stats()["transition.failing"] == 2
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        breaker.open_for(-1)
    with pytest.raises(TypeError, match="retry_after must be True, False or a callable"):
        circuitbreaker(retry_after="no")


# ------------------------------------------------------------------------------------------
# rate limiter pause


async def test_pausing_one_key_refuses_it_for_every_caller_and_no_other(clock: FakeClock) -> None:
    limiter = tokenbucket(100, 1, key=lambda host: host, max_keys=4)

    @limiter
    async def fetch(host: str) -> str:
        return host

    assert limiter.pause("a.test", 2.0) is True
    with pytest.raises(RateLimitExceeded) as info:
        await fetch("a.test")
    assert info.value.retry_after_seconds == 2.0
    assert await fetch("b.test") == "b.test"
    assert limiter.retry_after("b.test") == 0.0
    assert limiter.retry_after("a.test") == 2.0
    clock.advance(2.0)
    assert await fetch("a.test") == "a.test"  # then from an empty bucket, at the rate
    with pytest.raises(RateLimitExceeded):
        await fetch("a.test")


async def test_a_paused_key_is_never_forgotten_to_make_room(clock: FakeClock) -> None:
    limiter = tokenbucket(1000, 1, key=lambda host: host, max_keys=2)

    @limiter
    async def fetch(host: str) -> str:
        return host

    assert limiter.pause("a", 10) is True
    assert limiter.pause("b", 10) is True
    assert limiter.pause("c", 10) is False  # every place holds a paused key
    with pytest.raises(RateLimitExceeded):
        await fetch("c")
    with pytest.raises(RateLimitExceeded):
        await fetch("a")
    clock.advance(10)
    assert await fetch("a") == "a"  # a's pause is over; its bucket refills from empty
    with pytest.raises(RateLimitExceeded):
        await fetch("c")  # so a and b are still limited for a second, and hold their places
    clock.advance(1)
    assert await fetch("c") == "c"


@pytest.mark.parametrize("make", [lambda: tokenbucket(2, 1), lambda: slidingwindow(2, 1)])
async def test_pausing_an_unkeyed_limiter(clock: FakeClock, make: Any) -> None:
    limiter = make()
    limiter.pause(3.0)
    assert limiter.retry_after() == 3.0
    assert limiter.try_acquire() is False
    clock.advance(3.0)
    assert limiter.try_acquire() is True
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        limiter.pause(-1)


async def test_hundreds_of_callers_waiting_a_signal_and_half_cancelled(clock: FakeClock) -> None:
    """300 calls fail with a 503 asking for 30 s and wait it, each on its own; half are
    cancelled during the wait: they end cancelled, never attempt again, and count as no
    give-up; the others attempt once more at 30 s and succeed."""
    calls = 0
    recovered = False

    async def upstream() -> str:
        nonlocal calls
        calls += 1
        if not recovered:
            raise status_error(503, "30")
        return "ok"

    policy = retry(attempts=3, backoff=0)
    guarded = policy(upstream)
    with instant_waits(False):  # the waits are on the fake clock: they end as it advances
        tasks = [asyncio.create_task(guarded()) for _ in range(300)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert calls == 300
        clock.advance(10)
        await asyncio.sleep(0)
        assert calls == 300
        assert not any(t.done() for t in tasks)
        for t in tasks[::2]:
            t.cancel()
        recovered = True
        clock.advance(19.9)
        await asyncio.sleep(0)
        assert calls == 300  # 30 s asked for, not yet waited
        clock.advance(0.1)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [isinstance(r, asyncio.CancelledError) for r in results] == [True, False] * 150
    assert results[1::2] == ["ok"] * 150
    assert calls == 450
    assert policy.stats().giveup == 0
