"""failsafe.retry: semantics, validation, block form, budgets, buckets, listeners, stats,
concurrency, cancellation and composition.

Every test runs with a FakeClock and instant waits (waits advance the fake clock), unless it
switches real waits back on to park a call in its backoff wait.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import itertools
import logging
import traceback
import types
import weakref
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import failsafe.retry
import failsafe.retry.exceptions
from failsafe import _native, events, signals
from failsafe.events import EventManager, get_event_manager
from failsafe.exceptions import FailsafeError
from failsafe.fallback import fallback
from failsafe.ratelimit.exceptions import EmptyBucket
from failsafe.retry import (
    AttemptsExceeded,
    Retry,
    RetryBudget,
    RetryCounter,
    RetryListener,
    backoffs,
    bucket_retry,
    jitters,
    register_retry_listener,
    retry,
)
from failsafe.retry._options import BudgetOptions, RetryOptions
from failsafe.testing import FakeClock, instant_waits

pytestmark = pytest.mark.usefixtures("instant", "clock")

NAN = float("nan")
INF = float("inf")


class Abort(BaseException):
    """A KeyboardInterrupt-like BaseException: never a failure to retry."""


class Recorder(RetryListener):
    """A sync listener recording every event."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_retry(self, retry: Any, exc: Any, counter: RetryCounter, delay: float) -> None:
        self.events.append(("retry", exc, counter.current_attempt, counter.max_attempts, delay))

    def on_success(self, retry: Any, counter: RetryCounter) -> None:
        self.events.append(("success", counter.current_attempt))

    def on_attempts_exceeded(self, retry: Any) -> None:
        self.events.append(("giveup",))

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]

    def delays(self) -> list[float]:
        return [e[4] for e in self.events if e[0] == "retry"]


class Flaky:
    """An async function failing its first `fails` calls with `exc`, then returning `value`."""

    def __init__(self, fails: int, exc: type[BaseException] = ValueError, value: Any = "ok"):
        self.fails = fails
        self.exc = exc
        self.value = value
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        await asyncio.sleep(0)
        if len(self.calls) <= self.fails:
            raise self.exc(len(self.calls))
        return self.value


def guard(policy: Retry, impl: Flaky) -> Any:
    async def call(*args: Any, **kwargs: Any) -> Any:
        return await impl(*args, **kwargs)

    return policy(call)


def counts(policy: Retry) -> tuple[int, int, int]:
    s = policy.stats()
    return s["attempt"], s["success"], s["giveup"]


class Block:
    """The block form over `policy` with a body that always raises `exc(run number)`."""

    def __init__(self, policy: Retry, exc: type[BaseException] = ValueError) -> None:
        self.policy = policy
        self.exc = exc
        self.runs = 0

    async def __call__(self) -> None:
        async for attempt in self.policy:
            with attempt:
                self.runs += 1
                raise self.exc(self.runs)


# ------------------------------------------------------------------------------------------
# Public names


def test_exported_names() -> None:
    assert failsafe.retry.AttemptsExceeded is failsafe.retry.exceptions.AttemptsExceeded
    assert issubclass(AttemptsExceeded, FailsafeError)
    assert failsafe.retry.backoffs is backoffs
    assert backoffs.__name__ == "failsafe.retry.backoffs"
    assert failsafe.retry.jitters is jitters
    assert jitters.__name__ == "failsafe.retry.jitters"
    for name in (
        "retry",
        "bucket_retry",
        "RetryListener",
        "register_retry_listener",
        "AttemptsExceeded",
        "RetryBudget",
        "backoffs",
        "jitters",
    ):
        assert name in failsafe.retry.__all__
        assert hasattr(failsafe.retry, name)


# ------------------------------------------------------------------------------------------
# Validation


def _retry_cases() -> Iterator[Any]:
    bad: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"attempts": -1}, ValueError, "attempts"),
        ({"attempts": 1.5}, TypeError, "attempts"),
        ({"attempts": "3"}, TypeError, "attempts"),
        ({"attempts": True}, TypeError, "attempts"),
        ({"attempts": NAN}, TypeError, "attempts"),
        ({"attempts": INF}, TypeError, "attempts"),
        ({"backoff": -0.5}, ValueError, "backoff"),
        ({"backoff": NAN}, ValueError, "backoff"),
        ({"backoff": INF}, ValueError, "backoff"),
        ({"backoff": True}, TypeError, "backoff"),
        ({"backoff": None}, TypeError, "backoff"),
        ({"backoff": "0.5"}, TypeError, "backoff"),
        ({"backoff": b"1"}, TypeError, "backoff"),
        ({"backoff": object()}, TypeError, "backoff"),
        ({"backoff": []}, ValueError, "backoff"),
        ({"backoff": [1, -1]}, ValueError, "backoff"),
        ({"backoff": (0.1, NAN)}, ValueError, "backoff"),
        ({"backoff": [0.1, "x"]}, TypeError, "backoff"),
        ({"backoff": iter([1, 2])}, TypeError, "backoff"),
        ({"backoff": (d for d in [1.0, 2.0])}, TypeError, "backoff"),
        ({"backoff": iter(backoffs.expo())}, TypeError, "backoff"),
        ({"on": 5}, TypeError, "on"),
        ({"on": "ValueError"}, TypeError, "on"),
        ({"on": ()}, ValueError, "on"),
        ({"on": (ValueError, 1)}, TypeError, "on"),
        ({"on": (ValueError, int)}, TypeError, "on"),
        ({"if_result": 5}, TypeError, "if_result"),
        ({"max_duration": 0}, ValueError, "max_duration"),
        ({"max_duration": -1}, ValueError, "max_duration"),
        ({"max_duration": NAN}, ValueError, "max_duration"),
        ({"max_duration": INF}, ValueError, "max_duration"),
        ({"max_duration": "1"}, TypeError, "max_duration"),
        ({"max_duration": True}, TypeError, "max_duration"),
        ({"budget": 0.2}, TypeError, "budget"),
        ({"budget": object()}, TypeError, "budget"),
        ({"name": ""}, ValueError, "name"),
        ({"name": "1abc"}, ValueError, "name"),
        ({"name": "has space"}, ValueError, "name"),
        ({"name": "x" * 64}, ValueError, "name"),
        ({"name": 5}, TypeError, "name"),
        ({"listeners": 5}, TypeError, "listeners"),
        ({"listeners": "abc"}, TypeError, "listeners"),
        ({"event_manager": 5}, TypeError, "event_manager"),
        ({"event_manager": object()}, TypeError, "event_manager"),
    ]
    for kwargs, err, match in bad:
        yield pytest.param(kwargs, err, match, id=repr(kwargs))


@pytest.mark.parametrize(("kwargs", "err", "match"), list(_retry_cases()))
def test_retry_validates_every_parameter(
    kwargs: dict[str, Any], err: type[Exception], match: str
) -> None:
    with pytest.raises(err, match=match):
        retry(**kwargs)


@pytest.mark.parametrize("on", [int, str])
def test_a_class_that_is_not_an_exception_is_rejected(on: Any) -> None:
    with pytest.raises(TypeError, match="on"):
        retry(on=on)


def test_async_predicates_are_rejected() -> None:
    async def pred(x: Any) -> bool:
        return True

    with pytest.raises(TypeError, match="on"):
        retry(on=pred)
    with pytest.raises(TypeError, match="if_result"):
        retry(if_result=pred)


def test_valid_edge_values_are_accepted() -> None:
    retry(attempts=0)
    retry(attempts=None)
    retry(backoff=0)
    retry(backoff=0.0)
    retry(backoff=[0])
    retry(backoff=lambda k: 0.1)
    retry(on=BaseException)
    retry(on=(ValueError, KeyError))
    retry(on=lambda e: True)
    retry(name="a.b-c/d_e")
    retry(max_duration=1e-9)
    retry(event_manager=EventManager())
    retry(listeners=[Recorder()])


