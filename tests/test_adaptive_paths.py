"""Adaptive load control: the binding's error paths (predicates and listeners that raise, bad
arguments to the private methods the Python side calls) and hundreds of concurrent tasks
cancelled at each await (queued, granted but not started, running, inside ``async with``)."""

from __future__ import annotations

import asyncio
import inspect
import random
import sys
from typing import Any

import pytest

from failsafe import _native
from failsafe.adaptive import (
    ConcurrencyLimitListener,
    LimitExceeded,
    Throttled,
    ThrottleListener,
    concurrency_limit,
    throttle,
)
from failsafe.adaptive._limit import ConcurrencyLimit
from failsafe.adaptive._throttle import Throttle
from failsafe.testing import FakeClock


class Stop(BaseException):
    """Not an Exception: what a predicate raises that must propagate."""


def fixed(n: int, **kw: Any) -> Any:
    """A limit that cannot move (min = max): admission is then exact."""
    return concurrency_limit(algorithm="aimd", initial=n, min_limit=n, max_limit=n, **kw)


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """The exceptions written as unraisable during the test."""
    seen: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    return seen


# ------------------------------------------------------------------------------------------
# Limit: drop_on predicates and the grant hook that raise


@pytest.mark.parametrize("form", ["decorated", "block"])
async def test_a_failing_drop_predicate_is_unraisable_and_the_call_keeps_its_error(
    form: str, unraisable: list[BaseException | None]
) -> None:
    def pred(exc: BaseException) -> bool:
        raise ZeroDivisionError("pred")

    lim = fixed(2, drop_on=pred)

    @lim
    async def fail() -> None:
        raise KeyError("own")

    async def block() -> None:
        async with lim:
            raise KeyError("own")

    with pytest.raises(KeyError, match="own"):
        await (fail() if form == "decorated" else block())
    assert [type(e) for e in unraisable] == [ZeroDivisionError]
    # No drop, no sample: the place is only given back.
    assert (lim.inflight, lim.samples, lim.stats()["dropped"]) == (0, 0, 0)


@pytest.mark.parametrize("form", ["decorated", "block"])
async def test_a_drop_predicate_raising_a_base_exception_propagates_and_frees_the_place(
    form: str,
) -> None:
    def pred(exc: BaseException) -> bool:
        raise Stop

    lim = fixed(1, drop_on=pred, queue=2)
    gate = asyncio.Event()
    ran: list[str] = []

    @lim
    async def fail() -> None:
        await gate.wait()
        raise KeyError("own")

    @lim
    async def waiter() -> None:
        ran.append("waiter")

    async def block() -> None:
        async with lim:
            await gate.wait()
            raise KeyError("own")

    first = asyncio.ensure_future(fail() if form == "decorated" else block())
    await asyncio.sleep(0)
    queued = asyncio.ensure_future(waiter())
    await asyncio.sleep(0)
    assert lim.queued == 1
    gate.set()
    with pytest.raises(Stop):
        await first
    await queued  # the freed place went to the queued call
    assert ran == ["waiter"]
    assert (lim.inflight, lim.queued, lim.stats()["dropped"]) == (0, 0, 0)


async def test_a_drop_predicate_that_matches_is_a_drop() -> None:
    lim = fixed(2, drop_on=lambda exc: isinstance(exc, KeyError))
    with pytest.raises(KeyError):
        async with lim:
            raise KeyError
    with pytest.raises(ValueError, match="kept"):
        async with lim:
            raise ValueError("kept")
    assert (lim.samples, lim.stats()["dropped"], lim.inflight) == (1, 1, 0)


class GrantFails(ConcurrencyLimit):
    def _grant(self) -> None:
        raise RuntimeError("grant")


async def test_a_failing_grant_is_unraisable_and_the_ending_call_keeps_its_result(
    unraisable: list[BaseException | None],
) -> None:
    lim = GrantFails(algorithm="aimd", initial=1, min_limit=1, max_limit=1, queue=2)

    @lim
    async def ok() -> str:
        return "result"

    lim._queued = 1  # C offers the freed place to "the queue": _grant raises
    assert await ok() == "result"
    assert [type(e) for e in unraisable] == [RuntimeError]
    assert lim.inflight == 0


