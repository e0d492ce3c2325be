"""One policy shared by threads, each running its own event loop.

A waiter is woken on its own loop, whoever frees what it waits for; a waiter whose loop is
closed is passed over without leaking what it was given. Then every pattern under load from 4
threads (waiters, refusals, cancellations), checked against its invariants and ending idle.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from failsafe import _native
from failsafe.bulkhead import BulkheadFull, bulkhead
from failsafe.cache import cache
from failsafe.circuitbreaker import BreakerFailing, consecutive_breaker
from failsafe.failfast import failfast
from failsafe.fallback import fallback
from failsafe.featuretoggle import FeatureDisabled, featuretoggle
from failsafe.hedge import hedge
from failsafe.keyed import keyed
from failsafe.ratelimit import slidingwindow, tokenbucket
from failsafe.retry import retry
from failsafe.timeout import timeout

# Bounds that only a lost wake-up reaches (a healthy run takes milliseconds).
_WAIT = 5.0


def _in_thread(main: Callable[[], Coroutine[Any, Any, Any]]) -> threading.Thread:
    """Starts a thread running asyncio.run(main()); its outcome is kept on the thread."""

    def run() -> None:
        try:
            thread.result = asyncio.run(main())  # type: ignore[attr-defined]
        except BaseException as e:  # reported by the test that joins it
            thread.error = e  # type: ignore[attr-defined]

    thread = threading.Thread(target=run, daemon=True)
    thread.result = thread.error = None  # type: ignore[attr-defined]
    thread.start()
    return thread


def _joined(thread: threading.Thread) -> Any:
    thread.join(_WAIT)
    assert not thread.is_alive(), "thread still running"
    if thread.error is not None:  # type: ignore[attr-defined]
        raise thread.error  # type: ignore[attr-defined]
    return thread.result  # type: ignore[attr-defined]


# -- regressions: wake-ups across loops ---------------------------------------------------------


def test_bulkhead_wakes_a_waiter_queued_on_another_threads_loop() -> None:
    """Issue 9, defect 1: a slot freed in thread A reaches the waiter queued on the main loop."""
    bh = bulkhead(1, 10)
    entered, leave = threading.Event(), threading.Event()

    @bh
    async def work(who: str, hold: bool) -> str:
        if hold:
            entered.set()
            leave.wait(_WAIT)  # blocks thread A's loop: the slot is released from thread A
        return who

    holder = _in_thread(lambda: work("a", True))

    async def main() -> str:
        await asyncio.to_thread(entered.wait, _WAIT)
        queued = asyncio.create_task(work("main", False))
        while bh.queued == 0:
            await asyncio.sleep(0)
        leave.set()
        return await asyncio.wait_for(queued, _WAIT)

    assert asyncio.run(main()) == "main"
    assert _joined(holder) == "a"
    assert (bh.running, bh.queued) == (0, 0)
    assert bh.stats()["admitted"] == 2


def test_bulkhead_passes_a_slot_over_a_waiter_whose_loop_is_closed() -> None:
    """A waiter queued on a loop closed since can never run: its slot goes to the next one."""
    bh = bulkhead(1, 10)
    bh.__aenter__()  # a free slot is taken at once, without a loop

    async def until(cond: Callable[[], bool]) -> None:
        while not cond():
            await asyncio.sleep(0)

    # A waiter on a loop that then closes without ever waking it.
    other = asyncio.new_event_loop()
    orphan = other.create_task(bh._acquire_slow())
    other.run_until_complete(until(lambda: bh.queued == 1))
    other.close()

    async def main() -> None:
        waiter = asyncio.create_task(bh._acquire_slow())
        await until(lambda: bh.queued == 2)
        await bh.__aexit__(None, None, None)
        await asyncio.wait_for(waiter, _WAIT)  # the orphan's turn passed on to it
        assert (bh.running, bh.queued) == (1, 0)
        await bh.__aexit__(None, None, None)

    asyncio.run(main())
    assert (bh.running, bh.queued) == (0, 0)
    orphan.get_coro().close()  # type: ignore[union-attr]


def test_timeouts_fire_on_every_loop_while_another_loops_timer_runs() -> None:
    """Each loop's timer runs in a context of its own: a timer callback still running in one
    thread (here a Task subclass whose cancel() blocks) never stops another loop's deadlines."""
    from failsafe.timeout import TimeoutError as DeadlinePassed

    in_cancel, release = threading.Event(), threading.Event()

    class SlowCancel(asyncio.Task[Any]):
        def cancel(self, msg: Any = None) -> bool:
            in_cancel.set()
            release.wait(_WAIT)
            return super().cancel(msg)

    @timeout(0.01)
    async def stuck() -> None:
        await asyncio.sleep(_WAIT)

    async def first() -> None:
        asyncio.get_running_loop().set_task_factory(
            lambda loop, coro, **kw: SlowCancel(coro, loop=loop, **kw)
        )
        with pytest.raises(DeadlinePassed):
            await asyncio.create_task(stuck())

    holder = _in_thread(first)
    try:
        assert in_cancel.wait(_WAIT)

        async def second() -> None:
            with pytest.raises(DeadlinePassed):  # not wait_for's builtin TimeoutError
                await asyncio.wait_for(stuck(), _WAIT)

        asyncio.run(second())
    finally:
        release.set()
    _joined(holder)