def _budget_cases() -> Iterator[Any]:
    for param in ("ratio", "min_per_second", "ttl"):
        for value, err in [
            (-1, ValueError),
            (-0.01, ValueError),
            (NAN, ValueError),
            (INF, ValueError),
            ("1", TypeError),
            (True, TypeError),
            (None, TypeError),
            ([1], TypeError),
        ]:
            yield pytest.param({param: value}, err, param, id=f"{param}={value!r}")
    for value in (0, 1e-12, 2e9):
        yield pytest.param({"ttl": value}, ValueError, "ttl", id=f"ttl={value!r}")
    yield pytest.param(
        {"min_per_second": 1e300, "ttl": 1e9}, ValueError, "min_per_second", id="overflow"
    )


@pytest.mark.parametrize(("kwargs", "err", "match"), list(_budget_cases()))
def test_retry_budget_validates_every_parameter(
    kwargs: dict[str, Any], err: type[Exception], match: str
) -> None:
    with pytest.raises(err, match=match):
        RetryBudget(**kwargs)


def test_retry_budget_defaults_and_repr() -> None:
    budget = RetryBudget()
    assert "ratio=0.2" in repr(budget)
    assert budget.available() == pytest.approx(100.0)  # 10 per second over 10 s
    assert RetryBudget(0, min_per_second=0).available() == 0


def test_retry_budget_options_hold_the_checked_parameters() -> None:
    assert BudgetOptions.check() == BudgetOptions()  # the defaults RetryBudget() gets
    assert BudgetOptions.check(1, min_per_second=0, ttl=5) == BudgetOptions(1.0, 0.0, 5.0)
    assert RetryBudget(0.5, ttl=2)._options == BudgetOptions(0.5, 10.0, 2.0)
    assert "ratio=0.5, min_per_second=10.0, ttl=2.0" in repr(RetryBudget(0.5, ttl=2))


def _bucket_cases() -> Iterator[Any]:
    for param, zero_ok in (("attempts", False), ("per_time_secs", False), ("bucket_size", False)):
        cases: list[tuple[Any, type[Exception]]] = [
            (-1, ValueError),
            ("1", TypeError),
            (True, TypeError),
            (None, TypeError),
        ]
        if not zero_ok:
            cases.append((0, ValueError))
        if param == "per_time_secs":
            cases += [(NAN, ValueError), (INF, ValueError)]
        else:
            cases += [(1.5, TypeError)]
        for value, err in cases:
            yield pytest.param({param: value}, err, param, id=f"{param}={value!r}")
    yield pytest.param({"per_time_secs": 1e12}, ValueError, "per_time_secs", id="huge-period")
    yield pytest.param({"bucket_size": 10**18}, ValueError, "bucket_size", id="huge-bucket")
    yield pytest.param({"backoff": -1}, ValueError, "backoff", id="backoff")
    yield pytest.param({"on": 5}, TypeError, "on", id="on")
    yield pytest.param({"name": "9"}, ValueError, "name", id="name")


@pytest.mark.parametrize(("kwargs", "err", "match"), list(_bucket_cases()))
def test_bucket_retry_validates_every_parameter(
    kwargs: dict[str, Any], err: type[Exception], match: str
) -> None:
    with pytest.raises(err, match=match):
        bucket_retry(**kwargs)


def test_sync_callables_are_rejected_at_decoration() -> None:
    def sync() -> int:
        return 1

    async def agen() -> Any:
        yield 1

    for target in (sync, agen, lambda: None, 5):
        with pytest.raises(TypeError):
            retry()(target)
        with pytest.raises(TypeError):
            retry(target)
        with pytest.raises(TypeError):
            bucket_retry()(target)


# ------------------------------------------------------------------------------------------
# The decorated function


async def test_guard_looks_like_the_async_function() -> None:
    async def fetch(url: str, *, timeout: float = 1.0) -> str:
        """Docs."""
        return url

    guarded = retry(attempts=1)(fetch)
    assert inspect.iscoroutinefunction(guarded)
    assert guarded.__wrapped__ is fetch
    assert guarded.__name__ == "fetch"
    assert guarded.__doc__ == "Docs."
    assert inspect.signature(guarded) == inspect.signature(fetch)
    assert await guarded("u") == "u"
    assert await asyncio.create_task(guarded("t")) == "t"


async def test_bare_decorator_and_default_policy() -> None:
    calls = 0

    @retry
    async def f() -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ValueError
        return calls

    assert await f() == 3
    assert f.policy.stats()["attempts"] == 3


async def test_defaults_three_retries_half_a_second_apart(clock: FakeClock) -> None:
    rec = Recorder()
    impl = Flaky(100)
    f = guard(retry(listeners=[rec]), impl)
    with pytest.raises(AttemptsExceeded):
        await f()
    assert len(impl.calls) == 4
    assert rec.delays() == [0.5, 0.5, 0.5]
    assert clock.now() == 1.5


async def test_names() -> None:
    async def work() -> None:
        pass

    assert retry()(work).policy.name == "test_names.work"
    assert retry(name="explicit")(work).policy.name == "explicit"
    assert retry().name == "retry"


async def test_methods_bind_self_and_work_with_class_and_static_methods() -> None:
    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @retry(attempts=3, backoff=0)
        async def get(self, key: str, *, default: Any = None) -> Any:
            self.calls += 1
            if self.calls < 3:
                raise ConnectionError
            return (self, key, default)

        @classmethod
        @retry(attempts=1, backoff=0)
        async def make(cls, x: int) -> Any:
            return (cls, x)

        @staticmethod
        @retry(attempts=1, backoff=0)
        async def pure(x: int) -> int:
            return x * 2

    c = Client()
    assert await c.get("k", default=1) == (c, "k", 1)
    assert c.calls == 3
    assert await Client.make(1) == (Client, 1)
    assert await c.make(2) == (Client, 2)
    assert await Client.pure(3) == 6
    assert await c.pure(4) == 8
    assert inspect.iscoroutinefunction(c.get)
    assert inspect.iscoroutinefunction(Client.make)
    assert list(inspect.signature(c.get).parameters) == ["key", "default"]
    assert list(inspect.signature(Client.get).parameters) == ["self", "key", "default"]
    # one policy per method, shared by every instance
    other = Client()
    other.calls = 5
    await other.get("x")
    assert Client.get.policy.stats()["success"] == 2
    assert Client.get.policy.stats()["attempt"] == 2


async def test_partial_of_an_async_function_is_accepted() -> None:
    async def add(a: int, b: int) -> int:
        return a + b

    assert await retry(attempts=1)(functools.partial(add, 1))(2) == 3


# ------------------------------------------------------------------------------------------
# Retry semantics


@pytest.mark.parametrize("attempts", [0, 1, 3, 10])
async def test_attempts_counts_retries_not_calls(attempts: int) -> None:
    impl = Flaky(1000)
    policy = retry(attempts=attempts, backoff=0)
    f = guard(policy, impl)
    with pytest.raises(AttemptsExceeded) as info:
        await f()
    assert len(impl.calls) == attempts + 1
    e = info.value
    assert e.attempts == attempts + 1
    assert e.reason == "attempts"
    assert isinstance(e.last_exception, ValueError)
    assert e.last_exception.args == (attempts + 1,)  # the last one, not the first
    assert e.__cause__ is e.last_exception
    assert not e.has_result
    assert str(attempts + 1) in str(e)
    assert counts(policy) == (attempts, 0, 1)


@pytest.mark.parametrize("fails", [0, 1, 2, 3])
async def test_succeeds_within_attempts(fails: int) -> None:
    impl = Flaky(fails, value={"v": 1})
    policy = retry(attempts=3, backoff=0)
    f = guard(policy, impl)
    assert await f() == {"v": 1}
    assert len(impl.calls) == fails + 1
    assert counts(policy) == (fails, 1, 0)


async def test_attempts_none_retries_until_success() -> None:
    impl = Flaky(200)
    policy = retry(attempts=None, backoff=0)
    assert await guard(policy, impl)() == "ok"
    assert len(impl.calls) == 201
    assert counts(policy) == (200, 1, 0)
    assert policy.stats()["attempts"] is None


