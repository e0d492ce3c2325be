"""A cache shared through a real Redis (single node and cluster) by real worker processes:
one computation per key for the fleet, hits in new processes, invalidation seen everywhere,
signed pickles, errors never stored, a killed leader, and Redis killed under each on_error."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis_cache_worker import LOCK_TTL
from redis_server import Outage, RedisCluster, RedisServer
from workers import SLOWDOWN, Worker, stop_all

from failsafe.cache import CacheUnavailable, cache
from failsafe.stores import RedisStore
from failsafe.stores._cache import key_digest

WORKER = str(Path(__file__).with_name("redis_cache_worker.py"))
PROCESSES, TASKS = 4, 10
pytestmark = pytest.mark.timeout(300)


def _worker(*args: str) -> Worker:
    return Worker(WORKER, *args)


def _flight(url: str, name: str) -> list[dict[str, Any]]:
    procs = [_worker("flight", url, name, str(TASKS)) for _ in range(PROCESSES)]
    try:
        for p in procs:
            assert p.line(others=procs) == "ready"
        start = time.time() + 0.3
        for p in procs:
            p.send(f"{start}")
            p.close_input()
        outs: list[dict[str, Any]] = [p.read(others=procs) for p in procs]
    finally:
        stop_all(procs)
    return outs


def _get(url: str, name: str) -> dict[str, Any]:
    p = _worker("get", url, name)
    try:
        out: dict[str, Any] = p.read()
    finally:
        p.stop()
    return out


@pytest.fixture(params=["node", "cluster"])
def server(request: pytest.FixtureRequest) -> tuple[str, str]:
    running: RedisServer | RedisCluster = request.getfixturevalue(
        "redis_server" if request.param == "node" else "redis_cluster"
    )
    return request.param, running.url


def test_one_computation_for_the_fleet_and_a_hit_for_a_new_process(
    server: tuple[str, str],
) -> None:
    kind, url = server
    name = f"flight_{kind}_{time.monotonic_ns()}"  # the worker reads "cluster" in the name
    outs = _flight(url, name)
    assert sum(o["calls"] for o in outs) == 1, outs  # 4 processes x 10 tasks, one call
    values = [v for o in outs for v in o["values"]]
    assert len(values) == PROCESSES * TASKS
    assert all(v == values[0] for v in values)
    late = _get(url, name)
    assert late["calls"] == 0  # a new process: a hit
    assert late["value"] == values[0]
    print(f"single flight: {PROCESSES}x{TASKS} callers, 1 call; new process: hit")


async def test_invalidate_in_one_process_is_seen_by_all(redis_server: RedisServer) -> None:
    name = f"watch_{time.monotonic_ns()}"
    src = aioredis.from_url(redis_server.url)
    await src.set(f"source:{name}", "1")
    watchers = [_worker("watch", redis_server.url, name, "6") for _ in range(2)]
    try:
        for w in watchers:
            first = await w.aread(others=watchers)
            assert first["source"] == "1"
        await src.set(f"source:{name}", "2")
        await asyncio.sleep(0.3)  # their local layers (60 s) still answer "1"
        store = RedisStore(redis_server.url, prefix="cacheprocs", op_timeout=1.0)

        @cache(ttl=60, store=store, name=name)
        async def compute(key: str) -> dict[str, Any]:
            raise AssertionError("only invalidated here")

        t0 = time.time()
        assert await compute.invalidate("k") is True
        for w in watchers:
            seen = await w.aread(others=watchers)
            assert seen["source"] == "2"
            assert seen["at"] - t0 < 2.0 * SLOWDOWN
            print(f"invalidate seen elsewhere after {seen['at'] - t0:.3f} s")
        await store.aclose()
    finally:
        for w in watchers:
            w.kill()
        await src.aclose()


async def test_killed_leader_lock_expires_and_another_computes(redis_server: RedisServer) -> None:
    name = f"lead_{time.monotonic_ns()}"
    leader = _worker("lead", redis_server.url, name)
    try:
        await _outlive_the_leader(redis_server, name, leader)
    finally:
        leader.kill()


async def _outlive_the_leader(redis_server: RedisServer, name: str, leader: Worker) -> None:
    assert await leader.aline() == "leading"
    store = RedisStore(redis_server.url, prefix="cacheprocs", op_timeout=1.0)
    calls = 0

    @cache(ttl=60, store=store, name=name, lock_ttl=LOCK_TTL)
    async def compute(key: str) -> str:
        nonlocal calls
        calls += 1
        return "after"

    waiting = asyncio.ensure_future(compute("k"))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # the leader holds the lock
    assert calls == 0
    killed = time.monotonic()
    leader.kill()  # SIGKILL
    assert await asyncio.wait_for(waiting, 10) == "after"
    assert calls == 1
    assert time.monotonic() - killed <= LOCK_TTL + 1.0
    await store.aclose()


@pytest.fixture
async def store(redis_server: RedisServer) -> Any:
    s = RedisStore(redis_server.url, prefix=f"cache{time.monotonic_ns()}", op_timeout=1.0)
    yield s
    await s.aclose()


async def test_errors_are_not_stored_and_free_the_lock(store: RedisStore) -> None:
    calls = 0

    @cache(ttl=60, store=store, name="errs")
    async def f(x: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return x

    with pytest.raises(ConnectionError):
        await f(1)
    assert await f(1) == 1  # at once: no lock left behind, nothing stored
    assert await f(1) == 1
    assert calls == 2


async def test_cancelled_leader_frees_the_lock_at_once(store: RedisStore) -> None:
    started = asyncio.Event()

    @cache(ttl=60, store=store, name="cancel", lock_ttl=30)
    async def slow(x: int) -> int:
        started.set()
        await asyncio.sleep(3600)
        return x

    task = asyncio.ensure_future(slow(1))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    other = RedisStore(store._url or "", prefix=store.prefix, op_timeout=1.0)

    @cache(ttl=60, store=other, name="cancel", lock_ttl=30)
    async def fast(x: int) -> int:
        return x * 10

    assert await asyncio.wait_for(fast(1), 2) == 10  # not 30 s: the lock was freed
    await other.aclose()


async def test_value_that_is_not_json_is_a_type_error_naming_the_function(
    store: RedisStore,
) -> None:
    @cache(ttl=60, store=store, name="notjson")
    async def build_thing(x: int) -> object:
        return object()

    with pytest.raises(TypeError, match=r"build_thing.*JSON"):
        await build_thing(1)


async def test_tampered_pickle_is_never_unpickled(
    store: RedisStore, redis_server: RedisServer
) -> None:
    calls = 0
    secret = "s" * 32

    @cache(ttl=60, store=store, name="pick", serializer="pickle", secret=secret)
    async def f(x: int) -> set[int]:
        nonlocal calls
        calls += 1
        return {x, calls}

    assert await f(1) == {1}
    await asyncio.sleep(0.05)
    assert await f(1) == {1}
    assert calls == 1
    raw = aioredis.from_url(redis_server.url)
    key = f"{{{store.prefix}:pick}}:v:{key_digest(((1,), {}), 'f')}"
    payload = await raw.get(key)
    assert payload is not None
    evil = b"cos\nsystem\n(S'echo pwned'\ntR."  # unpickling this would run a command
    await raw.set(key, payload[:33] + evil)
    assert await f(1) == {1, 2}  # refused, deleted, recomputed
    assert calls == 2
    assert f.policy.stats()["rejected"] == 1
    await raw.aclose()
    with pytest.raises(ValueError, match="secret"):
        cache(store=store, name="p2", serializer="pickle")


def test_keys_are_the_same_in_every_process() -> None:
    code = (
        "from failsafe.stores._cache import key_digest;"
        "print(key_digest(((1, 'a', b'x', 2.5, None, (True,)), {'z': {1, 2}, 'y': [3]}), 'f'))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},  # LD_PRELOAD etc. kept (sanitizer builds)
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outs) == 1
    with pytest.raises(TypeError, match="key_func"):
        key_digest(((object(),), {}), "f")


@pytest.mark.parametrize("on_error", ["local", "allow", "deny"])
async def test_redis_killed_and_restarted(outage: Outage, on_error: str) -> None:
    # (cluster: the node serving the cache's keys is killed)
    store = RedisStore(outage.url, prefix=f"outage-{on_error}", on_error=on_error, op_timeout=2.0)
    store.retry_interval = 0.2
    calls = 0

    @cache(ttl=60, store=store, name="o")
    async def f(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    assert await f(1) == 1
    await asyncio.sleep(0.05)
    assert await f(1) == 1
    assert calls == 1  # a hit in Redis
    store.op_timeout = 0.2  # (connected: a cluster client's first connection may take longer)
    outage.kill(store.key("o"))
    t0 = time.monotonic()
    for _ in range(3):
        if on_error == "deny":
            with pytest.raises(CacheUnavailable):
                await f(1)
        else:
            assert await f(1) == 1
    assert time.monotonic() - t0 < 3 * 0.2 + 1.0  # bounded by op_timeout, nothing hangs
    assert calls == {"local": 2, "allow": 4, "deny": 1}[on_error]
    outage.start()
    await asyncio.sleep(0.3)
    for _ in range(50):  # sharing resumes: the restarted (empty) Redis gets the value again
        try:
            assert await f(2) == 2
        except CacheUnavailable:
            await asyncio.sleep(0.1)
            continue
        if store.up:
            break
        await asyncio.sleep(0.1)
    assert store.up
    before = calls
    await asyncio.sleep(0.05)
    assert await f(2) == 2
    assert calls == before  # a hit from Redis again
    assert store.stats()["fallbacks"] >= 1
    await store.aclose()


def test_bad_parameters_are_refused_at_construction(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix="badparams")
    with pytest.raises(ValueError, match="name"):
        cache(ttl=1, store=store)
    with pytest.raises(ValueError, match="serializer"):
        cache(store=store, name="b", serializer="yaml")
    with pytest.raises(ValueError, match="16 bytes"):
        cache(store=store, name="b", serializer="pickle", secret="short")
    with pytest.raises(ValueError, match="needs serializer='pickle'"):
        cache(store=store, name="b", secret="s" * 32)
    with pytest.raises(ValueError, match="lock_ttl"):
        cache(store=store, name="b", lock_ttl=float("inf"))
    with pytest.raises(ValueError, match="stale_if_error"):
        cache(ttl=1, store=store, name="b", stale_if_error=5)
    with pytest.raises(ValueError, match="need store="):
        cache(ttl=1, local_ttl=1)
    with pytest.raises(TypeError, match="store must be"):
        cache(store="redis://x", name="b")


@pytest.mark.parametrize("on_error", ["local", "allow", "deny"])
async def test_calls_in_flight_through_a_redis_restart(
    own_redis: RedisServer, on_error: str
) -> None:
    store = RedisStore(own_redis.url, prefix="restart", on_error=on_error, op_timeout=0.2)
    store.retry_interval = 0.2
    refused = answered = 0

    @cache(ttl=60, store=store, name="r", lock_ttl=1)
    async def f(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * 2

    async def caller(i: int, until: float) -> None:
        nonlocal refused, answered
        while time.monotonic() < until:
            try:
                # Nothing hangs: each call ends within op_timeout plus the function's time.
                assert await asyncio.wait_for(f(i % 3), 2.0) == (i % 3) * 2
                answered += 1
            except CacheUnavailable:
                assert on_error == "deny"
                refused += 1
            await asyncio.sleep(0.005)

    until = time.monotonic() + 1.5
    load = asyncio.gather(*(caller(i, until) for i in range(10)))
    await asyncio.sleep(0.4)
    own_redis.kill()
    await asyncio.sleep(0.5)
    own_redis.start()
    await load
    assert answered > 0
    assert (refused > 0) == (on_error == "deny")
    for _ in range(30):  # sharing resumes
        with contextlib.suppress(CacheUnavailable):
            await f(0)
        if store.up:
            break
        await asyncio.sleep(0.1)
    assert store.up
    await store.aclose()
