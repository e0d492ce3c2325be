"""Adaptive load control: the C engines against Python models (Hypothesis state machines),
the decorator and `async with` of concurrency_limit and throttle, priorities, tenants,
concurrency, cancellation and bad input."""

from __future__ import annotations

import asyncio
import math
from contextvars import ContextVar
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from failsafe import _native, events
from failsafe.adaptive import (
    ConcurrencyLimitListener,
    LimitExceeded,
    Throttled,
    ThrottleListener,
    concurrency_limit,
    throttle,
)
from failsafe.exceptions import FailsafeError
from failsafe.retry import retry
from failsafe.retry.exceptions import AttemptsExceeded
from failsafe.testing import FakeClock
from failsafe.timeout import TimeoutError as FsTimeoutError

MS = 1_000_000

# -- Python models of the published update rules ---------------------------------------------


class LimitModel:
    """Netflix's Gradient2Limit, VegasLimit and AIMDLimit, as written in their sources."""

    def __init__(
        self,
        algorithm: str,
        initial: float,
        lo: float,
        hi: float,
        probe: int,
        gradient2: tuple[float, float, int] = (1.0, 1.0, 2000),
    ) -> None:
        self.algorithm, self.limit, self.lo, self.hi = algorithm, initial, lo, hi
        # gradient2's tolerance, queue_size and long_window
        self.tolerance, self.queue_size, self.long_window = gradient2
        self.smoothing = 1.0 if algorithm == "vegas" else 0.2
        self.long = 0.0
        self.count = 0
        self.noload = 0.0
        self.probe = probe
        self.probe_count = 0
        self.inflight = 0

    def sample(self, rtt_ns: int, at: int, drop: bool) -> None:
        rtt = float(max(rtt_ns, 1))
        app_limited = (at + 1) * 2 < self.limit
        new = self.limit
        if self.algorithm == "gradient2":
            if self.count < 10:
                self.count += 1
                self.long += (rtt - self.long) / self.count
            else:
                f = 2 / (self.long_window + 1)
                self.long = self.long * (1 - f) + rtt * f
            if self.long / rtt > 2:
                self.long *= 0.95
            if not app_limited:
                g = max(0.5, min(1.0, self.tolerance * self.long / rtt))
                new = self.limit * (1 - self.smoothing)
                new += (self.limit * g + self.queue_size) * self.smoothing
        elif self.algorithm == "vegas":
            new = self._vegas(rtt, app_limited, drop)
        else:
            if drop or rtt_ns > 5_000_000_000:
                new = self.limit * 0.9
            elif not app_limited:
                new = self.limit + 1
        self.limit = min(self.hi, max(self.lo, new))

    def _vegas(self, rtt: float, app_limited: bool, drop: bool) -> float:
        if self.probe:
            self.probe_count += 1
            if self.probe_count >= self.probe * int(self.limit):
                self.probe_count = 0
                self.noload = rtt
                return self.limit
        if self.noload == 0 or rtt < self.noload:
            self.noload = rtt
            return self.limit
        step = max(1.0, math.floor(math.log10(self.limit)))
        if drop:
            new = self.limit - step
        elif app_limited:
            return self.limit
        else:
            queue = math.ceil(self.limit * (1 - self.noload / rtt))
            if queue <= step:
                new = self.limit + 6 * step
            elif queue < 3 * step:
                new = self.limit + step
            elif queue > 6 * step:
                new = self.limit - step
            else:
                return self.limit
        new = min(self.hi, max(self.lo, new))
        return self.limit * (1 - self.smoothing) + new * self.smoothing