async def test_arguments_are_passed_unchanged_to_every_attempt() -> None:
    impl = Flaky(2)
    marker = object()
    f = guard(retry(attempts=2, backoff=0), impl)
    assert await f(1, marker, key=[1], other=None) == "ok"
    assert impl.calls == [((1, marker), {"key": [1], "other": None})] * 3


@pytest.mark.parametrize("value", [None, 0, (), (1, 2), ValueError("v"), StopIteration(1)])
async def test_return_values_survive_the_slow_path(value: Any) -> None:
    impl = Flaky(1, value=value)
    assert await guard(retry(attempts=1, backoff=0), impl)() is value


@pytest.mark.parametrize(
    "on",
    [
        ConnectionError,
        (KeyError, ConnectionError),
        OSError,  # a superclass matches
        lambda e: isinstance(e, ConnectionError) and e.args[0] < 3,
    ],
)
async def test_on_selects_retried_exceptions(on: Any) -> None:
    impl = Flaky(2, exc=ConnectionError)
    policy = retry(on=on, attempts=5, backoff=0)
    assert await guard(policy, impl)() == "ok"
    assert counts(policy) == (2, 1, 0)


async def test_predicate_sees_each_exception() -> None:
    seen: list[BaseException] = []

    def pred(e: BaseException) -> bool:
        seen.append(e)
        return True

    impl = Flaky(2)
    await guard(retry(on=pred, attempts=3, backoff=0), impl)()
    assert [e.args for e in seen] == [(1,), (2,)]


def _raise_key_error() -> None:
    raise KeyError("not retried")


@pytest.mark.parametrize("at_attempt", [1, 3])
async def test_non_matching_exception_propagates_at_once_with_its_traceback(
    at_attempt: int,
) -> None:
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        if calls < at_attempt:
            raise ValueError
        _raise_key_error()

    policy = retry(on=ValueError, attempts=5, backoff=0)
    f = policy(work)
    with pytest.raises(KeyError, match="not retried") as info:
        await f()
    assert calls == at_attempt
    frames = [fs.name for fs in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-2:] == ["work", "_raise_key_error"]
    assert counts(policy) == (at_attempt - 1, 0, 0)  # neither a success nor a give-up


@pytest.mark.parametrize("at_attempt", [1, 2])
@pytest.mark.parametrize("exc", [Abort, asyncio.CancelledError, GeneratorExit])
async def test_base_exceptions_are_never_retried_even_with_on_base_exception(
    at_attempt: int, exc: type[BaseException]
) -> None:
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        if calls < at_attempt:
            raise ValueError
        raise exc("stop")

    rec = Recorder()
    policy = retry(on=BaseException, attempts=5, backoff=0, listeners=[rec])
    with pytest.raises(exc, match="stop"):
        await policy(work)()
    assert calls == at_attempt
    assert counts(policy) == (at_attempt - 1, 0, 0)
    assert "giveup" not in rec.kinds()


async def test_a_raising_on_predicate_propagates_and_is_not_retried() -> None:
    def pred(e: BaseException) -> bool:
        raise RuntimeError("bad predicate")

    impl = Flaky(5)
    with pytest.raises(RuntimeError, match="bad predicate") as info:
        await guard(retry(on=pred, attempts=3, backoff=0), impl)()
    assert len(impl.calls) == 1
    assert isinstance(info.value.__context__, ValueError)


async def test_if_result_retries_rejected_results() -> None:
    results = iter([None, None, 3])
    calls = 0

    async def work() -> Any:
        nonlocal calls
        calls += 1
        return next(results)

    policy = retry(if_result=lambda r: r is None, attempts=5, backoff=0)
    assert await policy(work)() == 3
    assert calls == 3
    assert counts(policy) == (2, 1, 0)


async def test_if_result_accepting_the_first_result_is_one_success() -> None:
    policy = retry(if_result=lambda r: r < 0, attempts=5, backoff=0)
    impl = Flaky(0, value=7)
    assert await guard(policy, impl)() == 7
    assert counts(policy) == (0, 1, 0)


async def test_if_result_exhausted_reports_the_last_result() -> None:
    seq = iter(range(100))

    async def work() -> int:
        return next(seq)

    policy = retry(if_result=lambda r: True, attempts=2, backoff=0)
    with pytest.raises(AttemptsExceeded) as info:
        await policy(work)()
    e = info.value
    assert e.attempts == 3
    assert e.last_exception is None
    assert e.has_result
    assert e.last_result == 2
    assert e.__cause__ is None
    assert counts(policy) == (2, 0, 1)


async def test_if_result_mixed_with_exceptions() -> None:
    steps: list[Any] = [ValueError("a"), -1, ValueError("b"), 5]

    async def work() -> int:
        step = steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    policy = retry(if_result=lambda r: r < 0, attempts=3, backoff=0)
    assert await policy(work)() == 5
    assert counts(policy) == (3, 1, 0)


async def test_a_raising_if_result_propagates() -> None:
    def check(r: Any) -> bool:
        raise LookupError("bad check")

    impl = Flaky(1)
    with pytest.raises(LookupError, match="bad check"):
        await guard(retry(if_result=check, attempts=3, backoff=0), impl)()
    assert len(impl.calls) == 2


async def test_a_failing_backoff_callable_surfaces() -> None:
    impl = Flaky(3)
    with pytest.raises(ValueError, match="backoff delay"):
        await guard(retry(attempts=3, backoff=lambda k: -1), impl)()
    assert len(impl.calls) == 1


# ------------------------------------------------------------------------------------------
# Backoff schedules inside retry


async def test_expo_backoff_waits_are_observed_on_the_clock(clock: FakeClock) -> None:
    times: list[float] = []
    rec = Recorder()

    async def work() -> None:
        times.append(clock.now())
        raise ValueError

    policy = retry(attempts=4, backoff=backoffs.expo(min_delay_secs=1), listeners=[rec])
    with pytest.raises(AttemptsExceeded):
        await policy(work)()
    assert times == [0, 1, 3, 7, 15]
    assert rec.delays() == [1, 2, 4, 8]
    assert clock.now() == 15


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        (0.25, [0.25, 0.25, 0.25, 0.25]),
        (2, [2.0] * 4),
        ([0.1, 0.2], [0.1, 0.2, 0.1, 0.2]),
        ((1, 2, 3), [1.0, 2.0, 3.0, 1.0]),
        (backoffs.fibo(), [1.0, 2.0, 3.0, 5.0]),
        (backoffs.linear(min_delay_secs=0, additive_secs=2), [0.0, 2.0, 4.0, 6.0]),
        (lambda k: k / 10, [0.1, 0.2, 0.3, 0.4]),
        (range(1, 9), [1.0, 2.0, 3.0, 4.0]),
    ],
)
async def test_each_call_gets_a_fresh_schedule(backoff: Any, expected: list[float]) -> None:
    rec = Recorder()
    policy = retry(attempts=4, backoff=backoff, listeners=[rec])
    for _ in range(3):  # sequential calls each start at the beginning of the schedule
        rec.events.clear()
        with pytest.raises(AttemptsExceeded):
            await guard(policy, Flaky(100))()
        assert rec.delays() == pytest.approx(expected)


async def test_callable_backoff_gets_the_attempt_number() -> None:
    ks: list[int] = []

    def delay(k: int) -> float:
        ks.append(k)
        return 0.0

    await guard(retry(attempts=5, backoff=delay), Flaky(3))()
    assert ks == [1, 2, 3]


async def test_a_finite_iterable_backoff_ends_the_retries_when_it_runs_out() -> None:
    class Schedule:
        def __iter__(self) -> Iterator[float]:
            return iter([0.1, 0.2])

    impl = Flaky(100)
    policy = retry(attempts=10, backoff=Schedule())
    for _ in range(2):  # re-iterable: every call gets the whole schedule
        with pytest.raises(AttemptsExceeded) as info:
            await guard(policy, impl)()
        assert info.value.attempts == 3
        assert isinstance(info.value.__cause__, ValueError)
    assert len(impl.calls) == 6
    assert counts(policy) == (4, 0, 2)


