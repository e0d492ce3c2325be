"""Rate limiting: exact GCRA, sliding-window log, keyed buckets, waiting, rejection."""

from __future__ import annotations

import asyncio
import gc
import inspect
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from failsafe import _native
from failsafe.fallback import fallback
from failsafe.ratelimit import (
    EmptyBucket,
    KeyedTokenBucketLimiter,
    RateLimitExceeded,
    RateLimitListener,
    SlidingWindowLimiter,
    TokenBucket,
    TokenBucketLimiter,
    ratelimiter,
    register_ratelimit_listener,
    slidingwindow,
    tokenbucket,
)
from failsafe.ratelimit import exceptions as rl_exceptions
from failsafe.retry import retry
from failsafe.testing import FakeClock, instant_waits
from failsafe.timeout import timeout

NS = 1_000_000_000
FULL = -(2**62)  # FS_GCRA_FULL


async def ident(x: Any = None) -> Any:
    return x


# -- construction and validation -----------------------------------------------------------


def test_constructed_without_a_running_loop() -> None:
    # failsafe-py needed a running loop to build a bucket; at import time that failed.
    limiter = tokenbucket(5, 1)
    assert limiter.max_executions == 5
    assert limiter.bucket_size == 5
    assert TokenBucket(3, 1).tokens == 3


@pytest.mark.parametrize(
    ("kwargs", "exc", "param"),
    [
        ({"max_executions": 0, "per_time_secs": 1}, ValueError, "max_executions"),
        ({"max_executions": -1, "per_time_secs": 1}, ValueError, "max_executions"),
        ({"max_executions": 1.5, "per_time_secs": 1}, TypeError, "max_executions"),
        ({"max_executions": True, "per_time_secs": 1}, TypeError, "max_executions"),
        ({"max_executions": 1, "per_time_secs": 0}, ValueError, "per_time_secs"),
        ({"max_executions": 1, "per_time_secs": float("nan")}, ValueError, "per_time_secs"),
        ({"max_executions": 1, "per_time_secs": float("inf")}, ValueError, "per_time_secs"),
        ({"max_executions": 1, "per_time_secs": "1"}, TypeError, "per_time_secs"),
        ({"max_executions": 1, "per_time_secs": 1e-12}, ValueError, "per_time_secs"),
        ({"max_executions": 1, "per_time_secs": 1, "bucket_size": 0}, ValueError, "bucket_size"),
        ({"max_executions": 1, "per_time_secs": 1, "max_wait": -1}, ValueError, "max_wait"),
        ({"max_executions": 1, "per_time_secs": 1, "key": 3}, TypeError, "key"),
        (
            {"max_executions": 1, "per_time_secs": 1, "key": str, "max_keys": 0},
            ValueError,
            "max_keys",
        ),
        ({"max_executions": 1, "per_time_secs": 1, "name": "1bad"}, ValueError, "name"),
        (
            {"max_executions": 1, "per_time_secs": 1e9, "bucket_size": 10**6},
            ValueError,
            "bucket_size",
        ),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], exc: type[Exception], param: str) -> None:
    with pytest.raises(exc, match=param):
        tokenbucket(**kwargs)


def test_async_key_function_is_refused() -> None:
    async def key(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="key"):
        tokenbucket(1, 1, key=key)


def test_sync_function_is_refused() -> None:
    def sync() -> None:
        pass

    with pytest.raises(TypeError, match="async"):
        tokenbucket(1, 1)(sync)  # type: ignore[arg-type]


def test_decorated_function_looks_async() -> None:
    limiter = tokenbucket(1, 1)

    @limiter
    async def f(x: int) -> int:
        """Doc."""
        return x

    assert inspect.iscoroutinefunction(f)
    assert f.__name__ == "f"
    assert f.__doc__ == "Doc."
    assert f.__wrapped__ is not None
    assert limiter.name.endswith("f")


# -- token bucket ------------------------------------------------------------------------


async def test_burst_then_rate(clock: FakeClock) -> None:
    limiter = tokenbucket(10, 1, bucket_size=3)
    guarded = limiter(ident)
    for i in range(3):
        assert await guarded(i) == i
    with pytest.raises(RateLimitExceeded) as info:
        await guarded(3)
    assert info.value.retry_after_seconds == pytest.approx(0.1)
    assert info.value.retry_after_ms == pytest.approx(100)
    assert info.value.__cause__ is None
    clock.advance(0.099)
    with pytest.raises(RateLimitExceeded) as info:
        await guarded(4)
    assert info.value.retry_after_seconds == pytest.approx(0.001)
    clock.advance(0.001)
    assert await guarded(5) == 5
    assert limiter.stats()["admitted"] == 4
    assert limiter.stats()["rejected"] == 2