def test_cache_caller_finding_a_flight_that_ends_before_it_joins_looks_again() -> None:
    """Between finding a call in flight and joining it, another thread may end that call: the
    late join says so (the caller looks again) instead of waiting for an answer never sent."""

    async def main() -> None:
        gate = asyncio.Event()

        @cache
        async def load(key: str) -> str:
            await gate.wait()
            return key

        policy: Any = load.policy  # type: ignore[attr-defined]
        leader = asyncio.ensure_future(load("k"))
        await asyncio.sleep(0)
        state, flight = policy._probe("k")
        assert state == 1  # in flight
        gate.set()
        assert await leader == "k"
        late = asyncio.get_running_loop().create_future()
        assert flight.join(late) is False
        assert await load("k") == "k"  # the look again: a hit

    asyncio.run(main())


def test_bulkhead_async_with_across_loops_never_loses_a_slot() -> None:
    """The block form queues and releases across threads just as the decorator does."""
    bh = bulkhead(1, 100)
    inside = 0
    peak = 0

    async def main() -> int:
        nonlocal inside, peak
        done = 0
        for _ in range(50):
            async with bh:
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0)
                inside -= 1
                done += 1
        return done

    threads = [_in_thread(main) for _ in range(4)]
    assert [_joined(t) for t in threads] == [50] * 4
    assert peak == 1
    assert (bh.running, bh.queued) == (0, 0)


def test_cache_single_flight_answers_waiters_on_other_threads_loops() -> None:
    """One computation per key; its waiters on four other loops all get its value."""
    computing = threading.Event()
    finish = threading.Event()
    calls = 0

    @cache
    async def load(key: str) -> str:
        nonlocal calls
        calls += 1
        computing.set()
        await asyncio.to_thread(finish.wait, _WAIT)
        return key.upper()

    leader = _in_thread(lambda: load("k"))
    assert computing.wait(_WAIT)

    joined = threading.Semaphore(0)

    async def follower() -> str:
        call = asyncio.ensure_future(load("k"))
        await asyncio.sleep(0)  # its first step ran: it found the call in flight and waits
        joined.release()
        return await asyncio.wait_for(call, _WAIT)

    followers = [_in_thread(follower) for _ in range(4)]
    for _ in followers:
        assert joined.acquire(timeout=_WAIT)
    finish.set()
    assert _joined(leader) == "K"
    assert [_joined(t) for t in followers] == ["K"] * 4
    assert calls == 1
    stats = load.policy.stats()  # type: ignore[attr-defined]
    assert (stats["shared"], stats["in_flight"]) == (4, 0)


def test_bulkhead_full_across_threads_refuses_without_leaking() -> None:
    bh = bulkhead(2, 2)
    gate = threading.Barrier(4)

    async def main() -> tuple[int, int]:
        ok = refused = 0
        await asyncio.to_thread(gate.wait, _WAIT)
        for _ in range(200):
            try:
                async with bh:
                    await asyncio.sleep(0)
                ok += 1
            except BulkheadFull:
                refused += 1
        return ok, refused

    results = [_joined(t) for t in [_in_thread(main) for _ in range(4)]]
    assert sum(ok + refused for ok, refused in results) == 800
    assert bh.peak_running <= 2
    assert (bh.running, bh.queued) == (0, 0)


