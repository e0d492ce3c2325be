"""A circuit breaker shared through a real Redis by real processes: a trip in one process
rejects in the others (which never failed, and whose function is not called) within 0.5 s,
the probes after the break are limited across all processes, isolate()/reset() reach all, and
an outage under each on_error."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from breaker_worker import PROBES
from redis_server import Outage, RedisCluster, RedisServer, connected
from workers import SLOWDOWN, Worker, answers, stop_all

from failsafe.circuitbreaker import BreakerFailing, CircuitBreaker, consecutive_breaker
from failsafe.failfast import FailFast, FailFastOpen, failfast
from failsafe.stores import RedisStore

WORKER = str(Path(__file__).with_name("breaker_worker.py"))
PROCESSES = 4
# Seconds for a trip to reach another process: the acceptance bound, scaled on a sanitized
# interpreter only.
PROPAGATION = 0.5 * SLOWDOWN
RECOVERY = 3.0
pytestmark = pytest.mark.timeout(300)


async def _workers(url: str, name: str, kind: str) -> list[Worker]:
    workers = [Worker(WORKER, url, name, str(RECOVERY), kind) for _ in range(PROCESSES)]
    try:
        assert await answers(workers) == ["ready"] * PROCESSES
    except BaseException:
        for w in workers:
            w.kill()
        raise
    return workers


def _breaker(store: RedisStore, name: str) -> CircuitBreaker:
    return consecutive_breaker(
        ConnectionError,
        failure_threshold=2,
        recovery_time=RECOVERY,
        recovery_threshold=PROBES,
        half_open_max_calls=PROBES,
        store=store,
        name=name,
    )


async def _trip(breaker: CircuitBreaker | FailFast, form: str = "decorator") -> float:
    async def fail() -> None:
        raise ConnectionError

    async def block() -> None:
        async with breaker:
            await fail()

    broken = block if form == "block" else breaker(fail)

    for _ in range(2):  # (a fail-fast latch raises FailFastOpen from the failure that opens it)
        with pytest.raises((ConnectionError, FailFastOpen)):
            await broken()
    return time.time()


async def _until(
    call: Callable[[], Awaitable[None]], refused: bool, what: str, end: float
) -> BreakerFailing | FailFastOpen | None:
    """Calls until refused (its refusal) or admitted (None), until time.monotonic() end."""
    while time.monotonic() < end:
        try:
            await call()
            if not refused:
                return None
        except (BreakerFailing, FailFastOpen) as exc:
            if refused:
                return exc
        await asyncio.sleep(0.02)
    pytest.fail(f"{what} never arrived")


@pytest.mark.parametrize(
    ("where", "form"), [("single", "decorator"), ("cluster", "decorator"), ("single", "block")]
)
async def test_trip_in_one_process_rejects_everywhere_then_probes_are_shared(
    where: str, form: str, redis_server: RedisServer, redis_cluster: RedisCluster
) -> None:
    # form "block": every process uses the breaker as `async with`, not as a decorator.
    url = redis_server.url if where == "single" else redis_cluster.url
    name = f"fleet-{where}-{form}"
    store = RedisStore(url, prefix="breakers", op_timeout=0.5)
    breaker = _breaker(store, name)
    await breaker.ready()  # type: ignore[attr-defined]
    kind = "block" if form == "block" else "breaker"
    workers = await _workers(url, name, kind)
    try:
        for w in workers:
            w.send("watch")
        await asyncio.sleep(0.2)
        tripped = await _trip(breaker, form)
        seen = await answers(workers)
        for s in seen:
            assert s["at"] - tripped < PROPAGATION, s["at"] - tripped
            assert 0 < s["retry_after"] <= RECOVERY
            assert s["called_after"] == 0
        start = tripped + RECOVERY + 0.3
        for w in workers:
            w.send(f"probe {start}")
        ran = sum(r["ran"] for r in await answers(workers))
        assert 1 <= ran <= PROBES
        # The probes succeeded: closed for all.
        for w in workers:
            w.send("until closed")
        await answers(workers)
        await breaker.isolate()  # type: ignore[attr-defined]
        isolated = time.time()
        for w in workers:
            w.send("until open")
        assert all(r["at"] - isolated < PROPAGATION for r in await answers(workers))
        await breaker.reset()  # type: ignore[attr-defined]
        for w in workers:
            w.send("until closed")
        await answers(workers)
    finally:
        stop_all(workers)
        await store.aclose()


@pytest.mark.parametrize("on_error", ["local", "allow", "deny"])
async def test_outage_under_each_on_error(outage: Outage, on_error: str) -> None:
    # (cluster: the node serving the breaker's keys is killed)
    name = f"outage-{on_error}"
    store = RedisStore(outage.url, prefix="breakers", op_timeout=2.0, on_error=on_error)
    breaker = _breaker(store, name)
    ran = 0

    @breaker
    async def healthy() -> None:
        nonlocal ran
        ran += 1

    await healthy()  # connected (a cluster client's first connection may outlast 0.05 s)
    store.op_timeout = 0.05
    outage.kill(store.key(name))
    await asyncio.sleep(0.6)  # the poll finds the store down
    t0 = time.monotonic()
    if on_error == "deny":
        with pytest.raises(BreakerFailing):
            await healthy()
        assert ran == 1
    else:
        await healthy()
        assert ran == 2
    assert time.monotonic() - t0 < 1.0  # nothing hangs
    outage.start()
    store.op_timeout = 2
    other = RedisStore(outage.url, prefix="breakers", op_timeout=2)
    peer = _breaker(other, name)
    await peer.ready()  # type: ignore[attr-defined]
    await peer.isolate()  # type: ignore[attr-defined]
    end = time.monotonic() + 10  # sharing resumed: the isolation reaches this process
    await _until(healthy, refused=True, what="the isolation", end=end)
    await peer.reset()  # type: ignore[attr-defined]
    await _until(healthy, refused=False, what="the reset", end=end)
    await store.aclose()
    await other.aclose()


@pytest.mark.parametrize(
    ("where", "form"), [("single", "decorator"), ("cluster", "decorator"), ("single", "block")]
)
async def test_failfast_opened_in_one_process_rejects_everywhere(
    where: str, form: str, redis_server: RedisServer, redis_cluster: RedisCluster
) -> None:
    # form "block": every process uses the latch as `async with`, not as a decorator.
    url = redis_server.url if where == "single" else redis_cluster.url
    name = f"latch-{where}-{form}"
    store = RedisStore(url, prefix="breakers", op_timeout=0.5)
    latch = failfast(
        failure_threshold=2, recovery_time=RECOVERY, on=ConnectionError, store=store, name=name
    )
    await latch.ready()  # type: ignore[attr-defined]
    kind = "failfast-block" if form == "block" else "failfast"
    workers = await _workers(url, name, kind)
    try:
        for w in workers:
            w.send("watch")
        await asyncio.sleep(0.2)
        tripped = await _trip(latch, form)
        for s in await answers(workers):
            assert s["at"] - tripped < PROPAGATION, s["at"] - tripped
            assert 0 < s["retry_after"] <= RECOVERY
            assert s["called_after"] == 0
        for w in workers:  # closes by itself for all at the shared end
            w.send("until closed")
        for r in await answers(workers):
            assert r["at"] - tripped >= RECOVERY - 0.1
        await latch.open()  # type: ignore[attr-defined]
        opened = time.time()
        for w in workers:
            w.send("until open")
        assert all(r["at"] - opened < PROPAGATION for r in await answers(workers))
        await latch.close()  # type: ignore[attr-defined]
        for w in workers:
            w.send("until closed")
        await answers(workers)
    finally:
        stop_all(workers)
        await store.aclose()


@pytest.mark.parametrize("on_error", ["local", "allow", "deny"])
async def test_failfast_outage_under_each_on_error(own_redis: RedisServer, on_error: str) -> None:
    store = await connected(
        RedisStore(own_redis.url, prefix="breakers", op_timeout=2, on_error=on_error)
    )
    latch = failfast(failure_threshold=2, recovery_time=30, store=store, name="latch-outage")
    ran = 0

    @latch
    async def healthy() -> None:
        nonlocal ran
        ran += 1

    await healthy()
    store.op_timeout = 0.05  # (the answer above must not fall back on a loaded machine)
    own_redis.kill()
    await asyncio.sleep(0.6)
    if on_error == "deny":
        with pytest.raises(FailFastOpen):
            await healthy()
        assert ran == 1
    else:
        await healthy()
        assert ran == 2
    own_redis.restart()
    store.op_timeout = 2
    other = RedisStore(own_redis.url, prefix="breakers", op_timeout=2)
    peer = failfast(failure_threshold=2, recovery_time=30, store=other, name="latch-outage")
    await peer.ready()  # type: ignore[attr-defined]
    await peer.open()  # type: ignore[attr-defined]
    end = time.monotonic() + 10
    await _until(healthy, refused=True, what="the opening", end=end)
    await peer.close()  # type: ignore[attr-defined]
    await _until(healthy, refused=False, what="the close", end=end)
    await store.aclose()
    await other.aclose()


@pytest.mark.parametrize("kind", ["breaker", "failfast"])
async def test_trip_the_store_did_not_take_is_stored_once_it_returns(
    own_redis: RedisServer, kind: str
) -> None:
    # A trip whose write fails (the store down, slow or still connecting) stays in this
    # process's latch; once the store answers again the fleet learns of it.
    def make(store: RedisStore) -> CircuitBreaker | FailFast:
        if kind == "breaker":
            return consecutive_breaker(
                ConnectionError, failure_threshold=2, recovery_time=30, store=store, name="late"
            )
        return failfast(
            failure_threshold=2, recovery_time=30, on=ConnectionError, store=store, name="late"
        )

    mine = RedisStore(own_redis.url, prefix="breakers", op_timeout=0.2)
    theirs = RedisStore(own_redis.url, prefix="breakers", op_timeout=0.2)
    tripped, peer = make(mine), make(theirs)
    await tripped.ready()  # type: ignore[attr-defined]
    await peer.ready()  # type: ignore[attr-defined]

    @peer
    async def healthy() -> None:
        pass

    own_redis.kill()
    await _trip(tripped)
    async with asyncio.timeout(10):  # the write fails (the store is not asked again for 1 s)
        while not mine.stats()["errors"]:
            await asyncio.sleep(0.01)
    own_redis.restart()
    refusal = await _until(healthy, refused=True, what="the trip", end=time.monotonic() + 15)
    assert refusal is not None
    assert refusal.retry_after is not None
    assert 0 < refusal.retry_after <= 30
    await mine.aclose()
    await theirs.aclose()


def _latch(kind: str, store: RedisStore, name: str) -> CircuitBreaker | FailFast:
    if kind == "breaker":
        return consecutive_breaker(
            ConnectionError, failure_threshold=2, recovery_time=30, store=store, name=name
        )
    return failfast(
        failure_threshold=2, recovery_time=30, on=ConnectionError, store=store, name=name
    )


def _trip_elsewhere(url: str, kind: str, name: str) -> None:
    """Another process's trip, made on its own event loop while the caller's loop is blocked:
    nothing of the caller's runs until it is stored."""

    async def trip() -> None:
        store = await connected(RedisStore(url, prefix="breakers", op_timeout=2.0))
        latch = _latch(kind, store, name)
        await latch.ready()  # type: ignore[attr-defined]
        await _trip(latch)
        async with asyncio.timeout(10):  # stored (the trip's write runs in the background)
            while store.stats()["decisions"] < 2:
                await asyncio.sleep(0.01)
        await store.aclose()

    thread = threading.Thread(target=asyncio.run, args=(trip(),))
    thread.start()
    thread.join()


