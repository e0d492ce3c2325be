"""Every pattern stacked on every other, in both orders, on functions and on methods.

Each scenario builds fresh policies from the table below (each lets a passing call through)
and compares the stack with a small model of the documented reactions: retry retries,
fallback answers, hedge starts its next attempt at once after a failure, breaker and fail-fast
count what reaches them, the cache stores only results. Cancellation must cross both layers and
leave every policy idle; an inner layer's refusal must reach the outer one as the outcome.

Scenarios per ordered pair: success (and a cache hit), failure, an inner timeout firing,
cancellation while the function is suspended, while the call waits inside the inner layer
(queue, token, single flight, backoff, hedge race, async predicate or handler) or before its
first step, a call closed or dropped unawaited, a refusal by the inner layer, a hedged second
attempt winning through the other layer, asyncio.timeout around the stack. Then a 5- and a
10-pattern stack, and random stacks of up to 6 patterns (against the model; concurrent with
cancellations; with raising listeners).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies

from failsafe import _native, events
from failsafe.bulkhead import BulkheadFull, bulkhead
from failsafe.cache import cache
from failsafe.circuitbreaker import BreakerFailing, consecutive_breaker
from failsafe.failfast import FailFastOpen, failfast
from failsafe.fallback import fallback
from failsafe.featuretoggle import FeatureDisabled, featuretoggle
from failsafe.hedge import HedgeAllFailed, hedge
from failsafe.ratelimit import RateLimitExceeded, tokenbucket
from failsafe.retry import AttemptsExceeded, retry
from failsafe.timeout import TimeoutError as FsTimeoutError
from failsafe.timeout import timeout

FALLBACK = "fallback"
RETRIES = 2  # retry(attempts=2): up to 3 calls
HEDGES = 2  # hedge(attempts=2)
THRESHOLD = 10  # breaker and fail-fast: never reached by one call of a pair (at most 6 errors)


def _make(name: str, *, rejecting: bool = False) -> Any:
    """A fresh policy; rejecting: a configuration that can be made to refuse every call."""
    match name:
        case "retry":
            # The model retries refusals at once: no wait for the delay they carry (that is
            # test_signals.py's).
            return retry(attempts=RETRIES, backoff=0, retry_after=False)
        case "timeout":
            return timeout(5)
        case "fallback":
            return fallback(lambda exc, *args, **kwargs: FALLBACK, on=Exception)
        case "circuitbreaker":
            # recovery_time=0: a failing breaker admits its next call as a probe at once.
            return consecutive_breaker(
                failure_threshold=THRESHOLD,
                recovery_time=0,
                recovery_threshold=1,
                half_open_max_calls=1,
            )
        case "failfast":
            return failfast(failure_threshold=THRESHOLD)
        case "bulkhead":
            return bulkhead(1) if rejecting else bulkhead(10, 20)
        case "ratelimit":
            return tokenbucket(1, 3600) if rejecting else tokenbucket(1000, 1)
        case "cache":
            return cache(maxsize=16)
        case "hedge":
            return hedge(attempts=HEDGES, delay=5)
        case "featuretoggle":
            return featuretoggle(enabled=not rejecting)
    raise AssertionError(name)


PATTERNS = [
    "retry",
    "timeout",
    "fallback",
    "circuitbreaker",
    "failfast",
    "bulkhead",
    "ratelimit",
    "cache",
    "hedge",
    "featuretoggle",
]
PAIRS = list(itertools.permutations(PATTERNS, 2))
REJECTIONS: dict[str, type[Exception]] = {
    "circuitbreaker": BreakerFailing,
    "failfast": FailFastOpen,
    "bulkhead": BulkheadFull,
    "ratelimit": RateLimitExceeded,
    "featuretoggle": FeatureDisabled,
}
REJECTING_PAIRS = [(o, i) for o, i in PAIRS if i in REJECTIONS]
HOSTS = ["function", "method"]


def _pair_id(pair: tuple[str, ...]) -> str:
    return ">".join(pair)


@dataclass
class Leaf:
    """The guarded function's behaviour and what it saw."""

    mode: str = "ok"  # ok, fail, hang, first hangs, or gate (answers once gate is set)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0
    cleaned: int = 0
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    selves: list[object] = field(default_factory=list)

    async def body(self, x: int) -> int:
        self.calls += 1
        if self.mode == "gate":
            self.entered.set()
            await self.gate.wait()
        if self.mode == "hang" or (self.mode == "first hangs" and self.calls == 1):
            self.entered.set()
            try:
                await asyncio.Event().wait()
            finally:
                self.cleaned += 1
        await asyncio.sleep(0)  # every call suspends once
        if self.mode == "fail":
            raise ValueError(x)
        return x * 2


@dataclass
class Stack:
    call: Callable[[int], Awaitable[Any]]
    policies: dict[str, Any]
    leaf: Leaf
    host: object | None


def build(
    names: tuple[str, ...],
    host: str,
    rejecting: str | None = None,
    policies: dict[str, Any] | None = None,
) -> Stack:
    """names[0] outermost; on a method the stack decorates a function defined in a class.
    policies: ones to use instead of the table's."""
    leaf = Leaf()
    policies = {n: _make(n, rejecting=n == rejecting) for n in names} | (policies or {})

    if host == "function":

        async def fn(x: int) -> int:
            return await leaf.body(x)

        guarded: Any = fn
        for n in reversed(names):
            guarded = policies[n](guarded)
        return Stack(guarded, policies, leaf, None)

    class Service:
        async def get(self, x: int) -> int:
            leaf.selves.append(self)
            return await leaf.body(x)

    guarded = Service.__dict__["get"]
    for n in reversed(names):
        guarded = policies[n](guarded)
    Service.get = guarded  # type: ignore[method-assign]
    svc = Service()
    return Stack(svc.get, policies, leaf, svc)


# -- the model -----------------------------------------------------------------------------


@dataclass
class Seen:
    """What one layer saw over the calls the model ran."""

    calls: int = 0  # calls of this layer
    hits: int = 0  # answered from the cache (cache only)
    inner_ok: int = 0  # calls of the next layer that succeeded
    inner_err: int = 0  # ... that failed
    out_err: int = 0  # calls of this layer that ended with an error
    streak: int = 0  # failures of the next layer since its last success