# -- every pattern under load from 4 threads ---------------------------------------------------

THREADS = 4
ROUNDS = 5
BATCH = 12


def _on_threads(main: Callable[[int], Coroutine[Any, Any, Any]]) -> list[Any]:
    """Runs main(i) in THREADS threads, each in its own asyncio.run, started together."""
    start = threading.Barrier(THREADS)

    def body(i: int) -> Callable[[], Coroutine[Any, Any, Any]]:
        async def run() -> Any:
            result = await main(i)
            others = asyncio.all_tasks() - {asyncio.current_task()}
            assert not others, f"tasks left on thread {i}'s loop: {others}"
            return result

        def started() -> Coroutine[Any, Any, Any]:
            start.wait(_WAIT)
            return run()

        return started

    threads = [_in_thread(body(i)) for i in range(THREADS)]
    return [_joined(t) for t in threads]


async def _batches(
    call: Callable[[int], Awaitable[Any]], *, cancel_every: int = 4, batch: int = BATCH
) -> Counter[str]:
    """ROUNDS batches of concurrent calls, some cancelled; the outcomes by type name."""
    outcomes: Counter[str] = Counter()
    for r in range(ROUNDS):
        tasks = [asyncio.ensure_future(call(r * batch + j)) for j in range(batch)]
        await asyncio.sleep(0)
        for t in tasks[1::cancel_every]:
            t.cancel()
        for res in await asyncio.gather(*tasks, return_exceptions=True):
            outcomes[type(res).__name__] += 1
    return outcomes


def _total(results: list[Counter[str]]) -> Counter[str]:
    return sum(results, Counter())