@pytest.mark.parametrize("kind", ["breaker", "failfast"])
async def test_a_close_due_from_an_outage_does_not_undo_a_later_trip_elsewhere(
    durable_redis: RedisServer, kind: str
) -> None:
    name = f"close-{kind}"
    mine = await connected(RedisStore(durable_redis.url, prefix="breakers", op_timeout=2.0))
    theirs = await connected(RedisStore(durable_redis.url, prefix="breakers", op_timeout=2.0))
    closer, peer = _latch(kind, mine, name), _latch(kind, theirs, name)
    await closer.ready()  # type: ignore[attr-defined]
    await peer.ready()  # type: ignore[attr-defined]
    durable_redis.kill()  # with the state stored before the outage: closed
    # Tripped, then closed here during the outage: not taken, the close stays due.
    await _trip(closer)
    await (closer.reset() if kind == "breaker" else closer.close())  # type: ignore[attr-defined]
    assert mine.stats()["errors"]
    await closer(_ok)()  # closed here at once
    durable_redis.restart()
    # Another process trips after the close (and after Redis returned), before the close is
    # retried (this loop is blocked meanwhile): the close is older and must not undo the trip.
    _trip_elsewhere(durable_redis.url, kind, name)
    assert _stored_open(durable_redis, mine.key(name, kind))
    # The close is retried, refused, and the stored trip reaches this process too.
    refusal = await _until(
        closer(_ok), refused=True, what="the later trip", end=time.monotonic() + 15
    )
    assert refusal is not None
    assert refusal.retry_after is not None
    assert 0 < refusal.retry_after <= 30
    await asyncio.sleep(1.0)  # later polls and messages keep it open everywhere
    assert _stored_open(durable_redis, mine.key(name, kind))
    for latch in (closer, peer):
        with pytest.raises((BreakerFailing, FailFastOpen)):
            await latch(_ok)()
    await mine.aclose()
    await theirs.aclose()


