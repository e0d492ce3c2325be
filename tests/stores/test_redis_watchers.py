"""A shared policy used from one event loop after another (a second ``asyncio.run``): the new
loop gets its own watcher, so changes made elsewhere still reach it, and the closed loop keeps
no watcher task."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from typing import Any

import pytest
from redis_server import RedisServer, connected

from failsafe.circuitbreaker import BreakerFailing, consecutive_breaker
from failsafe.failfast import FailFastOpen, failfast
from failsafe.featuretoggle import FeatureDisabled, featuretoggle
from failsafe.stores import RedisStore

pytestmark = pytest.mark.timeout(120)
REFUSALS = (FeatureDisabled, BreakerFailing, FailFastOpen)


def _policy(kind: str, store: RedisStore, name: str) -> Any:
    if kind == "toggle":
        return featuretoggle(enabled=True, name=name, store=store)
    if kind == "breaker":
        return consecutive_breaker(
            ConnectionError, failure_threshold=2, recovery_time=30, store=store, name=name
        )
    return failfast(
        failure_threshold=2, recovery_time=30, on=ConnectionError, store=store, name=name
    )


async def _change_elsewhere(kind: str, policy: Any) -> None:
    if kind == "toggle":
        await policy.disable()
    elif kind == "breaker":
        await policy.isolate()
    else:
        await policy.open()


@pytest.mark.parametrize("kind", ["toggle", "breaker", "failfast"])
def test_a_second_event_loop_watches_changes_made_elsewhere(
    redis_server: RedisServer, kind: str
) -> None:
    name = f"second-loop-{kind}"
    store = RedisStore(redis_server.url, prefix="watchers", op_timeout=2.0)
    policy = _policy(kind, store, name)
    calls = 0

    @policy
    async def f() -> None:
        nonlocal calls
        calls += 1

    async def first() -> weakref.ref[asyncio.AbstractEventLoop]:
        await connected(store)
        await f()  # reads the state and watches it from this loop
        await store.aclose()
        return weakref.ref(asyncio.get_running_loop())

    closed = asyncio.run(first())
    gc.collect()
    assert closed() is None  # no watcher task (nor anything else) holds the closed loop

    async def second() -> None:
        await connected(store)
        await f()  # from this loop now
        peer_store = await connected(
            RedisStore(redis_server.url, prefix="watchers", op_timeout=2.0)
        )
        peer = _policy(kind, peer_store, name)
        await peer.ready()
        await _change_elsewhere(kind, peer)  # another process's change: announced, stored
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                await f()
            except REFUSALS:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the change made elsewhere never reached the second loop")
        await peer_store.aclose()
        await store.aclose()

    asyncio.run(second())
    assert calls >= 2
