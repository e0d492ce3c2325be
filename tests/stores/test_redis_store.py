"""RedisStore against a real redis-server: validation, lazy connection, batching, scripts,
clients per event loop, closing, the breaker around Redis and its counters."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis.asyncio as aioredis
from redis_server import RedisCluster, RedisServer, connected

from failsafe.bulkhead import bulkhead
from failsafe.ratelimit import RateLimitExceeded, slidingwindow, tokenbucket
from failsafe.stores import RedisStore, Store
from failsafe.stores import redis as redis_store_module


def test_validation() -> None:
    with pytest.raises(TypeError, match="url_or_client"):
        RedisStore(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="url_or_client"):
        RedisStore("http://localhost")
    with pytest.raises(ValueError, match="on_error"):
        RedisStore("redis://localhost", on_error="open")
    with pytest.raises(TypeError, match="on_error"):
        RedisStore("redis://localhost", on_error=None)  # type: ignore[arg-type]
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="op_timeout"):
            RedisStore("redis://localhost", op_timeout=bad)
    with pytest.raises(ValueError, match="prefix"):
        RedisStore("redis://localhost", prefix="a{b}")
    store = RedisStore("redis://localhost")
    with pytest.raises(TypeError, match="store"):
        tokenbucket(5, 1, store="redis://localhost", name="x")
    with pytest.raises(TypeError, match="store"):
        bulkhead(2, store=object(), name="x")
    for make in (
        lambda: tokenbucket(5, 1, store=store),
        lambda: slidingwindow(5, 1, store=store),
        lambda: bulkhead(2, store=store),
    ):
        with pytest.raises(ValueError, match="name"):
            make()
    with pytest.raises(ValueError, match="lease"):
        bulkhead(2, lease=5)
    with pytest.raises(ValueError, match="lease"):
        bulkhead(2, store=store, name="x", lease=0)
    with pytest.raises(ValueError, match="prefetch"):
        tokenbucket(5, 1, store=store, name="x", prefetch=0)
    with pytest.raises(ValueError, match="prefetch"):
        tokenbucket(5, 1, name="x", prefetch=5)
    with pytest.raises(TypeError, match="prefetch"):  # a sliding window logs each admission
        slidingwindow(5, 1, store=store, name="x", prefetch=5)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="max_executions"):
        tokenbucket(0, 1, store=store, name="x")
    assert isinstance(store, Store)


def test_policies_build_at_import_time_without_a_loop(redis_server: RedisServer) -> None:
    # Built outside any event loop; the first call (in a loop) connects.
    store = RedisStore(redis_server.url, prefix="import", op_timeout=2)
    limit = tokenbucket(2, 60, store=store, name="at_import")
    assert store.stats()["round_trips"] == 0

    async def main() -> int:
        admitted = 0
        for _ in range(4):
            try:
                await limit.acquire()
                admitted += 1
            except RateLimitExceeded:
                pass
        await store.aclose()
        return admitted

    assert asyncio.run(main()) == 2


async def test_concurrent_decisions_share_one_round_trip(redis_server: RedisServer) -> None:
    store = await connected(RedisStore(redis_server.url, prefix="batch", op_timeout=2))
    limit = tokenbucket(1000, 1, store=store, name="batched")
    await limit.acquire()  # connects
    before = store.stats()["round_trips"]
    await asyncio.gather(*(limit.acquire() for _ in range(50)))
    assert store.stats()["round_trips"] == before + 1
    assert store.stats()["decisions"] == 51
    await store.aclose()


async def test_scripts_reload_after_script_flush(redis_server: RedisServer) -> None:
    store = await connected(RedisStore(redis_server.url, prefix="flush", op_timeout=2))
    limit = tokenbucket(3, 60, store=store, name="flushed")
    await limit.acquire()
    redis_server.cli("script", "flush")
    await limit.acquire()
    await limit.acquire()
    with pytest.raises(RateLimitExceeded):
        await limit.acquire()
    assert store.stats()["errors"] == 0
    await store.aclose()


async def test_keys_are_hash_tagged_under_the_prefix(redis_server: RedisServer) -> None:
    store = await connected(RedisStore(redis_server.url, prefix="tagged", op_timeout=2))
    await tokenbucket(3, 60, store=store, name="tb")(_noop)()
    await slidingwindow(3, 60, store=store, name="sw")(_noop)()
    keyed = tokenbucket(3, 60, key=lambda user: user, store=store, name="per_user")
    await keyed(_noop)("ann")
    keys = set(redis_server.cli("--scan", "--pattern", "{tagged:*").split())
    assert keys == {"{tagged:tb}", "{tagged:sw}", "{tagged:sw}:seq", "{tagged:per_user}:k:ann"}
    await store.aclose()


async def _noop(*args: object) -> None:
    return None


async def test_aclose_closes_only_a_client_it_made(redis_server: RedisServer) -> None:
    client = aioredis.Redis(port=redis_server.port)
    given = RedisStore(client, prefix="given", op_timeout=2)
    await tokenbucket(5, 1, store=given, name="g").acquire()
    await given.aclose()
    assert await client.ping()  # still usable: its owner closes it
    await client.aclose()

    made = RedisStore(redis_server.url, prefix="made", op_timeout=2)
    await tokenbucket(5, 1, store=made, name="m").acquire()
    made_client = await made._client()
    await made.aclose()
    assert made.stats()["loops"] == 0
    assert made_client.connection_pool._in_use_connections == set()  # type: ignore[union-attr]


def test_one_store_serves_several_event_loops(redis_server: RedisServer) -> None:
    # A redis.asyncio client belongs to one loop: the store keeps one per loop, the given
    # client on the first, a copy of its settings on the others.
    client = aioredis.Redis(port=redis_server.port)
    store = RedisStore(client, prefix="loops", op_timeout=2)
    limit = tokenbucket(40, 60, store=store, name="threads")
    results: list[int] = []

    def worker() -> None:
        async def run() -> int:
            admitted = 0
            for _ in range(20):
                try:
                    await limit.acquire()
                    admitted += 1
                except RateLimitExceeded:
                    pass
            return admitted

        results.append(asyncio.run(run()))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(results) == 40  # one limit across the three loops
    assert store.stats()["errors"] == 0


def test_aclose_in_one_loop_leaves_another_loops_client_working(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, prefix="close-one-loop", op_timeout=2)
    limit = tokenbucket(100, 60, store=store, name="l")
    b_connected, a_closed = threading.Event(), threading.Event()
    b_clients: list[object] = []

    async def loop_a() -> None:
        await limit.acquire()
        assert b_connected.wait(60)
        await store.aclose()
        a_closed.set()

    async def loop_b() -> None:
        await limit.acquire()
        b_clients.append(await store._client())
        b_connected.set()
        assert await asyncio.to_thread(a_closed.wait, 60)
        await limit.acquire()  # on the same connection: A's aclose did not close it
        b_clients.append(await store._client())
        await store.aclose()

    threads = [threading.Thread(target=asyncio.run, args=(loop(),)) for loop in (loop_a, loop_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(b_clients) == 2
    assert b_clients[0] is b_clients[1]
    stats = store.stats()
    assert (stats["decisions"], stats["errors"], stats["fallbacks"], stats["loops"]) == (3, 0, 0, 0)


async def test_a_dead_server_costs_one_timeout_per_interval(own_redis: RedisServer) -> None:
    store = await connected(
        RedisStore(own_redis.url, prefix="dead", on_error="allow", op_timeout=2)
    )
    limit = tokenbucket(1000, 1, store=store, name="d")
    await limit.acquire()  # answered (a loaded machine may outlast a short op_timeout)
    store.op_timeout = 0.05
    own_redis.kill()
    t0 = time.monotonic()
    calls = 0
    while time.monotonic() - t0 < 0.6:
        await limit.acquire()  # allowed: fails open
        calls += 1
        await asyncio.sleep(0.002)
    s = store.stats()
    assert s["errors"] == 1  # the first failure opened the breaker for retry_interval
    assert s["fallbacks"] == calls
    assert s["opened"] == 1
    assert not s["up"]
    await store.aclose()


async def test_store_counters_are_exported_as_a_metrics_series(own_redis: RedisServer) -> None:
    from failsafe import _core

    store = await connected(
        RedisStore(own_redis.url, prefix="otel:svc", on_error="deny", op_timeout=2)
    )
    limit = tokenbucket(5, 1, store=store, name="exported")
    await limit.acquire()
    own_redis.kill()
    with pytest.raises(RateLimitExceeded):
        await limit.acquire()
    series = {(name, pattern): (metrics, s) for name, pattern, metrics, s in _core.all_series()}
    metrics, s = series["redis.otel_svc", "store"]
    counts = dict(zip(metrics, s.read(), strict=False))
    assert counts["errors"] >= 1
    assert counts["fallbacks"] >= 1
    assert counts["decisions"] >= 1
    await store.aclose()


def test_a_given_cluster_client_serves_several_event_loops(redis_cluster: RedisCluster) -> None:
    client = aioredis.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    store = RedisStore(client, prefix="cluster-loops", op_timeout=2)
    limit = tokenbucket(30, 60, store=store, name="threads")
    results: list[int] = []

    def worker() -> None:
        async def run() -> int:
            admitted = 0
            for _ in range(20):
                try:
                    await limit.acquire()
                    admitted += 1
                except RateLimitExceeded:
                    pass
            await store.aclose()
            return admitted

        results.append(asyncio.run(run()))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(results) == 30, store.stats()
    assert store.stats()["errors"] == 0


async def _delivered(publisher: aioredis.Redis, channel: str, got: asyncio.Event) -> None:
    """Publishes on channel until its subscriber has received a message (a cluster's PUBLISH
    counts only the receivers on the node it reached, so the callback is the evidence)."""
    for _ in range(100):
        await publisher.publish(channel, "changed")
        try:
            await asyncio.wait_for(got.wait(), 0.1)
            return
        except TimeoutError:
            pass
    pytest.fail(f"no message of {channel!r} reached its subscriber")


@pytest.mark.parametrize("where", ["single", "cluster"])
async def test_a_new_channel_is_subscribed_while_the_reader_waits(
    where: str,
    redis_server: RedisServer,
    redis_cluster: RedisCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The reader's wait for a message never ends by itself here: a channel added while it
    # waits must not depend on that wait ending.
    monkeypatch.setattr(redis_store_module, "_IDLE", 3600.0)
    url = redis_server.url if where == "single" else redis_cluster.url
    store = RedisStore(url, prefix="subs", op_timeout=2.0)
    publisher = aioredis.Redis.from_url(url)
    first, second = asyncio.Event(), asyncio.Event()
    store._subscribe("subs-first", first.set)
    await _delivered(publisher, "subs-first", first)  # the reader now waits on its connection
    store._subscribe("subs-second", second.set)
    await _delivered(publisher, "subs-second", second)
    first.clear()
    await _delivered(publisher, "subs-first", first)  # the first channel still delivers
    await publisher.aclose()
    await store.aclose()
