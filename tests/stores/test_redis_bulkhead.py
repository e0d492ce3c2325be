"""bulkhead(..., store=, lease=) in one process against a real Redis: the cap, the queue and
max_capacity, max_wait, cancellation, two policies (as two processes would) sharing permits,
and each on_error while Redis is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis_server import REDIS_CLI, RedisServer, connected

from failsafe.bulkhead import BulkheadFull, bulkhead
from failsafe.stores import RedisStore


@pytest.fixture(params=["node", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    """A store on the session's single node, then on its 3-node cluster."""
    server = request.getfixturevalue("redis_server" if request.param == "node" else "redis_cluster")
    s = await connected(RedisStore(server.url, prefix=f"bh-{request.node.name}"[:60], op_timeout=2))
    yield s
    await s.aclose()


async def test_cap_queue_and_capacity(store: RedisStore) -> None:
    policy = bulkhead(2, 5, max_wait=5, store=store, name="cap", lease=5)
    running = peak = 0

    @policy
    async def body() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    results = await asyncio.gather(*(body() for _ in range(7)), return_exceptions=True)
    full = [r for r in results if isinstance(r, BulkheadFull)]
    assert len(full) == 2  # 2 running + 3 queued fit; the last two are refused at once
    assert not any(f.timed_out for f in full)
    assert peak == 2
    s = policy.stats()
    assert (s["admitted"], s["waited"], s["full"]) == (5, 3, 2)
    assert (s["running"], s["queued"]) == (0, 0)


async def test_two_policies_share_permits(store: RedisStore) -> None:
    # Two policy objects with one name behave as two processes would.
    a = bulkhead(1, 1, store=store, name="pair", lease=5)
    b = bulkhead(1, 1, store=store, name="pair", lease=5)
    async with a:
        with pytest.raises(BulkheadFull):
            async with b:
                pass
    async with b:
        pass


async def test_max_wait_times_out(store: RedisStore) -> None:
    holder = bulkhead(1, 2, max_wait=0.3, store=store, name="timeout", lease=5)
    async with holder:
        t0 = time.monotonic()
        with pytest.raises(BulkheadFull) as info:
            async with holder:
                pass
        assert info.value.timed_out
        assert 0.3 <= time.monotonic() - t0 < 1.0
    assert holder.stats()["timed_out"] == 1
    async with holder:  # the timed-out waiter left the queue
        pass


async def test_release_wakes_a_waiter_before_its_poll(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Queued calls poll a minute apart here (so at max_wait at the latest): only the release's
    # wake-up (pub/sub) lets the waiter in well before then.
    monkeypatch.setattr("failsafe.stores._bulkhead._POLL", 60.0)
    policy = bulkhead(1, 2, max_wait=10, store=store, name="wake", lease=5)
    other = bulkhead(1, 2, max_wait=10, store=store, name="wake", lease=5)
    entered = asyncio.Event()

    async def hold() -> None:
        async with policy:
            entered.set()
            await asyncio.sleep(0.3)

    holder = asyncio.ensure_future(hold())
    await entered.wait()
    t0 = time.monotonic()
    async with other:
        waited = time.monotonic() - t0
    await holder
    assert 0.2 < waited < 5  # queued until the release, then woken by it (next poll: 10 s)


async def test_cancellation_frees_at_once(store: RedisStore) -> None:
    policy = bulkhead(1, 3, max_wait=5, store=store, name="cancel", lease=30)
    started = asyncio.Event()

    @policy
    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    running = asyncio.ensure_future(forever())
    await started.wait()
    queued = asyncio.ensure_future(forever())
    await asyncio.sleep(0.1)
    queued.cancel()  # cancelled while queued: leaves the queue
    running.cancel()  # cancelled while running: frees its permit
    for task in (queued, running):
        with pytest.raises(asyncio.CancelledError):
            await task
    t0 = time.monotonic()
    async with policy:  # at once, not after the 30 s lease
        assert time.monotonic() - t0 < 0.5
        assert policy.stats()["running"] == 1
    assert policy.stats()["running"] == 0


@pytest.mark.parametrize("on_error", ["local", "allow", "deny"])
async def test_redis_down_under_each_on_error(own_redis: RedisServer, on_error: str) -> None:
    store = await connected(
        RedisStore(own_redis.url, prefix="bh-down", on_error=on_error, op_timeout=2)
    )
    store.retry_interval = 0.2
    policy = bulkhead(2, 2, store=store, name="down", lease=5)
    async with policy:
        pass
    store.op_timeout = 0.05  # (the answer above must not fall back on a loaded machine)
    own_redis.kill()
    admitted = full = 0
    longest = 0.0

    async def call() -> None:
        nonlocal admitted, full, longest
        t0 = time.monotonic()
        try:
            async with policy:
                admitted += 1
                await asyncio.sleep(0.05)
        except BulkheadFull:
            full += 1
        longest = max(longest, time.monotonic() - t0)

    await asyncio.gather(*(call() for _ in range(5)))
    expected = {"local": 2, "allow": 5, "deny": 0}[on_error]
    assert admitted == expected
    assert full == 5 - expected
    print(f"bulkhead, redis killed, on_error={on_error}: longest call {longest * 1000:.1f} ms")
    assert longest < 0.05 + 0.05 + 0.4  # op_timeout + the body + margin
    assert policy.stats()["running"] == 0
    own_redis.start()
    store.op_timeout = 2
    await asyncio.sleep(store.retry_interval + 0.05)
    async with policy:  # shared again
        pass
    assert store.up
    await store.aclose()


async def test_a_stalled_server_leaves_no_permit_behind(own_redis: RedisServer) -> None:
    # A request that timed out during the stall is run by the server when it catches up: the
    # permit it took is released before this process's next request, not after its lease.
    store = await connected(
        RedisStore(own_redis.url, prefix="bh-stall", on_error="local", op_timeout=2)
    )
    store.retry_interval = 0.2
    policy = bulkhead(1, 1, store=store, name="stall", lease=30)
    async with policy:
        pass
    store.op_timeout = 0.05  # (the answer above must not fall back on a loaded machine)
    assert REDIS_CLI is not None
    sleeper = await asyncio.create_subprocess_exec(
        REDIS_CLI, "-p", str(own_redis.port), "debug", "sleep", "1.0"
    )
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    async with policy:  # decided locally after op_timeout
        longest = time.monotonic() - t0
    print(f"bulkhead, redis stalled 1 s: call entered after {longest * 1000:.1f} ms")
    assert longest < store.op_timeout + 0.25
    await sleeper.wait()
    store.op_timeout = 2
    await asyncio.sleep(store.retry_interval + 0.05)
    async with policy:  # shared again, and not full
        assert store.up
    await store.aclose()