class Model:
    """The documented reactions of each pattern, for calls that are not cancelled."""

    def __init__(
        self,
        names: tuple[str, ...],
        rejecting: str | None = None,
        leaf_error: type[Exception] = ValueError,
    ) -> None:
        self.names = names
        self.rejecting = rejecting
        self.leaf_error = leaf_error  # FsTimeoutError: the function hangs, the timeout fires
        self.seen = {n: Seen() for n in names}
        self.stored: dict[int, Any] = {}
        self.leaf_calls = 0

    def call(self, x: int, fails: bool) -> tuple[bool, Any]:
        """(ok, value or exception type) of one call."""
        return self._run(0, x, fails)

    def _run(self, i: int, x: int, fails: bool) -> tuple[bool, Any]:
        if i == len(self.names):
            self.leaf_calls += 1
            return (False, self.leaf_error) if fails else (True, x * 2)
        name = self.names[i]
        seen = self.seen[name]
        seen.calls += 1
        if name == self.rejecting:
            seen.out_err += 1
            return False, REJECTIONS[name]

        def inner() -> tuple[bool, Any]:
            ok, what = self._run(i + 1, x, fails)
            if ok:
                seen.inner_ok += 1
                seen.streak = 0
            else:
                seen.inner_err += 1
                seen.streak += 1
            return ok, what

        result: tuple[bool, Any]
        if name == "cache" and x in self.stored:
            seen.hits += 1
            result = True, self.stored[x]
        elif name in ("retry", "hedge"):
            tries = RETRIES + 1 if name == "retry" else HEDGES
            for _ in range(tries):
                result = inner()
                if result[0]:
                    break
            else:
                result = False, AttemptsExceeded if name == "retry" else HedgeAllFailed
        else:
            result = inner()
            if name == "fallback" and not result[0]:
                result = True, FALLBACK
            if name == "cache" and result[0]:
                self.stored[x] = result[1]
        if not result[0]:
            seen.out_err += 1
        return result


def check_against(stack: Stack, model: Model) -> None:
    """Every layer's counters are what the model's calls imply, and every layer is idle."""
    assert stack.leaf.calls == model.leaf_calls
    for name, s in model.seen.items():
        p = stack.policies[name]
        st = p.stats()
        refused = s.calls if name == model.rejecting else 0
        passed = s.calls - refused
        if name == "retry":
            assert st["attempt"] == s.inner_ok + s.inner_err - s.calls
            assert st["giveup"] == s.out_err
            assert st["success"] == s.calls - s.out_err
        elif name == "timeout":
            assert st["fired"] == (s.inner_err if model.leaf_error is FsTimeoutError else 0)
        elif name == "fallback":
            assert st["invoked"] == s.inner_err
        elif name == "circuitbreaker":
            assert st["failure"] == s.inner_err
            assert st["success"] == s.inner_ok
            assert st["rejected"] == refused
            assert st["probes_in_flight"] == 0
        elif name == "failfast":
            assert p.failures == s.streak
            assert st["rejected"] == refused
        elif name == "bulkhead":
            assert st["admitted"] == passed + (1 if refused else 0)  # + the holder's
            assert st["full"] == refused
            assert (st["running"], st["queued"]) == ((1, 0) if refused else (0, 0))
        elif name == "ratelimit":
            assert st["admitted"] == passed + (1 if refused else 0)  # + the token taken first
            assert st["rejected"] == refused
        elif name == "cache":
            assert st["hit"] == s.hits
            assert st["miss"] == s.calls - s.hits
            assert st["set"] == s.inner_ok
            assert st["size"] == len(model.stored)
            assert st["in_flight"] == 0
        elif name == "hedge":
            assert st["success"] == s.calls - s.out_err
            assert st["all_failed"] == s.out_err
            assert st["failure"] == s.inner_err
            assert st["hedged"] == s.inner_ok + s.inner_err - s.calls
            assert st["timeout"] == 0
        elif name == "featuretoggle":
            assert st["enabled"] == passed
            assert st["disabled"] == refused
    assert _native._timeout_pending() == 0


async def outcome(stack: Stack, x: int) -> tuple[bool, Any]:
    try:
        return True, await stack.call(x)
    except Exception as exc:  # the model compares the type
        return False, exc


def assert_outcome(got: tuple[bool, Any], expected: tuple[bool, Any]) -> None:
    ok, what = got
    if expected[0]:
        assert got == expected
    else:
        assert not ok, f"expected {expected[1].__name__}, got {what!r}"
        assert type(what) is expected[1], repr(what)


# -- scenarios -----------------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
async def test_success(pair: tuple[str, str]) -> None:
    for host in HOSTS:
        await _success(pair, host)


async def _success(pair: tuple[str, str], host: str) -> None:
    stack = build(pair, host)
    model = Model(pair)
    assert await stack.call(21) == 42
    assert model.call(21, fails=False) == (True, 42)
    assert stack.leaf.calls == 1
    check_against(stack, model)
    # A second call: answered by the cache where there is one, else the function runs again.
    assert await stack.call(21) == 42
    assert model.call(21, fails=False) == (True, 42)
    assert stack.leaf.calls == (1 if "cache" in pair else 2)
    check_against(stack, model)
    if stack.host is not None:
        assert all(s is stack.host for s in stack.leaf.selves)


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
async def test_failure(pair: tuple[str, str]) -> None:
    for host in HOSTS:
        await _failure(pair, host)


async def _failure(pair: tuple[str, str], host: str) -> None:
    stack = build(pair, host)
    stack.leaf.mode = "fail"
    model = Model(pair)
    expected = model.call(5, fails=True)
    got = await outcome(stack, 5)
    assert_outcome(got, expected)
    if not got[0] and type(got[1]) in (AttemptsExceeded, HedgeAllFailed):
        assert got[1].__cause__ is not None  # raised from the last failure
    check_against(stack, model)
    # The same call once the function recovers: nothing was cached, the counts go on.
    stack.leaf.mode = "ok"
    assert_outcome(await outcome(stack, 5), model.call(5, fails=False))
    check_against(stack, model)


