"""failsafe.keyed: a bounded registry of policies by key."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from failsafe.keyed import Keyed, RegistryFull, keyed
from failsafe.ratelimit import RateLimitExceeded, TokenBucketLimiter, tokenbucket
from failsafe.retry import retry
from failsafe.testing import FakeClock
from failsafe.timeout import timeout


class Plain:
    """A policy without _holds_state: forgettable whenever idle."""

    def __init__(self, key: Any) -> None:
        self.key = key
        self.calls = 0

    def __call__(self, fn: Any) -> Any:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await fn(*args, **kwargs)

        return wrapped


class Holding(Plain):
    holding = True

    def _holds_state(self) -> bool:
        return self.holding


async def host_of(url: str) -> str:
    return url.split("/")[2]


def test_validation() -> None:
    with pytest.raises(TypeError, match="factory"):
        keyed(3, key=str)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        keyed(Plain, key=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_keys"):
        keyed(Plain, key=str, max_keys=0)
    with pytest.raises(ValueError, match="idle_after"):
        keyed(Plain, key=str, idle_after=-1)
    with pytest.raises(TypeError, match="async"):
        keyed(Plain, key=str)(lambda: None)


async def test_routes_each_key_to_its_own_policy() -> None:
    registry = keyed(Plain, key=lambda url: url.split("/")[2])
    fetch = registry(host_of)
    assert await fetch("https://a.example/x") == "a.example"
    assert await fetch("https://a.example/y") == "a.example"
    assert await fetch("https://b.example/") == "b.example"
    assert len(registry) == 2
    assert "a.example" in registry
    assert registry.get("a.example").calls == 2
    assert registry.get("b.example").calls == 1
    assert sorted(registry) == ["a.example", "b.example"]
    assert "2/10000" in repr(registry)


async def test_a_limiter_per_user(clock: FakeClock) -> None:
    limits = keyed(lambda user: tokenbucket(1, 60, name="user"), key=lambda user: user)

    @limits
    async def handle(user: str) -> str:
        return user

    assert await handle("ann") == "ann"
    assert await handle("bob") == "bob"
    with pytest.raises(RateLimitExceeded):
        await handle("ann")
    limiter = limits.get("ann")
    assert isinstance(limiter, TokenBucketLimiter)
    assert limiter.stats()["rejected"] == 1
    async with limits.get("cid"):
        pass


async def test_bounded_evicts_least_recently_used_idle() -> None:
    registry: Keyed[Plain] = keyed(Plain, key=lambda k: k, max_keys=3)
    f = registry(host_of)
    for k in ("a", "b", "c"):
        registry.get(k)
    registry.get("a")  # a is now the most recent
    registry.get("d")  # evicts b, the least recently used
    assert sorted(registry) == ["a", "c", "d"]
    assert len(registry) == 3
    with pytest.raises(IndexError):
        await f("x")  # the key's call still runs through the registry
    assert len(registry) == 3


def test_never_evicts_a_policy_that_holds_state() -> None:
    registry: Keyed[Holding] = keyed(Holding, key=lambda k: k, max_keys=2)
    a, b = registry.get("a"), registry.get("b")
    with pytest.raises(RegistryFull):
        registry.get("c")
    assert sorted(registry) == ["a", "b"]
    b.holding = False
    registry.get("c")
    assert sorted(registry) == ["a", "c"]
    assert registry.get("a") is a


def test_limited_limiters_are_kept(clock: FakeClock) -> None:
    registry = keyed(lambda k: TokenBucketLimiter(1, 1), key=lambda k: k, max_keys=2)
    assert registry.get("a").try_acquire()
    assert registry.get("b").try_acquire()
    with pytest.raises(RegistryFull):
        registry.get("c")
    clock.advance(1)  # both buckets full again: nothing left to remember
    registry.get("c")
    assert len(registry) == 2
    assert "c" in registry


def test_idle_after_forgets_idle_policies(clock: FakeClock) -> None:
    registry = keyed(Holding, key=lambda k: k, idle_after=10)
    registry.get("a").holding = False
    registry.get("b")  # holds state
    clock.advance(11)
    registry.get("c")  # a has been idle for 11 s: forgotten
    assert "a" not in registry
    registry.get("c")  # b idle but holding: kept (moved to the recent end)
    assert "b" in registry
    registry.get("b").holding = False
    clock.advance(11)
    registry.get("d")
    registry.get("d")
    assert "b" not in registry


def test_rotation_reaches_free_places_behind_held_ones() -> None:
    registry: Keyed[Holding] = keyed(Holding, key=lambda k: k, max_keys=100)
    for k in range(100):
        registry.get(k).holding = k != 99
    # Bounded work per new key: 64 held places looked at (and rotated to the recent end)...
    with pytest.raises(RegistryFull):
        registry.get("new")
    registry.get("new")  # ...so the next look reaches the free one
    assert 99 not in registry
    assert len(registry) == 100
    registry.clear()
    assert len(registry) == 0


async def test_with_breaker_like_and_stacked_policies(clock: FakeClock) -> None:
    registry = keyed(lambda host: retry(attempts=1, backoff=0), key=lambda url: url)
    calls = 0

    @timeout(5)
    @registry
    async def flaky(url: str) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError
        return calls

    assert await flaky("h") == 2
    assert registry.get("h").stats()["attempt"] == 1


async def test_on_methods_and_concurrency(clock: FakeClock) -> None:
    registry = keyed(lambda k: tokenbucket(10, 1), key=lambda self, user: user)

    class Service:
        @registry
        async def call(self, user: int) -> int:
            await asyncio.sleep(0)
            return user

    svc = Service()
    results = await asyncio.gather(*(svc.call(i % 50) for i in range(1000)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert len(ok) == 500
    assert len(registry) == 50


async def test_a_breaker_per_host_never_forgets_an_open_one(clock: FakeClock) -> None:
    from failsafe.circuitbreaker import BreakerFailing, consecutive_breaker

    per_host = keyed(
        lambda host: consecutive_breaker(ConnectionError, 1, 30, 1),
        key=lambda host: host,
        max_keys=2,
    )

    @per_host
    async def fetch(host: str) -> str:
        if host == "down":
            raise ConnectionError(host)
        return host

    with pytest.raises(ConnectionError):
        await fetch("down")
    opened = per_host.get("down")
    assert opened.state == "failing"
    # Many other hosts come and go: the idle, working breakers make room, the open one stays.
    for i in range(50):
        assert await fetch(f"up{i}") == f"up{i}"
    assert per_host.get("down") is opened
    with pytest.raises(BreakerFailing):
        await fetch("down")
    assert opened._holds_state()
    assert len(per_host) <= 2


async def test_cancelled_calls_leave_every_keyed_policy_idle() -> None:
    from failsafe.bulkhead import bulkhead

    registry = keyed(lambda k: bulkhead(2, 10), key=lambda user: user, max_keys=10)
    gate = asyncio.Event()

    @registry
    async def work(user: int) -> int:
        await gate.wait()
        return user

    tasks = [asyncio.create_task(work(i % 5)) for i in range(40)]  # per key: 2 run, 6 queue
    await asyncio.sleep(0)
    assert all(registry.get(k).running == 2 and registry.get(k).queued == 6 for k in range(5))
    for t in tasks[::2]:  # running and queued calls alike
        t.cancel()
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 20
    assert sorted(r for r in results if isinstance(r, int)) == sorted(
        i % 5 for i in range(1, 40, 2)
    )
    assert all(registry.get(k).running == 0 and registry.get(k).queued == 0 for k in range(5))
    # Idle again, they hold nothing: new keys may take their places.
    for k in range(5, 15):
        assert await work(k) == k
    assert len(registry) == 10