async def test_seeded_jitter_makes_retry_delays_repeatable() -> None:
    from failsafe.testing import seed

    def run_delays() -> Any:
        rec = Recorder()
        policy = retry(attempts=6, backoff=backoffs.expo(jitter=jitters.full), listeners=[rec])
        return rec, guard(policy, Flaky(100))

    seed(77)
    rec1, f1 = run_delays()
    with pytest.raises(AttemptsExceeded):
        await f1()
    seed(77)
    rec2, f2 = run_delays()
    with pytest.raises(AttemptsExceeded):
        await f2()
    assert rec1.delays() == rec2.delays()
    assert all(0 <= d <= 2**i for i, d in enumerate(rec1.delays()))
    assert rec1.delays() != [1, 2, 4, 8, 16, 32]


# ------------------------------------------------------------------------------------------
# max_duration


@pytest.mark.parametrize(
    ("max_duration", "expected"),
    [
        (5, [(0, 1), (2, 3), (4, 5)]),
        (4.99, [(0, 1), (2, 3)]),  # a third attempt would start at 4 and end at 5
        (4, [(0, 1), (2, 3)]),
        (3, [(0, 1), (2, 3)]),
        (2.99, [(0, 1)]),
        (0.5, [(0, 1)]),  # the first attempt always runs
    ],
)
async def test_attempts_are_only_started_if_they_can_finish_in_time(
    clock: FakeClock, max_duration: float, expected: list[tuple[int, int]]
) -> None:
    spans: list[tuple[float, float]] = []

    async def work() -> None:
        start = clock.now()
        clock.advance(1)  # every attempt lasts one second: retry assumes the next does too
        spans.append((start, clock.now()))
        raise ValueError

    with pytest.raises(AttemptsExceeded) as info:
        await retry(attempts=None, backoff=1, max_duration=max_duration)(work)()
    assert spans == expected
    assert info.value.reason == "max_duration"
    assert info.value.attempts == len(expected)


async def test_max_duration_never_starts_an_attempt_that_cannot_finish(clock: FakeClock) -> None:
    spans: list[tuple[float, float]] = []

    async def work() -> None:
        start = clock.now()
        clock.advance(1)  # every attempt lasts one second
        spans.append((start, clock.now()))
        raise ValueError(len(spans))

    policy = retry(attempts=None, backoff=1, max_duration=5)
    with pytest.raises(AttemptsExceeded) as info:
        await policy(work)()
    # t=0..1, wait 1, 2..3, wait 1, 4..5; a fourth would end at 7 > 5
    assert spans == [(0, 1), (2, 3), (4, 5)]
    assert all(end <= 5 for _, end in spans)
    e = info.value
    assert e.reason == "max_duration"
    assert e.attempts == 3
    assert e.__cause__ is e.last_exception
    assert e.last_exception.args == (3,)  # type: ignore[union-attr]
    assert clock.now() == 5  # gave up without waiting
    assert counts(policy) == (2, 0, 1)


async def test_max_duration_counts_the_backoff_wait(clock: FakeClock) -> None:
    impl = Flaky(100)
    policy = retry(attempts=None, backoff=1, max_duration=3.5)
    with pytest.raises(AttemptsExceeded) as info:
        await guard(policy, impl)()
    assert len(impl.calls) == 4  # at t = 0, 1, 2, 3; the next would start at 4 > 3.5
    assert info.value.reason == "max_duration"
    assert clock.now() == 3


async def test_max_duration_lets_a_call_succeed_in_time(clock: FakeClock) -> None:
    policy = retry(attempts=None, backoff=1, max_duration=10)
    assert await guard(policy, Flaky(4))() == "ok"
    assert clock.now() == 4
    assert counts(policy) == (4, 1, 0)


async def test_max_duration_is_per_call(clock: FakeClock) -> None:
    policy = retry(attempts=None, backoff=1, max_duration=2.5)
    for _ in range(3):
        impl = Flaky(100)
        with pytest.raises(AttemptsExceeded):
            await guard(policy, impl)()
        assert len(impl.calls) == 3


async def test_attempts_limit_wins_before_max_duration() -> None:
    policy = retry(attempts=1, backoff=0, max_duration=100)
    with pytest.raises(AttemptsExceeded) as info:
        await guard(policy, Flaky(100))()
    assert info.value.reason == "attempts"


# ------------------------------------------------------------------------------------------
# Retry budget


async def test_budget_floor_limits_retries_per_window(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0, min_per_second=0.5, ttl=10)  # 5 retries per 10 s
    policy = retry(attempts=None, backoff=0, budget=budget)
    impl = Flaky(1000)
    with pytest.raises(AttemptsExceeded) as info:
        await guard(policy, impl)()
    assert info.value.reason == "budget"
    assert info.value.attempts == 6
    assert isinstance(info.value.__cause__, ValueError)
    assert budget.available() == 0
    with pytest.raises(AttemptsExceeded) as info:
        await guard(policy, impl)()
    assert info.value.attempts == 1  # nothing left in this window
    clock.advance(10)
    assert budget.available() == 5
    with pytest.raises(AttemptsExceeded) as info:
        await guard(policy, impl)()
    assert info.value.attempts == 6
    assert counts(policy) == (10, 0, 3)


async def test_budget_ratio_limits_retries_to_a_share_of_calls() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=0, ttl=60)
    policy = retry(attempts=3, backoff=0, budget=budget)
    outcomes: list[str] = []
    for _ in range(100):  # each call fails once, then would succeed
        try:
            await guard(policy, Flaky(1))()
            outcomes.append("ok")
        except AttemptsExceeded as e:
            outcomes.append(e.reason)
    # call i deposits, then may withdraw while withdrawals + 1 <= 0.2 * i: calls 5, 10, ...
    assert outcomes.count("ok") == 20
    assert outcomes.count("budget") == 80
    assert [i for i, o in enumerate(outcomes, 1) if o == "ok"] == list(range(5, 101, 5))
    assert counts(policy) == (20, 20, 80)


async def test_budget_is_shared_between_policies() -> None:
    budget = RetryBudget(ratio=0, min_per_second=0.3, ttl=10)  # 3 retries
    a = retry(attempts=None, backoff=0, budget=budget)
    b = retry(attempts=None, backoff=0, budget=budget)
    with pytest.raises(AttemptsExceeded):
        await guard(a, Flaky(1000))()
    impl = Flaky(1)
    with pytest.raises(AttemptsExceeded) as info:
        await guard(b, impl)()
    assert info.value.reason == "budget"
    assert len(impl.calls) == 1
    assert counts(a) == (3, 0, 1)
    assert counts(b) == (0, 0, 1)


async def test_first_attempt_successes_deposit_into_the_budget() -> None:
    budget = RetryBudget(ratio=0.5, min_per_second=0, ttl=10)
    policy = retry(attempts=5, backoff=0, budget=budget)
    for _ in range(4):
        await guard(policy, Flaky(0))()
    assert budget.available() == 2
    with pytest.raises(AttemptsExceeded) as info:
        await guard(policy, Flaky(100))()
    # the 5th call deposits (2.5 available): two retries fit, the third does not
    assert info.value.attempts == 3
    assert info.value.reason == "budget"


# ------------------------------------------------------------------------------------------
# bucket_retry