@pytest.mark.parametrize("pair", [p for p in PAIRS if p[1] == "timeout"], ids=_pair_id)
async def test_inner_timeout_fires(pair: tuple[str, str]) -> None:
    for host in HOSTS:
        await _inner_timeout_fires(pair, host)


async def _inner_timeout_fires(pair: tuple[str, str], host: str) -> None:
    """The inner timeout's TimeoutError is a failure like any other to the outer layer (a real
    5 ms timer per attempt)."""
    stack = build(pair, host, policies={"timeout": timeout(0.005)})
    stack.leaf.mode = "hang"
    model = Model(pair, leaf_error=FsTimeoutError)
    assert_outcome(await outcome(stack, 5), model.call(5, fails=True))
    assert stack.leaf.cleaned == stack.leaf.calls
    check_against(stack, model)
    stack.leaf.mode = "ok"
    assert_outcome(await outcome(stack, 5), model.call(5, fails=False))
    check_against(stack, model)


async def _prepare_for_cancel(stack: Stack) -> None:
    breaker = stack.policies.get("circuitbreaker")
    if breaker is not None:
        # Failing, with a zero break: the cancelled call is the one probe allowed.
        for _ in range(THRESHOLD):
            with contextlib.suppress(ValueError):
                async with breaker:
                    raise ValueError
        assert breaker.state == "failing"


def check_idle_after_cancel(stack: Stack) -> None:
    for name, p in stack.policies.items():
        st = p.stats()
        if name == "retry":
            assert (st["attempt"], st["success"], st["giveup"]) == (0, 0, 0)
        elif name == "timeout":
            assert st["fired"] == 0
        elif name == "fallback":
            assert st["invoked"] == 0
        elif name == "circuitbreaker":
            assert st["state"] == "recovering"
            assert st["probes_in_flight"] == 0
            assert (st["success"], st["failure"], st["rejected"]) == (0, THRESHOLD, 0)
        elif name == "failfast":
            assert (p.failures, st["rejected"], p.is_open) == (0, 0, False)
        elif name == "bulkhead":
            assert (st["running"], st["queued"], st["admitted"]) == (0, 0, 1)
        elif name == "ratelimit":
            assert (st["admitted"], st["rejected"]) == (1, 0)
        elif name == "cache":
            assert (st["in_flight"], st["size"], st["miss"], st["set"]) == (0, 0, 1, 0)
        elif name == "hedge":
            assert all(v == 0 for k, v in st.items() if k in p.METRICS), st
        elif name == "featuretoggle":
            assert (st["enabled"], st["disabled"]) == (1, 0)
    assert _native._timeout_pending() == 0


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
async def test_cancelled_while_suspended(pair: tuple[str, str]) -> None:
    for host in HOSTS:
        await _cancelled_while_suspended(pair, host)


async def _cancelled_while_suspended(pair: tuple[str, str], host: str) -> None:
    stack = build(pair, host)
    await _prepare_for_cancel(stack)
    stack.leaf.mode = "hang"
    task = asyncio.create_task(stack.call(1))
    await stack.leaf.entered.wait()
    task.cancel("stop")
    with pytest.raises(asyncio.CancelledError) as info:
        await task
    assert info.value.args == ("stop",)  # the caller's own cancellation, message and all
    assert (stack.leaf.calls, stack.leaf.cleaned) == (1, 1)
    check_idle_after_cancel(stack)
    # Nothing held: the next call goes through (the breaker's probe slot is free again).
    stack.leaf.mode = "ok"
    assert await stack.call(1) == 2
    if "circuitbreaker" in pair:
        assert stack.policies["circuitbreaker"].state == "working"
    assert _native._timeout_pending() == 0


@pytest.mark.parametrize("pair", REJECTING_PAIRS, ids=_pair_id)
async def test_inner_rejection_reaches_outer(pair: tuple[str, str]) -> None:
    for host in HOSTS:
        await _inner_rejection_reaches_outer(pair, host)


async def _inner_rejection_reaches_outer(pair: tuple[str, str], host: str) -> None:
    outer, inner = pair
    stack = build(pair, host, rejecting=inner)
    refuser = stack.policies[inner]
    release = asyncio.Event()
    holder: asyncio.Task[None] | None = None
    match inner:
        case "circuitbreaker":
            refuser.isolate()
        case "failfast":
            refuser.open()
        case "ratelimit":
            assert refuser.try_acquire()
        case "bulkhead":

            async def hold() -> None:
                async with refuser:
                    await release.wait()

            holder = asyncio.create_task(hold())
            await asyncio.sleep(0)
            assert refuser.running == 1
    model = Model(pair, rejecting=inner)
    expected = model.call(3, fails=False)
    got = await outcome(stack, 3)
    assert_outcome(got, expected)
    if outer in ("retry", "hedge"):
        assert isinstance(got[1].__cause__, REJECTIONS[inner])
    assert stack.leaf.calls == 0
    check_against(stack, model)
    if holder is not None:
        release.set()
        await holder
        assert (refuser.running, refuser.queued) == (0, 0)


# -- longer stacks -------------------------------------------------------------------------


FIVE = ("fallback", "retry", "circuitbreaker", "bulkhead", "timeout")


async def test_five_pattern_stack() -> None:
    for host in HOSTS:
        await _five_pattern_stack(host)