async def test_a_raising_listener_does_not_replace_the_refusal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Bad(ConcurrencyLimitListener):
        def on_limit_exceeded(self, limit: Any) -> None:
            raise RuntimeError("listener")

    lim = fixed(1, listeners=[Bad()])
    async with lim:
        with pytest.raises(LimitExceeded):
            async with lim:
                pass
    assert lim.inflight == 0
    assert [r for r in caplog.records if "at on_limit_exceeded" in r.getMessage()]


# ------------------------------------------------------------------------------------------
# Limit: the private methods and the constructor of the C type


def test_limit_private_methods_refuse_bad_arguments() -> None:
    lim = fixed(2)
    with pytest.raises(TypeError, match="takes 3 arguments"):
        lim._end(0, 0)
    with pytest.raises(TypeError):
        lim._end("t0", 0, None)
    with pytest.raises(OverflowError):
        lim._end(0, -1, None)
    with pytest.raises(RuntimeError, match="released more often than acquired"):
        lim._end(0, 0, None)
    lim._release()  # nothing held: stays at 0
    assert lim.inflight == 0
    assert lim._take() == 0
    assert lim._take() == 1
    assert lim._take() == -1
    lim._end(_native.now_ns(), 0, None)
    lim._release()
    assert (lim.inflight, lim.samples) == (0, 1)


ARGS = (2, 10.0, 1.0, 100.0, 0.2, 1.5, 4.0, 600, 3.0, 6.0, 30, 0.9, 5.0)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({12: 0.0}, ValueError, "timeout"),
        ({12: float("nan")}, ValueError, "timeout"),
        ({1: 1e12}, ValueError, "out of range"),
        ({0: 7}, ValueError, "out of range"),
        ({13: [KeyError]}, TypeError, "drop_on"),
        ({14: 3}, TypeError, "drop_pred"),
        ({7: "600"}, TypeError, None),
    ],
)
def test_the_c_limit_refuses_bad_configurations_and_keeps_its_own(
    change: dict[int, Any], error: type[Exception], match: str | None
) -> None:
    lim = fixed(3)
    args: list[Any] = [*ARGS, None, None]
    for i, v in change.items():
        args[i] = v
    with pytest.raises(error, match=match):
        _native.AdaptiveLimit.__init__(lim, *args)
    assert (lim.current, lim.min_limit, lim.max_limit) == (3, 3.0, 3.0)


async def test_the_c_limit_is_not_reconfigured_in_use() -> None:
    lim = fixed(3)
    async with lim:
        with pytest.raises(RuntimeError, match="in use"):
            _native.AdaptiveLimit.__init__(lim, *ARGS)
    _native.AdaptiveLimit.__init__(lim, *ARGS)
    assert (lim.current, lim.max_limit) == (10, 100.0)


# ------------------------------------------------------------------------------------------
# Throttle: accept predicates that raise, private methods, constructor


@pytest.mark.parametrize("form", ["decorated", "block"])
async def test_a_failing_accept_is_unraisable_and_counts_as_not_accepted(
    form: str, unraisable: list[BaseException | None]
) -> None:
    class Falsy:
        def __bool__(self) -> bool:
            raise ZeroDivisionError("bool")

    # One accept first: with k=100 nothing is refused afterwards.
    answers: list[Any] = [True, Falsy(), ValueError("raised")]

    def accept(result: Any, exc: BaseException | None) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    th = throttle(k=100, accept=accept)

    @th
    async def call() -> str:
        return "r"

    for _ in range(3):
        if form == "decorated":
            assert await call() == "r"
        else:
            async with th:
                pass
    assert [type(e) for e in unraisable] == [ZeroDivisionError, ValueError]
    stats = th.stats()
    assert (stats["accepted"], stats["not_accepted"], th.requests) == (1, 2, 3)


@pytest.mark.parametrize("form", ["decorated", "block"])
async def test_an_accept_raising_a_base_exception_propagates_and_counts_nothing(
    form: str,
) -> None:
    def accept(result: Any, exc: BaseException | None) -> bool:
        raise Stop

    th = throttle(accept=accept)

    @th
    async def call() -> str:
        return "r"

    async def block() -> None:
        async with th:
            pass

    with pytest.raises(Stop):
        await (call() if form == "decorated" else block())
    stats = th.stats()
    assert (stats["accepted"], stats["not_accepted"], th.requests) == (0, 0, 0)