class _Inside:
    """Counts calls inside a section across threads, and the most at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.peak = self.entered = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.entered += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def _eventually(cond: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + _WAIT
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@pytest.mark.parametrize("max_wait", [None, 0.002])
def test_bulkhead_under_threads(max_wait: float | None) -> None:
    bh = bulkhead(2, 8, max_wait=max_wait)
    inside = _Inside()

    @bh
    async def work(j: int) -> int:
        with inside:
            await asyncio.sleep(0.001 if j % 3 else 0)
        return j

    async def main(i: int) -> Counter[str]:
        async def either(j: int) -> int:
            if j % 5:
                return await work(j)
            async with bh:  # the block form shares the slots and the queue
                with inside:
                    await asyncio.sleep(0)
            return j

        return await _batches(either)

    total = _total(_on_threads(main))
    assert inside.peak <= 2
    assert bh.peak_running <= 2
    assert bh.peak_queued <= 6
    assert set(total) <= {"int", "BulkheadFull", "CancelledError"}
    assert total["int"] > 0
    assert total["BulkheadFull"] > 0
    assert total["int"] <= inside.entered <= bh.stats()["admitted"]
    assert (bh.running, bh.queued) == (0, 0)
    assert not bh._holds_state()


@pytest.mark.parametrize(
    ("make", "keys"),
    [
        (lambda: tokenbucket(10, 0.5, max_wait=0.05), 1),
        (lambda: slidingwindow(10, 0.5, max_wait=0.05), 1),
        (lambda: tokenbucket(10, 0.5, max_wait=0.05, key=lambda j: j % 2), 2),
    ],
    ids=["tokenbucket", "slidingwindow", "per-key"],
)
def test_limiter_under_threads(make: Callable[[], Any], keys: int) -> None:
    """Never admits more than the limit allows over the whole run, waiters and all."""
    limiter = make()
    inside = _Inside()

    @limiter
    async def work(j: int) -> int:
        with inside:
            pass
        return j

    started = time.monotonic()
    total = _total(_on_threads(lambda i: _batches(work)))
    elapsed = time.monotonic() - started
    # 10 per 0.5 s: a burst of 10, then one per 50 ms (the sliding window admits no more).
    bound = keys * (10 + elapsed / 0.05 + 1)
    assert set(total) <= {"int", "RateLimitExceeded", "CancelledError"}
    assert total["RateLimitExceeded"] > 0
    assert total["int"] <= inside.entered <= limiter.stats()["admitted"] <= bound
    assert _eventually(lambda: not limiter._holds_state())  # no reservation left behind


def test_cache_single_flight_under_threads() -> None:
    """Each key is computed to the end once, whoever leads; every caller gets its value."""
    lock = threading.Lock()
    computed: Counter[int] = Counter()

    @cache
    async def load(key: int) -> int:
        await asyncio.sleep(0.001)
        with lock:
            computed[key] += 1
        return key * 10

    async def main(i: int) -> Counter[str]:
        async def call(j: int) -> int:
            key = j % 6
            value = await load(key)
            assert value == key * 10
            return value

        return await _batches(call, cancel_every=5)

    total = _total(_on_threads(main))
    assert set(total) <= {"int", "CancelledError"}
    assert dict(computed) == dict.fromkeys(range(6), 1)
    stats = load.policy.stats()  # type: ignore[attr-defined]
    assert stats["in_flight"] == 0
    assert stats["set"] == 6
    assert not load.policy._holds_state()  # type: ignore[attr-defined]


def test_breaker_under_threads() -> None:
    br = consecutive_breaker(ConnectionError, 3, 0.01, 2)

    @br
    async def work(j: int) -> int:
        await asyncio.sleep(0)
        if (j // 6) % 2 == 0:  # runs of failures, then of successes
            raise ConnectionError(j)
        return j

    total = _total(_on_threads(lambda i: _batches(work)))
    assert set(total) <= {"int", "ConnectionError", "BreakerFailing", "CancelledError"}
    stats = br.stats()
    assert stats["success"] == total["int"]
    assert stats["failure"] == total["ConnectionError"]
    assert stats["rejected"] == total["BreakerFailing"]
    assert stats["transition.failing"] > 0
    opened, probing, closed = (
        stats[f"transition.{s}"] for s in ("failing", "recovering", "working")
    )
    assert probing <= opened <= probing + 1  # failing only from working or after a probe
    assert closed <= probing

    async def until_closed() -> None:  # no probe slot was leaked by a cancelled call
        while br.state != "working":
            try:
                await work(6)
            except BreakerFailing:
                await asyncio.sleep(0.002)

    asyncio.run(asyncio.wait_for(until_closed(), _WAIT))
    assert br.stats()["probes_in_flight"] == 0
    assert not br._holds_state()


def test_failfast_under_threads() -> None:
    ff = failfast(failure_threshold=3, recovery_time=0.01)

    @ff
    async def work(j: int) -> int:
        await asyncio.sleep(0)
        if (j // 6) % 2 == 0:
            raise ConnectionError(j)
        return j

    total = _total(_on_threads(lambda i: _batches(work)))
    assert set(total) <= {"int", "ConnectionError", "FailFastOpen", "CancelledError"}
    stats = ff.stats()
    assert stats["opened"] > 0
    assert stats["opened"] - stats["closed"] in (0, 1)
    assert stats["rejected"] <= total["FailFastOpen"]
    assert _eventually(lambda: not ff.is_open)
    assert asyncio.run(work(6)) == 6
    assert not ff._holds_state()


def test_timeout_under_threads() -> None:
    """Each loop's deadlines fire on that loop only: slow calls time out, quick ones never."""

    @timeout(0.02)
    async def work(j: int) -> int:
        if j % 2:
            await asyncio.sleep(_WAIT)  # only the deadline ends it
        return j  # quick ones never suspend: nothing can interrupt them

    async def main(i: int) -> Counter[str]:
        async def call(j: int) -> str:
            try:
                await work(j)
            except TimeoutError:
                assert j % 2, "a quick call timed out"
                return "timed out"
            assert not j % 2, "a slow call was not timed out"
            return "done"

        outcomes = await _batches(call)
        assert _native._timeout_pending() == 0
        return outcomes

    total = _total(_on_threads(main))
    assert set(total) <= {"str", "CancelledError"}
    assert work.policy.stats()["fired"] > 0  # type: ignore[attr-defined]