async def _five_pattern_stack(host: str) -> None:
    breaker = consecutive_breaker(failure_threshold=4, recovery_time=60)
    stack = build(FIVE, host, policies={"circuitbreaker": breaker})
    fb, rt, cb, bh, to = (stack.policies[n] for n in FIVE)
    model = Model(FIVE)
    for x, fails in ((1, False), (2, True), (3, False)):
        stack.leaf.mode = "fail" if fails else "ok"
        assert_outcome(await outcome(stack, x), model.call(x, fails))
    check_against(stack, model)

    # Cancelled in the function: nothing counted, nothing held.
    stack.leaf.mode = "hang"
    task = asyncio.create_task(stack.call(4))
    await stack.leaf.entered.wait()
    assert (bh.running, _native._timeout_pending()) == (1, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (bh.running, bh.queued, _native._timeout_pending()) == (0, 0, 0)
    assert cb.stats()["failure"] == 3
    assert rt.stats()["giveup"] == 1
    assert fb.stats()["invoked"] == 1

    # Failures open the breaker: the retries inside the fallback then meet its refusals.
    stack.leaf.mode = "fail"
    calls = stack.leaf.calls
    assert await stack.call(5) == FALLBACK  # failures 1, 2, 3 in a row
    assert await stack.call(6) == FALLBACK  # the 4th opens it; two refusals
    assert stack.leaf.calls == calls + 4
    st = cb.stats()
    assert (st["state"], st["failure"], st["rejected"]) == ("failing", 3 + 4, 2)
    assert rt.stats()["giveup"] == 3
    assert fb.stats()["invoked"] == 3
    assert to.stats()["fired"] == 0
    assert (bh.running, bh.queued, bh.stats()["full"]) == (0, 0, 0)


TEN = (
    "featuretoggle",
    "cache",
    "fallback",
    "bulkhead",
    "ratelimit",
    "retry",
    "circuitbreaker",
    "failfast",
    "hedge",
    "timeout",
)


async def test_ten_pattern_stack_300_tasks() -> None:
    """Successes, failures and cancellations (running and queued) share one 10-pattern stack."""
    policies = {n: _make(n) for n in TEN}
    policies["bulkhead"] = bulkhead(50, 300)  # every call fits, many wait in the queue
    policies["circuitbreaker"] = consecutive_breaker(failure_threshold=10**6)
    policies["failfast"] = failfast(failure_threshold=10**6)
    policies["cache"] = cache(maxsize=1000)
    calls = {"ok": 0, "fail": 0, "hang": 0}
    hanging = 0
    full = asyncio.Event()
    cleaned = 0

    async def work(i: int) -> int:
        nonlocal hanging, cleaned
        kind = ("fail", "ok", "hang")[i % 3]
        calls[kind] += 1
        if kind == "hang":
            hanging += 1
            if hanging == 50:  # every slot is held by a hanging call
                full.set()
            try:
                await asyncio.Event().wait()
            finally:
                cleaned += 1
        await asyncio.sleep(0)
        if kind == "fail":
            raise ValueError(i)
        return i

    guarded: Any = work
    for n in reversed(TEN):
        guarded = policies[n](guarded)

    tasks = [asyncio.create_task(guarded(i)) for i in range(300)]
    await full.wait()
    bh = policies["bulkhead"]
    assert bh.running == 50
    assert bh.queued > 0
    for i, t in enumerate(tasks):
        if i % 3 == 2:
            t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, r in enumerate(results):
        kind = ("fail", "ok", "hang")[i % 3]
        if kind == "hang":
            assert isinstance(r, asyncio.CancelledError)
        else:
            assert r == (FALLBACK if kind == "fail" else i)
    assert calls["ok"] == 100
    assert calls["fail"] == 100 * (RETRIES + 1) * HEDGES
    started = calls["hang"]
    assert 50 <= started <= 100
    assert cleaned == started

    s = {n: p.stats() for n, p in policies.items()}
    assert (s["bulkhead"]["running"], s["bulkhead"]["queued"]) == (0, 0)
    assert s["bulkhead"]["full"] == 0
    admitted = s["bulkhead"]["admitted"]  # calls given a slot; the others were cancelled queued
    assert 200 + started <= admitted <= 300
    assert s["ratelimit"]["admitted"] == admitted
    assert s["ratelimit"]["rejected"] == 0
    assert s["retry"]["attempt"] == 100 * RETRIES
    assert (s["retry"]["giveup"], s["retry"]["success"]) == (100, 100)
    assert s["circuitbreaker"]["failure"] == 100 * (RETRIES + 1)
    assert s["circuitbreaker"]["success"] == 100
    assert s["circuitbreaker"]["probes_in_flight"] == 0
    assert s["failfast"]["rejected"] == 0
    assert not policies["failfast"].is_open
    assert s["hedge"]["success"] == 100
    assert s["hedge"]["all_failed"] == 100 * (RETRIES + 1)
    assert s["hedge"]["failure"] == s["hedge"]["hedged"] * 2 == calls["fail"]
    assert s["hedge"]["timeout"] == 0
    assert s["timeout"]["fired"] == 0
    assert s["fallback"]["invoked"] == 100
    assert s["cache"]["miss"] == 300
    assert s["cache"]["hit"] == 0
    assert s["cache"]["set"] == s["cache"]["size"] == 200  # the fallback's answers too
    assert s["cache"]["in_flight"] == 0
    assert s["featuretoggle"]["enabled"] == 300
    assert _native._timeout_pending() == 0


async def test_ten_pattern_stack_shared_keys() -> None:
    """300 calls over 20 keys: the cache makes one call per key; the callers of some keys are
    cancelled, leaders and waiters alike, while their calls hang."""
    policies = {n: _make(n) for n in TEN}
    policies["bulkhead"] = bulkhead(50, 300)
    policies["circuitbreaker"] = consecutive_breaker(failure_threshold=10**6)
    policies["failfast"] = failfast(failure_threshold=10**6)
    policies["cache"] = cache(maxsize=1000)
    calls = {"ok": 0, "fail": 0, "hang": 0}
    kinds = ("fail", "ok", "hang")
    hang_keys = [k for k in range(20) if k % 3 == 2]
    entered = asyncio.Event()

    async def work(key: int) -> int:
        kind = kinds[key % 3]
        calls[kind] += 1
        if kind == "hang":
            if calls["hang"] == len(hang_keys):
                entered.set()
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        if kind == "fail":
            raise ValueError(key)
        return key

    guarded: Any = work
    for n in reversed(TEN):
        guarded = policies[n](guarded)

    tasks = [asyncio.create_task(guarded(i % 20)) for i in range(300)]
    await entered.wait()
    for i, t in enumerate(tasks):
        if kinds[i % 20 % 3] == "hang":
            t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, r in enumerate(results):
        key = i % 20
        kind = kinds[key % 3]
        if kind == "hang":
            assert isinstance(r, asyncio.CancelledError)
        else:
            assert r == (FALLBACK if kind == "fail" else key)
    ok_keys, fail_keys = (len([k for k in range(20) if k % 3 == r]) for r in (1, 0))
    assert calls == {
        "ok": ok_keys,
        "fail": fail_keys * (RETRIES + 1) * HEDGES,
        "hang": len(hang_keys),
    }
    s = {n: p.stats() for n, p in policies.items()}
    c = s["cache"]
    assert c["miss"] == ok_keys + fail_keys + len(hang_keys)
    answered = 300 - 15 * len(hang_keys)
    assert c["miss"] - len(hang_keys) + c["hit"] + c["shared"] == answered
    assert c["set"] == c["size"] == ok_keys + fail_keys
    assert c["in_flight"] == 0
    assert (s["bulkhead"]["running"], s["bulkhead"]["queued"]) == (0, 0)
    assert s["bulkhead"]["admitted"] == c["miss"]
    assert s["retry"]["giveup"] == fail_keys
    assert s["fallback"]["invoked"] == fail_keys
    assert s["circuitbreaker"]["failure"] == fail_keys * (RETRIES + 1)
    assert s["hedge"]["failure"] == calls["fail"]
    assert s["hedge"]["success"] == ok_keys
    assert s["timeout"]["fired"] == 0
    assert s["featuretoggle"]["enabled"] == 300
    assert _native._timeout_pending() == 0


# -- deeper stacks, against the model --------------------------------------------------------


async def _async_true(*args: Any, **kwargs: Any) -> bool:
    await asyncio.sleep(0)
    return True


async def _async_false(*args: Any, **kwargs: Any) -> bool:
    await asyncio.sleep(0)
    return False


async def _async_answer(*args: Any, **kwargs: Any) -> str:
    await asyncio.sleep(0)
    return FALLBACK


def _variant_policies(slow: dict[str, bool]) -> dict[str, Any]:
    """The table's policies, or the same semantics through each pattern's Python slow path
    (retry sleeping between attempts, async handlers and predicates)."""
    return {
        "circuitbreaker": consecutive_breaker(failure_threshold=1000),
        "failfast": failfast(
            failure_threshold=1000, predicate=_async_false if slow["failfast"] else None
        ),
        # A real 1 ms wait, not instant waits: those would shorten the hedge's 5 s delay too.
        "retry": retry(attempts=RETRIES, backoff=0.001 if slow["retry"] else 0),
        "fallback": fallback(_async_answer if slow["fallback"] else FALLBACK, on=Exception),
        "featuretoggle": featuretoggle(predicate=_async_true if slow["featuretoggle"] else None),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=strategies.lists(strategies.sampled_from(PATTERNS), min_size=2, max_size=6, unique=True),
    host=strategies.sampled_from(HOSTS),
    calls=strategies.lists(
        strategies.tuples(strategies.integers(0, 2), strategies.booleans()), min_size=1, max_size=6
    ),
    slow=strategies.fixed_dictionaries(
        {name: strategies.booleans() for name in ("retry", "fallback", "featuretoggle", "failfast")}
    ),
)
def test_random_stacks_follow_the_model(
    names: list[str], host: str, calls: list[tuple[int, bool]], slow: dict[str, bool]
) -> None:
    """Any 2 to 6 patterns in any order, fast or slow paths, a sequence of passing and failing
    calls over a few keys: every outcome and every counter as the model says."""

    async def scenario() -> None:
        order = tuple(names)
        # Thresholds out of reach of a sequence (up to 6 failures per call).
        stack = build(order, host, policies=_variant_policies(slow))
        model = Model(order)
        for x, fails in calls:
            stack.leaf.mode = "fail" if fails else "ok"
            assert_outcome(await outcome(stack, x), model.call(x, fails))
            check_against(stack, model)

    asyncio.run(scenario())


ALLOWED = (AttemptsExceeded, HedgeAllFailed, ValueError, *REJECTIONS.values())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=strategies.lists(strategies.sampled_from(PATTERNS), min_size=2, max_size=6, unique=True),
    calls=strategies.lists(
        strategies.tuples(strategies.integers(0, 8), strategies.booleans()),
        min_size=1,
        max_size=24,
    ),
    before_cancel=strategies.integers(0, 6),
    before_release=strategies.integers(0, 6),
    hedge_delay=strategies.sampled_from([5.0, 0.001, 0.0]),
    host=strategies.sampled_from(HOSTS),
)
def test_random_concurrent_stacks_end_idle(
    names: list[str],
    calls: list[tuple[int, bool]],
    before_cancel: int,
    before_release: int,
    hedge_delay: float,
    host: str,
) -> None:
    """Concurrent calls (passing, failing, waiting on a gate) through any stack; some are
    cancelled wherever they are. Every call ends with its own outcome and every policy idle."""

    async def scenario() -> None:
        order = tuple(names)
        # A small bulkhead: calls queue and are refused. Hedges start their second attempt
        # late, soon (a 1 ms timer) or at once.
        policies = {"bulkhead": bulkhead(2, 4), "hedge": hedge(attempts=2, delay=hedge_delay)}
        stack = build(order, host, policies=policies)
        gate = asyncio.Event()
        active = 0

        async def body(x: int) -> int:
            nonlocal active
            active += 1
            try:
                if x % 3 == 2:
                    await gate.wait()
                await asyncio.sleep(0)
                if x % 3 == 0:
                    raise ValueError(x)
                return x * 2
            finally:
                active -= 1

        stack.leaf.body = body  # type: ignore[method-assign]
        tasks = [asyncio.create_task(stack.call(x)) for x, _ in calls]
        for i in range(before_cancel):
            await asyncio.sleep(0.001 if i == 3 else 0)
        for task, (_, cancel) in zip(tasks, calls, strict=True):
            if cancel:
                task.cancel()
        for _ in range(before_release):
            await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, (x, _), r in zip(tasks, calls, results, strict=True):
            if task.cancelled():
                continue
            if isinstance(r, BaseException):
                assert isinstance(r, ALLOWED), repr(r)
            else:
                assert r in (x * 2, FALLBACK)
        assert active == 0
        assert asyncio.all_tasks() == {asyncio.current_task()}  # no attempt left behind
        for name, p in stack.policies.items():
            st = p.stats()
            if name == "bulkhead":
                assert (st["running"], st["queued"]) == (0, 0)
            elif name == "cache":
                assert st["in_flight"] == 0
            elif name == "circuitbreaker":
                assert st["probes_in_flight"] == 0
            elif name == "timeout":
                assert st["fired"] == 0
        assert _native._timeout_pending() == 0

    asyncio.run(scenario())


