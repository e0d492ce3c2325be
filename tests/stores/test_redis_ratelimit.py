"""tokenbucket / slidingwindow with store=: exact limits on the server's clock, local refusals,
waiting turns, keys, prefetch, and what each on_error does while Redis is down or stalled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis_server import REDIS_CLI, RedisServer, connected

from failsafe.ratelimit import RateLimitExceeded, slidingwindow, tokenbucket
from failsafe.stores import RedisStore


@pytest.fixture(params=["node", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    """A store on the session's single node, then on its 3-node cluster."""
    server = request.getfixturevalue("redis_server" if request.param == "node" else "redis_cluster")
    s = await connected(RedisStore(server.url, prefix=f"rl-{request.node.name}"[:60], op_timeout=2))
    yield s
    await s.aclose()


async def _try(limit: object, key: object = None) -> float | None:
    """None when admitted, else the refusal's retry_after_seconds."""
    try:
        await limit.acquire(key) if key is not None else await limit.acquire()  # type: ignore[attr-defined]
    except RateLimitExceeded as exc:
        return exc.retry_after_seconds or -1.0  # -1.0: refused without a retry_after
    return None


async def test_tokenbucket_burst_then_refusal_with_retry_after(store: RedisStore) -> None:
    limit = tokenbucket(10, 1, bucket_size=3, store=store, name="tb")
    results = await asyncio.gather(*(_try(limit) for _ in range(8)))
    assert results.count(None) == 3
    refusals = [r for r in results if r is not None]
    assert all(0 < r <= 0.1 for r in refusals)  # one token per 0.1 s
    assert limit.stats()["admitted"] == 3
    assert limit.stats()["rejected"] == 5


async def test_a_refused_key_is_refused_locally_until_retry_after(store: RedisStore) -> None:
    limit = tokenbucket(1, 0.3, store=store, name="local_refusal")
    assert await _try(limit) is None
    assert await _try(limit) is not None
    trips = store.stats()["round_trips"]
    for _ in range(20):
        retry = await _try(limit)
        assert retry is not None
        assert 0 < retry <= 0.3
    assert store.stats()["round_trips"] == trips  # no round trip while refused
    await asyncio.sleep(0.35)
    assert await _try(limit) is None


async def test_max_wait_serves_turns_in_order(store: RedisStore) -> None:
    limit = tokenbucket(20, 1, bucket_size=1, max_wait=1, store=store, name="waiting")
    order: list[int] = []
    t0 = time.monotonic()

    async def call(i: int) -> float:
        await limit.acquire()
        order.append(i)
        return time.monotonic() - t0

    times = await asyncio.gather(*(call(i) for i in range(6)))
    assert order == list(range(6))  # FIFO within the process
    assert times[-1] >= 5 * 0.05 - 0.01  # five intervals of 50 ms after the first
    # A call that cannot get a turn within max_wait is refused.
    limit2 = tokenbucket(1, 10, max_wait=0.5, store=store, name="too_far")
    assert await _try(limit2) is None
    retry = await _try(limit2)
    assert retry is not None
    assert retry > 9


async def test_cancelled_waiter_gives_its_turn_back(store: RedisStore) -> None:
    limit = tokenbucket(2, 1, bucket_size=1, max_wait=2, store=store, name="give_back")
    await limit.acquire()
    waiter = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.05)  # the give-back travels in the next pipeline
    t0 = time.monotonic()
    await limit.acquire()  # takes the returned turn: ~0.5 s after the first, not 1 s
    assert time.monotonic() - t0 < 0.45


async def test_keyed_limits_are_per_key(store: RedisStore) -> None:
    limit = tokenbucket(2, 60, key=lambda user: user, store=store, name="per_user")
    calls: list[str] = []

    @limit
    async def fetch(user: str) -> str:
        calls.append(user)
        return user

    for user in ("ann", "bob"):
        assert await fetch(user) == user
        assert await fetch(user) == user
        with pytest.raises(RateLimitExceeded):
            await fetch(user)
    assert calls == ["ann", "ann", "bob", "bob"]


async def test_sliding_window_is_exact(store: RedisStore) -> None:
    limit = slidingwindow(3, 0.5, store=store, name="sw")
    assert [await _try(limit) for _ in range(4)][:3] == [None, None, None]
    retry = await _try(limit)
    assert retry is not None
    assert 0.3 < retry <= 0.5
    await asyncio.sleep(retry + 0.02)
    assert await _try(limit) is None

    waiting = slidingwindow(2, 0.3, max_wait=1, store=store, name="sw_wait")
    t0 = time.monotonic()
    times = await asyncio.gather(*(_timed(waiting, t0) for _ in range(5)))
    assert sorted(times)[2] >= 0.29
    assert sorted(times)[4] >= 0.59


async def _timed(limit: object, t0: float) -> float:
    await limit.acquire()  # type: ignore[attr-defined]
    return time.monotonic() - t0