async def _ok() -> None:
    pass


def _stored_open(server: RedisServer, key: str) -> bool:
    fields = dict(zip(*[iter(server.cli("HGETALL", key).split())] * 2, strict=True))
    return "until" in fields or fields.get("open") == "1"


@pytest.mark.parametrize("kind", ["breaker", "failfast"])
async def test_a_state_stored_without_versions_is_read_and_changed(
    redis_server: RedisServer, kind: str
) -> None:
    store = await connected(RedisStore(redis_server.url, prefix="breakers", op_timeout=2.0))
    name = f"unversioned-{kind}"
    latch = _latch(kind, store, name)
    # Open for a minute, as an earlier release stored it: the state fields alone.
    end = int(redis_server.cli("TIME").split()[0]) * 1_000_000 + 60_000_000
    fields = ("until", str(end)) if kind == "breaker" else ("open", "1", "stop", str(end))
    redis_server.cli("HSET", store.key(name, kind), *fields)
    await latch.ready()  # type: ignore[attr-defined]
    refusal = await _until(
        latch(_ok), refused=True, what="the stored opening", end=time.monotonic() + 5
    )
    assert refusal is not None
    assert refusal.retry_after is not None
    assert 30 < refusal.retry_after <= 60
    await (latch.reset() if kind == "breaker" else latch.close())  # type: ignore[attr-defined]
    assert not _stored_open(redis_server, store.key(name, kind))  # any versioned change is newer
    peer = _latch(kind, store, name)
    await peer.ready()  # type: ignore[attr-defined]
    await peer(_ok)()
    await store.aclose()