async def test_bucket_retry_limits_reattempts_across_calls(clock: FakeClock) -> None:
    rec = Recorder()
    policy = bucket_retry(attempts=2, per_time_secs=10, bucket_size=2, backoff=0, listeners=[rec])
    assert isinstance(policy, Retry)
    impl = Flaky(1000)
    with pytest.raises(AttemptsExceeded):  # 2 tokens: two retries, then attempts run out
        await guard(policy, impl)()
    assert len(impl.calls) == 3
    with pytest.raises(EmptyBucket) as info:
        await guard(policy, impl)()
    assert len(impl.calls) == 4  # no token: no retry, no wait
    assert info.value.retry_after_seconds == pytest.approx(5.0)
    assert isinstance(info.value.__cause__, ValueError)
    assert counts(policy) == (2, 0, 2)
    assert rec.kinds() == ["retry", "retry", "giveup", "giveup"]
    clock.advance(5)  # one token back
    with pytest.raises(EmptyBucket):
        await guard(policy, impl)()
    assert len(impl.calls) == 6
    assert counts(policy) == (3, 0, 3)


async def test_bucket_retry_first_attempts_take_no_token() -> None:
    policy = bucket_retry(attempts=1, per_time_secs=100, bucket_size=1, backoff=0)
    for _ in range(10):
        assert await guard(policy, Flaky(0))() == "ok"
    assert await guard(policy, Flaky(1))() == "ok"  # the token is still there
    assert counts(policy) == (1, 11, 0)


async def test_bucket_retry_block_form_draws_tokens() -> None:
    block = Block(bucket_retry(attempts=1, per_time_secs=100, bucket_size=1, backoff=0))
    with pytest.raises(AttemptsExceeded):
        await block()
    assert block.runs == 2
    with pytest.raises(EmptyBucket):
        await block()
    assert block.runs == 3


# ------------------------------------------------------------------------------------------
# Block form


async def test_block_form_retries_until_success(clock: FakeClock) -> None:
    rec = Recorder()
    policy = retry(attempts=5, backoff=backoffs.expo(min_delay_secs=1), listeners=[rec])
    numbers: list[int] = []
    async for attempt in policy:
        with attempt:
            numbers.append(attempt.number)
            if attempt.number < 3:
                raise ValueError
    assert numbers == [1, 2, 3]
    assert clock.now() == 3  # waited 1 + 2
    assert rec.delays() == [1, 2]
    assert rec.events[-1] == ("success", 2)
    assert counts(policy) == (2, 1, 0)


async def test_block_form_return_or_break_inside_the_attempt_counts_the_success() -> None:
    rec = Recorder()
    policy = retry(attempts=3, backoff=0, listeners=[rec])

    async def get(fails: int) -> int:
        runs = 0
        async for attempt in policy:
            with attempt:
                runs += 1
                if runs <= fails:
                    raise ValueError
                return runs  # the idiomatic form: the loop never asks for another attempt
        raise AssertionError("unreachable")

    assert await get(0) == 1
    assert await get(2) == 3
    runs = 0
    async for attempt in policy:
        with attempt:
            runs += 1
            if runs == 1:
                raise ValueError
            break
    assert counts(policy) == (3, 3, 0)
    assert [e for e in rec.events if e[0] == "success"] == [
        ("success", 0),
        ("success", 2),
        ("success", 1),
    ]


async def test_block_form_first_try_success() -> None:
    policy = retry(attempts=5, backoff=0)
    runs = 0
    async for attempt in policy:
        with attempt:
            runs += 1
    assert runs == 1
    assert counts(policy) == (0, 1, 0)


async def test_block_form_gives_up_from_the_last_exception() -> None:
    policy = retry(attempts=2, backoff=0)
    block = Block(policy)
    with pytest.raises(AttemptsExceeded) as info:
        await block()
    assert block.runs == 3
    assert info.value.attempts == 3
    assert info.value.__cause__ is info.value.last_exception
    assert info.value.last_exception.args == (3,)  # type: ignore[union-attr]
    assert counts(policy) == (2, 0, 1)


async def test_block_form_non_matching_and_base_exceptions_propagate_at_once() -> None:
    other = retry(on=ValueError, attempts=5, backoff=0)
    block = Block(other, KeyError)
    with pytest.raises(KeyError):
        await block()
    assert block.runs == 1
    policy = retry(on=(ValueError, BaseException), attempts=5, backoff=0)
    for exc in (Abort, asyncio.CancelledError):
        block = Block(policy, exc)
        with pytest.raises(exc):
            await block()
        assert block.runs == 1
    assert counts(policy) == (0, 0, 0)
    assert counts(other) == (0, 0, 0)


async def test_block_form_max_duration_and_budget(clock: FakeClock) -> None:
    block = Block(retry(attempts=None, backoff=1, max_duration=2.5))
    with pytest.raises(AttemptsExceeded) as info:
        await block()
    assert block.runs == 3
    assert info.value.reason == "max_duration"

    budget = RetryBudget(ratio=0, min_per_second=0.2, ttl=10)  # 2 retries
    block = Block(retry(attempts=None, backoff=0, budget=budget))
    with pytest.raises(AttemptsExceeded) as info:
        await block()
    assert block.runs == 3
    assert info.value.reason == "budget"


async def test_block_forms_of_one_policy_are_independent() -> None:
    policy = retry(attempts=3, backoff=backoffs.expo(min_delay_secs=0.001))
    trace: list[tuple[int, int]] = []

    async def block(ident: int, fails: int) -> int:
        async for attempt in policy:
            with attempt:
                trace.append((ident, attempt.number))
                await asyncio.sleep(0)
                if attempt.number <= fails:
                    raise ValueError
        return attempt.number

    assert await asyncio.gather(*(block(i, i % 4) for i in range(40))) == [
        i % 4 + 1 for i in range(40)
    ]
    for i in range(40):
        assert [n for j, n in trace if j == i] == list(range(1, i % 4 + 2))
    assert counts(policy) == (sum(i % 4 for i in range(40)), 40, 0)


# ------------------------------------------------------------------------------------------
# Listeners and stats


async def test_listener_receives_every_event() -> None:
    rec = Recorder()
    policy = retry(attempts=3, backoff=backoffs.linear(min_delay_secs=1), listeners=[rec])
    impl = Flaky(2)
    await guard(policy, impl)()
    assert [e[0] for e in rec.events] == ["retry", "retry", "success"]
    (_, e1, n1, max1, d1), (_, e2, n2, _, d2) = rec.events[:2]
    assert (n1, n2, max1, d1, d2) == (1, 2, 3, 1.0, 2.0)
    assert e1.args == (1,)
    assert e2.args == (2,)
    assert rec.events[2] == ("success", 2)

    rec.events.clear()
    await guard(policy, Flaky(0))()  # first-attempt success: reported from the C fast path
    assert rec.events == [("success", 0)]

    rec.events.clear()
    with pytest.raises(AttemptsExceeded):
        await guard(policy, Flaky(100))()
    assert rec.kinds() == ["retry", "retry", "retry", "giveup"]


async def test_async_listeners_run_as_tracked_tasks() -> None:
    got: list[tuple[Any, ...]] = []
    release = asyncio.Event()

    class Slow(RetryListener):
        async def on_retry(self, retry: Any, exc: Any, counter: Any, delay: float) -> None:
            await release.wait()
            got.append(("retry", counter.current_attempt))

        async def on_success(self, retry: Any, counter: Any) -> None:
            await release.wait()
            got.append(("success", counter.current_attempt))

    manager = EventManager()
    policy = retry(attempts=3, backoff=0, listeners=[Slow()], event_manager=manager)
    assert await guard(policy, Flaky(2))() == "ok"  # the call does not wait for listeners
    assert got == []
    assert manager.pending == 3
    release.set()
    assert await manager.wait_for_tasks() == 3
    assert sorted(got) == [("retry", 1), ("retry", 2), ("success", 2)]
    assert manager.pending == 0


async def test_async_listener_on_the_default_event_manager() -> None:
    got: list[int] = []

    class Async(RetryListener):
        async def on_retry(self, retry: Any, exc: Any, counter: Any, delay: float) -> None:
            await asyncio.sleep(0)
            got.append(counter.current_attempt)

    await guard(retry(attempts=3, backoff=0, listeners=[Async()]), Flaky(3))()
    await get_event_manager().wait_for_tasks()
    assert sorted(got) == [1, 2, 3]