class LimitMachine(RuleBasedStateMachine):
    """Calls taking places, ending with samples, drops, errors or cancellation, on a fake clock:
    the C limit moves exactly as the model, and admits while in flight < floor(limit)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(10**12).install()
        self.held: list[tuple[int, int]] = []  # (t0_ns, at) of calls holding a place

    def teardown(self) -> None:
        self.clock.uninstall()

    @initialize(
        algorithm=st.sampled_from(["gradient2", "vegas", "aimd"]),
        initial=st.integers(1, 30),
        probe=st.sampled_from([0, 1, 30]),
        # gradient2's defaults, and the published Gradient2Limit's
        gradient2=st.sampled_from([(1.0, 1.0, 2000), (1.5, 4.0, 600)]),
    )
    def make(
        self, algorithm: str, initial: int, probe: int, gradient2: tuple[float, float, int]
    ) -> None:
        tolerance, queue_size, long_window = gradient2
        self.lim = concurrency_limit(
            algorithm=algorithm,  # type: ignore[arg-type]
            initial=initial,
            max_limit=60,
            probe_multiplier=probe,
            tolerance=tolerance,
            queue_size=queue_size,
            long_window=long_window,
        )
        self.m = LimitModel(algorithm, initial, 1, 60, probe, gradient2)

    @rule()
    def acquire(self) -> None:
        at = self.lim._take()
        if len(self.held) < int(self.m.limit):
            assert at == len(self.held)
            self.held.append((_native.now_ns(), at))
        else:
            assert at == -1

    @rule(ms=st.integers(0, 3000))
    def advance(self, ms: int) -> None:
        self.clock.advance_ns(ms * MS)

    @precondition(lambda self: self.held)
    @rule(
        i=st.integers(0, 100),
        outcome=st.sampled_from(["ok", "timeout", "error", "cancelled"]),
    )
    def end(self, i: int, outcome: str) -> None:
        t0, at = self.held.pop(i % len(self.held))
        exc: BaseException | None = {
            "ok": None,
            "timeout": FsTimeoutError("late"),
            "error": ValueError("bad"),
            "cancelled": asyncio.CancelledError(),
        }[outcome]
        self.lim._end(t0, at, exc)
        if outcome in ("ok", "timeout"):
            self.m.sample(_native.now_ns() - t0, at, outcome == "timeout")

    @invariant()
    def same(self) -> None:
        if not hasattr(self, "lim"):
            return
        assert self.lim.limit_estimate == pytest.approx(self.m.limit, rel=1e-9)
        assert self.lim.current == int(self.m.limit)
        assert self.lim.inflight == len(self.held)


TestLimitMachine = LimitMachine.TestCase
TestLimitMachine.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)


class ThrottleModel:
    """SRE client-side throttling over 40 buckets of window / 40."""

    def __init__(self, k: float, window_ns: int) -> None:
        self.k, self.bucket = k, window_ns // 40
        self.events: list[tuple[int, bool]] = []  # (bucket index, accepted)

    def counts(self, now_ns: int) -> tuple[int, int]:
        newest = now_ns // self.bucket
        live = [a for b, a in self.events if b > newest - 40]
        return len(live), sum(live)

    def p(self, now_ns: int) -> float:
        r, a = self.counts(now_ns)
        return max(0.0, (r - self.k * a) / (r + 1))


class ThrottleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(10**12).install()

    def teardown(self) -> None:
        self.clock.uninstall()

    @initialize(k=st.sampled_from([1.0, 1.5, 2.0, 3.0]), window_ms=st.integers(40, 4000))
    def make(self, k: float, window_ms: int) -> None:
        self.t = throttle(k=k, window=window_ms / 1000, max_reject=1.0)
        self.m = ThrottleModel(k, window_ms * MS)

    @rule(ms=st.integers(0, 500))
    def advance(self, ms: int) -> None:
        self.clock.advance_ns(ms * MS)

    @rule(accepted=st.booleans(), n=st.integers(1, 5))
    def outcome(self, accepted: bool, n: int) -> None:
        for _ in range(n):
            self.t._end(None, None if accepted else ValueError("no"))
            self.m.events.append((_native.now_ns() // self.m.bucket, accepted))

    @rule()
    def never_refused_at_scale_zero(self) -> None:
        assert self.t._admit(0.0)

    @rule()
    def refusal_counts_as_a_request(self) -> None:
        if self.t._admit(1e9):  # p scaled past max_reject: refused unless p is 0
            assert self.m.p(_native.now_ns()) == 0
        else:
            self.m.events.append((_native.now_ns() // self.m.bucket, False))

    @invariant()
    def same(self) -> None:
        if not hasattr(self, "t"):
            return
        now = _native.now_ns()
        assert (self.t.requests, self.t.accepts) == self.m.counts(now)
        assert self.t.probability == pytest.approx(self.m.p(now), abs=1e-12)


TestThrottleMachine = ThrottleMachine.TestCase
TestThrottleMachine.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)


# -- concurrency_limit -----------------------------------------------------------------------


def fixed(n: int, **kw: Any) -> Any:
    """A limit that cannot move (min = max): admission is then exact."""
    return concurrency_limit(algorithm="aimd", initial=n, min_limit=n, max_limit=n, **kw)


async def test_admits_up_to_the_limit_and_refuses_beyond() -> None:
    lim = fixed(2)
    gate = asyncio.Event()

    @lim
    async def hold() -> int:
        await gate.wait()
        return 1

    a, b = asyncio.ensure_future(hold()), asyncio.ensure_future(hold())
    await asyncio.sleep(0)
    assert lim.inflight == 2
    with pytest.raises(LimitExceeded) as info:
        await hold()
    assert isinstance(info.value, FailsafeError)
    assert not info.value.shed
    assert not info.value.timed_out
    gate.set()
    assert await asyncio.gather(a, b) == [1, 1]
    assert lim.stats()["inflight"] == 0
    assert lim.stats()["rejected"] == 1
    assert lim.stats()["admitted"] == 2


async def test_latency_moves_the_limit(clock: FakeClock) -> None:
    lim = concurrency_limit(algorithm="aimd", initial=2, max_limit=10)

    @lim
    async def call(fail: bool) -> None:
        clock.advance(0.01)
        if fail:
            raise FsTimeoutError("late")

    await call(False)
    assert lim.limit_estimate == 3
    assert lim.last_rtt == pytest.approx(0.01)
    with pytest.raises(FsTimeoutError):
        await call(True)
    assert lim.limit_estimate == pytest.approx(2.7)
    assert lim.stats()["dropped"] == 1
    with pytest.raises(ValueError, match="not about load"):
        await lim(_raise_value_error)()
    assert lim.samples == 2  # an error outside drop_on is no sample


async def _raise_value_error() -> None:
    raise ValueError("not about load")


async def test_queue_serves_in_order_and_max_wait_expires() -> None:
    lim = fixed(1, queue=2, max_wait=0.05)
    gate = asyncio.Event()
    order: list[int] = []

    @lim
    async def work(i: int) -> int:
        order.append(i)
        if i == 0:
            await gate.wait()
        return i

    first = asyncio.ensure_future(work(0))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(work(i)) for i in (1, 2)]
    await asyncio.sleep(0)
    assert lim.queued == 2
    with pytest.raises(LimitExceeded):  # queue full
        await work(3)
    gate.set()
    assert await asyncio.gather(first, *waiting) == [0, 1, 2]
    assert order == [0, 1, 2]
    gate.clear()
    blocker = asyncio.ensure_future(work(0))
    await asyncio.sleep(0)
    with pytest.raises(LimitExceeded) as info:
        await work(9)
    assert info.value.timed_out
    gate.set()
    await blocker
    assert lim.stats()["timed_out"] == 1
    assert (lim.inflight, lim.queued) == (0, 0)


async def test_async_with_samples_and_releases(clock: FakeClock) -> None:
    lim = concurrency_limit(algorithm="aimd", initial=1, max_limit=5)
    async with lim:
        assert lim.inflight == 1
        clock.advance(0.02)
    assert lim.inflight == 0
    assert lim.last_rtt == pytest.approx(0.02)
    with pytest.raises(FsTimeoutError):
        async with lim:
            raise FsTimeoutError("late")
    assert lim.stats()["dropped"] == 1
    with pytest.raises(RuntimeError):
        await lim.__aexit__(None, None, None)


async def test_priorities_serve_high_first_and_shed_low() -> None:
    level: ContextVar[int] = ContextVar("level", default=0)
    lim = fixed(1, queue=2, priority=level)
    gate = asyncio.Event()
    order: list[str] = []

    @lim
    async def work(tag: str) -> str:
        order.append(tag)
        if tag == "first":
            await gate.wait()
        return tag

    async def at(p: int, tag: str) -> str:
        level.set(p)
        return await work(tag)

    first = asyncio.ensure_future(at(0, "first"))
    await asyncio.sleep(0)
    low1 = asyncio.ensure_future(at(-1, "low1"))
    low2 = asyncio.ensure_future(at(-1, "low2"))
    await asyncio.sleep(0)
    high = asyncio.ensure_future(at(5, "high"))  # queue full: sheds the newest low one
    await asyncio.sleep(0)
    with pytest.raises(LimitExceeded):
        await at(-2, "lowest")  # nobody lower to shed
    gate.set()
    results = await asyncio.gather(first, low1, low2, high, return_exceptions=True)
    assert [results[i] for i in (0, 1, 3)] == ["first", "low1", "high"]
    assert isinstance(results[2], LimitExceeded)
    assert results[2].shed
    assert order == ["first", "high", "low1"]
    assert lim.stats()["shed"] == 1
    assert (lim.inflight, lim.queued) == (0, 0)


async def test_priority_from_a_key_function() -> None:
    lim = fixed(1, queue=1, priority=lambda urgent: 10 if urgent else 0)
    gate = asyncio.Event()

    @lim
    async def work(urgent: bool) -> bool:
        await gate.wait()
        return urgent

    running = asyncio.ensure_future(work(False))
    await asyncio.sleep(0)
    queued_low = asyncio.ensure_future(work(False))
    await asyncio.sleep(0)
    urgent = asyncio.ensure_future(work(True))
    await asyncio.sleep(0)
    gate.set()
    res = await asyncio.gather(running, queued_low, urgent, return_exceptions=True)
    assert isinstance(res[1], LimitExceeded)
    assert res[1].shed
    assert res[2] is True


async def test_tenants_get_a_fair_share() -> None:
    lim = fixed(4, queue=100, tenant=lambda who, i: who)
    gates = {w: asyncio.Event() for w in "ab"}
    served: list[str] = []

    @lim
    async def work(who: str, i: int) -> None:
        served.append(who)
        await gates[who].wait()

    hog = [asyncio.ensure_future(work("a", i)) for i in range(20)]
    await asyncio.sleep(0)
    assert served == ["a"] * 4
    small = [asyncio.ensure_future(work("b", i)) for i in range(2)]
    await asyncio.sleep(0)
    gates["a"].set()
    for _ in range(5):
        await asyncio.sleep(0)
    # Places freed by "a" go to "b" (fewest in flight) before a's own queue.
    assert served[4:6] == ["b", "b"]
    gates["b"].set()
    await asyncio.gather(*hog, *small)
    assert (lim.inflight, lim.queued) == (0, 0)


async def test_hundreds_of_tasks_never_exceed_the_limit() -> None:
    lim = concurrency_limit(algorithm="vegas", initial=8, max_limit=8, queue=1000)
    peak = 0
    inside = 0

    @lim
    async def work(i: int) -> int:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        for _ in range(i % 3):
            await asyncio.sleep(0)
        inside -= 1
        return i

    results = await asyncio.gather(*(work(i) for i in range(500)))
    assert results == list(range(500))
    assert peak <= 8
    assert (lim.inflight, lim.queued) == (0, 0)
    assert lim.stats()["admitted"] == 500


@pytest.mark.parametrize("where", ["queued", "running", "granted", "block"])
async def test_cancellation_leaks_nothing_and_is_no_drop(where: str) -> None:
    lim = fixed(1, queue=5)
    gates = {"holder": asyncio.Event(), "victim": asyncio.Event()}

    @lim
    async def work(who: str) -> None:
        await gates[who].wait()

    async def block() -> None:
        async with lim:
            await gates["holder"].wait()

    holder = asyncio.ensure_future(block() if where == "block" else work("holder"))
    await asyncio.sleep(0)
    victim = holder
    if where in ("queued", "granted"):
        victim = asyncio.ensure_future(work("victim"))
        await asyncio.sleep(0)
        assert lim.queued == 1
    if where == "granted":
        gates["holder"].set()  # the holder ends and hands its place to the victim...
        await holder
        assert (lim.inflight, lim.queued) == (1, 0)
    victim.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await victim
    gates["holder"].set()
    await asyncio.gather(holder, return_exceptions=True)
    assert (lim.inflight, lim.queued) == (0, 0)
    assert lim.stats()["dropped"] == 0
    # Only the holder's completed call is a sample; the cancelled one is none.
    assert lim.samples == (1 if where in ("queued", "granted") else 0)


async def test_listener_sees_refusals_and_retry_stacks() -> None:
    seen: list[str] = []

    class L(ConcurrencyLimitListener):
        def on_limit_exceeded(self, limit: Any) -> None:
            seen.append(limit.name)

    lim = fixed(1, listeners=[L()], name="db")
    gate = asyncio.Event()

    @lim
    async def work() -> None:
        await gate.wait()

    first = asyncio.ensure_future(work())
    await asyncio.sleep(0)
    with pytest.raises(AttemptsExceeded) as info:
        await retry(attempts=2, on=LimitExceeded)(lim(work))()
    assert isinstance(info.value.last_exception, LimitExceeded)
    assert seen == ["db"] * 3
    gate.set()
    await first


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"algorithm": "cubic"}, ValueError, "algorithm"),
        ({"initial": 0}, ValueError, "initial"),
        ({"initial": 5000}, ValueError, "initial"),
        ({"min_limit": 0.5}, ValueError, "min_limit"),
        ({"max_limit": 0}, ValueError, "max_limit"),
        ({"min_limit": 10, "initial": 10, "max_limit": 5}, ValueError, "max_limit"),
        ({"queue": -1}, ValueError, "queue"),
        ({"queue": 1.5}, TypeError, "queue"),
        ({"max_wait": -1}, ValueError, "max_wait"),
        ({"max_wait": "1"}, TypeError, "max_wait"),
        ({"smoothing": 0}, ValueError, "smoothing"),
        ({"smoothing": 1.5}, ValueError, "smoothing"),
        ({"tolerance": 0.5}, ValueError, "tolerance"),
        ({"queue_size": -1}, ValueError, "queue_size"),
        ({"long_window": 0}, ValueError, "long_window"),
        ({"probe_multiplier": -1}, ValueError, "probe_multiplier"),
        ({"alpha": 0.5}, ValueError, "alpha"),
        ({"beta": 2}, ValueError, "beta"),
        ({"backoff_ratio": 1}, ValueError, "backoff_ratio"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"priority": 3}, TypeError, "priority"),
        ({"tenant": "x"}, TypeError, "tenant"),
        ({"drop_on": 3}, TypeError, "drop_on"),
        ({"drop_on": ()}, ValueError, "drop_on"),
        ({"name": "bad name!"}, ValueError, "name"),
    ],
)
def test_limit_bad_input(kwargs: dict[str, Any], error: type[Exception], param: str) -> None:
    with pytest.raises(error, match=param):
        concurrency_limit(**kwargs)


async def test_bad_priority_value_is_a_type_error() -> None:
    lim = fixed(1, priority=lambda: "high")

    @lim
    async def work() -> None:
        pass

    with pytest.raises(TypeError, match="priority"):
        await work()
    assert lim.inflight == 0


# -- throttle --------------------------------------------------------------------------------


async def test_throttle_refuses_when_the_dependency_stops_accepting(clock: FakeClock) -> None:
    _native.seed(1)
    th = throttle(k=2.0, window=10, max_reject=1.0)
    failing = True

    @th
    async def call() -> str:
        if failing:
            raise ConnectionError("refused")
        return "ok"

    refusals: list[Throttled] = []
    for _ in range(200):
        try:
            await call()
        except Throttled as exc:
            refusals.append(exc)
        except ConnectionError:
            pass
    refused = len(refusals)
    assert all(0 < (e.retry_after or 0) <= 0.25 for e in refusals)
    stats = th.stats()
    assert refused == stats["throttled"] > 150
    assert stats["sent"] + stats["throttled"] == 200
    assert stats["not_accepted"] == stats["sent"]
    clock.advance(11)  # the window forgets
    failing = False
    assert th.probability == 0
    assert await call() == "ok"
    assert th.stats()["accepted"] == 1


async def test_throttle_accept_predicate_and_async_with() -> None:
    th = throttle(k=10, accept=lambda result, exc: exc is None and result != "busy")

    @th
    async def call(x: str) -> str:
        return x

    await call("ok")
    await call("busy")
    async with th:
        pass
    with pytest.raises(KeyError):
        async with th:
            raise KeyError("x")
    with pytest.raises(asyncio.CancelledError):
        async with th:
            raise asyncio.CancelledError
    stats = th.stats()
    assert (stats["accepted"], stats["not_accepted"]) == (2, 2)
    assert th.requests == 4  # the cancelled block counts nothing


async def test_throttle_priority_scales_the_refusal(clock: FakeClock) -> None:
    _native.seed(3)
    th = throttle(k=1.0, priority=lambda high: 20 if high else -20, max_reject=1.0)
    for _ in range(100):
        th._end(None, ValueError())

    @th
    async def call(high: bool) -> bool:
        return high

    assert th.probability > 0.9
    refused_low = 0
    for _ in range(50):
        try:
            await call(False)
        except Throttled:
            refused_low += 1
    assert refused_low == 50
    assert all([await call(True) for _ in range(20)])


async def test_throttle_listener() -> None:
    seen: list[Any] = []

    class L(ThrottleListener):
        def on_throttled(self, throttle: Any) -> None:
            seen.append(throttle)

    th = throttle(k=1.0, max_reject=1.0, listeners=[L()])
    for _ in range(1000):
        th._end(None, ValueError())

    @th
    async def call() -> None:
        pass

    with pytest.raises(Throttled):
        await call()
    assert seen == [th]


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"k": 0.5}, ValueError, "k"),
        ({"k": "2"}, TypeError, "k"),
        ({"k": math.nan}, ValueError, "k"),
        ({"window": 0}, ValueError, "window"),
        ({"window": 1e-9}, ValueError, "window"),
        ({"max_reject": 0}, ValueError, "max_reject"),
        ({"max_reject": 1.5}, ValueError, "max_reject"),
        ({"accept": 3}, TypeError, "accept"),
        ({"priority": "high"}, TypeError, "priority"),
    ],
)
def test_throttle_bad_input(kwargs: dict[str, Any], error: type[Exception], param: str) -> None:
    with pytest.raises(error, match=param):
        throttle(**kwargs)


def test_global_listener_patterns_exist() -> None:
    events.register_listener("concurrency_limit", ConcurrencyLimitListener())
    events.register_listener("throttle", ThrottleListener())
    events.unregister_listener  # noqa: B018 - the registry accepts both pattern names