async def test_a_raising_throttle_listener_does_not_replace_the_refusal(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Bad(ThrottleListener):
        def on_throttled(self, throttle: Any) -> None:
            raise RuntimeError("listener")

    th = throttle(k=1, max_reject=1, listeners=[Bad()])
    for _ in range(50):
        th._end(None, KeyError())  # the dependency accepts nothing: p -> 1
    assert th.probability > 0.98
    refused = 0
    for _ in range(200):  # sent calls fail too, so p stays near 1
        try:
            async with th:
                raise KeyError
        except Throttled:
            refused += 1
        except KeyError:
            pass
    assert refused > 100
    assert th.stats()["throttled"] == refused
    logged = [r for r in caplog.records if "at on_throttled" in r.getMessage()]
    assert len(logged) == refused


def test_throttle_private_methods_refuse_bad_arguments() -> None:
    th = throttle()
    with pytest.raises(TypeError, match="at most 1 argument"):
        th._admit(1.0, 2.0)
    with pytest.raises(TypeError):
        th._admit("half")
    with pytest.raises(TypeError, match="takes 2 arguments"):
        th._end(None)
    assert th._admit() is True
    assert th._admit(0.5) is True
    assert th.stats()["sent"] == 2


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((0.5, 0.9, 10.0), ValueError, "out of range"),
        ((2.0, 0.0, 10.0), ValueError, "out of range"),
        ((2.0, 0.9, 0.0), ValueError, "out of range"),
        ((2.0, 0.9, float("inf")), ValueError, "out of range"),
        ((2.0, 0.9, 10.0, 3), TypeError, "accept"),
        (("2", 0.9, 10.0), TypeError, None),
    ],
)
def test_the_c_throttle_refuses_bad_configurations_and_keeps_its_own(
    args: tuple[Any, ...], error: type[Exception], match: str | None
) -> None:
    th = throttle(k=3, window=60)
    with pytest.raises(error, match=match):
        _native.AdaptiveThrottle.__init__(th, *args)
    assert (th.k, th.window, th.max_reject) == (3.0, 60.0, 0.9)


# ------------------------------------------------------------------------------------------
# Hundreds of tasks, cancelled at each await


@pytest.mark.parametrize("mode", ["plain", "priorities", "tenants"])
async def test_hundreds_of_tasks_cancelled_at_every_stage_leak_no_place(mode: str) -> None:
    kw: dict[str, Any] = {"queue": 1000}
    if mode == "priorities":
        kw["priority"] = lambda *a: a[0] % 4 if a else 1  # blocks have no arguments
    elif mode == "tenants":
        kw["tenant"] = lambda *a: a[0] % 5 if a else "block"
    lim = fixed(10, **kw)
    inside = 0
    peak = 0
    rng = random.Random(7)

    @lim
    async def work(i: int) -> int:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        try:
            for _ in range(i % 4):
                await asyncio.sleep(0)
        finally:
            inside -= 1
        return i

    async def block(i: int) -> int:
        nonlocal inside, peak
        async with lim:
            inside += 1
            peak = max(peak, inside)
            try:
                for _ in range(i % 3):
                    await asyncio.sleep(0)
            finally:
                inside -= 1
        return i

    tasks = [asyncio.ensure_future(work(i) if i % 3 else block(i)) for i in range(400)]
    # Cancel some at every step: queued, granted before running, running, inside the block.
    for _ in range(12):
        await asyncio.sleep(0)
        for t in rng.sample(tasks, 15):
            t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    done = [r for r in results if isinstance(r, int)]
    cancelled = [r for r in results if isinstance(r, asyncio.CancelledError)]
    assert len(done) + len(cancelled) == 400
    assert done
    assert cancelled
    assert peak <= 10
    assert (lim.inflight, lim.queued, inside) == (0, 0, 0)
    assert lim.stats()["dropped"] == 0
    assert lim._tenant_inflight == {}
    assert lim._held == {}
    # The limit still admits up to its size afterwards.
    async with lim:
        assert lim.inflight == 1


async def test_a_granted_call_cancelled_before_it_runs_passes_its_place_on() -> None:
    lim = fixed(1, queue=10)
    gate = asyncio.Event()
    order: list[int] = []

    @lim
    async def work(i: int) -> None:
        if i == 0:
            await gate.wait()
        order.append(i)

    tasks = [asyncio.ensure_future(work(i)) for i in range(4)]
    await asyncio.sleep(0)
    assert lim.queued == 3
    gate.set()
    await asyncio.sleep(0)  # task 0 ends and grants its place to task 1, not yet run
    assert (lim.inflight, lim.queued) == (1, 2)
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert order == [0, 2, 3]
    assert (lim.inflight, lim.queued) == (0, 0)