async def test_rejected_call_never_runs_the_function(clock: FakeClock) -> None:
    calls = 0

    @tokenbucket(1, 60)
    async def f() -> None:
        nonlocal calls
        calls += 1

    await f()
    with pytest.raises(RateLimitExceeded):
        await f()
    assert calls == 1


async def test_rejection_raises_when_awaited_and_is_a_coroutine(clock: FakeClock) -> None:
    f = tokenbucket(1, 60)(ident)
    await f()
    call = f()  # refused: nothing raised until awaited
    assert asyncio.iscoroutine(call)
    task = asyncio.create_task(call)
    with pytest.raises(RateLimitExceeded):
        await task
    # send/throw/close behave as for a coroutine that never started.
    call2 = f()
    with pytest.raises(ValueError, match="x"):
        call2.throw(ValueError("x"))
    call3 = f()
    call3.close()
    with pytest.raises(RuntimeError):
        call3.send(None)
    call4 = f()
    with pytest.raises(RateLimitExceeded):
        call4.send(None)
    with pytest.raises(RuntimeError, match="already awaited"):
        call4.send(None)
    assert f.__wrapped__ is ident


async def test_token_taken_when_called_not_awaited(clock: FakeClock) -> None:
    limiter = tokenbucket(1, 60)
    f = limiter(ident)
    coro = f(1)  # took the token
    with pytest.raises(RateLimitExceeded):
        await f(2)
    assert await coro == 1


@settings(max_examples=60, deadline=None)
@given(
    rate=st.integers(1, 50),
    per=st.sampled_from([0.1, 1.0, 3.0, 0.007]),
    burst=st.integers(1, 8),
    gaps=st.lists(st.integers(0, 40_000_000), min_size=50, max_size=400),
)
def test_never_more_than_rate_times_t_plus_burst(
    rate: int, per: float, burst: int, gaps: list[int]
) -> None:
    """Over a random run, any interval of length t holds at most rate*t + burst admissions."""
    with FakeClock(10**15) as clock:
        limiter = TokenBucketLimiter(rate, per, burst)
        admitted: list[int] = []
        for gap in gaps:
            clock.advance_ns(gap)
            if limiter.try_acquire():
                admitted.append(clock.now_ns)
        per_ns = round(per * NS)
        for i in range(len(admitted)):
            for j in range(i, len(admitted)):
                t = admitted[j] - admitted[i]
                # j - i + 1 admissions in a closed interval of length t
                assert (j - i + 1) <= t * rate / per_ns + burst
        stats = limiter.stats()
        assert stats["admitted"] == len(admitted)
        assert stats["admitted"] + stats["rejected"] == len(gaps)


def test_long_run_admits_exactly_the_rate() -> None:
    """No drift: polled every 10 ms for 1,000 s at 10/s, burst 10, it reaches the bound
    rate * t + burst exactly (failsafe-py admitted about 1.6x the rate)."""
    with FakeClock(0) as clock:
        limiter = TokenBucketLimiter(10, 1)
        n = 0
        for _ in range(100_000):
            n += limiter.try_acquire()
            clock.advance_ns(10_000_000)
        assert n == 10_009  # floor(10/s * 999.99 s + 10)


def test_rate_is_rounded_down_never_up() -> None:
    # 1 s / 3 is not a whole number of ns: the interval is rounded up.
    with FakeClock(0) as clock:
        limiter = TokenBucketLimiter(3, 1, 1)
        assert limiter.try_acquire()
        clock.advance_ns(333_333_333)
        assert not limiter.try_acquire()
        clock.advance_ns(1)
        assert limiter.try_acquire()


