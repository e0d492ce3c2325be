"""A feature toggle shared through a real Redis: a flip in one process reaches another process
within a second both ways, a process started later reads the state before its first call, an
outage under each on_error, and a flip made during an outage: stored when Redis returns unless
a later flip elsewhere wins."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer, connected
from workers import SLOWDOWN, Worker

from failsafe.featuretoggle import FeatureDisabled, FeatureToggle, featuretoggle
from failsafe.stores import RedisStore

WORKER = str(Path(__file__).with_name("toggle_worker.py"))
# Seconds for a flip to reach another process: the acceptance bound, scaled on a sanitized
# interpreter only.
PROPAGATION = 1.0 * SLOWDOWN
pytestmark = pytest.mark.timeout(300)


async def _line(worker: Worker) -> list[str]:
    return (await worker.aline()).split()


async def _flip(toggle: FeatureToggle, on: bool) -> float:
    t0 = time.time()
    await (toggle.enable() if on else toggle.disable())
    return t0


async def test_flip_reaches_another_process_within_a_second_both_ways(
    redis_server: RedisServer,
) -> None:
    store = await connected(RedisStore(redis_server.url, prefix="toggles", op_timeout=0.5))
    toggle = featuretoggle(enabled=True, name="both-ways", store=store)
    await toggle.ready()  # type: ignore[attr-defined]
    worker = Worker(WORKER, redis_server.url, "both-ways")
    try:
        assert await _line(worker) == ["first", "ran"]
        for on in (False, True, False):
            t0 = await _flip(toggle, on)
            state, seen = await _line(worker)
            assert state == str(int(on))
            assert float(seen) - t0 < PROPAGATION, (on, float(seen) - t0)
    finally:
        worker.stop()
        await store.aclose()


async def test_a_later_process_reads_the_flip_before_its_first_call(
    redis_server: RedisServer,
) -> None:
    store = await connected(RedisStore(redis_server.url, prefix="toggles", op_timeout=0.5))
    toggle = featuretoggle(enabled=True, name="later", store=store)
    await toggle.disable()
    worker = Worker(WORKER, redis_server.url, "later")  # built enabled=True: the stored state wins
    try:
        assert await _line(worker) == ["first", "refused"]
    finally:
        worker.stop()
    await toggle.enable()
    worker = Worker(WORKER, redis_server.url, "later")
    try:
        assert await _line(worker) == ["first", "ran"]
    finally:
        worker.stop()
        await store.aclose()


async def test_rollout_change_reaches_every_toggle(redis_server: RedisServer) -> None:
    stores = [
        await connected(RedisStore(redis_server.url, prefix="toggles", op_timeout=2))
        for _ in range(2)
    ]
    a, b = (featuretoggle(rollout=100, key=lambda user: user, name="roll", store=s) for s in stores)
    await b.ready()  # type: ignore[attr-defined]
    await a.set_rollout(0)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while b.rollout != 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert b.rollout == 0

    @b
    async def f(user: str) -> str:
        return user

    with pytest.raises(FeatureDisabled):
        await f("anyone")
    for s in stores:
        await s.aclose()


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert check()


@pytest.mark.parametrize("read", ["enabled", "rollout"])
async def test_reading_the_state_before_any_call_reads_and_watches_it(
    redis_server: RedisServer, read: str
) -> None:
    stores = [
        await connected(RedisStore(redis_server.url, prefix="toggles", op_timeout=2))
        for _ in range(2)
    ]
    a, b = (
        featuretoggle(rollout=100, key=lambda user: user, name=f"read-{read}", store=s)
        for s in stores
    )
    await a.ready()  # type: ignore[attr-defined]
    await a.disable()
    await a.set_rollout(40)  # type: ignore[attr-defined]
    # b is never called: its first read (built state: enabled, 100 %) starts the read.
    assert getattr(b, read) == (True if read == "enabled" else 100)
    await _until(lambda: b.stats()["loaded"])
    assert (b.enabled, b.rollout) == (False, 40)
    # And it keeps watching: later changes elsewhere reach it.
    await a.enable()
    await a.set_rollout(70)  # type: ignore[attr-defined]
    await _until(lambda: (b.enabled, b.rollout) == (True, 70))
    # Before its state is read, a toggle built disabled reads disabled (not the gate's flag).
    fresh = featuretoggle(enabled=False, name=f"fresh-{read}", store=stores[0])
    assert fresh.enabled is False
    await _until(lambda: fresh.stats()["loaded"])
    assert fresh.enabled is False
    for s in stores:
        await s.aclose()


@pytest.mark.parametrize("on_error", ["local", "allow", "deny"])
async def test_outage_under_each_on_error(own_redis: RedisServer, on_error: str) -> None:
    store = await connected(
        RedisStore(own_redis.url, prefix="toggles", op_timeout=2, on_error=on_error)
    )
    toggle = featuretoggle(enabled=True, name="outage", store=store)
    ran = 0

    @toggle
    async def f() -> None:
        nonlocal ran
        ran += 1

    await f()
    await toggle.enable()  # stored: enabled is the last known value
    store.op_timeout = 0.05  # (the answers above must not fall back on a loaded machine)
    own_redis.kill()
    await asyncio.sleep(1.0)  # the poll finds the store down
    if on_error == "deny":  # the pattern's refusal, without calling the function
        assert not toggle.enabled
        with pytest.raises(FeatureDisabled):
            await f()
        assert ran == 1
    else:  # the last known value; a local switch still acts at once
        assert toggle.enabled
        await f()
        toggle.disable()
        with pytest.raises(FeatureDisabled):
            await f()
        toggle.enable()
        await f()
        assert ran == 3
    own_redis.restart()
    store.op_timeout = 2
    other = RedisStore(own_redis.url, prefix="toggles", op_timeout=2)
    peer = featuretoggle(enabled=True, name="outage", store=other)
    await peer.ready()  # type: ignore[attr-defined]
    await peer.enable()
    await peer.disable()  # sharing resumed: the change reaches the first process
    deadline = time.monotonic() + 10
    while toggle.enabled and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not toggle.enabled
    await peer.enable()
    while not toggle.enabled and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert toggle.enabled
    await f()
    await store.aclose()
    await other.aclose()


async def _pair(server: RedisServer, name: str) -> tuple[list[RedisStore], list[FeatureToggle]]:
    stores = [
        await connected(RedisStore(server.url, prefix="toggles", op_timeout=2)) for _ in range(2)
    ]
    toggles = [
        featuretoggle(enabled=True, rollout=100, key=lambda user: user, name=name, store=s)
        for s in stores
    ]
    for toggle in toggles:
        await toggle.ready()  # type: ignore[attr-defined]
    return stores, toggles


async def test_a_flip_made_while_redis_is_down_is_stored_when_it_returns(
    durable_redis: RedisServer,
) -> None:
    stores, (a, b) = await _pair(durable_redis, "due")
    durable_redis.kill()
    await a.disable()  # not taken: it does not raise and acts here at once
    await a.set_rollout(30)  # type: ignore[attr-defined]
    assert (a.enabled, a.rollout) == (False, 30)
    await asyncio.sleep(1.0)  # the watchers' polls find the store down meanwhile
    assert (a.enabled, a.rollout) == (False, 30)
    assert (b.enabled, b.rollout) == (True, 100)
    durable_redis.restart()  # with the state stored before the outage: enabled, 100 %
    deadline = time.monotonic() + 10
    while (b.enabled, b.rollout) != (False, 30) and time.monotonic() < deadline:
        assert (a.enabled, a.rollout) == (False, 30)  # never put back by a read
        await asyncio.sleep(0.01)
    assert (b.enabled, b.rollout) == (False, 30)
    await asyncio.sleep(1.0)  # later polls and messages keep it
    assert (a.enabled, a.rollout) == (False, 30)
    worker = Worker(WORKER, durable_redis.url, "due")  # a process started now reads it
    try:
        assert await _line(worker) == ["first", "refused"]
    finally:
        worker.stop()
        for s in stores:
            await s.aclose()


def _flip_elsewhere(url: str, name: str) -> None:
    """Another process's flips (enable, rollout 70 %), made on its own event loop while the
    caller's loop is blocked: nothing of the caller's runs until they are stored."""

    async def flip() -> None:
        store = await connected(RedisStore(url, prefix="toggles", op_timeout=1.0))
        toggle = featuretoggle(enabled=False, rollout=0, key=lambda u: u, name=name, store=store)
        await toggle.ready()  # type: ignore[attr-defined]
        await toggle.enable()
        await toggle.set_rollout(70)  # type: ignore[attr-defined]
        await store.aclose()

    thread = threading.Thread(target=asyncio.run, args=(flip(),))
    thread.start()
    thread.join()


async def test_a_later_flip_elsewhere_wins_over_a_flip_due_from_an_outage(
    durable_redis: RedisServer,
) -> None:
    stores, (a, b) = await _pair(durable_redis, "later-wins")
    durable_redis.kill()
    await a.disable()  # due: not taken
    await a.set_rollout(30)  # type: ignore[attr-defined]
    await asyncio.sleep(0.6)
    durable_redis.restart()
    # Another process flips after a did (and after Redis returned), before a's due flips are
    # retried (this loop is blocked meanwhile); a's retry is older: the later flips stay.
    _flip_elsewhere(durable_redis.url, "later-wins")
    state = durable_redis.cli("HMGET", stores[0].key("later-wins", "toggle"), "enabled", "rollout")
    assert state.split() == ["1", "70.0"]
    await _until(lambda: (a.enabled, a.rollout) == (True, 70))
    await _until(lambda: (b.enabled, b.rollout) == (True, 70))
    await asyncio.sleep(1.0)  # later polls and messages keep it in both
    assert (a.enabled, a.rollout) == (True, 70)
    assert (b.enabled, b.rollout) == (True, 70)
    worker = Worker(WORKER, durable_redis.url, "later-wins")
    try:
        assert await _line(worker) == ["first", "ran"]
    finally:
        worker.stop()
        for s in stores:
            await s.aclose()


async def test_a_state_stored_without_versions_is_read_and_flipped(
    redis_server: RedisServer,
) -> None:
    store = await connected(RedisStore(redis_server.url, prefix="toggles", op_timeout=2))
    toggle = featuretoggle(enabled=True, name="unversioned", store=store)
    # As an earlier release stored it: the fields alone.
    redis_server.cli("HSET", store.key("unversioned", "toggle"), "enabled", "0", "rollout", "")
    await toggle.ready()  # type: ignore[attr-defined]
    assert not toggle.enabled
    await toggle.enable()  # any versioned flip is newer than none
    peer = featuretoggle(enabled=False, name="unversioned", store=store)
    await peer.ready()  # type: ignore[attr-defined]
    assert peer.enabled
    await store.aclose()


def test_a_flip_made_outside_an_event_loop_is_stored_by_the_first_call(
    redis_server: RedisServer,
) -> None:
    def build() -> tuple[RedisStore, FeatureToggle]:
        store = RedisStore(redis_server.url, prefix="toggles", op_timeout=2)
        return store, featuretoggle(enabled=True, name="no-loop", store=store)

    store, toggle = build()
    toggle.disable()  # no loop runs: it acts here at once and stays due
    assert not toggle.enabled

    @toggle
    async def f() -> None:
        pass

    async def first_call() -> None:
        with pytest.raises(FeatureDisabled):
            await f()
        peer_store, peer = build()  # built enabled: the stored flip wins
        await _until(lambda: not peer.enabled)
        await peer_store.aclose()
        await store.aclose()

    asyncio.run(first_call())