async def test_hundreds_of_throttled_tasks_cancelled_while_running_count_nothing(
    clock: FakeClock,
) -> None:
    # With an accept predicate every call is observed (none is sent unobserved as accepted).
    th = throttle(k=2, window=60, accept=lambda result, exc: exc is None)
    gate = asyncio.Event()

    @th
    async def call(i: int) -> int:
        await gate.wait()
        if i % 2:
            raise KeyError(i)
        return i

    async def block(i: int) -> int:
        async with th:
            await gate.wait()
        return i

    tasks = [asyncio.ensure_future(call(i) if i % 4 else block(i)) for i in range(300)]
    await asyncio.sleep(0)
    for t in tasks[::3]:
        t.cancel()  # running, or parked inside the block
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    errors = sum(isinstance(r, KeyError) for r in results)
    ok = sum(isinstance(r, int) for r in results)
    assert cancelled == 100
    assert cancelled + errors + ok == 300
    stats = th.stats()
    assert stats["sent"] == 300
    # Only the calls that ended count: the cancelled ones are no outcome.
    assert (stats["accepted"], stats["not_accepted"]) == (ok, errors)
    assert th.requests == ok + errors


async def _refused(call: Any) -> BaseException:
    """The first refusal of call() within 200 tries, each sent call failing (p stays near 1)."""
    for _ in range(200):
        try:
            await call()
        except KeyError:
            continue
        except BaseException as exc:
            return exc
    raise AssertionError("never refused")


async def test_a_decorated_refusal_is_raised_where_awaited_and_chained_there() -> None:
    th = throttle(k=1, max_reject=1)

    @th
    async def call() -> None:
        raise KeyError

    for _ in range(50):
        th._end(None, KeyError())
    refusal = await _refused(call)
    assert isinstance(refusal, Throttled)
    assert refusal.retry_after is not None
    assert 0 < refusal.retry_after <= th.window
    handled = ValueError("handled")
    try:
        raise handled
    except ValueError:
        chained = await _refused(call)
    assert chained.__context__ is handled
    assert th.stats()["throttled"] == 2


class RefusalStops(Throttle):
    def _refusal(self) -> Throttled:
        raise Stop


async def test_a_refusal_that_fails_raises_its_own_error() -> None:
    th = RefusalStops(k=1, max_reject=1)

    @th
    async def call() -> None:
        raise KeyError

    for _ in range(50):
        th._end(None, KeyError())
    assert isinstance(await _refused(lambda: call()), Stop)
    assert th.stats()["throttled"] == 1


async def test_a_healthy_throttle_observes_one_call_in_eight(clock: FakeClock) -> None:
    """While the window holds only accepts, 7 calls in 8 are sent as they are (fn's own
    coroutine), counted as accepted when sent; the first failure observed makes every call
    observed, so failures count exactly from there."""
    th = throttle(k=2, window=60)
    failing = False

    async def fn() -> int:
        if failing:
            raise ConnectionError
        return 1

    call = th(fn)
    aws = [call() for _ in range(16)]
    assert sum(inspect.iscoroutine(aw) for aw in aws) == 14  # 2 observed: GuardedCalls
    assert (th.requests, th.accepts) == (14, 14)  # the passed ones, counted when sent
    assert await asyncio.gather(*aws) == [1] * 16
    stats = th.stats()
    assert (stats["sent"], stats["accepted"], th.requests, th.accepts) == (16, 16, 16, 16)

    failing = True
    outcomes: list[str] = []
    for _ in range(40):
        try:
            await call()
        except ConnectionError:
            outcomes.append("failed")
        except Throttled:
            outcomes.append("refused")
    stats = th.stats()
    # At most 7 failures went unobserved (counted as accepted) before an observed one failed;
    # from there every failure counts, and the window refuses.
    assert 16 <= th.accepts <= 16 + 7
    assert stats["not_accepted"] == outcomes.count("failed") - (th.accepts - 16)
    assert th.requests == 16 + 40
    assert outcomes.count("refused") > 0
    assert th.probability > 0