def test_token_bucket_compat(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(2, 1)
    bucket = limiter.bucket
    assert bucket.tokens == 2
    assert not bucket.empty
    asyncio.run(bucket.take())
    assert bucket.tokens == 1
    asyncio.run(bucket.take())
    assert bucket.empty
    with pytest.raises(EmptyBucket) as info:
        asyncio.run(bucket.take())
    assert isinstance(info.value, RateLimitExceeded)
    assert info.value.retry_after == pytest.approx(0.5)
    clock.advance(0.25)
    assert bucket.tokens == pytest.approx(0.5)
    assert "TokenBucket(" in repr(bucket)
    assert TokenBucket(1, 1).limiter.max_executions == 1


def test_exception_constructors() -> None:
    e = RateLimitExceeded(retry_after=1.5)
    assert (e.retry_after_seconds, e.retry_after_ms, e.retry_after) == (1.5, 1500, 1.5)
    assert e.get_retry_after_header() == "2"
    e = RateLimitExceeded("m", retry_after_ms=250)
    assert (str(e), e.retry_after_seconds, e.retry_after_ms) == ("m", 0.25, 250)
    e = RateLimitExceeded()
    assert e.retry_after_seconds is None
    assert e.get_retry_after_header() == "60"
    assert rl_exceptions.RateLimitExceeded is RateLimitExceeded


# -- sliding window --------------------------------------------------------------------------


async def test_sliding_window_limits_every_window(clock: FakeClock) -> None:
    limiter = slidingwindow(3, 1)
    assert isinstance(limiter, SlidingWindowLimiter)
    f = limiter(ident)
    for _ in range(3):
        await f()
        clock.advance(0.2)
    with pytest.raises(RateLimitExceeded) as info:
        await f()
    assert info.value.retry_after == pytest.approx(0.4)
    clock.advance(0.4)
    await f()  # the first admission has left the window
    assert limiter.stats()["available"] == 0
    assert limiter._holds_state()
    clock.advance(5)
    assert not limiter._holds_state()


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 10),
    gaps=st.lists(st.integers(0, 300_000_000), min_size=20, max_size=300),
)
def test_sliding_window_exact(limit: int, gaps: list[int]) -> None:
    with FakeClock(10**12) as clock:
        limiter = SlidingWindowLimiter(limit, 1)
        admitted: list[int] = []
        for gap in gaps:
            clock.advance_ns(gap)
            ok = limiter.try_acquire()
            window = [t for t in admitted if t > clock.now_ns - NS]
            assert ok == (len(window) < limit)
            if ok:
                admitted.append(clock.now_ns)


# -- waiting ---------------------------------------------------------------------------------


async def test_waiting_is_fifo_and_exact(clock: FakeClock, instant: None) -> None:
    limiter = tokenbucket(1, 1, max_wait=100)
    order: list[tuple[int, int]] = []

    @limiter
    async def f(i: int) -> None:
        order.append((i, clock.now_ns))

    await asyncio.gather(*(f(i) for i in range(20)))
    assert [i for i, _ in order] == list(range(20))
    assert limiter.stats()["admitted"] == 20
    assert limiter.stats()["rejected"] == 0


async def test_waiters_wake_at_their_reserved_times(clock: FakeClock) -> None:
    """A waiter sleeps once until its place: each one wakes a whole interval after the last."""
    limiter = tokenbucket(1, 1, max_wait=10)
    woke: list[int] = []
    f = limiter(ident)
    await f(0)
    t0 = clock.now_ns
    with instant_waits():
        for i in range(1, 4):
            await f(i)
            woke.append(clock.now_ns)
    assert woke == [t0 + i * NS for i in range(1, 4)]


async def test_wait_beyond_max_wait_rejects_at_once_without_reserving(
    clock: FakeClock, instant: None
) -> None:
    limiter = tokenbucket(1, 1, max_wait=1.5)
    f = limiter(ident)
    await f(0)
    c1 = f(1)  # waits 1 s
    with pytest.raises(RateLimitExceeded) as info:
        await f(2)  # would wait 2 s
    assert info.value.retry_after == pytest.approx(2.0)
    assert await c1 == 1
    # nothing was reserved by the refused call: the next place is 1 s after c1's.
    assert limiter.retry_after() == pytest.approx(1.0)


