"""One policy shared by threads, each running its own event loop.

A waiter is woken on its own loop, whoever frees what it waits for; a waiter whose loop is
closed is passed over without leaking what it was given. Then every pattern under load from 4
threads (waiters, refusals, cancellations), checked against its invariants and ending idle.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from failsafe.bulkhead import BulkheadFull, bulkhead
from failsafe.cache import cache

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


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