async def test_prefetch_takes_tokens_per_round_trip(store: RedisStore) -> None:
    limit = tokenbucket(1000, 1, bucket_size=100, store=store, name="prefetched", prefetch=10)
    for _ in range(50):
        await limit.acquire()
    assert store.stats()["decisions"] == 5  # ten tokens per round trip
    assert limit.stats()["admitted"] == 50


async def test_parameters_travel_with_each_decision(store: RedisStore) -> None:
    # A deploy that lowers the limit takes effect at once on the shared bucket.
    old = tokenbucket(100, 1, bucket_size=100, store=store, name="deploy")
    for _ in range(5):
        await old.acquire()
    # The new limit reads the same bucket (50 ms of debt) with its own parameters: of its burst
    # of 3 one minute-long token is partly spent, so 2 are left.
    new = tokenbucket(1, 60, bucket_size=3, store=store, name="deploy")
    assert [await _try(new) for _ in range(3)][:2] == [None, None]
    assert await _try(new) is not None
    # A process still on the old parameters sees the debt the new ones left: refused for ~2 min.
    retry = await _try(old)
    assert retry is not None
    assert retry > 100


@pytest.mark.parametrize("on_error", ["local", "allow", "deny"])
async def test_server_killed_and_restarted(own_redis: RedisServer, on_error: str) -> None:
    store = await connected(
        RedisStore(own_redis.url, prefix="outage", on_error=on_error, op_timeout=2)
    )
    store.retry_interval = 0.2
    limit = tokenbucket(5, 60, store=store, name="outage")
    assert await _try(limit) is None
    store.op_timeout = 0.05  # (the answer above must not fall back on a loaded machine)
    own_redis.kill()
    outcomes: list[float | None] = []
    longest = 0.0
    for _ in range(12):
        t0 = time.monotonic()
        outcomes.append(await _try(limit))
        longest = max(longest, time.monotonic() - t0)
        await asyncio.sleep(0.03)
    admitted = outcomes.count(None)
    if on_error == "allow":
        assert admitted == 12
    elif on_error == "deny":
        assert admitted == 0
    else:  # this process's own bucket of 5
        assert admitted == 5
    print(f"tokenbucket, redis killed, on_error={on_error}: longest call {longest * 1000:.1f} ms")
    assert longest < store.op_timeout + 0.4
    assert store.stats()["fallbacks"] == 12
    own_redis.start()  # same port, empty
    store.op_timeout = 2
    await asyncio.sleep(store.retry_interval + 0.05)
    results = [await _try(limit) for _ in range(6)]
    assert results.count(None) == 5  # shared again: the restarted server's fresh bucket
    assert store.up
    await store.aclose()


@pytest.mark.skipif(REDIS_CLI is None, reason="redis-cli not found")
async def test_a_stalled_server_never_stalls_a_call(own_redis: RedisServer) -> None:
    store = await connected(
        RedisStore(own_redis.url, prefix="stall", on_error="local", op_timeout=2)
    )
    limit = tokenbucket(1000, 1, store=store, name="stall")
    await limit.acquire()
    store.op_timeout = 0.05  # (the answer above must not fall back on a loaded machine)
    assert REDIS_CLI is not None
    sleeper = await asyncio.create_subprocess_exec(
        REDIS_CLI, "-p", str(own_redis.port), "debug", "sleep", "1.0"
    )
    try:
        await asyncio.sleep(0.1)
        longest = 0.0
        for _ in range(20):
            t0 = time.monotonic()
            await asyncio.gather(*(limit.acquire() for _ in range(10)))
            longest = max(longest, time.monotonic() - t0)
        print(f"tokenbucket, redis stalled 1 s: longest call {longest * 1000:.1f} ms")
        assert longest < store.op_timeout + 0.25
        assert store.stats()["fallbacks"] >= 10
    finally:
        await sleeper.wait()
    store.op_timeout = 2
    await asyncio.sleep(store.retry_interval + 0.1)
    await limit.acquire()
    assert store.up
    await store.aclose()


async def test_keyed_registry_of_shared_limits(store: RedisStore) -> None:
    from failsafe.keyed import keyed

    per_tenant = keyed(
        lambda tenant: tokenbucket(1, 60, store=store, name=f"tenant.{tenant}"),
        key=lambda tenant: tenant,
    )

    @per_tenant
    async def query(tenant: str) -> str:
        return tenant

    assert await query("a") == "a"
    assert await query("b") == "b"
    with pytest.raises(RateLimitExceeded):
        await query("a")
    per_tenant.clear()  # forgetting the local policy does not reset the shared bucket
    with pytest.raises(RateLimitExceeded):
        await query("a")


async def test_listeners_hear_shared_refusals(store: RedisStore) -> None:
    from failsafe.ratelimit import RateLimitListener

    heard: list[float] = []

    class Listener(RateLimitListener):
        def on_rate_limited(self, limiter: object, retry_after: float) -> None:
            heard.append(retry_after)

    limit = tokenbucket(1, 60, store=store, name="heard", listeners=[Listener()])
    await limit.acquire()
    with pytest.raises(RateLimitExceeded):
        await limit.acquire()
    assert len(heard) == 1
    assert 59 < heard[0] <= 60
