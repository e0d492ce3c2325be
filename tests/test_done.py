"""The one done-awaitable (failsafe._native.Done) and the one exception rules: every refusal
and every answer given without running the function is a Done, spent by its first await as a
coroutine is; refusals are built by one constructor and chained by one rule (a chain an
exception already carries is kept)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from failsafe import _native
from failsafe.bulkhead import Bulkhead, BulkheadFull
from failsafe.cache import cache
from failsafe.circuitbreaker import BreakerFailing, CircuitBreaker
from failsafe.failfast import FailFast, FailFastOpen, failfast
from failsafe.featuretoggle import FeatureDisabled, FeatureToggle, featuretoggle
from failsafe.ratelimit import RateLimitExceeded, tokenbucket
from failsafe.testing import FakeClock


async def ok() -> str:
    return "ok"


async def boom() -> str:
    raise ValueError("boom")


_held: list[asyncio.Task[str]] = []
_gates: list[asyncio.Event] = []


@pytest.fixture(autouse=True)
async def _release_held() -> Any:
    yield
    for gate in _gates:
        gate.set()
    for task in _held:
        assert await task == "held"
    _held.clear()
    _gates.clear()


# Each refusing pattern: (name, make) where make() returns (refused call maker, its error).
async def _breaker() -> tuple[Callable[[], Awaitable[str]], type[Exception]]:
    br = CircuitBreaker(failure_threshold=1, recovery_time=100.0)
    with pytest.raises(ValueError, match="boom"):
        await br(boom)()
    return br(ok), BreakerFailing


async def _failfast() -> tuple[Callable[[], Awaitable[str]], type[Exception]]:
    return failfast(predicate=lambda: True)(ok), FailFastOpen


async def _failfast_open() -> tuple[Callable[[], Awaitable[str]], type[Exception]]:
    latch = FailFast(failure_threshold=1, recovery_time=100.0)
    latch.open()
    return latch(ok), FailFastOpen


async def _bulkhead() -> tuple[Callable[[], Awaitable[str]], type[Exception]]:
    bh = Bulkhead(1, max_wait=0)
    gate = asyncio.Event()

    async def hold() -> str:
        await gate.wait()
        return "held"

    _held.append(asyncio.create_task(bh(hold)()))
    _gates.append(gate)
    await asyncio.sleep(0)
    return bh(ok), BulkheadFull


async def _ratelimit() -> tuple[Callable[[], Awaitable[str]], type[Exception]]:
    limited = tokenbucket(1, 60.0)(ok)
    assert await limited() == "ok"
    return limited, RateLimitExceeded


async def _toggle() -> tuple[Callable[[], Awaitable[str]], type[Exception]]:
    return featuretoggle(enabled=False)(ok), FeatureDisabled


REFUSERS: dict[
    str, Callable[[], Awaitable[tuple[Callable[[], Awaitable[str]], type[Exception]]]]
] = {
    "breaker": _breaker,
    "failfast": _failfast,
    "failfast open": _failfast_open,
    "bulkhead": _bulkhead,
    "ratelimit": _ratelimit,
    "featuretoggle": _toggle,
}


@pytest.mark.parametrize("pattern", sorted(REFUSERS))
async def test_a_refusal_is_a_done_spent_by_its_first_await(pattern: str, clock: FakeClock) -> None:
    refused, error = await REFUSERS[pattern]()
    aw = refused()
    assert type(aw) is _native.Done
    assert aw.__qualname__ == ok.__qualname__
    with pytest.raises(error):
        await aw
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        await aw


@pytest.mark.parametrize("pattern", sorted(REFUSERS))
async def test_a_refusal_awaited_while_handling_an_error_chains_to_it(
    pattern: str, clock: FakeClock
) -> None:
    refused, error = await REFUSERS[pattern]()
    handled = KeyError("handled")
    try:
        raise handled
    except KeyError:
        with pytest.raises(error) as info:
            await refused()
    assert info.value.__context__ is handled  # as a coroutine's raise would chain it
    assert info.value.__cause__ is None


async def test_a_cache_hit_is_a_done_spent_by_its_first_await() -> None:
    calls: list[int] = []

    @cache()
    async def f(x: int) -> list[int]:
        calls.append(x)
        return [x]

    first = await f(1)
    hit = f(1)
    assert type(hit) is _native.Done
    assert await hit is first
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        await hit
    assert calls == [1]


async def test_a_recycled_hit_never_reuses_a_stopiteration_still_held() -> None:
    @cache()
    async def f(x: int) -> list[int]:
        return [x]

    one, two = await f(1), await f(2)
    for _ in range(3):
        assert await f(1) is one  # recycles the Done and its StopIteration
    hit = f(1)
    with pytest.raises(StopIteration) as info:
        hit.send(None)
    held = info.value
    del hit, info
    for _ in range(3):
        assert await f(2) is two
    assert held.value is one

    @cache()
    async def nothing() -> None:
        return None

    for _ in range(3):
        assert await nothing() is None  # a hit on None ends without a StopIteration


async def test_an_async_with_entry_is_a_done_spent_by_its_first_await() -> None:
    br = CircuitBreaker(failure_threshold=5)
    entry = br.__aenter__()
    assert type(entry) is _native.Done
    assert await entry is br
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        await entry
    await br.__aexit__(None, None, None)


async def test_the_shared_none_answer_is_the_one_kept_done() -> None:
    # `__aenter__`s that answer None share one Done, which is never spent.
    bh = Bulkhead(10)
    first = bh.__aenter__()
    assert type(first) is _native.Done
    assert await first is None
    await bh.__aexit__(None, None, None)
    second = bh.__aenter__()
    assert second is first
    assert await second is None
    assert await second is None
    await bh.__aexit__(None, None, None)


def test_done_cannot_be_made_from_python() -> None:
    with pytest.raises(TypeError):
        _native.Done()  # type: ignore[call-arg]


# The chaining rule for a policy's own error raised beside the call's exception: a chain the
# error already carries is kept; only an error without one gets the call's exception.


def _own_chain_predicate(exc: BaseException) -> bool:
    try:
        raise LookupError("inside the predicate")
    except LookupError:
        raise TypeError("predicate failed")  # noqa: B904 - its context is its own chain


def _plain_predicate(exc: BaseException) -> bool:
    raise TypeError("predicate failed")


@pytest.mark.parametrize("pattern", sorted(REFUSERS))
async def test_a_refusal_made_while_handling_but_awaited_after_is_not_chained(
    pattern: str, clock: FakeClock
) -> None:
    # Chained where it is awaited (once), as a coroutine made there and awaited later would be.
    refused, error = await REFUSERS[pattern]()
    try:
        raise KeyError("handled")
    except KeyError:
        aw = refused()
    with pytest.raises(error) as info:
        await aw
    assert info.value.__context__ is None


def _breaker_with(on: Callable[[BaseException], bool]) -> Any:
    return CircuitBreaker(failure_threshold=5, on=on)


def _failfast_with(on: Callable[[BaseException], bool]) -> Any:
    return FailFast(failure_threshold=5, on=on)


@pytest.mark.parametrize("make", [_breaker_with, _failfast_with], ids=["breaker", "failfast"])
async def test_a_predicate_error_keeps_its_own_chain(make: Any) -> None:
    policy = make(_own_chain_predicate)
    with pytest.raises(TypeError) as info:
        await policy(boom)()
    assert isinstance(info.value.__context__, LookupError)  # kept, not overwritten


@pytest.mark.parametrize("make", [_breaker_with, _failfast_with], ids=["breaker", "failfast"])
async def test_a_predicate_error_without_a_chain_gets_the_calls_error(make: Any) -> None:
    policy = make(_plain_predicate)
    with pytest.raises(TypeError) as info:
        await policy(boom)()
    assert isinstance(info.value.__context__, ValueError)
    assert str(info.value.__context__) == "boom"


async def test_failfast_open_is_caused_by_the_failure_that_opened_it() -> None:
    ff = FailFast(failure_threshold=1, recovery_time=100.0)
    with pytest.raises(FailFastOpen) as info:
        await ff(boom)()
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.__context__ is info.value.__cause__


# Refusals whose message names the policy: formatted once per name, not per refusal.
NAMED: dict[str, tuple[Callable[[str], Any], str]] = {
    "failfast": (lambda name: FailFast(predicate=lambda: True, name=name), "fail-fast {} is open"),
    "featuretoggle": (
        lambda name: FeatureToggle(enabled=False, name=name),
        "feature {} is disabled",
    ),
}


@pytest.mark.parametrize("pattern", sorted(NAMED))
async def test_a_refusal_names_the_policy_by_its_current_name(pattern: str) -> None:
    make, message = NAMED[pattern]
    policy = make("first")
    refused = policy(ok)
    for name in ["first", "first", "second"]:
        policy._name = name
        with pytest.raises((FailFastOpen, FeatureDisabled), match=message.format(name)):
            await refused()
    assert policy.stats()[{"failfast": "rejected", "featuretoggle": "disabled"}[pattern]] == 3


class _Unshowable:
    def __str__(self) -> str:
        raise LookupError("no name to show")


@pytest.mark.parametrize("pattern", sorted(NAMED))
async def test_a_refusal_whose_message_cannot_be_made_raises_why(pattern: str) -> None:
    policy = NAMED[pattern][0]("named")
    policy._name = _Unshowable()
    with pytest.raises(LookupError, match="no name to show"):
        await policy(ok)()
    policy._name = "named"
    with pytest.raises((FailFastOpen, FeatureDisabled), match="named"):
        await policy(ok)()


async def test_a_breaker_refusal_keeps_its_one_message() -> None:
    br = CircuitBreaker(failure_threshold=1, recovery_time=100.0, name="svc")
    br.isolate()
    for _ in range(2):
        with pytest.raises(BreakerFailing, match=r"^Circuit Breaker is in the failing state$"):
            await br(ok)()


class _Undecided:
    def __bool__(self) -> bool:
        raise RuntimeError("no truth")


async def _later() -> bool:
    return True


def _raising_predicate() -> bool:
    raise KeyError("predicate broke")


PREDICATE_ERRORS: list[tuple[Callable[[], Any], type[Exception], str]] = [
    (_raising_predicate, KeyError, "predicate broke"),
    (lambda: _Undecided(), RuntimeError, "no truth"),
    (lambda: _later(), TypeError, "returned an awaitable"),
]


@pytest.mark.parametrize("predicate", PREDICATE_ERRORS, ids=["raises", "undecided", "awaitable"])
@pytest.mark.parametrize("pattern", ["failfast", "featuretoggle"])
async def test_a_sync_predicate_that_cannot_decide_fails_the_call_uncounted(
    pattern: str, predicate: tuple[Callable[[], Any], type[Exception], str]
) -> None:
    pred, error, message = predicate
    if pattern == "failfast":
        policy: Any = FailFast(predicate=pred)
        counter = "rejected"
    else:
        policy = FeatureToggle(predicate=pred)
        counter = "disabled"
    calls: list[str] = []

    async def fn() -> str:
        calls.append("ran")
        return "ran"

    with pytest.raises(error, match=message):
        await policy(fn)()
    assert calls == []
    assert policy.stats()[counter] == 0


class _Interrupting:
    def on_feature_disabled(self, toggle: Any) -> None:
        raise SystemExit("stop")


def test_a_listener_interrupting_a_toggle_refusal_interrupts_the_call_at_once() -> None:
    toggle: Any = FeatureToggle(enabled=False, listeners=[_Interrupting()])

    async def fn() -> str:
        return "ran"

    with pytest.raises(SystemExit, match="stop"):
        toggle(fn)()  # raised by the call, not deferred to the await
    assert toggle.stats()["disabled"] == 1


async def _hit() -> Any:
    @cache()
    async def f(x: int) -> list[int]:
        return [x]

    await f(1)
    hit = f(1)
    assert type(hit) is _native.Done
    return hit


async def test_a_done_thrown_into_before_its_first_send_raises_that_and_is_spent() -> None:
    hit = await _hit()
    with pytest.raises(KeyError, match="thrown"):
        hit.throw(KeyError("thrown"))
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        await hit
    hit = await _hit()
    with pytest.raises(LookupError):
        hit.throw(LookupError)  # a class is instantiated, as a coroutine does
    hit = await _hit()
    with pytest.raises(TypeError, match="throw expected 1 to 3 arguments"):
        hit.throw()
    with pytest.raises(TypeError, match="exceptions must derive from BaseException"):
        hit.throw("not an exception")


async def test_a_done_closed_before_its_first_send_drops_its_answer_or_refusal() -> None:
    hit = await _hit()
    assert hit.close() is None
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        await hit
    refused = featuretoggle(enabled=False)(ok)()
    assert type(refused) is _native.Done
    refused.close()  # the refusal is dropped, never raised
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        await refused


async def test_a_done_sent_a_value_refuses_it_and_is_spent() -> None:
    hit = await _hit()
    with pytest.raises(TypeError, match="can't send non-None value"):
        hit.send(1)
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        hit.send(None)


async def test_the_kept_done_survives_throw_and_close() -> None:
    bh = Bulkhead(10)
    kept = bh.__aenter__()
    with pytest.raises(KeyError):
        kept.throw(KeyError("k"))
    kept.close()
    assert await kept is None  # still answers: it is never spent
    await bh.__aexit__(None, None, None)


async def test_many_hits_at_once_each_answer_once() -> None:
    # More Done objects alive than the free list holds: fresh ones and recycled ones alike.
    @cache()
    async def f(x: int) -> list[int]:
        return [x]

    first = await f(1)
    hits = [f(1) for _ in range(100)]
    assert all(type(h) is _native.Done for h in hits)
    assert await asyncio.gather(*hits) == [first] * 100
    for h in hits[:3]:
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            await h