class _Raising(RetryListener):
    def on_retry(self, *args: Any) -> None:
        raise RuntimeError("listener boom")

    def on_success(self, *args: Any) -> None:
        raise RuntimeError("listener boom")

    def on_attempts_exceeded(self, *args: Any) -> None:
        raise RuntimeError("listener boom")


class _AsyncRaising(RetryListener):
    async def on_retry(self, *args: Any) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("listener boom")

    async def on_success(self, *args: Any) -> None:
        raise RuntimeError("listener boom")

    async def on_attempts_exceeded(self, *args: Any) -> None:
        raise RuntimeError("listener boom")


def _raising_factory(component: Any) -> Any:
    raise RuntimeError("listener boom")


@pytest.mark.parametrize("listener", [_Raising(), _AsyncRaising(), _raising_factory])
@pytest.mark.parametrize("fails", [0, 2, 100])
async def test_a_raising_listener_never_changes_the_outcome(
    listener: Any, fails: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="failsafe")
    rec = Recorder()
    policy = retry(attempts=2, backoff=0, listeners=[listener, rec])
    impl = Flaky(fails)
    if fails > 2:
        with pytest.raises(AttemptsExceeded):
            await guard(policy, impl)()
    else:
        assert await guard(policy, impl)() == "ok"
    await get_event_manager().wait_for_tasks()
    assert len(impl.calls) == min(fails, 2) + 1  # B-EV2: a success is never called again
    expected = ["retry"] * min(fails, 2) + (["giveup"] if fails > 2 else ["success"])
    assert rec.kinds() == expected  # later listeners still get every event
    assert counts(policy) == (min(fails, 2), int(fails <= 2), int(fails > 2))
    errors = [r for r in caplog.records if r.name == "failsafe" and r.levelno >= logging.ERROR]
    assert errors
    assert any("listener boom" in (r.exc_text or "") for r in errors)


async def test_global_listener_reaches_existing_and_new_policies(
    global_listeners: None,
) -> None:
    existing = retry(attempts=1, backoff=0)
    rec = Recorder()
    register_retry_listener(rec)
    await guard(existing, Flaky(1))()
    await guard(retry(attempts=1, backoff=0), Flaky(0))()
    assert rec.kinds() == ["retry", "success", "success"]
    assert rec.events[0][2] == 1  # the existing policy's first retry
    assert rec.events[1:] == [("success", 1), ("success", 0)]
    events.unregister_listener("retry", rec)
    await guard(existing, Flaky(1))()
    assert len(rec.events) == 3


async def test_listener_added_later_and_listener_gets_the_policy() -> None:
    seen: list[Any] = []

    class Who(RetryListener):
        def on_success(self, retry: Any, counter: Any) -> None:
            seen.append(retry)

    policy = retry(attempts=1, backoff=0)
    f = guard(policy, Flaky(0))
    await f()
    policy.add_listener(Who())
    await f()
    assert seen == [policy]


async def test_stats_and_repr_are_live() -> None:
    policy = retry(attempts=2, backoff=0, name="svc.fetch")
    assert policy.stats() == {
        "name": "svc.fetch",
        "attempt": 0,
        "success": 0,
        "giveup": 0,
        "attempts": 2,
    }
    await guard(policy, Flaky(1))()
    with pytest.raises(AttemptsExceeded):
        await guard(policy, Flaky(9))()
    await guard(policy, Flaky(0))()
    assert counts(policy) == (3, 2, 1)
    assert "svc.fetch" in repr(policy)
    assert "attempt=3" in repr(policy)
    assert "giveup=1" in repr(policy)


async def test_one_policy_on_two_functions_counts_both() -> None:
    policy = retry(attempts=1, backoff=0)
    f = guard(policy, Flaky(1))
    g = guard(policy, Flaky(0))
    await f()
    await g()
    assert counts(policy) == (1, 2, 0)


# ------------------------------------------------------------------------------------------
# Concurrency: one policy, many tasks, no cross-talk (B-R1, B-R2)


@pytest.mark.parametrize(
    ("backoff", "delay_of"),
    [
        (backoffs.expo(min_delay_secs=0.001, base=2), lambda k: 0.001 * 2 ** (k - 1)),
        (backoffs.fibo(min_delay_secs=1, factor_secs=1), lambda k: [1, 2, 3, 5, 8, 13][k - 1]),
        (lambda k: k * 0.01, lambda k: k * 0.01),
        ([0.5, 0.25, 0.125], lambda k: [0.5, 0.25, 0.125][(k - 1) % 3]),
    ],
)
async def test_concurrent_calls_have_independent_retries_and_schedules(
    backoff: Any, delay_of: Any
) -> None:
    n = 250
    log: dict[int, list[tuple[int, float]]] = defaultdict(list)
    order: list[int] = []

    class PerCall(RetryListener):
        def on_retry(self, retry: Any, exc: Any, counter: Any, delay: float) -> None:
            log[exc.args[0]].append((counter.current_attempt, delay))
            order.append(exc.args[0])

    policy = retry(attempts=5, backoff=backoff, listeners=[PerCall()])
    calls: dict[int, int] = defaultdict(int)

    @policy
    async def call(i: int) -> int:
        calls[i] += 1
        await asyncio.sleep(0)
        if i % 7 == 6 or calls[i] <= i % 6:
            raise ValueError(i)
        await asyncio.sleep(0)
        return i * 10

    results = await asyncio.gather(*(call(i) for i in range(n)), return_exceptions=True)
    retries = 0
    for i, result in enumerate(results):
        fails = 6 if i % 7 == 6 else i % 6
        if fails > 5:
            assert isinstance(result, AttemptsExceeded)
            assert result.attempts == 6
            assert result.last_exception.args == (i,)  # type: ignore[union-attr]
            k = 5
        else:
            assert result == i * 10
            k = fails
        retries += k
        assert calls[i] == k + 1
        assert log[i] == [(j, pytest.approx(delay_of(j))) for j in range(1, k + 1)]
    givers = sum(1 for i in range(n) if i % 7 == 6)
    assert counts(policy) == (retries, n - givers, givers)
    # the calls really interleaved: some call's retries are not contiguous in the event order
    first = {i: order.index(i) for i in set(order)}
    last = {i: len(order) - 1 - order[::-1].index(i) for i in set(order)}
    assert any(last[i] - first[i] + 1 > len(log[i]) for i in first)


async def test_concurrent_calls_with_instant_waits_keep_their_own_clock_budgets(
    clock: FakeClock,
) -> None:
    # max_duration is measured per call from its own start, even while other calls advance
    # the shared clock
    policy = retry(attempts=None, backoff=0.001, max_duration=1000)
    outcomes = await asyncio.gather(*(guard(policy, Flaky(i % 4))() for i in range(200)))
    assert outcomes == ["ok"] * 200
    assert counts(policy) == (sum(i % 4 for i in range(200)), 200, 0)


@settings(max_examples=60, deadline=None)
@given(
    fails=st.lists(st.integers(0, 6), min_size=1, max_size=30),
    attempts=st.integers(0, 5),
)
def test_property_k_failures_mean_k_attempt_counts(fails: list[int], attempts: int) -> None:
    """For each call, k <= attempts failures succeed after exactly k re-attempts; more give up
    after attempts + 1 calls. Calls run concurrently on one policy."""

    async def scenario() -> None:
        policy = retry(attempts=attempts, backoff=backoffs.expo(min_delay_secs=0.01))
        impls = [Flaky(k) for k in fails]
        results = await asyncio.gather(
            *(guard(policy, impl)() for impl in impls), return_exceptions=True
        )
        for k, impl, result in zip(fails, impls, results, strict=True):
            if k <= attempts:
                assert result == "ok"
                assert len(impl.calls) == k + 1
            else:
                assert isinstance(result, AttemptsExceeded)
                assert result.attempts == attempts + 1
                assert len(impl.calls) == attempts + 1
        ok = [k for k in fails if k <= attempts]
        assert counts(policy) == (
            sum(ok) + attempts * (len(fails) - len(ok)),
            len(ok),
            len(fails) - len(ok),
        )

    with instant_waits():
        asyncio.run(scenario())