EVENTS = [
    "on_attempts_exceeded",
    "on_bulkhead_full",
    "on_cache_hit",
    "on_cache_miss",
    "on_cache_set",
    "on_failfast_close",
    "on_failfast_open",
    "on_failfast_rejected",
    "on_failing",
    "on_failure",
    "on_fallback",
    "on_feature_disabled",
    "on_feature_enabled",
    "on_feature_toggled",
    "on_hedge_all_failed",
    "on_hedge_failure",
    "on_hedge_success",
    "on_hedge_timeout",
    "on_rate_limited",
    "on_recovering",
    "on_rejected",
    "on_retry",
    "on_success",
    "on_timeout",
    "on_working",
]


def _raising_listener(kind: str) -> object:
    """A listener of every event of every pattern that raises (sync) or fails in a task."""

    def hook(*args: Any) -> None:
        raise RuntimeError("listener")

    async def async_hook(*args: Any) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("listener")

    chosen = hook if kind == "sync" else async_hook
    return type("Raising", (), {name: staticmethod(chosen) for name in EVENTS})()


@contextlib.contextmanager
def _listening(kind: str | None) -> Iterator[None]:
    if kind is None:
        yield
        return
    listener = _raising_listener(kind)
    for pattern in PATTERNS:
        events.register_listener(pattern, listener)
    try:
        yield
    finally:
        for pattern in PATTERNS:
            events.unregister_listener(pattern, listener)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=strategies.lists(strategies.sampled_from(PATTERNS), min_size=2, max_size=6, unique=True),
    host=strategies.sampled_from(HOSTS),
    calls=strategies.lists(
        strategies.tuples(strategies.integers(0, 2), strategies.booleans()), min_size=1, max_size=4
    ),
    kind=strategies.sampled_from(["sync", "async"]),
)
def test_raising_listeners_change_nothing(
    names: list[str], host: str, calls: list[tuple[int, bool]], kind: str
) -> None:
    """Every pattern's events go to a global listener that raises: outcomes and counters are
    the model's all the same, and the listeners' tasks end with the calls."""

    async def scenario() -> None:
        order = tuple(names)
        stack = build(
            order,
            host,
            policies={
                "circuitbreaker": consecutive_breaker(failure_threshold=1000),
                "failfast": failfast(failure_threshold=1000),
            },
        )
        model = Model(order)
        with _listening(kind):
            for x, fails in calls:
                stack.leaf.mode = "fail" if fails else "ok"
                assert_outcome(await outcome(stack, x), model.call(x, fails))
                check_against(stack, model)
            await events.get_event_manager().wait_for_tasks()

    logging.getLogger("failsafe").disabled = True
    try:
        asyncio.run(scenario())
    finally:
        logging.getLogger("failsafe").disabled = False


