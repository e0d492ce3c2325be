"""failsafe.deadline: one ambient deadline that timeouts, retry, bulkhead and limiter waits and
hedges respect.

Where the subject is failsafe's own waits (retry backoff, limiter places, hedge delays) time is
a FakeClock with instant waits. Timeouts and the block's own cancellation run on the event
loop's clock: those tests wait real fractions of a second and assert counts and exception
types, never durations.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import threading
from typing import Any

import pytest

from failsafe import _native
from failsafe.bulkhead import BulkheadFull, bulkhead
from failsafe.deadline import (
    Deadline,
    DeadlineExceeded,
    deadline,
    format_grpc_timeout,
    format_seconds,
    parse_grpc_timeout,
    parse_seconds,
)
from failsafe.hedge import hedge
from failsafe.integrations.fastapi import DeadlineMiddleware
from failsafe.ratelimit import tokenbucket
from failsafe.retry import AttemptsExceeded, retry
from failsafe.testing import FakeClock
from failsafe.timeout import TimeoutError as FsTimeoutError
from failsafe.timeout import timeout


def open_scopes() -> int:
    """Deadline scopes open in the process, as the C fast paths count them."""
    _native._deadline_scopes(1)
    return _native._deadline_scopes(-1)


async def hang() -> None:
    await asyncio.sleep(3600)


# ------------------------------------------------------------------------------------------
# The scope


async def test_the_block_is_cut_at_the_deadline_with_one_deadline_exceeded() -> None:
    with pytest.raises(DeadlineExceeded) as caught:
        async with deadline(0.05):
            await hang()
    assert isinstance(caught.value, FsTimeoutError)
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)
    assert deadline.remaining() is None
    assert open_scopes() == 0


async def test_a_block_that_ends_in_time_is_left_alone() -> None:
    async with deadline(5) as d:
        assert isinstance(d, Deadline)
        await asyncio.sleep(0)
        result = 42
    assert result == 42
    assert open_scopes() == 0


async def test_remaining_on_the_fake_clock(clock: FakeClock) -> None:
    assert deadline.remaining() is None
    async with deadline(2.0):
        assert deadline.remaining() == 2.0
        clock.advance(0.5)
        assert deadline.remaining() == 1.5
        clock.advance(5)
        assert deadline.remaining() == 0.0
    assert deadline.remaining() is None


async def test_nested_deadlines_only_shrink(clock: FakeClock) -> None:
    async with deadline(1.0):
        async with deadline(10.0):
            assert deadline.remaining() == 1.0  # the outer one still holds
            async with deadline(0.25):
                assert deadline.remaining() == 0.25
            assert deadline.remaining() == 1.0
        async with deadline(math.inf):
            assert deadline.remaining() == 1.0
        assert deadline.remaining() == 1.0
    async with deadline(math.inf):
        assert deadline.remaining() == math.inf
    assert deadline.remaining() is None


async def test_nested_deadlines_raise_one_error_from_the_outermost_cause() -> None:
    async def nested() -> None:
        async with deadline(0.05), deadline(10), timeout(10):
            await hang()

    with pytest.raises(DeadlineExceeded) as caught:
        await nested()
    # One error: its cause is the cancellation, not another DeadlineExceeded.
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)
    assert open_scopes() == 0


async def test_the_decorator_bounds_each_call_and_keeps_the_signature() -> None:
    @deadline(0.05)
    async def slow(x: int, *, y: str = "a") -> int:
        await hang()
        return x

    @deadline(5)
    async def fast(x: int) -> int:
        return x * 2

    assert slow.__name__ == "slow"
    assert list(inspect.signature(slow).parameters) == ["x", "y"]
    assert await fast(21) == 42
    results = await asyncio.gather(slow(1), slow(2), return_exceptions=True)
    assert all(isinstance(r, DeadlineExceeded) for r in results)


async def test_one_deadline_object_serves_concurrent_tasks(clock: FakeClock) -> None:
    shared = deadline(3.0)
    seen: list[float | None] = []

    async def use(advance: float) -> None:
        async with shared:
            clock.advance(advance)
            await asyncio.sleep(0)
            seen.append(deadline.remaining())

    await asyncio.gather(use(0), use(0))
    assert deadline.remaining() is None
    assert len(seen) == 2
    assert all(s is not None and 0 <= s <= 3.0 for s in seen)


async def test_cancellation_is_not_a_deadline() -> None:
    entered = asyncio.Event()

    async def body() -> None:
        async with deadline(10):
            entered.set()
            await hang()

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert open_scopes() == 0
    assert deadline.remaining() is None


async def test_exit_without_entry_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="without a matching __aenter__"):
        await deadline(1).__aexit__(None, None, None)


# ------------------------------------------------------------------------------------------
# Timeouts


async def test_a_timeout_fires_at_the_deadline_when_that_comes_first() -> None:
    loop = asyncio.get_running_loop()
    whens: list[float | None] = []

    async def bounded() -> None:
        async with deadline(0.05), timeout(30) as scope:
            whens.append(scope.when())
            await hang()

    with pytest.raises(DeadlineExceeded):
        await bounded()
    assert whens[0] is not None
    assert whens[0] - loop.time() <= 0.05


async def test_a_timeout_of_its_own_raises_a_plain_timeout_error() -> None:
    async with deadline(30):
        with pytest.raises(FsTimeoutError) as caught:
            async with timeout(0.02):
                await hang()
        assert not isinstance(caught.value, DeadlineExceeded)
        remaining = deadline.remaining()
        assert remaining is not None
        assert remaining > 1


async def test_a_capped_scope_rescheduled_earlier_is_a_plain_timeout() -> None:
    loop = asyncio.get_running_loop()

    async def rescheduled() -> None:
        async with timeout(30) as scope:
            scope.reschedule(loop.time() + 0.01)
            await hang()

    async with deadline(30):
        with pytest.raises(FsTimeoutError) as caught:
            await rescheduled()
    assert not isinstance(caught.value, DeadlineExceeded)


async def test_a_decorated_timeout_fires_at_the_deadline() -> None:
    @timeout(30)
    async def guarded() -> None:
        await hang()

    outer = asyncio.create_task(guarded())
    await asyncio.sleep(0)
    outer.cancel()  # no deadline here: the guard itself is untouched
    with pytest.raises(asyncio.CancelledError):
        await outer
    with pytest.raises(DeadlineExceeded):
        async with deadline(0.05):
            await guarded()


async def test_a_timeout_disabled_stays_disabled_but_the_block_is_cut() -> None:
    async def bounded() -> None:
        async with deadline(0.05), timeout(None):
            await hang()

    with pytest.raises(DeadlineExceeded):
        await bounded()


# ------------------------------------------------------------------------------------------
# Retry


@pytest.mark.parametrize("backoff", [0, 0.05], ids=["in-C", "in-Python"])
async def test_a_1s_deadline_allows_exactly_two_attempts_of_07s(backoff: float) -> None:
    attempts = 0

    @retry(attempts=10, backoff=backoff)
    async def call() -> None:
        nonlocal attempts
        attempts += 1
        async with timeout(0.7):
            await hang()

    with pytest.raises(DeadlineExceeded):
        async with deadline(1.0):
            await call()
    assert attempts == 2


@pytest.mark.usefixtures("instant")
async def test_retry_gives_up_when_the_backoff_would_end_past_the_deadline(
    clock: FakeClock,
) -> None:
    attempts: list[float] = []

    @retry(attempts=10, backoff=0.3)
    async def call() -> None:
        attempts.append(clock.now())
        raise ValueError("down")

    with pytest.raises(DeadlineExceeded, match="gave up after 4 attempt") as caught:
        async with deadline(1.0):
            await call()
    assert attempts == pytest.approx([0, 0.3, 0.6, 0.9])
    assert clock.now() == pytest.approx(0.9)  # no sleep into the deadline
    assert isinstance(caught.value.__cause__, ValueError)
    assert call.policy.stats()["giveup"] == 1


@pytest.mark.usefixtures("instant")
async def test_retry_gives_up_at_once_when_the_server_asks_past_the_deadline(
    clock: FakeClock,
) -> None:
    from failsafe.ratelimit import RateLimitExceeded

    attempts = 0

    @retry(attempts=10, backoff=0.01)
    async def call() -> None:
        nonlocal attempts
        attempts += 1
        raise RateLimitExceeded(retry_after=5.0)

    with pytest.raises(DeadlineExceeded, match="asked to wait 5 s"):
        async with deadline(1.0):
            await call()
    assert attempts == 1
    assert clock.now() == 0


async def test_retry_in_c_starts_no_attempt_once_the_deadline_has_passed(
    clock: FakeClock,
) -> None:
    attempts = 0

    @retry(attempts=100, backoff=0)
    async def call() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 2:
            clock.advance(1.0)  # the deadline passes during the second attempt
        raise ValueError("down")

    with pytest.raises(DeadlineExceeded) as caught:
        async with deadline(1.0):
            await call()
    assert attempts == 2
    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.usefixtures("instant")
async def test_without_a_deadline_retry_is_unchanged(clock: FakeClock) -> None:
    @retry(attempts=3, backoff=10)
    async def call() -> None:
        raise ValueError("down")

    with pytest.raises(AttemptsExceeded):
        await call()
    assert clock.now() == 30


@pytest.mark.usefixtures("instant")
async def test_the_block_form_of_retry_respects_the_deadline(clock: FakeClock) -> None:
    numbers = []

    async def block() -> None:
        async with deadline(1.0):
            async for attempt in retry(attempts=10, backoff=0.4):
                with attempt:
                    numbers.append(attempt.number)
                    raise ValueError("down")

    with pytest.raises(DeadlineExceeded):
        await block()
    assert numbers == [1, 2, 3]


# ------------------------------------------------------------------------------------------
# Bulkhead, limiter, hedge


@pytest.mark.parametrize("max_wait", [None, 30.0])
@pytest.mark.parametrize("left", [0.05, 0.0])
async def test_a_bulkhead_wait_is_cut_at_the_deadline(
    clock: FakeClock, max_wait: float | None, left: float
) -> None:
    bh = bulkhead(1, max_capacity=2, max_wait=max_wait)
    release = asyncio.Event()

    async def holder() -> None:
        async with bh:
            await release.wait()

    async def waiter() -> None:
        # The block's own cancellation is 60 s away (loop clock): the wait's cut is the
        # bulkhead's, at what is left on failsafe's clock.
        async with deadline(60):
            clock.advance(60 - left)
            async with bh:
                pytest.fail("ran without a slot")

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    with pytest.raises(DeadlineExceeded, match="waiting for a slot"):
        await waiter()
    assert bh.queued == 0
    assert bh.stats()["full"] == 0  # the deadline's doing, not the bulkhead's
    release.set()
    await held
    assert bh.running == 0


async def test_a_bulkhead_max_wait_shorter_than_the_deadline_still_rejects() -> None:
    bh = bulkhead(1, max_capacity=2, max_wait=0.02)
    release = asyncio.Event()

    async def holder() -> None:
        async with bh:
            await release.wait()

    async def waiter() -> None:
        async with deadline(30), bh:
            pass

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFull):
        await waiter()
    release.set()
    await held


@pytest.mark.usefixtures("instant")
async def test_a_limiter_wait_past_the_deadline_is_not_taken(clock: FakeClock) -> None:
    limiter = tokenbucket(1, 1.0, max_wait=10)
    await limiter.acquire()
    with pytest.raises(DeadlineExceeded, match="1 s away"):
        async with deadline(0.5):
            await limiter.acquire()
    assert clock.now() == 0  # refused at once
    # The place was given back: the next caller waits 1 s, not 2.
    async with deadline(2.0):
        await limiter.acquire()
    assert clock.now() == pytest.approx(1.0)


@pytest.mark.usefixtures("instant")
async def test_a_decorated_limiter_wait_past_the_deadline_is_not_taken(clock: FakeClock) -> None:
    @tokenbucket(1, 1.0, max_wait=10)
    async def call() -> int:
        return 1

    assert await call() == 1
    with pytest.raises(DeadlineExceeded):
        async with deadline(0.5):
            await call()
    async with deadline(1.5):
        assert await call() == 1


async def test_a_hedge_starts_no_attempt_after_the_deadline(clock: FakeClock) -> None:
    launched = 0

    @hedge(attempts=3, delay=0.1)
    async def call() -> None:
        nonlocal launched
        launched += 1
        await hang()

    async def bounded() -> None:
        async with deadline(60):  # the block's own cut is 60 s of real time away
            await call()

    async def turns() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    task = asyncio.create_task(bounded())
    await turns()
    assert launched == 1
    clock.advance(0.1)  # the hedge delay (on the fake clock): attempt 2
    await turns()
    assert launched == 2
    clock.advance(60)  # past the deadline: attempt 3, due at 0.2 s, never starts
    await turns()
    assert launched == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ------------------------------------------------------------------------------------------
# Isolation: context variables, tasks, threads, loops


async def test_tasks_started_inside_inherit_and_others_do_not(clock: FakeClock) -> None:
    inside: list[float | None] = []
    gate = asyncio.Event()

    async def before() -> float | None:
        await gate.wait()
        return deadline.remaining()

    earlier = asyncio.create_task(before())
    async with deadline(2.0):
        child = asyncio.create_task(asyncio.sleep(0, deadline.remaining()))
        inside.append(await child)
        gate.set()
        assert await earlier is None  # started before the deadline: not bound by it
    assert inside == [2.0]


async def test_threads_and_their_loops_do_not_see_each_others_deadline() -> None:
    seen: dict[str, Any] = {}
    entered = threading.Event()
    leave = threading.Event()

    def other_thread() -> None:
        async def main() -> None:
            entered.wait(30)
            seen["remaining"] = deadline.remaining()
            try:
                async with timeout(0.05):
                    await hang()
            except FsTimeoutError as e:
                seen["error"] = type(e)
            leave.set()

        asyncio.run(main())

    thread = threading.Thread(target=other_thread)
    thread.start()
    async with deadline(30):
        entered.set()
        while not leave.is_set():
            await asyncio.sleep(0.01)
        # to_thread copies the context: the deadline goes with the work.
        remaining = await asyncio.to_thread(deadline.remaining)
    thread.join(30)
    assert seen == {"remaining": None, "error": FsTimeoutError}
    assert remaining is not None
    assert 0 < remaining <= 30


def test_separate_event_loops_are_isolated() -> None:
    async def first() -> float | None:
        async with deadline(5):
            return deadline.remaining()

    async def second() -> float | None:
        return deadline.remaining()

    assert asyncio.run(first()) is not None
    assert asyncio.run(second()) is None


# ------------------------------------------------------------------------------------------
# Bad input and the wire formats


@pytest.mark.parametrize(
    ("value", "err", "match"),
    [
        (-1, ValueError, "seconds"),
        (math.nan, ValueError, "seconds"),
        ("1", TypeError, "seconds"),
        (True, TypeError, "seconds"),
        (None, TypeError, "seconds"),
    ],
)
def test_bad_seconds_are_refused(value: Any, err: type[Exception], match: str) -> None:
    with pytest.raises(err, match=match):
        deadline(value)


def test_only_async_functions_are_decorated() -> None:
    def sync() -> None:
        pass

    with pytest.raises(TypeError, match="async functions"):
        deadline(1)(sync)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("500m", 0.5), ("2S", 2.0), ("1H", 3600.0), ("3M", 180.0), ("250u", 250e-6), ("7n", 7e-9)],
)
def test_grpc_timeouts_parse(value: str, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5", "5s", "-1S", "1.5S", "123456789m", "S"])
def test_malformed_grpc_timeouts_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="grpc-timeout"):
        parse_grpc_timeout(value)


@pytest.mark.parametrize("value", ["", "x", "-1", "nan", "inf"])
def test_malformed_seconds_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="seconds"):
        parse_seconds(value)


@pytest.mark.parametrize(
    ("seconds", "grpc", "plain"),
    [
        (0.4996, "499m", "0.499"),
        (0.0005, "500u", "0.000"),
        (2.0, "2000m", "2.000"),
        (0.0, "0u", "0.000"),
        (1e12, "99999999H", "1000000000000.000"),
    ],
)
def test_what_is_left_is_sent_rounded_down(seconds: float, grpc: str, plain: str) -> None:
    assert format_grpc_timeout(seconds) == grpc
    assert format_seconds(seconds) == plain
    assert parse_grpc_timeout(grpc) <= seconds


def test_the_middleware_reads_the_nearer_header_and_caps_it() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    mw = DeadlineMiddleware(app, max_seconds=5)
    assert mw.seconds([]) is None
    assert mw.seconds([(b"grpc-timeout", b"500m")]) == 0.5
    assert mw.seconds([(b"X-Request-Timeout", b"2")]) == 2.0
    assert mw.seconds([(b"x-request-timeout", b"2"), (b"grpc-timeout", b"1S")]) == 1.0
    assert mw.seconds([(b"x-request-timeout", b"60")]) == 5.0
    with pytest.raises(ValueError, match="grpc-timeout"):
        mw.seconds([(b"grpc-timeout", b"soon")])
    custom = DeadlineMiddleware(app, grpc_header=None, seconds_header="Deadline-S", default=3)
    assert custom.seconds([(b"grpc-timeout", b"1S")]) == 3.0
    assert custom.seconds([(b"deadline-s", b"1.5")]) == 1.5


@pytest.mark.parametrize(
    ("kwargs", "err"),
    [
        ({"grpc_header": ""}, ValueError),
        ({"seconds_header": "a:b"}, ValueError),
        ({"seconds_header": 3}, ValueError),
        ({"default": -1}, ValueError),
        ({"max_seconds": "5"}, TypeError),
    ],
)
def test_middleware_options_are_validated(kwargs: dict[str, Any], err: type[Exception]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(err, match=next(iter(kwargs))):
        DeadlineMiddleware(app, **kwargs)


@pytest.mark.parametrize("header", ["", "a:b", 3, "dé"])
def test_the_transport_header_option_is_validated(header: Any) -> None:
    from failsafe.integrations.httpx import ResilientTransport

    with pytest.raises(ValueError, match="deadline_header"):
        ResilientTransport(deadline_header=header)


def test_c_reads_the_deadline_only_in_its_context(clock: FakeClock) -> None:
    async def main() -> tuple[float, float]:
        async with deadline(2.0):
            inside = _native._deadline_left()
        return inside, _native._deadline_left()

    inside, after = asyncio.run(main())
    assert inside == 2.0
    assert after == math.inf