@settings(max_examples=60, deadline=None)
@given(fails=st.integers(0, 8), attempts=st.none() | st.integers(0, 6))
def test_property_block_form(fails: int, attempts: int | None) -> None:
    async def scenario() -> None:
        policy = retry(attempts=attempts, backoff=backoffs.fibo(min_delay_secs=0.01))
        runs = 0

        async def body() -> int:
            nonlocal runs
            async for attempt in policy:
                with attempt:
                    runs += 1
                    if runs <= fails:
                        raise ValueError
                    return runs
            raise AssertionError("unreachable")

        if attempts is None or fails <= attempts:
            assert await body() == fails + 1
            assert counts(policy) == (fails, 1, 0)
        else:
            with pytest.raises(AttemptsExceeded) as info:
                await body()
            assert info.value.attempts == attempts + 1
            assert runs == attempts + 1
            assert counts(policy) == (attempts, 0, 1)

    with instant_waits():
        asyncio.run(scenario())


# ------------------------------------------------------------------------------------------
# Cancellation: never a failure, never retried, never swallowed


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_cancel_during_the_first_attempt() -> None:
    rec = Recorder()
    policy = retry(attempts=3, backoff=0, listeners=[rec])
    entered = asyncio.Event()
    cleaned: list[int] = []
    calls = 0

    @policy
    async def work() -> str:
        nonlocal calls
        calls += 1
        try:
            entered.set()
            await asyncio.Event().wait()
            return "never"
        finally:
            cleaned.append(calls)

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _settle()
    assert task.cancelled()
    assert calls == 1
    assert cleaned == [1]
    assert counts(policy) == (0, 0, 0)
    assert rec.events == []
    # the policy still works
    assert await guard(policy, Flaky(1))() == "ok"
    assert counts(policy) == (1, 1, 0)


async def test_cancel_during_the_backoff_wait() -> None:
    waiting = asyncio.Event()
    cleaned: list[int] = []
    calls = 0

    class Signal(RetryListener):
        def on_retry(self, *args: Any) -> None:
            waiting.set()

    rec = Recorder()
    policy = retry(attempts=3, backoff=3600, listeners=[rec, Signal()])

    @policy
    async def work() -> None:
        nonlocal calls
        calls += 1
        try:
            raise ValueError(calls)
        finally:
            cleaned.append(calls)

    with instant_waits(False):  # a real hour-long wait: the task is parked in it
        task = asyncio.create_task(work())
        await waiting.wait()
        await _settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await _settle()
    assert calls == 1  # not retried after the cancellation
    assert cleaned == [1]
    assert rec.kinds() == ["retry"]  # no give-up, no success
    assert counts(policy) == (1, 0, 0)
    assert await guard(policy, Flaky(1))() == "ok"  # the policy still works (waits instant)
    assert counts(policy) == (2, 1, 0)


@pytest.mark.parametrize("listening", [True, False], ids=["python-slow-path", "retried-in-c"])
async def test_cancel_during_a_later_attempt(listening: bool) -> None:
    """Cancelling a call suspended in its third attempt ends it with CancelledError, counts no
    give-up and leaves the policy usable: with a listener the re-attempts go through Python,
    without one (and no delay) they run in C."""
    rec = Recorder()
    policy = retry(attempts=5, backoff=0, listeners=[rec] if listening else None)
    entered = asyncio.Event()
    cleaned: list[int] = []
    calls = 0

    @policy
    async def work() -> str:
        nonlocal calls
        calls += 1
        try:
            if calls < 3:
                raise ValueError
            entered.set()
            await asyncio.Event().wait()
            return "never"
        finally:
            cleaned.append(calls)

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _settle()
    assert calls == 3
    assert cleaned == [1, 2, 3]
    assert rec.kinds() == (["retry", "retry"] if listening else [])
    assert counts(policy) == (2, 0, 0)
    assert await guard(policy, Flaky(2))() == "ok"
    assert counts(policy) == (4, 1, 0)


async def test_cancel_in_the_block_form() -> None:
    policy = retry(attempts=5, backoff=0)
    entered = asyncio.Event()
    runs = 0
    cleaned = 0

    async def block() -> None:
        nonlocal runs, cleaned
        async for attempt in policy:
            with attempt:
                runs += 1
                try:
                    if runs == 1:
                        raise ValueError
                    entered.set()
                    await asyncio.Event().wait()
                finally:
                    cleaned += 1

    task = asyncio.create_task(block())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (runs, cleaned) == (2, 2)
    assert counts(policy) == (1, 0, 0)


async def test_cancel_during_the_block_form_backoff_wait() -> None:
    waiting = asyncio.Event()

    class Signal(RetryListener):
        def on_retry(self, *args: Any) -> None:
            waiting.set()

    policy = retry(attempts=5, backoff=3600, listeners=[Signal()])
    runs = 0

    async def block() -> None:
        nonlocal runs
        async for attempt in policy:
            with attempt:
                runs += 1
                raise ValueError

    with instant_waits(False):
        task = asyncio.create_task(block())
        await waiting.wait()
        await _settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert runs == 1
    assert counts(policy) == (1, 0, 0)


async def test_wait_for_timeout_during_the_backoff_wait_is_not_a_give_up() -> None:
    rec = Recorder()
    policy = retry(attempts=3, backoff=3600, listeners=[rec])
    impl = Flaky(100)
    # The deadline leaves the first attempt ample time even on a loaded machine.
    with instant_waits(False), pytest.raises(TimeoutError):
        await asyncio.wait_for(guard(policy, impl)(), timeout=0.5)
    assert len(impl.calls) == 1
    assert rec.kinds() == ["retry"]
    assert counts(policy) == (1, 0, 0)


async def test_cancelled_task_group_sibling_is_not_a_failure() -> None:
    policy = retry(attempts=2, backoff=0)
    entered = asyncio.Event()
    cleaned: list[str] = []

    @policy
    async def slow() -> None:
        try:
            entered.set()
            await asyncio.Event().wait()
        finally:
            cleaned.append("slow")

    @policy
    async def broken() -> None:
        await entered.wait()
        raise ValueError("broken")

    async def both() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(slow())
            tg.create_task(broken())

    with pytest.raises(ExceptionGroup) as info:
        await both()
    assert [type(e) for e in info.value.exceptions] == [AttemptsExceeded]
    assert cleaned == ["slow"]
    assert counts(policy) == (2, 0, 1)  # only broken's retries and give-up


@pytest.mark.parametrize("end", ["close", "collect"])
async def test_closing_a_call_suspended_in_a_later_attempt(end: str) -> None:
    @types.coroutine
    def suspend() -> Iterator[str]:
        yield "suspended"

    rec = Recorder()
    policy = retry(attempts=3, backoff=0, listeners=[rec])
    cleaned: list[int] = []
    calls = 0

    @policy
    async def work() -> None:
        nonlocal calls
        calls += 1
        try:
            if calls == 1:
                raise ValueError
            await suspend()
        finally:
            cleaned.append(calls)

    call = work()
    # a zero backoff costs no loop turn: the first send runs into the second attempt
    assert call.send(None) == "suspended"
    if end == "close":
        call.close()
    else:
        del call
        gc.collect()
    assert cleaned == [1, 2]
    assert calls == 2
    assert rec.kinds() == ["retry"]
    assert counts(policy) == (1, 0, 0)


async def test_cancel_before_the_call_starts() -> None:
    policy = retry(attempts=3, backoff=0)
    impl = Flaky(0)
    task = asyncio.create_task(guard(policy, impl)())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert impl.calls == []
    assert counts(policy) == (0, 0, 0)


# ------------------------------------------------------------------------------------------
# asyncio integration and composition