async def test_cancelled_last_waiter_gives_its_place_back(clock: FakeClock) -> None:
    limiter = tokenbucket(1, 1, max_wait=10)
    f = limiter(ident)
    await f(0)
    task = asyncio.create_task(f(1))
    await asyncio.sleep(0)
    assert limiter.retry_after() == pytest.approx(2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.retry_after() == pytest.approx(1.0)
    assert limiter.stats()["admitted"] == 1


async def test_cancelled_earlier_waiter_keeps_state_consistent(clock: FakeClock) -> None:
    """Only the latest reservation can go back; an earlier one stays spent (never letting a
    later waiter run early)."""
    limiter = tokenbucket(1, 1, max_wait=10)
    f = limiter(ident)
    await f(0)
    first = asyncio.create_task(f(1))
    second = asyncio.create_task(f(2))
    await asyncio.sleep(0)
    assert limiter.retry_after() == pytest.approx(3.0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert limiter.retry_after() == pytest.approx(3.0)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert limiter.retry_after() == pytest.approx(2.0)


async def test_cancellation_in_sliding_window_waiter(clock: FakeClock) -> None:
    limiter = slidingwindow(1, 1, max_wait=10)
    f = limiter(ident)
    await f(0)
    task = asyncio.create_task(f(1))
    await asyncio.sleep(0)
    assert limiter.retry_after() == pytest.approx(2.0)  # +1 s is reserved
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.retry_after() == pytest.approx(1.0)
    assert limiter.try_acquire() is False
    clock.advance(1)
    assert limiter.try_acquire() is True


async def test_acquire_and_async_with(clock: FakeClock, instant: None) -> None:
    limiter = tokenbucket(2, 1, max_wait=5)
    async with limiter:
        pass
    await limiter.acquire()
    t = clock.now_ns
    async with limiter:  # waits 0.5 s
        assert clock.now_ns == t + NS // 2
    assert limiter.stats()["admitted"] == 3
    strict = tokenbucket(1, 1)
    async with strict:
        pass
    with pytest.raises(RateLimitExceeded):
        async with strict:
            pytest.fail("entered a refused block")


async def test_thousand_concurrent_tasks_share_one_bucket(clock: FakeClock) -> None:
    limiter = tokenbucket(100, 1)
    started = 0

    @limiter
    async def f() -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(0)

    results = await asyncio.gather(*(f() for _ in range(1000)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, RateLimitExceeded)]
    assert started == 100
    assert len(refused) == 900
    assert limiter.stats()["admitted"] == 100
    assert limiter.stats()["rejected"] == 900
    clock.advance(1)
    assert limiter.stats()["tokens"] == 100


async def test_thousand_waiting_tasks_then_cancel_all(clock: FakeClock) -> None:
    limiter = tokenbucket(10, 1, max_wait=1000)
    f = limiter(ident)
    tasks = [asyncio.create_task(f(i)) for i in range(1000)]
    await asyncio.sleep(0)
    assert limiter.retry_after() == pytest.approx(99.1)
    for t in reversed(tasks[10:]):  # latest first: every place goes back
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert limiter.retry_after() == pytest.approx(0.1)
    assert limiter.stats()["admitted"] == 10


# -- keyed -----------------------------------------------------------------------------------


async def test_keyed_limits_each_key(clock: FakeClock) -> None:
    limiter = tokenbucket(1, 1, key=lambda user, **_: user)
    assert isinstance(limiter, KeyedTokenBucketLimiter)
    f = limiter(ident)
    assert await f("a") == "a"
    assert await f("b") == "b"
    with pytest.raises(RateLimitExceeded):
        await f("a")
    assert await f(("t", 1)) == ("t", 1)
    clock.advance(1)
    assert await f("a") == "a"
    s = limiter.stats()
    assert (s["keys"], s["max_keys"], s["admitted"], s["rejected"]) == (3, 10_000, 4, 1)
    with pytest.raises(TypeError, match="key"):
        await limiter.acquire()
    await limiter.acquire("zz")
    with pytest.raises(TypeError):
        async with limiter:
            pass


async def test_keyed_equal_keys_share_a_bucket(clock: FakeClock) -> None:
    limiter = tokenbucket(1, 1, key=lambda x: x)
    f = limiter(ident)
    await f("user-" + str(1))
    with pytest.raises(RateLimitExceeded):
        await f("".join(["user-", "1"]))  # equal, not identical
    await f(1)
    with pytest.raises(RateLimitExceeded):
        await f(1.0)  # 1 == 1.0


async def test_keyed_key_function_error_propagates(clock: FakeClock) -> None:
    def key(x: Any) -> Any:
        raise LookupError("no key")

    f = tokenbucket(1, 1, key=key)(ident)
    with pytest.raises(LookupError):
        await f(1)
    f2 = tokenbucket(1, 1, key=lambda x: x)(ident)
    with pytest.raises(TypeError):
        await f2([1])  # unhashable


async def test_keyed_table_never_drops_a_limited_key(clock: FakeClock) -> None:
    limiter = tokenbucket(1, 1, key=lambda x: x, max_keys=4)
    f = limiter(ident)
    for k in range(4):
        await f(k)
        clock.advance(0.1)
    # all four limited: a new key is refused, with when the first refills
    with pytest.raises(RateLimitExceeded) as info:
        await f(99)
    assert info.value.retry_after == pytest.approx(0.6)
    for k in range(4):
        with pytest.raises(RateLimitExceeded):
            await f(k)
    clock.advance(0.6)  # key 0 refilled: its place is reused
    await f(99)
    s = limiter.stats()
    assert s["keys"] == 4
    assert s["limited_keys"] == 4
    with pytest.raises(RateLimitExceeded):
        await f(1)  # still remembered
    clock.advance(10)
    assert not limiter._holds_state()
    for k in range(100, 120):
        await f(k)
        clock.advance(1)
    assert limiter.stats()["keys"] == 4


async def test_keyed_waiting_and_cancellation(clock: FakeClock) -> None:
    # Each call builds its key anew: equal keys, never the same object.
    limiter = tokenbucket(1, 1, key=lambda x: "u-" + str(x), max_wait=5)
    f = limiter(ident)
    await f(1)
    task = asyncio.create_task(f(1))
    await asyncio.sleep(0)
    assert limiter.retry_after("u-1") == pytest.approx(2)
    assert limiter.retry_after("u-2") == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.retry_after("u-1") == pytest.approx(1)
    with instant_waits():
        assert await f(1) == 1


def test_keyed_bounded_memory() -> None:
    with FakeClock(0) as clock:
        limiter = KeyedTokenBucketLimiter(1, 0.001, key=lambda x: x, max_keys=1000)
        for i in range(20_000):
            assert limiter.try_acquire(i)
            clock.advance_ns(2_000_000)
        held, limited, max_keys, bytes_per_key = limiter._key_stats()
        assert held == 1000
        assert max_keys == 1000
        assert limited <= 1
        assert bytes_per_key <= 48
    del limiter
    gc.collect()


def test_reset_forgets_everything(clock: FakeClock) -> None:
    for limiter in (
        TokenBucketLimiter(1, 1),
        SlidingWindowLimiter(1, 1),
        KeyedTokenBucketLimiter(1, 1, key=str),
    ):
        key = "k" if isinstance(limiter, KeyedTokenBucketLimiter) else None
        assert limiter.try_acquire(key)
        assert not limiter.try_acquire(key)
        assert limiter._holds_state()
        limiter.reset()
        assert not limiter._holds_state()
        assert limiter.try_acquire(key)


# -- listeners, stats, repr ------------------------------------------------------------------


class Recorder(RateLimitListener):
    def __init__(self) -> None:
        self.events: list[tuple[Any, float]] = []

    def on_rate_limited(self, limiter: Any, retry_after: float) -> None:
        self.events.append((limiter, retry_after))


class Raising(RateLimitListener):
    def on_rate_limited(self, limiter: Any, retry_after: float) -> None:
        raise RuntimeError("listener bug")


async def test_local_and_global_listeners(
    clock: FakeClock, global_listeners: None, caplog: pytest.LogCaptureFixture
) -> None:
    local, glob = Recorder(), Recorder()
    register_ratelimit_listener(glob)
    limiter = tokenbucket(1, 2, listeners=[local, Raising()], name="api")
    f = limiter(ident)
    await f()
    assert local.events == []
    assert glob.events == []
    with pytest.raises(RateLimitExceeded):
        await f()
    assert local.events == [(limiter, pytest.approx(2.0))]
    assert glob.events == [(limiter, pytest.approx(2.0))]
    assert "listener bug" in caplog.text
    assert not limiter.try_acquire()
    assert len(local.events) == 2


async def test_async_listener_runs_as_task(clock: FakeClock) -> None:
    seen: list[float] = []

    class AsyncListener:
        async def on_rate_limited(self, limiter: Any, retry_after: float) -> None:
            seen.append(retry_after)

    f = tokenbucket(1, 1, listeners=[AsyncListener()])(ident)
    await f()
    with pytest.raises(RateLimitExceeded):
        await f()
    await asyncio.sleep(0)
    assert seen == [pytest.approx(1.0)]


def test_stats_and_repr(clock: FakeClock) -> None:
    limiter = tokenbucket(4, 2, 2, name="lim")
    limiter.try_acquire()
    assert limiter.stats() == {
        "name": "lim",
        "admitted": 1,
        "rejected": 0,
        "max_executions": 4,
        "per_time_secs": 2.0,
        "bucket_size": 2,
        "tokens": 1.0,
    }
    assert repr(limiter).startswith("<ratelimit 'lim' admitted=1")
    assert limiter._holds_state()
    clock.advance(0.5)
    assert not limiter._holds_state()


# -- ratelimiter() ---------------------------------------------------------------------------


async def test_ratelimiter_of_a_failsafe_limiter_is_itself(clock: FakeClock) -> None:
    limiter = TokenBucketLimiter(1, 1)
    assert ratelimiter(limiter) is limiter
    f = ratelimiter(limiter)(ident)
    await f()
    with pytest.raises(RateLimitExceeded):
        await f()


async def test_ratelimiter_of_any_acquirable() -> None:
    class Counting:
        n = 0

        async def acquire(self) -> None:
            self.n += 1

    obj = Counting()
    f = ratelimiter(obj)(ident)
    assert await f(3) == 3
    async with ratelimiter(obj):
        pass
    assert obj.n == 2
    with pytest.raises(TypeError, match="acquire"):
        ratelimiter(object())


# -- stacking --------------------------------------------------------------------------------


async def test_fallback_over_limiter_and_limiter_over_fallback(clock: FakeClock) -> None:
    limiter = tokenbucket(1, 60)
    outer = fallback("busy", on=RateLimitExceeded)(limiter(ident))
    assert await outer("x") == "x"
    assert await outer("y") == "busy"

    async def boom() -> str:
        raise ValueError

    inner = limiter2 = tokenbucket(1, 60)
    g = inner(fallback("fb")(boom))
    assert await g() == "fb"
    with pytest.raises(RateLimitExceeded):
        await g()
    assert limiter2.stats()["rejected"] == 1


async def test_retry_over_limiter_waits_for_tokens(clock: FakeClock, instant: None) -> None:
    limiter = tokenbucket(1, 1)
    f = retry(on=RateLimitExceeded, attempts=3, backoff=1.0)(limiter(ident))
    assert await f(1) == 1
    assert await f(2) == 2  # refused once, retried after 1 s
    assert limiter.stats() == limiter.stats() | {"admitted": 2, "rejected": 1}


async def test_limiter_over_retry_and_timeout(clock: FakeClock) -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError
        return calls

    limiter = tokenbucket(1, 60)
    f = limiter(timeout(5)(retry(attempts=2, backoff=0)(flaky)))
    assert await f() == 2  # one token for the whole retried call
    with pytest.raises(RateLimitExceeded):
        await f()
    g = timeout(5)(tokenbucket(1, 60)(ident))
    assert await g(1) == 1
    with pytest.raises(RateLimitExceeded):
        await g(2)


async def test_on_methods(clock: FakeClock) -> None:
    limiter = tokenbucket(2, 60, key=lambda self, x: x)

    class Api:
        @limiter
        async def get(self, x: int) -> int:
            return x

    api = Api()
    assert await api.get(1) == 1
    assert await api.get(1) == 1
    with pytest.raises(RateLimitExceeded):
        await api.get(1)
    assert await Api.get(api, 2) == 2


# -- Hypothesis: the C engines against Python models -----------------------------------------


class GcraModel:
    def __init__(self, interval: int, burst: int) -> None:
        self.interval, self.tol, self.tat = interval, interval * (burst - 1), FULL

    def reserve(self, now: int, max_wait: int) -> tuple[bool, int]:
        t = max(self.tat, now)
        wait = max(0, t - self.tol - now)
        if wait > max_wait:
            return False, wait
        self.tat = t + self.interval
        return True, wait

    def give_back(self, tat_after: int) -> bool:
        if self.tat != tat_after:
            return False
        self.tat -= self.interval
        return True


class LimiterMachine(RuleBasedStateMachine):
    """Drives TokenBucketLimiter (GCRA) or SlidingWindowLimiter through the C engine and a
    model with the same operations on the fake clock."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(10**12).install()
        self.tickets: list[tuple[int, int, int]] = []

    def teardown(self) -> None:
        self.clock.uninstall()

    @initialize(
        rate=st.integers(1, 20),
        per_ms=st.integers(1, 2000),
        burst=st.integers(1, 5),
        sliding=st.booleans(),
    )
    def setup(self, rate: int, per_ms: int, burst: int, sliding: bool) -> None:
        self.sliding = sliding
        per_ns = per_ms * 1_000_000
        if sliding:
            self.limiter: Any = SlidingWindowLimiter(rate, per_ms / 1000)
            self.ring = [FULL] * rate
            self.head = 0
            self.seq = 0
            self.window = per_ns
        else:
            self.limiter = TokenBucketLimiter(rate, per_ms / 1000, burst)
            self.model = GcraModel(-(-per_ns // rate), burst)

    def model_reserve(self, now: int, max_wait: int) -> tuple[bool, int, int, int]:
        if not self.sliding:
            ok, wait = self.model.reserve(now, max_wait)
            return ok, wait, self.model.tat, 0
        oldest = self.ring[self.head]
        at = max(now, oldest + self.window)
        if at - now > max_wait:
            return False, at - now, 0, 0
        self.ring[self.head] = at
        self.head = (self.head + 1) % len(self.ring)
        self.seq += 1
        return True, at - now, self.seq, oldest

    def model_give_back(self, a: int, b: int) -> bool:
        if not self.sliding:
            return self.model.give_back(a)
        if a != self.seq or a == 0:
            return False
        self.head = (self.head - 1) % len(self.ring)
        self.ring[self.head] = b
        self.seq -= 1
        return True

    @rule(ns=st.integers(0, 3 * NS))
    def advance(self, ns: int) -> None:
        self.clock.advance_ns(ns)

    @rule(max_wait=st.integers(0, 5 * NS))
    def acquire(self, max_wait: int) -> None:
        now = _native.now_ns()  # the time the limiter sees
        ok, wait, a, b = self.model_reserve(now, max_wait)
        if not ok:
            with pytest.raises(RateLimitExceeded) as info:
                self.limiter._acquire(None, max_wait)
            assert info.value.retry_after_seconds == pytest.approx(wait / NS)
            return
        got = self.limiter._acquire(None, max_wait)
        if got is None:
            assert wait == 0
        else:
            assert got == (now + wait, a, b)
            assert wait > 0
            self.tickets.append(got)

    @precondition(lambda self: bool(self.tickets))
    @rule(data=st.data())
    def give_back(self, data: st.DataObject) -> None:
        _, a, b = self.tickets.pop(data.draw(st.integers(0, len(self.tickets) - 1)))
        assert self.limiter._give_back(a, b) == self.model_give_back(a, b)

    @invariant()
    def retry_after_agrees(self) -> None:
        if not hasattr(self, "limiter"):
            return
        now = _native.now_ns()
        if self.sliding:
            expect = max(0, self.ring[self.head] + self.window - now)
        else:
            expect = max(0, max(self.model.tat, now) - self.model.tol - now)
        assert self.limiter.retry_after() == pytest.approx(expect / NS)


TestLimiterMachine = LimiterMachine.TestCase
TestLimiterMachine.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)


class KeyTableMachine(RuleBasedStateMachine):
    """The C key table against a model: a dict of key -> TAT, at most max_keys entries,
    evicting only keys whose bucket is full again, refusing new keys when none is."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(10**12).install()

    def teardown(self) -> None:
        self.clock.uninstall()

    @initialize(max_keys=st.integers(1, 6), burst=st.integers(1, 3))
    def setup(self, max_keys: int, burst: int) -> None:
        self.max_keys = max_keys
        self.limiter = KeyedTokenBucketLimiter(1, 0.1, burst, key=lambda k: k, max_keys=max_keys)
        self.interval = 100_000_000
        self.tol = self.interval * (burst - 1)
        self.tats: dict[int, int] = {}

    @rule(ns=st.integers(0, NS // 2))
    def advance(self, ns: int) -> None:
        self.clock.advance_ns(ns)

    @rule(key=st.integers(0, 9))
    def take(self, key: int) -> None:
        now = self.clock.now_ns
        if key not in self.tats:
            if len(self.tats) >= self.max_keys:
                idle = [k for k, t in self.tats.items() if t <= now]
                if not idle:
                    assert not self.limiter.try_acquire(key)
                    return
                # the C table picks which idle key to evict; learn it from the C side below
                self.evictable = set(idle)
            self.tats[key] = FULL
        t = max(self.tats[key], now)
        expect = t - self.tol <= now
        if expect:
            self.tats[key] = t + self.interval
        assert self.limiter.try_acquire(key) == expect
        # Model eviction: the C table dropped one of the idle keys; drop any one idle key the
        # C side no longer limits (all idle keys are equivalent: full buckets).
        held = self.limiter._key_stats()[0]
        while len(self.tats) > held:
            victim = next(k for k, t in self.tats.items() if t <= now and k != key)
            del self.tats[victim]

    @invariant()
    def limited_keys_agree(self) -> None:
        if not hasattr(self, "limiter"):
            return
        now = self.clock.now_ns
        held, limited, _, _ = self.limiter._key_stats()
        assert held == len(self.tats) <= self.max_keys
        assert limited == sum(t > now for t in self.tats.values())
        for k, t in self.tats.items():
            if t > now:  # a limited key is remembered with its exact state
                expect = max(0, max(t, now) - self.tol - now)
                assert self.limiter.retry_after(k) == pytest.approx(expect / NS)


TestKeyTableMachine = KeyTableMachine.TestCase
TestKeyTableMachine.settings = settings(max_examples=80, stateful_step_count=50, deadline=None)


def test_native_types_are_policies() -> None:
    assert issubclass(TokenBucketLimiter, _native.Limiter)
    assert issubclass(KeyedTokenBucketLimiter, _native.KeyedLimiter)
    guard: Callable[..., Any] = _native.Guard(ident, TokenBucketLimiter(1, 1))
    assert callable(guard)


def test_failsafe_py_names() -> None:
    import failsafe.ratelimit as rl

    for name in ("ratelimiter", "tokenbucket", "TokenBucketLimiter", "TokenBucket"):
        assert hasattr(rl, name)
    assert issubclass(EmptyBucket, RateLimitExceeded)


async def test_cancelling_an_admitted_call_changes_nothing(clock: FakeClock) -> None:
    limiter = tokenbucket(2, 1)
    started = asyncio.Event()

    @limiter
    async def slow() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the token is spent (the call started); nothing else is held or counted
    assert limiter.stats()["admitted"] == 1
    assert limiter.stats()["rejected"] == 0
    assert limiter.stats()["tokens"] == 1.0


async def test_cancelled_waiter_in_async_with(clock: FakeClock) -> None:
    limiter = tokenbucket(1, 1, max_wait=10)
    await limiter.acquire()

    async def block() -> None:
        async with limiter:
            pytest.fail("entered before its place")

    task = asyncio.create_task(block())
    await asyncio.sleep(0)
    assert limiter.retry_after() == pytest.approx(2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.retry_after() == pytest.approx(1.0)
    assert limiter.stats()["admitted"] == 1


def test_reset_survives_a_key_whose_release_inserts_keys(clock: FakeClock) -> None:
    # reset() releases the held keys; a key's __del__ that uses the limiter inserts new keys
    # into the emptied table while the old ones are still being released: none of the new
    # ones may be released with them (the table would then hold a freed or NULL key).
    limiter = KeyedTokenBucketLimiter(1, 1.0, key=lambda k: k, max_keys=8)

    class Key:
        def __init__(self, v: int, spawn: int = 0) -> None:
            self.v = v
            self.spawn = spawn

        def __hash__(self) -> int:
            return hash(self.v)

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Key) and other.v == self.v

        def __del__(self) -> None:
            for i in range(self.spawn):
                limiter.try_acquire(key=("new", i))

    for i in range(8):
        assert limiter.try_acquire(key=Key(i, spawn=6 if i == 1 else 0))
    limiter.reset()
    assert limiter._key_stats()[0] == 6
    for i in range(6):
        assert not limiter.try_acquire(key=("new", i))  # each new key holds its token
    assert limiter.try_acquire(key=("new", 6))
    assert limiter._key_stats()[0] == 7


@pytest.mark.parametrize("kind", ["sliding", "bucket", "keyed"])
def test_a_ticket_from_before_reset_gives_nothing_back(clock: FakeClock, kind: str) -> None:
    # A waiter of before reset() that stops waiting gives its ticket back; after the reset the
    # same decisions make an identical ticket for another caller (the same sequence number, or
    # the same TAT under the same clock), whose reservation must stay.
    limiter: Any
    kw: dict[str, Any] = {}
    if kind == "sliding":
        limiter = SlidingWindowLimiter(2, 1.0, max_wait=10)
    elif kind == "bucket":
        limiter = TokenBucketLimiter(2, 1.0, max_wait=10)
    else:
        limiter = KeyedTokenBucketLimiter(2, 1.0, key=lambda k: k, max_wait=10)
        kw = {"key": "k"}
    assert limiter._acquire(**kw) is None
    assert limiter._acquire(**kw) is None
    stale = limiter._acquire(**kw)
    assert stale is not None
    limiter.reset()
    assert limiter._acquire(**kw) is None
    assert limiter._acquire(**kw) is None
    mine = limiter._acquire(**kw)
    assert mine is not None
    after = limiter.retry_after(**kw)
    assert limiter._give_back(stale[1], stale[2], **kw) is False
    assert limiter.retry_after(**kw) == after
    assert limiter._give_back(mine[1], mine[2], **kw) is True
    stale_again = limiter._acquire(**kw)
    limiter.reset()
    assert stale_again is not None
    assert limiter._give_back(stale_again[1], stale_again[2], **kw) is False
