"""Paths of the C binding the pattern tests leave out: argument checks of the module functions
and of the backoff/budget/bucket types, and the keyed limiter's error and give-back paths.
Each test asserts what a caller sees (the error, or the state after), found by coverage."""

from __future__ import annotations

import asyncio
import inspect
import math
import sys
from typing import Any

import pytest

from failsafe import _native, events
from failsafe.cache import Cache, cache
from failsafe.circuitbreaker import BreakerState, CircuitBreaker
from failsafe.circuitbreaker.exceptions import BreakerFailing
from failsafe.failfast import failfast
from failsafe.failfast.exceptions import FailFastOpen
from failsafe.fallback import fallback
from failsafe.featuretoggle import FeatureToggle
from failsafe.ratelimit import RateLimitExceeded, slidingwindow, tokenbucket
from failsafe.retry import backoffs
from failsafe.retry.backoffs import CONST, EXPO, INTERVAL, SOFTEXP, Backoff
from failsafe.testing import FakeClock
from failsafe.timeout import Timeout

# ------------------------------------------------------------------------------------------
# Module functions


def test_set_clock_refuses_bad_times() -> None:
    with pytest.raises(TypeError, match="now_ns must be an int or None"):
        _native._set_clock(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="now_ns must be >= 0"):
        _native._set_clock(-1)
    with pytest.raises(OverflowError):
        _native._set_clock(2**64)
    # None of those installed a clock: time still moves.
    assert _native.now_ns() > 0


def test_set_clock_pins_now_until_cleared() -> None:
    try:
        _native._set_clock(123)
        assert _native.now_ns() == 123
    finally:
        _native._set_clock(None)
    assert _native.now_ns() != 123


def test_seed_checks_and_repeats_the_sequence() -> None:
    with pytest.raises(TypeError, match="seed must be an int"):
        _native.seed(True)
    with pytest.raises(TypeError, match="seed must be an int"):
        _native.seed(1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\)"):
        _native.seed(2**64)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\)"):
        _native.seed(-1)
    _native.seed(2**64 - 1)
    first = [_native._uniform() for _ in range(3)]
    _native.seed(2**64 - 1)
    assert [_native._uniform() for _ in range(3)] == first
    assert all(0.0 <= u < 1.0 for u in first)


def test_set_listening_checks_its_arguments() -> None:
    set_listening: Any = _native._set_listening
    with pytest.raises(TypeError, match="takes 2 arguments"):
        set_listening(0)
    with pytest.raises(ValueError, match="pattern index -1 out of range"):
        set_listening(-1, True)
    with pytest.raises(ValueError, match="out of range"):
        set_listening(10_000, True)
    with pytest.raises(TypeError):
        set_listening("x", True)

    class Undecided:
        def __bool__(self) -> bool:
            raise RuntimeError("no truth")

    with pytest.raises(RuntimeError, match="no truth"):
        set_listening(0, Undecided())


def test_bind_refuses_what_it_cannot_use() -> None:
    bind: Any = _native._bind
    with pytest.raises(TypeError, match="emit must be callable"):
        bind(emit=42)
    with pytest.raises(TypeError, match="must be a Exception subclass"):
        bind(breaker_failing=int)
    with pytest.raises(TypeError, match="must be a TimeoutError subclass"):
        bind(timeout_error=ValueError)
    with pytest.raises(TypeError):
        bind(1)  # keyword-only


# ------------------------------------------------------------------------------------------
# Backoff, RetryBudget, TokenBucket


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": CONST, "a": -1.0}, r"first delay \(a\)"),
        ({"kind": EXPO, "a": 1.0, "b": 0.5}, r"growth parameter \(b\)"),
        ({"kind": SOFTEXP, "a": 1.0, "b": 1.0, "c": 0.0}, r"scaling parameter \(c\)"),
        ({"kind": CONST, "a": 2.0, "max_delay": 1.0}, "maximum delay"),
        ({"kind": INTERVAL, "seq": []}, "delay sequence"),
        ({"kind": INTERVAL, "seq": [1.0, math.nan]}, "delay sequence"),
        ({"kind": 99}, "kind or jitter"),
    ],
)
def test_backoff_names_the_bad_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"invalid backoff: bad {field}"):
        Backoff(**kwargs)