# -- cancelled while waiting inside the inner layer ----------------------------------------


async def _never(*args: Any, **kwargs: Any) -> bool:
    await asyncio.Event().wait()
    return True


async def _until(condition: Callable[[], bool]) -> None:
    """Lets the loop run until condition holds (timers included: a hedge delay of 1 ms)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001 if _ % 2 else 0)
    raise AssertionError("condition never held")


def _inner_waiting(name: str) -> Any:
    """A policy for the inner layer whose own await point a call can be cancelled at."""
    match name:
        case "bulkhead":
            return bulkhead(1, 2)  # the slot is held; the call queues
        case "cache":
            return cache()  # a second call of the key waits for the one in flight
        case "ratelimit":
            return tokenbucket(1, 60, max_wait=3600)  # the token is taken; the call waits
        case "retry":
            return retry(attempts=2, backoff=3600)  # sleeps after the first failure
        case "hedge":
            return hedge(attempts=2, delay=0.001)  # both attempts run, as the call is cancelled
        case "featuretoggle":
            return featuretoggle(predicate=_never)
        case "failfast":
            return failfast(failure_threshold=THRESHOLD, predicate=_never)
        case "fallback":
            return fallback(_never, on=Exception)  # the handler never answers
    raise AssertionError(name)


INNER_WAITS = [
    "bulkhead",
    "cache",
    "ratelimit",
    "retry",
    "hedge",
    "featuretoggle",
    "failfast",
    "fallback",
]
WAITING_PAIRS = [(o, i) for o, i in PAIRS if i in INNER_WAITS]


def check_outer_clean(name: str, p: Any) -> None:
    """The outer layer saw a cancellation: not a failure, nothing held."""
    st = p.stats()
    if name == "retry":
        assert (st["attempt"], st["giveup"]) == (0, 0)
    elif name == "fallback":
        assert st["invoked"] == 0
    elif name == "circuitbreaker":
        assert (st["failure"], st["probes_in_flight"], st["state"]) == (0, 0, "working")
    elif name == "failfast":
        assert (p.failures, p.is_open) == (0, False)
    elif name == "bulkhead":
        assert (st["running"], st["queued"]) == (0, 0)
    elif name == "cache":
        assert st["in_flight"] == 0
    elif name == "hedge":
        assert (st["failure"], st["hedged"], st["all_failed"]) == (0, 0, 0)
    elif name == "ratelimit":
        assert st["rejected"] == 0
    elif name == "featuretoggle":
        assert st["disabled"] == 0


# Stopped by a cancellation, or by an outer timeout's deadline (a real 0.1 s timer); not the
# cache: its leader, under the same deadline, would time out first.
STOPS = [(pair, "cancel") for pair in WAITING_PAIRS] + [
    (("timeout", inner), "deadline") for inner in INNER_WAITS if inner != "cache"
]


@pytest.mark.parametrize(
    ("pair", "stop"), STOPS, ids=lambda v: v if isinstance(v, str) else ">".join(v)
)
async def test_stopped_while_waiting_in_inner_layer(pair: tuple[str, str], stop: str) -> None:
    for host in HOSTS:
        await _stopped_while_waiting_in_inner_layer(pair, stop, host)


async def _stopped_while_waiting_in_inner_layer(
    pair: tuple[str, str], stop: str, host: str
) -> None:
    outer, inner = pair
    p = _inner_waiting(inner)
    policies = {inner: p}
    if stop == "deadline":
        policies["timeout"] = timeout(0.1)
    stack = build(pair, host, policies=policies)
    leaf = stack.leaf
    gate = asyncio.Event()
    leader: asyncio.Task[Any] | None = None
    key = (1,) if stack.host is None else (stack.host, 1)  # the cache's key includes self
    holder: asyncio.Task[None] | None = None
    waiting: Callable[[], bool]
    match inner:
        case "bulkhead":

            async def hold() -> None:
                async with p:
                    await gate.wait()

            holder = asyncio.create_task(hold())
            await _until(lambda: p.running == 1)
            waiting = lambda: p.queued == 1  # noqa: E731
        case "cache":
            leaf.mode = "gate"
            leaf.gate = gate
            leader = asyncio.create_task(stack.call(1))
            await leaf.entered.wait()
            waiting = lambda: p._probe(*key)[1].waiting == 1  # noqa: E731
        case "ratelimit":
            assert p.try_acquire()
            waiting = lambda: p.retry_after() > 90  # noqa: E731
        case "retry":
            leaf.mode = "fail"
            waiting = lambda: p.stats()["attempt"] == 1  # noqa: E731
        case "hedge":
            leaf.mode = "hang"
            waiting = lambda: leaf.calls == 2  # noqa: E731
        case "fallback":
            leaf.mode = "fail"
            waiting = lambda: p.stats()["invoked"] == 1  # noqa: E731
        case _:
            waiting = lambda: True  # noqa: E731  # the predicate runs at once
    task = asyncio.create_task(stack.call(1))
    await _until(waiting)
    for _ in range(3):
        await asyncio.sleep(0)  # well inside the wait
    assert not task.done()
    if stop == "cancel":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(FsTimeoutError):
            await task
        assert stack.policies["timeout"].stats()["fired"] == 1

    st = p.stats()
    match inner:
        case "bulkhead":
            assert (p.running, p.queued, leaf.calls) == (1, 0, 0)
            gate.set()
            assert holder is not None
            await holder
            assert (p.running, p.queued) == (0, 0)
        case "cache":
            assert leader is not None
            assert not leader.done()  # the leader goes on for its own caller
            assert p._probe(*key)[1].waiting == 0
            gate.set()
            assert await leader == 2
            assert (st["in_flight"], p.stats()["in_flight"], len(p)) == (1, 0, 1)
            assert leaf.calls == 1
        case "ratelimit":
            assert p.retry_after() <= 60  # the reserved place was given back
            assert (st["admitted"], st["rejected"], leaf.calls) == (1, 0, 0)
        case "retry":
            assert (st["attempt"], st["giveup"], st["success"], leaf.calls) == (1, 0, 0, 1)
        case "hedge":
            assert (leaf.calls, leaf.cleaned) == (2, 2)
            assert (st["hedged"], st["failure"], st["success"], st["all_failed"]) == (1, 0, 0, 0)
        case "featuretoggle":
            assert (st["enabled"], st["disabled"], leaf.calls) == (0, 0, 0)
        case "failfast":
            assert (st["rejected"], p.failures, leaf.calls) == (0, 0, 0)
        case "fallback":
            assert leaf.calls == 1
    check_outer_clean(outer, stack.policies[outer])
    if outer == "timeout" and stop == "cancel":
        assert stack.policies["timeout"].stats()["fired"] == 0
    assert _native._timeout_pending() == 0


# -- calls stopped before their first step -------------------------------------------------


def check_nothing_held(stack: Stack) -> None:
    """Whatever the call took when it was made (a slot, a token, a probe) is given back, and
    nothing counted it as a failure."""
    for name, p in stack.policies.items():
        st = p.stats()
        if name == "retry":
            assert (st["attempt"], st["giveup"]) == (0, 0)
        elif name == "fallback":
            assert st["invoked"] == 0
        elif name == "circuitbreaker":
            assert (st["probes_in_flight"], st["failure"], st["rejected"]) == (0, THRESHOLD, 0)
        elif name == "failfast":
            assert (p.failures, st["rejected"]) == (0, 0)
        elif name == "bulkhead":
            assert (st["running"], st["queued"]) == (0, 0)
        elif name == "cache":
            assert (st["in_flight"], st["size"]) == (0, 0)
        elif name == "hedge":
            assert (st["failure"], st["hedged"], st["success"]) == (0, 0, 0)
        elif name == "timeout":
            assert st["fired"] == 0
    assert _native._timeout_pending() == 0


async def _after_stop(stack: Stack) -> None:
    """The stack still works, and the breaker's probe slot was given back."""
    assert stack.leaf.calls == 0
    assert await stack.call(1) == 2
    if "circuitbreaker" in stack.policies:
        assert stack.policies["circuitbreaker"].state == "working"
    assert _native._timeout_pending() == 0


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
async def test_cancelled_before_first_step(pair: tuple[str, str]) -> None:
    for host in HOSTS:
        await _cancelled_before_first_step(pair, host)


