"""failsafe.testing: FakeClock, instant waits, jitter seed."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import pytest

from failsafe import _native, testing
from failsafe.testing import FakeClock, instant_waits, is_instant, seed, sleep


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    if testing._clock is not None:
        testing._clock.uninstall()
    instant_waits(False)


def assert_real_clock() -> None:
    before = time.monotonic_ns()
    now = _native.now_ns()
    after = time.monotonic_ns()
    assert before <= now <= after


# ------------------------------------------------------------------------------------------
# FakeClock


def test_fake_clock_drives_the_core_and_restores_the_real_clock() -> None:
    assert_real_clock()
    with FakeClock(start_ns=5) as clock:
        assert _native.now_ns() == 5 == clock.now_ns
        clock.advance(1.5)
        assert _native.now_ns() == 1_500_000_005
        clock.advance_ns(10)
        assert _native.now_ns() == 1_500_000_015
        clock.set(3)
        assert _native.now_ns() == 3_000_000_000
        assert clock.now() == 3.0
        time.sleep(0.001)
        assert _native.now_ns() == 3_000_000_000  # real time does not leak in
    assert_real_clock()


def test_fake_clock_restores_on_error() -> None:
    with pytest.raises(RuntimeError), FakeClock():
        raise RuntimeError
    assert_real_clock()


def test_install_and_uninstall() -> None:
    clock = FakeClock(start_ns=7)
    clock.advance_ns(3)  # not installed: only the clock's own time moves
    assert_real_clock()

    assert clock.install() is clock
    assert clock.installed
    assert _native.now_ns() == 10
    clock.install()  # again: no-op
    with pytest.raises(RuntimeError, match="another FakeClock"):
        FakeClock().install()

    clock.uninstall()
    clock.uninstall()  # idempotent
    assert not clock.installed
    assert_real_clock()
    with FakeClock() as other:  # free again
        assert _native.now_ns() == other.now_ns == 0


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
        await sleep(2.5)
        await sleep(0)
        assert clock.now_ns == _native.now_ns() == 2_500_000_001


async def test_real_sleep_does_not_move_the_fake_clock() -> None:
    with FakeClock() as clock:
        await sleep(0.001)
        assert clock.now_ns == 0


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