def test_backoff_checks_in_python_and_the_core_keeps_its_contract() -> None:
    # Backoff(kind, ...) is checked in Python (the value shown); _native.Backoff keeps only
    # the core's check, under one message, for direct use.
    with pytest.raises(ValueError, match=r"bad first delay \(a\): must be finite and >= 0, got -1"):
        Backoff(CONST, a=-1)
    with pytest.raises(TypeError, match="invalid backoff: b must be a number, not str"):
        Backoff(EXPO, a=1.0, b="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"out of the core's range \(growth parameter \(b\)\)"):
        _native.Backoff(EXPO, 0, 1.0, 0.5)
    assert Backoff(EXPO, a=1.0, b=2.0, max_delay=3.0).delays(4) == [1.0, 2.0, 3.0, 3.0]


def test_schedules_check_their_parameters_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A schedule names its own parameters; it does not run Backoff(kind, ...)'s checks again.
    def refuse(*args: object) -> None:
        raise AssertionError("checked twice")

    monkeypatch.setattr(backoffs, "_check_spec", refuse)
    assert backoffs.expo(min_delay_secs=1, max_delay_secs=2).delays(3) == [1.0, 2.0, 2.0]
    assert backoffs.interval([0.5]).delays(2) == [0.5, 0.5]
    assert backoffs.softexp(median_delay_secs=1).delays(1)[0] >= 0
    with pytest.raises(AssertionError, match="checked twice"):
        Backoff(CONST, a=1.0)


def test_backoff_seq_must_hold_numbers() -> None:
    with pytest.raises(TypeError, match="seq must be a sequence of numbers"):
        Backoff(INTERVAL, seq=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Backoff(INTERVAL, seq=[1.0, "2"])  # type: ignore[list-item]


def test_backoff_interval_cycles_and_counts() -> None:
    it: Any = iter(_native.Backoff(INTERVAL, 0, 0.0, 0.0, 0.0, math.inf, (0.5, 1.5)))
    assert it.count == 0
    assert [next(it) for _ in range(5)] == [0.5, 1.5, 0.5, 1.5, 0.5]
    assert it.count == 5
    assert iter(it) is it


def test_apply_jitter_checks_and_bounds() -> None:
    apply: Any = _native.Backoff.apply_jitter
    with pytest.raises(TypeError, match=r"apply_jitter\(kind, delay\)"):
        apply(1)
    with pytest.raises(ValueError, match="unknown jitter kind"):
        apply(7, 1.0)
    with pytest.raises(TypeError):
        apply("full", 1.0)
    with pytest.raises(TypeError):
        apply(1, "1.0")
    assert apply(0, 2.5) == 2.5
    for _ in range(50):
        assert 0.0 <= apply(1, 2.0) <= 2.0
        assert 1.0 <= apply(2, 2.0) <= 2.0


def test_native_budget_refuses_bad_windows_and_rates() -> None:
    for ttl in (0.0, -1.0, math.inf, math.nan, 2e9):
        with pytest.raises(ValueError, match="RetryBudget: out of the core's range"):
            _native.RetryBudget(0.1, 1.0, ttl)
    with pytest.raises(ValueError, match="RetryBudget: out of the core's range"):
        _native.RetryBudget(-0.1, 1.0, 1.0)
    with pytest.raises(ValueError, match="RetryBudget: out of the core's range"):
        _native.RetryBudget(0.1, math.inf, 1.0)


def test_native_budget_allows_floor_then_ratio(clock: FakeClock) -> None:
    budget = _native.RetryBudget(0.5, 0.0, 10.0)
    assert budget.available() == 0.0
    assert not budget.try_withdraw()
    for _ in range(4):
        budget.deposit()
    assert budget.available() == 2.0
    assert budget.try_withdraw()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    clock.advance(11.0)  # every deposit and withdrawal has left the window
    assert budget.available() == 0.0


def test_native_token_bucket(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="TokenBucket: out of the core's range"):
        _native.TokenBucket(0, 1)
    with pytest.raises(ValueError, match="TokenBucket: out of the core's range"):
        _native.TokenBucket(1_000, 0)
    bucket = _native.TokenBucket(1_000_000_000, 2)  # one token a second, burst 2
    assert bucket.try_take() == 0.0
    assert bucket.try_take() == 0.0
    assert bucket.try_take() == pytest.approx(1.0)
    clock.advance(0.25)
    assert bucket.try_take() == pytest.approx(0.75)
    clock.advance(0.75)
    assert bucket.try_take() == 0.0


# ------------------------------------------------------------------------------------------
# Rate limiters


class _Colliding:
    """Keys that all share one hash; comparing two different ones fails when `angry`."""

    def __init__(self, name: str, angry: bool = False) -> None:
        self.name = name
        self.angry = angry

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        if self.angry or (isinstance(other, _Colliding) and other.angry):
            raise LookupError(f"cannot compare {self.name}")
        return isinstance(other, _Colliding) and other.name == self.name


async def test_keyed_limiter_propagates_a_failing_key_comparison(clock: FakeClock) -> None:
    limiter: Any = tokenbucket(1, 60, key=lambda k: k, max_keys=4)

    @limiter
    async def call(key: object) -> str:
        return "ok"

    alice = _Colliding("alice")
    assert await call(alice) == "ok"
    # A new key of the same hash is compared with alice: the comparison's error propagates,
    # and neither key is admitted nor stored.
    with pytest.raises(LookupError, match="cannot compare"):
        await call(_Colliding("mallory", angry=True))
    with pytest.raises(LookupError):
        limiter.retry_after(_Colliding("mallory", angry=True))
    assert limiter.stats()["keys"] == 1
    # alice herself is still limited; another colliding key gets its own bucket.
    with pytest.raises(RateLimitExceeded):
        await call(_Colliding("alice"))
    assert await call(_Colliding("bob")) == "ok"


async def test_keyed_limiter_unhashable_key_raises_type_error(clock: FakeClock) -> None:
    limiter: Any = tokenbucket(1, 60, key=lambda k: k, max_keys=4)

    @limiter
    async def call(key: object) -> str:
        return "ok"

    with pytest.raises(TypeError, match="unhashable"):
        await call([1, 2])
    with pytest.raises(TypeError, match="unhashable"):
        limiter.try_acquire([1, 2])
    assert limiter.stats()["keys"] == 0


async def test_limiter_key_argument_checks(clock: FakeClock) -> None:
    plain: Any = tokenbucket(1, 60)
    keyed: Any = tokenbucket(1, 60, key=lambda k: k)
    with pytest.raises(TypeError, match="key= is only for a keyed limiter"):
        plain.try_acquire("alice")
    with pytest.raises(TypeError, match="key= is only for a keyed limiter"):
        plain.retry_after("alice")
    with pytest.raises(TypeError, match="a keyed limiter needs key="):
        keyed.try_acquire()
    with pytest.raises(TypeError, match="a keyed limiter needs key="):
        keyed.retry_after()
    with pytest.raises(TypeError, match="a keyed limiter needs a key"):
        async with keyed:
            pass
    # Absent keys are not limited; a spent one is, for the refill time.
    assert keyed.retry_after("alice") == 0.0
    assert keyed.try_acquire("alice")
    assert not keyed.try_acquire("alice")
    assert keyed.retry_after("alice") == pytest.approx(60.0)
    assert keyed.retry_after("bob") == 0.0


async def test_keyed_waiter_cancelled_gives_its_place_back(clock: FakeClock) -> None:
    limiter: Any = tokenbucket(1, 10, key=lambda k: k, max_wait=100)
    assert limiter.try_acquire("alice")
    waiter = asyncio.ensure_future(limiter.acquire("alice"))
    await asyncio.sleep(0)
    assert not waiter.done()
    assert limiter.retry_after("alice") == pytest.approx(20.0)  # behind the waiter's place
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    # The waiter's reservation came back: the next one is 10 s away again, not 20 s.
    assert limiter.retry_after("alice") == pytest.approx(10.0)
    clock.advance(10.0)
    assert limiter.try_acquire("alice")


async def test_give_back_of_a_forgotten_or_stale_reservation_does_nothing(
    clock: FakeClock,
) -> None:
    keyed: Any = tokenbucket(1, 10, key=lambda k: k, max_wait=100)
    ticket = keyed._acquire("alice")
    assert ticket is None  # a token at once
    due, a, b = keyed._acquire("alice")
    assert due == _native.now_ns() + 10_000_000_000  # the core's time (the clock is anchored)
    # Another key's give-back, or one with the wrong reset count, changes nothing.
    assert not keyed._give_back(a, b, "bob")
    assert not keyed._give_back(a, b + 1, "alice")
    assert keyed._give_back(a, b, "alice")
    assert not keyed._give_back(a, b, "alice")  # only once
    with pytest.raises(TypeError, match="unhashable"):
        keyed._give_back(a, b, [1])


async def test_sliding_window_retry_after_and_refusal(clock: FakeClock) -> None:
    limiter: Any = slidingwindow(2, 10)
    assert limiter.retry_after() == 0.0
    assert limiter.try_acquire()
    clock.advance(4.0)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    # The oldest admission (at 0) leaves the window at 10.
    assert limiter.retry_after() == pytest.approx(6.0)
    clock.advance(6.0)
    assert limiter.retry_after() == 0.0
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    assert limiter.retry_after() == pytest.approx(4.0)


async def test_limiter_refusal_is_reported_to_listeners(clock: FakeClock) -> None:
    seen: list[float] = []

    class Listener:
        def on_rate_limited(self, limiter: object, retry_after: float) -> None:
            seen.append(retry_after)

    limiter: Any = tokenbucket(1, 5, listeners=[Listener()])
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    with pytest.raises(RateLimitExceeded) as info:
        await limiter.acquire()
    assert info.value.retry_after == pytest.approx(5.0)
    assert seen == [pytest.approx(5.0), pytest.approx(5.0)]
    assert limiter.stats()["rejected"] == 2


# ------------------------------------------------------------------------------------------
# Circuit breaker


class _StopOnRecovering:
    """A listener whose on_recovering interrupts (SystemExit propagates from listeners)."""

    def __init__(self) -> None:
        self.armed = True

    def on_recovering(self, breaker: object, old: object, new: object) -> None:
        if self.armed:
            self.armed = False
            raise SystemExit("stop")


def _tripped_breaker(listener: object) -> Any:
    return CircuitBreaker(
        failure_threshold=1,
        recovery_time=10,
        recovery_threshold=1,
        half_open_max_calls=1,
        listeners=[listener],
    )


async def test_interrupting_listener_frees_the_probe_of_a_block(clock: FakeClock) -> None:
    breaker = _tripped_breaker(_StopOnRecovering())
    with pytest.raises(ValueError, match="boom"):
        async with breaker:
            raise ValueError("boom")
    assert breaker.state == BreakerState.failing
    clock.advance(10)
    # The move to recovering took the only probe slot, then its listener interrupted: the
    # interruption propagates and the slot is free again.
    with pytest.raises(SystemExit):
        async with breaker:
            pytest.fail("the block must not run")
    assert breaker.stats()["probes_in_flight"] == 0
    async with breaker:
        pass
    assert breaker.state == BreakerState.working


async def test_interrupting_listener_on_a_decorated_call(clock: FakeClock) -> None:
    breaker = _tripped_breaker(_StopOnRecovering())
    ran: list[int] = []

    @breaker
    async def call(fail: bool) -> int:
        ran.append(1)
        if fail:
            raise ValueError("boom")
        return 1

    with pytest.raises(ValueError, match="boom"):
        await call(True)
    clock.advance(10)
    with pytest.raises(SystemExit):
        await call(False)
    assert ran == [1]
    assert breaker.stats()["probes_in_flight"] == 0
    assert await call(False) == 1
    assert breaker.state == BreakerState.working


def test_breaker_failing_keywords() -> None:
    exc = BreakerFailing(message="open", retry_after=1.5)
    assert exc.args == ("open",)
    assert exc.retry_after == 1.5
    with pytest.raises(TypeError, match="unexpected keyword argument 'after'"):
        BreakerFailing(after=1.0)  # type: ignore[call-arg]


async def test_breaker_block_protocol_misuse(clock: FakeClock) -> None:
    breaker: Any = CircuitBreaker(failure_threshold=1)
    with pytest.raises(TypeError, match="__aexit__ takes 3 arguments"):
        await breaker.__aexit__(None, None)
    with pytest.raises(RuntimeError, match="without a matching __aenter__"):
        await breaker.__aexit__(None, None, None)
    await breaker.__aenter__()
    with pytest.raises(TypeError, match="exc must be an exception or None"):
        await breaker.__aexit__(ValueError, "not an exception", None)
    # The entry ended without an outcome: nothing was recorded.
    assert breaker.stats()["consecutive_failures"] == 0
    assert breaker.state == BreakerState.working
    with pytest.raises(TypeError, match="takes 3 arguments"):
        breaker._exit(0, 0)
    with pytest.raises(TypeError, match="exc must be an exception or None"):
        breaker._exit(breaker._enter(), 0, "nope")
    with pytest.raises(OverflowError):
        breaker._exit(-1, 0, None)


def test_breaker_block_driven_outside_a_loop() -> None:
    breaker: Any = CircuitBreaker(failure_threshold=1)
    # No running loop: the entry is kept under no task, and its failure still counts.
    enter = breaker.__aenter__()
    with pytest.raises(StopIteration):
        enter.__await__().__next__()
    leave = breaker.__aexit__(ValueError, ValueError("x"), None)
    with pytest.raises(StopIteration):
        leave.__await__().__next__()
    assert breaker.state == BreakerState.failing


# ------------------------------------------------------------------------------------------
# Fallback, fail-fast, feature toggle


async def test_fallback_handler_gets_every_argument() -> None:
    seen: list[tuple[Any, ...]] = []

    def handler(exc: BaseException, *args: Any, **kwargs: Any) -> str:
        seen.append((type(exc), args, kwargs))
        return "fallback"

    @fallback(handler)
    async def call(a: int, b: int, c: int, d: int, e: int, f: int, *, g: int) -> str:
        raise ValueError("down")

    # More arguments than the binding passes on its stack (it allocates for them).
    assert await call(1, 2, 3, 4, 5, 6, g=7) == "fallback"
    assert seen == [(ValueError, (1, 2, 3, 4, 5, 6), {"g": 7})]


async def test_fallback_handler_error_shows_what_it_handled() -> None:
    def handler(exc: BaseException) -> str:
        raise KeyError("handler broke")

    @fallback(handler)
    async def call() -> str:
        raise ValueError("down")

    with pytest.raises(KeyError) as info:
        await call()
    assert isinstance(info.value.__context__, ValueError)
    assert str(info.value.__context__) == "down"


class _Interrupting:
    """A listener that interrupts (SystemExit) on the events named."""

    def __init__(self, *events: str) -> None:
        for name in events:
            setattr(self, name, self._stop)

    def _stop(self, *args: Any) -> None:
        raise SystemExit("stop")


async def test_failfast_interrupting_listeners(clock: FakeClock) -> None:
    latch = failfast(
        failure_threshold=1,
        recovery_time=60,
        listeners=[_Interrupting("on_failfast_open", "on_failfast_rejected")],
    )

    @latch
    async def call() -> None:
        raise ValueError("down")

    # The failure opened the latch; its listener's interruption replaces FailFastOpen.
    with pytest.raises(SystemExit):
        await call()
    assert latch.state == "open"
    with pytest.raises(SystemExit):
        await call()
    assert latch.stats()["rejected"] == 1
    latch.close()
    with pytest.raises(SystemExit):
        latch.open()
    assert latch.state == "open"


async def test_failfast_exit_takes_an_exception_or_none(clock: FakeClock) -> None:
    latch: Any = failfast(failure_threshold=2, recovery_time=60)
    with pytest.raises(TypeError, match="_exit takes an exception or None"):
        latch._exit("boom")
    latch._exit(ValueError("x"))
    with pytest.raises(FailFastOpen) as info:
        latch._exit(ValueError("y"))
    assert isinstance(info.value.__cause__, ValueError)
    assert latch.state == "open"


async def test_toggle_rollout_key_errors(clock: FakeClock) -> None:
    toggle: Any = FeatureToggle(rollout=50, key=lambda user: user)

    @toggle
    async def call(user: object) -> str:
        return "ran"

    with pytest.raises(TypeError, match="a rollout key must be a str, bytes or int, not float"):
        await call(1.5)
    with pytest.raises(TypeError, match="a rollout key must be a str, bytes or int"):
        toggle.in_rollout(1.5)
    with pytest.raises(UnicodeEncodeError):
        toggle.in_rollout("\ud800")
    # Equal keys of each kind land in the same bucket every time.
    assert toggle.in_rollout(12345) == toggle.in_rollout(12345)
    assert toggle.in_rollout(b"alice") == toggle.in_rollout(b"alice")

    def broken(user: object) -> str:
        raise LookupError("no key")

    keyless: Any = FeatureToggle(rollout=50, key=broken)
    with pytest.raises(LookupError, match="no key"):
        await keyless(call)("bob")
    assert keyless.stats()["disabled"] == 0


async def test_toggle_sync_predicate_returning_an_awaitable_is_refused() -> None:
    async def later() -> bool:
        return True

    def predicate() -> Any:
        return later()

    toggle: Any = FeatureToggle(predicate=predicate)

    @toggle
    async def call() -> str:
        return "ran"

    with pytest.raises(TypeError, match="returned an awaitable"):
        await call()


async def test_toggle_flag_checks_and_interrupting_listener() -> None:
    toggle: Any = FeatureToggle(listeners=[_Interrupting("on_feature_toggled")])
    with pytest.raises(TypeError, match="enabled must be a bool, not int"):
        toggle.enabled = 1
    with pytest.raises(AttributeError, match="enabled cannot be deleted"):
        del toggle.enabled
    with pytest.raises(SystemExit):
        toggle.disable()
    assert toggle.enabled is False  # the change happened before the listener ran
    with pytest.raises(TypeError, match=r"_decide\(passed, args: tuple, kwargs: dict\)"):
        toggle._decide(True, [], {})


# ------------------------------------------------------------------------------------------
# _configure of the C bases refuses what the Python layer would never pass


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "message"),
    [
        (lambda: _native.Outcome(0), {"on": [ValueError]}, TypeError, "on must be a tuple"),
        (lambda: _native.Retry(), {"on": [ValueError]}, TypeError, "on must be a tuple"),
        (lambda: _native.Retry(), {"budget": 1}, TypeError, "budget must be a RetryBudget"),
        (lambda: _native.Retry(), {"immediate": -2}, ValueError, "immediate must be >= -1"),
        (lambda: _native.Fallback(), {"on": [ValueError]}, TypeError, "on must be a tuple"),
        (lambda: _native.Fallback(), {"call_answer": True}, TypeError, "answer must be callable"),
        (
            lambda: _native.Fallback(),
            {"answer": 1, "call_answer": True},
            TypeError,
            "answer must be callable",
        ),
        (lambda: _native.FailFast(), {"on": 1}, TypeError, "on must be a tuple"),
        (lambda: _native.FailFast(), {"recovery_ns": 0}, ValueError, "out of the core's range"),
        (lambda: _native.FeatureToggle(), {"key": 1}, TypeError, "predicate and key must be"),
        (lambda: _native.Breaker(), {"on": 1}, TypeError, "on must be a tuple"),
        (lambda: _native.Breaker(), {"mode": 3}, ValueError, "inconsistent"),
        (lambda: _native.Breaker(), {"mode": -1}, ValueError, "inconsistent"),
        (lambda: _native.Breaker(), {"half_open_max_calls": 0}, ValueError, "inconsistent"),
    ],
)
def test_native_configure_refuses(
    make: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        make()._configure(**kwargs)


def test_native_outcome_pattern_range() -> None:
    with pytest.raises(ValueError, match="pattern index 99 out of range"):
        _native.Outcome(99)
    with pytest.raises(ValueError, match="pattern index -1 out of range"):
        _native.Outcome(-1)


# ------------------------------------------------------------------------------------------
# The guarded call's coroutine protocol


class _PlainAwaitable:
    """An awaitable whose iterator has no throw() or close(): it yields once, then returns."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __await__(self) -> Any:
        return iter(self._steps())

    def _steps(self) -> list[Any]:
        return [None]


def _guarded_plain(value: object) -> Any:
    latch = failfast(failure_threshold=3)

    # Declared async (as compiled coroutines are) while returning another kind of awaitable.
    @inspect.markcoroutinefunction
    def fn() -> Any:
        return _PlainAwaitable(value)

    return latch, latch(fn)


def test_guarded_call_throw_arguments_and_repr() -> None:
    latch, fn = _guarded_plain(1)
    call = fn()
    assert repr(call).endswith(", fresh>")
    with pytest.raises(TypeError, match="throw expected 1 to 3 arguments"):
        call.throw()
    with pytest.raises(TypeError, match="throw expected 1 to 3 arguments"):
        call.throw(ValueError, None, None, None)
    assert call.send(None) is None  # the plain iterator's one step
    # Its iterator has no throw(): the exception ends it, as a failure of the call.
    with pytest.raises(KeyError, match="thrown"):
        call.throw(KeyError("thrown"))
    assert latch.stats()["failures"] == 1
    assert repr(call).endswith(", done>")
    # Finished: a thrown exception surfaces as is, as for a finished coroutine.
    with pytest.raises(LookupError):
        call.throw(LookupError)
    with pytest.raises(LookupError, match="given"):
        call.throw(LookupError, LookupError("given"))
    with pytest.raises(TypeError, match="exceptions must derive from BaseException"):
        call.throw("not an exception")  # type: ignore[arg-type]
    call.close()


def test_guarded_call_close_of_a_plain_awaitable() -> None:
    latch, fn = _guarded_plain(1)
    call = fn()
    assert call.send(None) is None
    call.close()  # nothing to close inside: quiet, and no outcome recorded
    assert latch.stats()["failures"] == 0
    assert repr(call).endswith(", done>")


def test_guarded_call_of_a_non_awaitable_is_a_type_error() -> None:
    latch = failfast(failure_threshold=3)

    @inspect.markcoroutinefunction
    def fn() -> int:
        return 42

    guarded = latch(fn)
    for _ in range(3):
        with pytest.raises(TypeError, match="expected an awaitable, got int"):
            guarded()
    # The protocol error comes at the call, before the latch judges any outcome.
    assert latch.state == "closed"
    assert latch.stats()["failures"] == 0


# ------------------------------------------------------------------------------------------
# Event dispatch


async def test_a_failing_dispatcher_never_breaks_the_call(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))

    def broken_emit(component: object, method: str, args: tuple[Any, ...]) -> None:
        raise RuntimeError(f"dispatch of {method} failed")

    def broken_resolve(component: object, method: str) -> None:
        raise RuntimeError(f"dispatch of {method} failed")

    class Listener:
        def on_rate_limited(self, limiter: object, retry_after: float) -> None:
            pytest.fail("the broken dispatcher stands in for every listener")

    limiter: Any = tokenbucket(1, 5, listeners=[Listener()])
    _native._bind(emit=broken_emit, resolve=broken_resolve)
    try:
        assert limiter.try_acquire()
        assert not limiter.try_acquire()  # the refusal is still answered
    finally:
        _native._bind(emit=events.emit, resolve=events.resolve)
    assert [str(e) for e in reported] == ["dispatch of on_rate_limited failed"]
    assert limiter.stats()["rejected"] == 1


# ------------------------------------------------------------------------------------------
# Cache keys


class _Key:
    """A cache key of a fixed hash whose comparison can fail or clear the cache."""

    def __init__(self, name: str, *, angry: bool = False, on_eq: Any = None) -> None:
        self.name = name
        self.angry = angry
        self.on_eq = on_eq

    def __hash__(self) -> int:
        return 11

    def __eq__(self, other: object) -> bool:
        if self.angry or (isinstance(other, _Key) and other.angry):
            raise LookupError("cannot compare")
        if self.on_eq is not None:
            hook, self.on_eq = self.on_eq, None
            hook()
        return isinstance(other, _Key) and other.name == self.name


async def test_cache_key_comparison_error_propagates() -> None:
    calls: list[str] = []

    @cache
    async def get(key: _Key) -> str:
        calls.append(key.name)
        return key.name

    assert await get(_Key("a")) == "a"
    with pytest.raises(LookupError, match="cannot compare"):
        await get(_Key("b", angry=True))
    assert await get(_Key("a")) == "a"
    assert calls == ["a"]


async def test_cache_lookup_survives_a_comparison_that_clears_it() -> None:
    calls: list[str] = []
    store = Cache()

    @store
    async def get(key: _Key) -> str:
        calls.append(key.name)
        return key.name.upper()

    stored = _Key("a")
    assert await get(stored) == "A"
    assert await get(_Key("b")) == "B"
    # Comparing with the stored key empties the cache (and frees that key) under the lookup:
    # it starts over, finds nothing, and calls the function.
    stored.on_eq = store.clear
    del stored
    assert await get(_Key("a")) == "A"
    assert calls == ["a", "b", "a"]
    assert await get(_Key("a")) == "A"  # stored again
    assert calls == ["a", "b", "a"]


async def test_cache_keyword_keys_match_by_name_in_any_order() -> None:
    calls: list[tuple[Any, ...]] = []

    @cache
    async def get(a: int, **kw: int) -> int:
        calls.append((a, sorted(kw.items())))
        return a + sum(kw.values())

    assert await get(1, b=2, c=3) == 6
    assert await get(1, c=3, b=2) == 6  # the same call
    assert await get(1, b=2, d=3) == 6  # another keyword: another key
    assert await get(1, b=2) == 3  # fewer keywords: another key
    assert await get(2, b=2, c=3) == 7
    assert len(calls) == 4


async def test_cache_positional_keys_of_different_lengths() -> None:
    calls: list[tuple[int, ...]] = []

    @cache
    async def get(*args: int) -> int:
        calls.append(args)
        return sum(args)

    assert await get(1, 2) == 3
    assert await get(1, 2, 0) == 3  # equal sum, different key
    assert await get(1, 2) == 3
    assert calls == [(1, 2), (1, 2, 0)]


async def test_waiting_call_with_many_arguments(clock: FakeClock, instant: None) -> None:
    limiter: Any = tokenbucket(1, 2, max_wait=10)
    seen: list[tuple[Any, ...]] = []

    @limiter
    async def call(*args: int, **kwargs: int) -> float:
        seen.append((args, kwargs))
        return clock.now()

    assert await call(1, 2, 3, 4, 5, 6, 7, x=8) == 0.0
    # The second call waits its turn (2 s) and still gets every argument.
    assert await call(9, 10, 11, 12, 13, 14, 15, y=16, z=17) == 2.0
    assert seen == [
        ((1, 2, 3, 4, 5, 6, 7), {"x": 8}),
        ((9, 10, 11, 12, 13, 14, 15), {"y": 16, "z": 17}),
    ]


async def test_limiter_block_refuses_or_waits(clock: FakeClock, instant: None) -> None:
    strict: Any = tokenbucket(1, 4)
    async with strict:
        pass
    with pytest.raises(RateLimitExceeded) as info:
        async with strict:
            pytest.fail("refused: the block must not run")
    assert info.value.retry_after == pytest.approx(4.0)
    patient: Any = slidingwindow(1, 3, max_wait=5)
    async with patient:
        pass
    async with patient:
        assert clock.now() == 3.0
    assert patient.stats()["admitted"] == 2


def test_unkeyed_limiter_key_stats_and_slow_path_arguments() -> None:
    limiter: Any = tokenbucket(1, 4)
    assert limiter._key_stats() == (0, 0, 0, 0)
    with pytest.raises(TypeError, match=r"_call_slow\(fn, \*args, \*\*kwargs\)"):
        limiter._call_slow()


@pytest.mark.parametrize(
    ("keyed", "kwargs", "error", "message"),
    [
        # LimitOptions names each bad parameter; _configure keeps the core's contracts and the
        # sizes it allocates, for direct _native use.
        (False, {"max_wait_ns": -1}, ValueError, "out of the core's range"),
        (False, {"interval_ns": 0}, ValueError, "out of the core's range"),
        (False, {"key": len, "max_keys": 2}, TypeError, "Limiter takes no key"),
        (True, {}, TypeError, "KeyedLimiter needs key"),
        (True, {"key": len, "sliding": True}, TypeError, "has no sliding form"),
        (True, {"key": len, "max_keys": 0}, ValueError, "out of the core's range"),
        (True, {"key": len, "max_keys": 2**31}, ValueError, "out of the core's range"),
        (False, {"sliding": True, "burst": 2**24 + 1}, ValueError, "out of the core's range"),
        (False, {"sliding": True, "window_ns": 0}, ValueError, "out of the core's range"),
    ],
)
def test_native_limiter_configure_refuses(
    keyed: bool, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    limiter: Any = _native.KeyedLimiter() if keyed else _native.Limiter()
    with pytest.raises(error, match=message):
        limiter._configure(**kwargs)


def test_native_limiter_configures_once() -> None:
    limiter: Any = _native.Limiter()
    limiter._configure(interval_ns=1000, burst=1)
    with pytest.raises(RuntimeError, match="limiter already configured"):
        limiter._configure(interval_ns=1000, burst=1)


# ------------------------------------------------------------------------------------------
# Timeout scopes


async def test_timeout_scope_state_errors() -> None:
    policy = Timeout(60)
    async with policy as scope:
        with pytest.raises(ValueError, match="when must not be NaN"):
            scope.reschedule(math.nan)
        with pytest.raises(TypeError):
            scope.reschedule("soon")  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="Timeout has already been entered"):
            async with scope:  # type: ignore[attr-defined]
                pass
        when = scope.when()
        assert when is not None
        scope.reschedule(math.inf)
        assert scope.when() == math.inf
        scope.reschedule(None)
        assert scope.when() is None
        scope.reschedule(when)
        assert scope.when() == when
    assert not scope.expired()
    with pytest.raises(RuntimeError, match="Cannot change state of finished Timeout"):
        scope.reschedule(None)


async def test_timeout_exit_without_enter() -> None:
    policy: Any = Timeout(60)
    with pytest.raises(RuntimeError, match="without a matching __aenter__"):
        await policy.__aexit__(None, None, None)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        # CacheOptions names each bad parameter; the C index keeps its sizes and encodings.
        ((-1, -1, None), ValueError, "invalid cache configuration"),
        ((2**30 + 1, -1, None), ValueError, "invalid cache configuration"),
        ((0, -2, None), ValueError, "invalid cache configuration"),
        ((0, 5, None, -2), ValueError, "invalid cache configuration"),
    ],
)
def test_native_cache_configure_refuses(
    args: tuple[Any, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        _native.Cache()._configure(*args)


async def test_native_cache_cannot_be_reconfigured_in_use() -> None:
    store: Any = Cache(maxsize=4)

    @store
    async def get(x: int) -> int:
        return x

    assert await get(1) == 1
    with pytest.raises(RuntimeError, match="cache: configured while in use"):
        store._configure(8, -1, None)
    assert await get(1) == 1
    assert store.stats()["hit"] == 1


# ------------------------------------------------------------------------------------------
# Guards and series


async def test_guard_construction_and_block_form_checks() -> None:
    latch = failfast(failure_threshold=3)

    async def fn() -> int:
        return 1

    with pytest.raises(TypeError, match="fn must be callable, not int"):
        _native.Guard(1, latch)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy must be a failsafe policy, not object"):
        _native.Guard(fn, object())
    guarded: Any = latch(fn)
    assert repr(guarded).startswith("<failsafe guard ")
    with pytest.raises(TypeError, match="__aexit__ takes 3 arguments"):
        await guarded.__aexit__(None, None)
    async with guarded:  # the policy's own block form
        pass
    answered: Any = fallback(0)(fn)
    with pytest.raises(TypeError, match="have no async with form, so neither has their guard"):
        async with answered:
            pass


def test_series_attach_checks() -> None:
    series: Any = _native.Series()
    with pytest.raises(TypeError, match="attach\\(\\) takes a policy, not int"):
        series.attach(1)
    latch = failfast(failure_threshold=3)
    series.attach(latch)
    series.attach(latch)  # already a member: nothing changes
    with pytest.raises(ValueError, match="reports to another series already"):
        _native.Series().attach(latch)


def test_breaker_and_cache_facts_come_from_c() -> None:
    from failsafe import circuitbreaker as cb

    assert tuple(s.value for s in cb._STATES) == _native.BREAKER_STATES
    assert [_native.BREAKER_STATES[i] for i in range(3)] == ["working", "recovering", "failing"]
    bits = list(_native.BREAKER_TRANSITIONS.values())
    assert all(b & (b - 1) == 0 for b in bits)  # one bit each: _events ORs them
    assert len(set(bits)) == 3
    assert len(set(_native.BREAKER_EVENTS.values())) == 3
    assert set(_native.BREAKER_MODES) == {"consecutive", "count_window", "time_window"}
    assert len(set(_native.CACHE_PROBE.values())) == 3
    assert len(set(_native.CACHE_SETTLE.values())) == 3