async def test_create_task_gather_wait_for_and_task_group() -> None:
    policy = retry(attempts=2, backoff=0.5)
    f = guard(policy, Flaky(1))
    assert await asyncio.create_task(f()) == "ok"
    assert await asyncio.gather(*(guard(policy, Flaky(i % 3))() for i in range(10))) == (
        ["ok"] * 10
    )
    assert await asyncio.wait_for(guard(policy, Flaky(2))(), timeout=5) == "ok"
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(guard(policy, Flaky(1))()) for _ in range(5)]
    assert [t.result() for t in tasks] == ["ok"] * 5


async def test_retry_on_retry_multiplies_attempts() -> None:
    calls = 0

    @retry(attempts=2, backoff=0, name="outer")
    @retry(attempts=1, backoff=0, name="inner")
    async def work() -> None:
        nonlocal calls
        calls += 1
        raise ValueError(calls)

    with pytest.raises(AttemptsExceeded) as info:
        await work()
    assert calls == 6  # 3 outer attempts of 2 inner calls
    outer_exc = info.value
    assert outer_exc.attempts == 3
    inner_exc = outer_exc.__cause__
    assert isinstance(inner_exc, AttemptsExceeded)
    assert inner_exc.attempts == 2
    assert isinstance(inner_exc.__cause__, ValueError)
    assert inner_exc.__cause__.args == (6,)
    outer, inner = work.policy, work.__wrapped__.policy
    assert (outer.name, inner.name) == ("outer", "inner")
    assert counts(outer) == (2, 0, 1)
    assert counts(inner) == (3, 0, 3)


async def test_retry_on_retry_inner_success() -> None:
    calls = 0

    @retry(attempts=2, backoff=0)
    @retry(on=KeyError, attempts=3, backoff=0)
    async def work() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError  # the inner does not retry it; the outer does
        if calls < 4:
            raise KeyError
        return calls

    assert await work() == 4
    assert counts(work.policy) == (1, 1, 0)
    assert counts(work.__wrapped__.policy) == (2, 1, 0)


async def test_retry_over_fallback() -> None:
    impl = Flaky(100)

    @retry(attempts=3, backoff=0)
    @fallback("default", on=ValueError)
    async def handled() -> str:
        return await impl()

    assert await handled() == "default"
    assert len(impl.calls) == 1  # the fallback answered; retry saw a success
    assert counts(handled.policy) == (0, 1, 0)
    assert handled.__wrapped__.policy.stats()["invoked"] == 1

    other = Flaky(2, exc=KeyError)

    @retry(attempts=3, backoff=0)
    @fallback("default", on=ValueError)
    async def not_handled() -> str:
        return await other()

    assert await not_handled() == "ok"  # KeyError passes the fallback and is retried
    assert counts(not_handled.policy) == (2, 1, 0)
    assert not_handled.__wrapped__.policy.stats()["invoked"] == 0


async def test_retry_over_a_fallback_whose_handler_raises() -> None:
    handled: list[BaseException] = []

    def handler(exc: BaseException) -> str:
        handled.append(exc)
        raise ConnectionError("handler failed")

    @retry(on=ConnectionError, attempts=2, backoff=0)
    @fallback(handler, on=ValueError)
    async def work() -> str:
        raise ValueError

    with pytest.raises(AttemptsExceeded) as info:
        await work()
    assert len(handled) == 3  # each attempt's fallback ran once
    assert isinstance(info.value.__cause__, ConnectionError)
    assert work.__wrapped__.policy.stats()["invoked"] == 3


async def test_fallback_over_retry() -> None:
    impl = Flaky(100)
    got: list[BaseException] = []

    def handler(exc: BaseException) -> str:
        got.append(exc)
        return "fallback"

    @fallback(handler, on=AttemptsExceeded)
    @retry(attempts=2, backoff=0)
    async def work() -> str:
        return await impl()

    assert await work() == "fallback"
    assert len(impl.calls) == 3
    assert len(got) == 1
    assert isinstance(got[0], AttemptsExceeded)
    assert counts(work.__wrapped__.policy) == (2, 0, 1)

    ok = Flaky(1)

    @fallback("fallback")
    @retry(attempts=2, backoff=0)
    async def recovers() -> str:
        return await ok()

    assert await recovers() == "ok"
    assert recovers.policy.stats()["invoked"] == 0

    @fallback("fallback", on=ValueError)
    @retry(on=ValueError, attempts=1, backoff=0)
    async def gives_up() -> str:
        raise ValueError

    with pytest.raises(AttemptsExceeded):  # not a ValueError: the fallback lets it through
        await gives_up()


async def test_fallback_over_retry_cancelled_in_backoff_is_not_handled() -> None:
    waiting = asyncio.Event()

    class Signal(RetryListener):
        def on_retry(self, *args: Any) -> None:
            waiting.set()

    @fallback("fallback", on=BaseException)
    @retry(attempts=3, backoff=3600, listeners=[Signal()])
    async def work() -> str:
        raise ValueError

    with instant_waits(False):
        task = asyncio.create_task(work())
        await waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert work.policy.stats()["invoked"] == 0
    assert counts(work.__wrapped__.policy) == (1, 0, 0)


async def test_policy_and_guard_are_collected() -> None:
    policy = retry(attempts=1, backoff=0)
    f = guard(policy, Flaky(1))
    await f()
    ref = weakref.ref(policy)
    del policy, f
    gc.collect()
    assert ref() is None


async def test_runaway_zero_delay_retry_stays_cancellable() -> None:
    calls = 0

    @retry(attempts=None, backoff=0)
    async def never_suspends() -> None:
        nonlocal calls
        calls += 1
        raise ValueError

    task = asyncio.create_task(never_suspends())
    while calls < 100:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert never_suspends.policy.stats()["giveup"] == 0


async def test_many_concurrent_calls_share_one_budget_exactly() -> None:
    """300 tasks fail at once against a budget whose floor allows 10 retries in the window:
    exactly 10 retries happen in all, whoever gets them."""
    budget = failsafe.retry.RetryBudget(0.0, min_per_second=1.0, ttl=10.0)
    policy = retry(attempts=3, backoff=0.001, budget=budget)
    calls = 0

    @policy
    async def always() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise ValueError

    results = await asyncio.gather(*(always() for _ in range(300)), return_exceptions=True)
    assert all(isinstance(r, AttemptsExceeded) for r in results)
    assert calls == 300 + 10
    assert policy.stats()["attempt"] == 10
    assert {r.reason for r in results} == {"budget"}  # 10 retries: nobody reaches attempts


async def test_many_concurrent_calls_share_one_bucket_exactly() -> None:
    policy = failsafe.retry.bucket_retry(attempts=3, backoff=0, per_time_secs=60, bucket_size=7)
    calls = 0

    @policy
    async def always() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise ValueError

    results = await asyncio.gather(*(always() for _ in range(300)), return_exceptions=True)
    assert calls == 300 + 7
    assert sum(isinstance(r, EmptyBucket) for r in results) == 300 - sum(
        isinstance(r, AttemptsExceeded) for r in results
    )


def test_options_hold_the_checked_parameters() -> None:
    o = RetryOptions.check(on=ValueError, attempts=None, backoff=[0, 1], max_duration=2)
    assert (o.on, o.on_pred, o.attempts) == ((ValueError,), None, None)
    assert o.max_duration_ns == 2 * 10**9
    assert list(itertools.islice(o.new_schedule(), 3)) == [0.0, 1.0, 0.0]
    assert o.retry_after is signals.retry_after_of  # the default reads the built-in signals
    assert (o.budget, o.bucket) == (None, None)
    bucketed = RetryOptions.check(attempts=2, bucket=(1, 3))
    assert bucketed.attempts == 2
    assert isinstance(bucketed.bucket, _native.TokenBucket)
    with pytest.raises(ValueError, match="attempts must be > 0"):
        RetryOptions.check(attempts=0, bucket=(1, 3))  # bucket_retry refills attempts tokens
    with pytest.raises(AttributeError):
        o.attempts = 1  # type: ignore[misc]