async def _cancelled_before_first_step(pair: tuple[str, str], host: str) -> None:
    stack = build(pair, host)
    await _prepare_for_cancel(stack)
    task = asyncio.create_task(stack.call(1))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    check_nothing_held(stack)
    await _after_stop(stack)


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
async def test_closed_before_first_step(pair: tuple[str, str]) -> None:
    for host in HOSTS:
        await _closed_before_first_step(pair, host)


async def _closed_before_first_step(pair: tuple[str, str], host: str) -> None:
    stack = build(pair, host)
    await _prepare_for_cancel(stack)
    call = stack.call(1)
    call.close()  # type: ignore[attr-defined]
    check_nothing_held(stack)
    await _after_stop(stack)


# -- a hedged attempt through the other layer ----------------------------------------------


HEDGE_PAIRS = [pair for pair in PAIRS if "hedge" in pair]


@pytest.mark.parametrize("pair", HEDGE_PAIRS, ids=_pair_id)
async def test_second_attempt_wins(pair: tuple[str, str]) -> None:
    for host in HOSTS:
        await _second_attempt_wins(pair, host)


async def _second_attempt_wins(pair: tuple[str, str], host: str) -> None:
    """The first attempt hangs past the delay; the second answers. The first is cancelled
    through the other layer (inline, by cancelling the caller's task and taking that back)."""
    other = pair[0] if pair[1] == "hedge" else pair[1]
    h = hedge(attempts=2, delay=0.001)
    stack = build(pair, host, policies={"hedge": h})
    leaf = stack.leaf
    p = stack.policies[other]
    shared = other == "cache" and pair[1] == "cache"  # the second attempt joins the first
    if shared:
        leaf.mode = "gate"
    else:
        leaf.mode = "first hangs"

    async def caller() -> tuple[Any, int]:
        value = await stack.call(4)
        task = asyncio.current_task()
        assert task is not None
        return value, task.cancelling()

    task = asyncio.create_task(caller())
    if shared:
        await leaf.entered.wait()
        await _until(lambda: h.stats()["hedged"] == 1)
        await asyncio.sleep(0)
        leaf.gate.set()
    assert await task == (8, 0)
    st, hs = p.stats(), h.stats()
    assert (hs["success"], hs["failure"], hs["all_failed"], hs["timeout"]) == (1, 0, 0, 0)
    assert hs["hedged"] == 1
    if shared:
        assert leaf.calls == 1
    else:
        assert (leaf.calls, leaf.cleaned) == (2, 1)
    inner_calls = 2 if pair[1] == other else 1
    match other:
        case "retry":
            assert (st["attempt"], st["giveup"], st["success"]) == (0, 0, 1)
        case "timeout":
            assert st["fired"] == 0
        case "fallback":
            assert st["invoked"] == 0
        case "circuitbreaker":
            assert (st["success"], st["failure"], st["probes_in_flight"]) == (1, 0, 0)
        case "failfast":
            assert (p.failures, st["rejected"]) == (0, 0)
        case "bulkhead":
            assert (st["running"], st["queued"], st["admitted"]) == (0, 0, inner_calls)
        case "ratelimit":
            assert (st["admitted"], st["rejected"]) == (inner_calls, 0)
        case "cache":
            assert (st["in_flight"], st["size"], st["set"]) == (0, 1, 1)
        case "featuretoggle":
            assert st["enabled"] == inner_calls
    assert _native._timeout_pending() == 0