def test_hedge_under_threads() -> None:
    h = hedge(attempts=2, delay=0.002)
    lock = threading.Lock()
    attempts: Counter[int] = Counter()

    @h
    async def work(j: int) -> int:
        with lock:
            attempts[j] += 1
            first = attempts[j] == 1
        if first and j % 2:
            await asyncio.sleep(_WAIT)  # a slow first attempt: the second one wins
        return j

    async def main(i: int) -> Counter[str]:
        outcomes = await _batches(lambda j: work(i * 1000 + j))
        assert _native._timeout_pending() == 0  # no hedge delay left armed
        return outcomes

    total = _total(_on_threads(main))
    assert set(total) <= {"int", "CancelledError"}
    assert all(n <= 2 for n in attempts.values())
    assert h.stats()["success"] == total["int"]


def test_retry_toggle_and_fallback_under_threads() -> None:
    toggle = featuretoggle()
    again = retry(attempts=2, backoff=0, on=ConnectionError)
    instead = fallback(-1, on=FeatureDisabled)
    lock = threading.Lock()
    tries: Counter[tuple[int, int]] = Counter()

    @instead
    @again
    @toggle
    async def work(i: int, j: int) -> int:
        with lock:
            tries[i, j] += 1
            first = tries[i, j] == 1
        await asyncio.sleep(0)
        if first:
            raise ConnectionError
        return j

    made = [0] * THREADS

    async def main(i: int) -> Counter[str]:
        def call(j: int) -> Awaitable[int]:
            if i == 0 and j % 7 == 0:
                toggle.disable() if toggle.enabled else toggle.enable()
            made[i] += 1
            return work(i, j)

        return await _batches(call)

    total = _total(_on_threads(main))
    toggle.enable()
    assert set(total) <= {"int", "CancelledError"}
    t = toggle.stats()
    assert t["enabled"] + t["disabled"] >= sum(made)  # every call, and every retry, admitted
    assert 0 < instead.stats()["invoked"] <= t["disabled"]
    assert again.stats()["success"] + instead.stats()["invoked"] == total["int"]


def test_keyed_makes_one_policy_per_key_across_threads() -> None:
    """Issue 10, item 9: threads asking for one new key at once share one policy (one admission
    per key of tokenbucket(1, 3600)), made by one factory call."""
    lock = threading.Lock()
    made: Counter[int] = Counter()

    def factory(key: int) -> Any:
        with lock:
            made[key] += 1
        time.sleep(0.001)  # lets the other threads in while this key's policy is being made
        return tokenbucket(1, 3600)

    registry = keyed(factory, key=lambda key, j: key, max_keys=100)
    admitted: Counter[int] = Counter()

    @registry
    async def work(key: int, j: int) -> int:
        with lock:
            admitted[key] += 1
        return key

    async def main(i: int) -> Counter[str]:
        return await _batches(lambda j: work(j % 8, j), cancel_every=BATCH)

    total = _total(_on_threads(main))
    assert dict(made) == dict.fromkeys(range(8), 1)
    assert dict(admitted) == dict.fromkeys(range(8), 1)
    assert set(total) <= {"int", "RateLimitExceeded", "CancelledError"}


def test_keyed_bulkheads_under_threads() -> None:
    """A registry of 2 bulkheads shared by threads: a bulkhead with calls inside is never
    forgotten, so no key ever has more calls inside than its limit."""
    insides = {k: _Inside() for k in range(4)}
    registry = keyed(lambda k: bulkhead(1, 3), key=lambda k, j: k, max_keys=2)

    @registry
    async def work(k: int, j: int) -> int:
        with insides[k]:
            await asyncio.sleep(0.001 if j % 2 else 0)
        return k

    async def main(i: int) -> Counter[str]:
        return await _batches(lambda j: work(j % 4, j))

    total = _total(_on_threads(main))
    assert set(total) <= {"int", "BulkheadFull", "RegistryFull", "CancelledError"}
    assert total["int"] > 0
    assert all(inside.peak <= 1 for inside in insides.values())
    assert all(not registry.get(k)._holds_state() for k in list(registry))
