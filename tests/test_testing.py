"""failsafe.testing: FakeClock, instant waits, jitter seed."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from failsafe import _native, testing
from failsafe.circuitbreaker import BreakerFailing, consecutive_breaker
from failsafe.hedge import hedge, percentile
from failsafe.ratelimit import RateLimitExceeded, tokenbucket
from failsafe.testing import FakeClock, instant_waits, is_instant, seed, sleep


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    if testing._clock is not None:
        testing._clock.uninstall()
    instant_waits(False)


def assert_real_clock() -> None:
    """The core reads a running clock: the real one, shifted forward (never back) by earlier
    fake clocks that ran ahead of it."""
    before, real0 = _native.now_ns(), time.monotonic_ns()
    time.sleep(0.002)
    after, real1 = _native.now_ns(), time.monotonic_ns()
    assert not testing._clock
    assert 0 < after - before <= real1 - real0 + 1_000_000
    assert after >= real1 - 1_000_000


def anchor(clock: FakeClock) -> int:
    """How far ahead of the clock's own reading the core's time is."""
    return _native.now_ns() - clock.now_ns


# ------------------------------------------------------------------------------------------
# FakeClock


def test_fake_clock_drives_the_core_and_restores_the_real_clock() -> None:
    assert_real_clock()
    before = _native.now_ns()
    with FakeClock(start_ns=5) as clock:
        assert clock.now_ns == 5
        base = anchor(clock)
        assert _native.now_ns() == 5 + base >= before  # the core's time did not go back
        clock.advance(1.5)
        assert _native.now_ns() == 1_500_000_005 + base
        clock.advance_ns(10)
        assert _native.now_ns() == 1_500_000_015 + base
        clock.set(3)
        assert _native.now_ns() == 3_000_000_000 + base
        assert clock.now() == 3.0
        time.sleep(0.001)
        assert _native.now_ns() == 3_000_000_000 + base  # real time does not leak in
    assert_real_clock()


def test_fake_clock_restores_on_error() -> None:
    with pytest.raises(RuntimeError), FakeClock():
        raise RuntimeError
    assert_real_clock()


def test_install_and_uninstall() -> None:
    clock = FakeClock(start_ns=7)
    clock.advance_ns(3)  # not installed: only the clock's own time moves
    assert_real_clock()

    before = _native.now_ns()
    assert clock.install() is clock
    assert clock.installed
    assert clock.now_ns == 10
    assert _native.now_ns() >= before
    clock.install()  # again: no-op
    with pytest.raises(RuntimeError, match="another FakeClock"):
        FakeClock().install()

    clock.uninstall()
    clock.uninstall()  # idempotent
    assert not clock.installed
    assert_real_clock()
    with FakeClock() as other:  # free again
        assert other.now_ns == 0


def test_time_never_goes_back() -> None:
    clock = FakeClock(start_ns=2_000_000_000)
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="ns must be between"):
        clock.advance_ns(-1)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.set(1)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.set_ns(1)
    assert clock.now_ns == 2_000_000_000


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: FakeClock(start_ns=-1), ValueError, "start_ns must be between"),
        (lambda: FakeClock(start_ns=1.0), TypeError, "start_ns must be an int"),  # type: ignore[arg-type]
        (lambda: FakeClock(start_ns=2**63), ValueError, "start_ns"),
        (lambda: FakeClock().advance(math.nan), ValueError, "seconds must be finite"),
        (lambda: FakeClock().advance(math.inf), ValueError, "seconds must be finite"),
        (lambda: FakeClock().advance(True), TypeError, "seconds must be a number"),
        (lambda: FakeClock().advance("1"), TypeError, "seconds must be a number"),  # type: ignore[arg-type]
        (lambda: FakeClock().advance_ns(1.5), TypeError, "ns must be an int"),  # type: ignore[arg-type]
    ],
)
def test_clock_validation(call: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()  # type: ignore[operator]


# ------------------------------------------------------------------------------------------
# Instant waits


async def test_sleep_waits_for_real_by_default() -> None:
    assert not is_instant()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await sleep(0.05)
    assert loop.time() - start >= 0.04


async def test_instant_sleep_returns_at_once_but_turns_the_loop() -> None:
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    instant_waits()
    assert is_instant()
    task = asyncio.get_running_loop().create_task(other())
    async with asyncio.timeout(1):
        await sleep(3600)
    assert ran == ["other"]  # the loop turned while we "slept"
    await task


async def test_instant_sleep_advances_the_fake_clock() -> None:
    with FakeClock(start_ns=1) as clock, instant_waits():
        base = anchor(clock)
        await sleep(2.5)
        await sleep(0)
        assert clock.now_ns == 2_500_000_001
        assert _native.now_ns() == 2_500_000_001 + base


async def test_sleep_waits_on_the_installed_fake_clock() -> None:
    """Without instant waits, a wait under a FakeClock ends when the clock has moved on by its
    delay, whoever moves it; real time does not end it."""
    with FakeClock() as clock:
        task = asyncio.get_running_loop().create_task(sleep(2))
        await asyncio.sleep(0.01)
        assert not task.done()  # real time passes: still waiting
        clock.advance(1.5)
        await asyncio.sleep(0)
        assert not task.done()
        clock.advance(0.5)
        async with asyncio.timeout(5):
            await task
        assert clock.now_ns == 2_000_000_000  # the wait itself did not move it


async def test_sleep_on_the_fake_clock_moves_on_in_real_time_when_it_is_uninstalled() -> None:
    clock = FakeClock().install()
    task = asyncio.get_running_loop().create_task(sleep(0.01))
    await asyncio.sleep(0)
    clock.uninstall()
    async with asyncio.timeout(5):
        await task


async def test_sleep_on_the_fake_clock_can_be_cancelled() -> None:
    with FakeClock():
        task = asyncio.get_running_loop().create_task(sleep(10))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not testing._sleepers  # nothing left waiting for the clock


async def test_instant_sleep_can_be_cancelled() -> None:
    instant_waits()
    task = asyncio.get_running_loop().create_task(sleep(10))
    await asyncio.sleep(0)  # the task is now suspended inside sleep()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_instant_waits_as_switch_and_context_manager() -> None:
    assert not is_instant()
    with instant_waits():
        assert is_instant()
        with instant_waits(False):
            assert not is_instant()
        assert is_instant()
    assert not is_instant()

    instant_waits(True)  # a plain call stays on
    assert is_instant()
    instant_waits(False)
    assert not is_instant()
    with pytest.raises(TypeError, match="enabled must be a bool"):
        instant_waits(1)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Jitter seed


def test_seed_calls_the_core(monkeypatch: pytest.MonkeyPatch) -> None:
    seeds: list[int] = []
    monkeypatch.setattr(_native, "seed", seeds.append)
    seed(0)
    seed(2**64 - 1)
    assert seeds == [0, 2**64 - 1]


def test_seed_reaches_the_real_core() -> None:
    seed(42)  # must not raise against the compiled module


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (-1, ValueError, "n must be between 0 and 2\\*\\*64 - 1"),
        (2**64, ValueError, "n must be between"),
        (1.0, TypeError, "n must be an int, not float"),
        (True, TypeError, "n must be an int, not bool"),
        ("1", TypeError, "n must be an int"),
    ],
)
def test_seed_validation(value: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        seed(value)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Time never goes backwards for policies that hold state (module-level policies)

module_limiter = tokenbucket(10, 1)


def test_a_module_level_limiter_used_before_a_fake_clock_keeps_admitting_under_it() -> None:
    async def work() -> str:
        return "ok"

    guarded = module_limiter(work)
    for _ in range(10):
        asyncio.run(guarded())  # the real clock: the bucket is now empty
    with FakeClock() as clock:
        clock.advance(1)  # one period later on the clock the limiter sees
        for _ in range(10):
            assert asyncio.run(guarded()) == "ok"
        with pytest.raises(RateLimitExceeded) as refused:
            asyncio.run(guarded())
        assert refused.value.retry_after is not None
        assert 0 < refused.value.retry_after <= 0.1  # not the machine's uptime


def test_leaving_a_clock_far_ahead_never_rewinds_a_limiter() -> None:
    limiter = tokenbucket(1, 1)
    guarded = limiter(_ok)
    with FakeClock(start_ns=10**18):
        asyncio.run(guarded())
    assert _native.now_ns() >= 10**18  # the real clock resumes from the fake time
    assert_real_clock()
    assert limiter.retry_after() <= 1.0  # not 10**9 s


async def test_a_limiter_used_far_ahead_admits_again_after_the_clock_is_gone() -> None:
    limiter = tokenbucket(100, 0.1)

    async def work() -> str:
        return "ok"

    guarded = limiter(work)
    with FakeClock(start_ns=10**18):
        for _ in range(100):
            await guarded()
    await asyncio.sleep(0.15)  # a real period later
    assert await guarded() == "ok"


async def test_a_breaker_opened_on_the_real_clock_recovers_on_the_fake_one() -> None:
    breaker = consecutive_breaker(ValueError, failure_threshold=1, recovery_time=30)

    async def fail() -> None:
        raise ValueError("down")

    guarded = breaker(fail)
    with pytest.raises(ValueError, match="down"):
        await guarded()
    with FakeClock() as clock:
        with pytest.raises(BreakerFailing) as refused:
            await guarded()
        assert refused.value.retry_after is not None
        assert 29 < refused.value.retry_after <= 30
        clock.advance(30)
        with pytest.raises(ValueError, match="down"):  # half-open: a trial call goes through
            await guarded()


def test_the_clock_fixture_after_a_test_that_used_a_module_level_limiter() -> None:
    """pytest: one test drains a module-level limiter on the real clock, the next installs a
    fresh FakeClock (the `clock` fixture) and moves it one period on."""
    limiter = tokenbucket(2, 60)
    limiter_calls = limiter(_ok)
    asyncio.run(limiter_calls())
    asyncio.run(limiter_calls())
    for _ in range(3):  # several tests in a row, each with its own clock
        with FakeClock() as clock:
            clock.advance(60)
            assert asyncio.run(limiter_calls()) == "ok"
            assert asyncio.run(limiter_calls()) == "ok"


async def _ok() -> str:
    return "ok"


# ------------------------------------------------------------------------------------------
# Instant waits per task


async def test_instant_waits_of_interleaved_tasks_restore_their_own_setting() -> None:
    """Two tasks enter and leave `with instant_waits()` in overlapping order: each sees its
    own setting, and neither leaves it on for the rest."""
    a_in, b_in, a_out = asyncio.Event(), asyncio.Event(), asyncio.Event()
    seen: dict[str, bool] = {}

    async def a() -> None:
        with instant_waits():
            a_in.set()
            await b_in.wait()
        seen["a after"] = is_instant()
        a_out.set()

    async def b() -> None:
        await a_in.wait()
        seen["b before"] = is_instant()
        with instant_waits():
            b_in.set()
            await a_out.wait()
            seen["b inside"] = is_instant()
        seen["b after"] = is_instant()

    await asyncio.gather(a(), b())
    assert seen == {"a after": False, "b before": False, "b inside": True, "b after": False}
    assert not is_instant()


async def test_instant_waits_in_one_task_leave_real_waits_in_another() -> None:
    loop = asyncio.get_running_loop()

    async def instant_task() -> None:
        with instant_waits():
            await sleep(3600)

    async def real_task() -> float:
        start = loop.time()
        await sleep(0.05)
        return loop.time() - start

    async with asyncio.timeout(10):
        _, waited = await asyncio.gather(instant_task(), real_task())
    assert waited >= 0.04


def test_instant_waits_from_a_thread_stay_in_that_thread() -> None:
    import threading

    seen: list[bool] = []

    def worker() -> None:
        with instant_waits():
            seen.append(is_instant())

    with instant_waits():
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert is_instant()
    assert seen == [True]
    assert not is_instant()


# ------------------------------------------------------------------------------------------
# Hedge delays are failsafe waits too


def _first_hangs() -> tuple[Any, asyncio.Event]:
    gate = asyncio.Event()
    calls = [0]

    async def fn() -> int:
        calls[0] += 1
        if calls[0] == 1:
            await gate.wait()
        return calls[0]

    return fn, gate


async def test_instant_waits_shorten_hedge_delays() -> None:
    policy = hedge(attempts=2, delay=3600)
    fn, _ = _first_hangs()
    with instant_waits():
        async with asyncio.timeout(5):
            assert await policy(fn)() == 2
    assert policy.stats()["hedged"] == 1


async def test_instant_hedge_delays_advance_the_fake_clock(clock: FakeClock) -> None:
    policy = hedge(attempts=2, delay=60)
    fn, _ = _first_hangs()
    with instant_waits():
        async with asyncio.timeout(5):
            assert await policy(fn)() == 2
    assert clock.now() == 60  # one delay passed, on the clock policies measure


async def test_hedge_delay_waits_on_the_fake_clock(clock: FakeClock) -> None:
    policy = hedge(attempts=2, delay=1)
    fn, _ = _first_hangs()
    call = asyncio.ensure_future(policy(fn)())
    await asyncio.sleep(0.02)
    assert policy.stats()["hedged"] == 0  # real time passing does not end the delay
    clock.advance(1)
    async with asyncio.timeout(5):
        assert await call == 2
    assert policy.stats()["hedged"] == 1


async def test_adaptive_hedge_delay_waits_on_the_clock_it_samples(clock: FakeClock) -> None:
    """Latencies measured on the fake clock, and the learnt delay waited on it too: only the
    slow calls (3 of 60, past the 90th percentile) are hedged."""
    policy = hedge(attempts=2, delay=percentile(90, fallback=0.05, min_samples=10))
    latencies = iter([0.100 if i % 20 == 19 else 0.0005 + (i % 5) * 0.0001 for i in range(60)])

    async def fn() -> str:
        clock.advance(next(latencies, 0.0005))  # the attempt "takes" this long
        await asyncio.sleep(0)
        return "ok"

    guarded = policy(fn)
    async with asyncio.timeout(20):
        for _ in range(60):
            assert await guarded() == "ok"
    assert policy.stats()["hedged"] == 3