def _drop(call: object) -> None:
    del call


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
async def test_dropped_without_awaiting(pair: tuple[str, str]) -> None:
    for host in HOSTS:
        await _dropped_without_awaiting(pair, host)


async def _dropped_without_awaiting(pair: tuple[str, str], host: str) -> None:
    """A call made and dropped gives back what it took when it is collected; the only warning
    is Python's own for the function's coroutine that never ran."""
    stack = build(pair, host)
    await _prepare_for_cancel(stack)
    with pytest.warns(RuntimeWarning, match="never awaited") as record:
        _drop(stack.call(1))  # freed by its refcount: no collection needed
    assert len(record) == 1
    check_nothing_held(stack)
    await _after_stop(stack)


@pytest.mark.parametrize("pair", REJECTING_PAIRS, ids=_pair_id)
async def test_dropped_refusal_is_silent(pair: tuple[str, str]) -> None:
    for host in HOSTS:
        await _dropped_refusal_is_silent(pair, host)


async def _dropped_refusal_is_silent(pair: tuple[str, str], host: str) -> None:
    """A refused call dropped unawaited: no warning (the function never ran), no error left
    unretrieved, nothing counted by the outer layer as a failure."""
    outer, inner = pair
    stack = build(pair, host, rejecting=inner)
    refuser = stack.policies[inner]
    match inner:
        case "circuitbreaker":
            refuser.isolate()
        case "failfast":
            refuser.open()
        case "ratelimit":
            assert refuser.try_acquire()
        case "bulkhead":
            await refuser.__aenter__()  # holds the only slot
    _drop(stack.call(3))  # a warning or an unraisable error fails the test
    check_outer_clean(outer, stack.policies[outer])
    assert stack.leaf.calls == 0
    if inner == "bulkhead":
        await refuser.__aexit__(None, None, None)
        assert (refuser.running, refuser.queued) == (0, 0)
    assert _native._timeout_pending() == 0


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_id)
async def test_asyncio_timeout_around_the_stack(pair: tuple[str, str]) -> None:
    for host in HOSTS:
        await _asyncio_timeout_around_the_stack(pair, host)


async def _asyncio_timeout_around_the_stack(pair: tuple[str, str], host: str) -> None:
    """asyncio.timeout counts the task's cancellations: no layer may take back one it did not
    make (a hedge, here with its second attempt started after 1 ms, cancels its own task)."""
    stack = build(pair, host, policies={"hedge": hedge(attempts=2, delay=0.001)})
    stack.leaf.mode = "hang"

    async def caller() -> int:
        with pytest.raises(TimeoutError) as info:
            async with asyncio.timeout(0.005):
                await stack.call(1)
        assert type(info.value) is TimeoutError  # asyncio's, not a layer's
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert await asyncio.create_task(caller()) == 0
    assert stack.leaf.cleaned == stack.leaf.calls >= 1
    if pair[0] != "hedge":  # an outer hedge may have started its second attempt
        check_outer_clean(pair[0], stack.policies[pair[0]])
    for name, p in stack.policies.items():
        if name == "bulkhead":
            assert (p.running, p.queued) == (0, 0)
        elif name == "cache":
            assert p.stats()["in_flight"] == 0
    assert _native._timeout_pending() == 0
