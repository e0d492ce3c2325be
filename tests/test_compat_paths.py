"""failsafe-py's module paths: failsafe.circuitbreaker.states / .context and
failsafe.ratelimit.buckets import and carry working classes; the misnamed fallback registrar
stays importable but is not advertised."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import pytest

import failsafe.fallback
from failsafe.circuitbreaker import BreakerListener, CircuitBreaker, consecutive_breaker
from failsafe.circuitbreaker.context import BreakerContext
from failsafe.circuitbreaker.states import (
    BreakerState,
    FailingState,
    RecoveringState,
    WorkingState,
    state_of,
)
from failsafe.ratelimit import RateLimitExceeded, slidingwindow, tokenbucket
from failsafe.ratelimit.buckets import EmptyBucket, TokenBucket
from failsafe.testing import FakeClock


class Boom(Exception):
    pass


async def fail(breaker: CircuitBreaker) -> None:
    with pytest.raises(Boom):
        async with breaker:
            raise Boom


async def succeed(breaker: CircuitBreaker) -> None:
    async with breaker:
        pass


async def test_state_of_follows_the_breaker_through_its_states(clock: FakeClock) -> None:
    br = consecutive_breaker(Boom, 2, 10, 2, half_open_max_calls=2)
    first = state_of(br)
    assert isinstance(first, WorkingState)
    assert first.consecutive_exceptions == 0
    await fail(br)
    working = state_of(br)
    assert isinstance(working, WorkingState)
    assert working.consecutive_exceptions == 1
    assert working.name == working.NAME == "working"
    assert working.state is BreakerState.working

    await fail(br)
    failing = state_of(br)
    assert isinstance(failing, FailingState)
    assert failing.retry_after == pytest.approx(10.0)
    assert failing.remain == datetime.timedelta(seconds=10)
    assert not failing.isolated
    clock.advance(4)
    later = state_of(br)
    assert isinstance(later, FailingState)
    assert later.retry_after == pytest.approx(6.0)

    clock.advance(6)
    await succeed(br)  # the first probe moves it to recovering
    recovering = state_of(br)
    assert isinstance(recovering, RecoveringState)
    assert recovering.consecutive_successes == 1
    assert recovering.probes_in_flight == 0
    assert recovering.state == br.state == "recovering"
    await succeed(br)
    assert isinstance(state_of(br), WorkingState)


def test_isolated_breaker_snapshot_has_no_end() -> None:
    br = consecutive_breaker(Boom)
    br.isolate()
    snapshot = state_of(br)
    assert isinstance(snapshot, FailingState)
    assert snapshot.isolated
    assert snapshot.retry_after is None
    assert snapshot.remain is None


def test_window_breaker_snapshot_counts_its_window() -> None:
    br = CircuitBreaker(on=Boom, failure_rate=0.9, window_calls=10, min_calls=10)

    async def run() -> None:
        await fail(br)
        await succeed(br)
        await succeed(br)

    asyncio.run(run())
    snapshot = state_of(br)
    assert isinstance(snapshot, WorkingState)
    assert (snapshot.window_calls, snapshot.window_failures) == (3, 1)


def test_breaker_is_the_context_its_listeners_get() -> None:
    seen: list[object] = []

    class Listener(BreakerListener):
        def on_failing(
            self, breaker: BreakerContext, current_state: BreakerState, next_state: BreakerState
        ) -> None:
            seen.append((breaker.breaker_name, breaker.failure_threshold, next_state))

    br = consecutive_breaker((Boom, KeyError), 1, 7.5, 4, listeners=[Listener()], name="payments")
    assert isinstance(br, BreakerContext)
    assert br.breaker_name == "payments"
    assert br.exceptions == (Boom, KeyError)
    assert br.failure_threshold == 1
    assert br.recovery_time_secs == 7.5
    assert br.recovery_threshold == 4
    asyncio.run(fail(br))
    assert seen == [("payments", 1, BreakerState.failing)]


def test_window_breaker_context_and_predicate() -> None:
    def pred(exc: BaseException) -> bool:
        return isinstance(exc, Boom)

    br = CircuitBreaker(on=pred, failure_rate=0.5)
    assert br.failure_threshold is None
    assert br.exceptions is pred
    assert br.recovery_threshold == 3


async def test_token_bucket_of_the_old_path(clock: FakeClock) -> None:
    bucket = TokenBucket(2, 1)
    assert bucket.tokens == 2
    await bucket.take()
    await bucket.take()
    assert bucket.empty
    with pytest.raises(EmptyBucket) as info:
        await bucket.take()
    assert isinstance(info.value, RateLimitExceeded)
    clock.advance(0.5)
    await bucket.take()


def test_misnamed_fallback_registrar_is_importable_not_advertised() -> None:
    from failsafe.fallback import register_fallback_listener, register_timeout_listener

    assert register_timeout_listener is register_fallback_listener
    assert "register_timeout_listener" not in failsafe.fallback.__all__


# -- messages naming what the user wrote ----------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda: tokenbucket(10, 1), "@tokenbucket"),
        (lambda: tokenbucket(10, 1, key=lambda x: x), "@tokenbucket"),
        (lambda: slidingwindow(10, 1), "@slidingwindow"),
        (lambda: consecutive_breaker(Boom), "@circuitbreaker"),
    ],
    ids=["tokenbucket", "keyed-tokenbucket", "slidingwindow", "breaker"],
)
def test_sync_function_error_names_the_decorator(
    factory: Callable[[], Callable[[Any], object]], name: str
) -> None:
    def sync(x: int) -> int:
        return x

    policy = factory()
    with pytest.raises(TypeError, match=f"^{name} requires an async function"):
        policy(sync)


async def test_async_with_retry_points_to_async_for() -> None:
    from failsafe.retry import retry

    with pytest.raises(TypeError, match=r"async for attempt in retry\(\.\.\.\)"):
        async with retry(attempts=1):  # type: ignore[attr-defined]
            pass

    @retry(attempts=1)
    async def f() -> None:
        pass

    with pytest.raises(TypeError, match=r"async for attempt in retry\(\.\.\.\)"):
        async with f:  # type: ignore[misc]
            pass
