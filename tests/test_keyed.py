"""failsafe.keyed: a bounded registry of policies by key."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from failsafe.exceptions import FailsafeError
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


async def test_hundreds_of_keys_full_registry_and_cancellation() -> None:
    """300 calls on 100 keys fill a 100-key registry with busy bulkheads: a new key is refused
    (RegistryFull) while they all hold calls; a third of the calls are cancelled, running and
    queued alike; once all end, every bulkhead is idle and new keys take their places."""
    from failsafe.bulkhead import bulkhead

    registry = keyed(lambda k: bulkhead(1, 3), key=lambda user: user, max_keys=100)
    gate = asyncio.Event()

    @registry
    async def work(user: int) -> int:
        await gate.wait()
        return user

    tasks = [asyncio.create_task(work(i % 100)) for i in range(300)]  # per key: 1 runs, 2 queue
    await asyncio.sleep(0)
    assert len(registry) == 100
    assert all(registry.get(k).running == 1 and registry.get(k).queued == 2 for k in range(100))
    with pytest.raises(RegistryFull):
        await work(1000)
    for t in tasks[::3]:
        t.cancel()
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 100
    assert sorted(r for r in results if isinstance(r, int)) == sorted(
        i % 100 for i in range(300) if i % 3
    )
    assert all(registry.get(k).running == 0 and registry.get(k).queued == 0 for k in range(100))
    assert await asyncio.gather(*(work(k) for k in range(1000, 1100))) == list(range(1000, 1100))
    assert len(registry) == 100
    assert 0 not in registry


# -- nothing that holds state is forgotten (issue 9, defect 2) ----------------------------------


async def test_a_running_bulkhead_is_not_forgotten_for_other_users() -> None:
    """alice's first call still runs while two other users pass: her second one is refused by
    the same bulkhead, not admitted by a fresh one."""
    from failsafe.bulkhead import BulkheadFull, bulkhead

    registry = keyed(lambda user: bulkhead(1), key=lambda user: user, max_keys=2)
    gate = asyncio.Event()
    inside: dict[str, int] = {}

    @registry
    async def work(user: str) -> str:
        inside[user] = inside.get(user, 0) + 1
        assert inside[user] == 1, f"two calls of {user} inside one bulkhead"
        try:
            if user == "alice":
                await gate.wait()
            return user
        finally:
            inside[user] -= 1

    first = asyncio.create_task(work("alice"))
    await asyncio.sleep(0)
    alice = registry.get("alice")
    assert await work("bob") == "bob"
    assert await work("carol") == "carol"
    assert registry.get("alice") is alice
    with pytest.raises(BulkheadFull):
        await work("alice")
    gate.set()
    assert await first == "alice"


async def test_a_bulkhead_held_by_a_block_is_not_forgotten(clock: FakeClock) -> None:
    """Outside the registry's own calls (``async with registry.get(key)``), the bulkhead itself
    says it holds state; with idle_after too."""
    from failsafe.bulkhead import bulkhead

    registry = keyed(lambda user: bulkhead(1, 3), key=lambda user: user, max_keys=2, idle_after=1)
    alice = registry.get("alice")
    release = asyncio.Event()

    async def hold() -> None:
        async with alice:
            await release.wait()

    holder = asyncio.create_task(hold())
    queued = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert (alice.running, alice.queued) == (1, 1)
    assert alice._holds_state()
    for i in range(5):
        clock.advance(2)  # alice idle for longer than idle_after
        registry.get(f"user{i}")
        assert registry.get("alice") is alice
    release.set()
    await asyncio.gather(holder, queued)
    assert not alice._holds_state()
    clock.advance(2)
    registry.get("x")
    registry.get("y")
    assert "alice" not in registry


@pytest.mark.parametrize("idle_after", [None, 1.0])
async def test_an_open_failfast_is_not_forgotten(
    clock: FakeClock, idle_after: float | None
) -> None:
    """A host that is down stays refused: its open latch is kept while other hosts come."""
    from failsafe.failfast import FailFastOpen, failfast

    registry = keyed(
        lambda host: failfast(failure_threshold=1, recovery_time=60),
        key=lambda host: host,
        max_keys=2,
        idle_after=idle_after,
    )
    called: list[str] = []

    @registry
    async def fetch(host: str) -> str:
        called.append(host)
        if host == "down":
            raise ConnectionError(host)
        return host

    with pytest.raises(FailFastOpen):
        await fetch("down")
    for i in range(5):
        clock.advance(2)
        assert await fetch(f"up{i}") == f"up{i}"
    with pytest.raises(FailFastOpen):
        await fetch("down")
    assert called.count("down") == 1  # the host that is down was not called again
    clock.advance(60)  # closed again: forgettable
    assert not registry.get("down")._holds_state()


async def test_a_factory_that_does_not_make_a_policy_is_named() -> None:
    """Issue 10, item 9: checked when made (never kept), with the factory's name."""

    def make_limit(user: str) -> int:
        return 3

    registry: Keyed[Any] = keyed(make_limit, key=lambda user: user)

    @registry
    async def handle(user: str) -> str:
        return user

    for _ in range(2):
        with pytest.raises(TypeError, match="make_limit returned 3 for key 'ann'"):
            await handle("ann")
    assert len(registry) == 0
    with pytest.raises(TypeError, match="make_limit"):
        registry.get("bob")


# -- every stateful pattern under a registry of 2 ----------------------------------------------


class _Spec:
    """How to make one pattern's policy hold state through a registry, and let go of it."""

    def __init__(
        self,
        name: str,
        factory: Any,
        hold: Any,
        release: Any = None,
        settle: float = 0,
    ) -> None:
        self.name, self.factory, self.hold, self.release = name, factory, hold, release
        self.settle = settle  # seconds of (fake) time after release until nothing is held

    def __repr__(self) -> str:
        return self.name


async def _fail(call: Any, n: int = 1) -> None:
    for _ in range(n):
        with pytest.raises((ConnectionError, FailsafeError)):  # the failure, or its wrapping
            await call("held", fail=True)


def _specs() -> list[_Spec]:
    from failsafe.bulkhead import bulkhead
    from failsafe.cache import cache
    from failsafe.circuitbreaker import circuitbreaker, consecutive_breaker
    from failsafe.failfast import failfast
    from failsafe.featuretoggle import featuretoggle
    from failsafe.ratelimit import slidingwindow
    from failsafe.retry import bucket_retry

    async def hold_block(registry: Keyed[Any], call: Any) -> Any:
        policy, release = registry.get("held"), asyncio.Event()

        async def inside() -> None:
            async with policy:
                await release.wait()

        tasks = [asyncio.create_task(inside()) for _ in range(2)]  # one runs, one queues
        await asyncio.sleep(0)
        return release, tasks

    async def release_block(state: Any, call: Any) -> None:
        release, tasks = state
        release.set()
        await asyncio.gather(*tasks)

    async def hold_flight(registry: Keyed[Any], call: Any) -> Any:
        release = asyncio.Event()

        async def slow(key: str) -> str:
            await release.wait()
            return key

        cached = registry.get("held")(slow)  # decorated outside the registry: no pin
        tasks = [asyncio.create_task(cached("k")) for _ in range(2)]  # a leader and a waiter
        await asyncio.sleep(0)
        return release, tasks

    async def call_once(registry: Keyed[Any], call: Any) -> None:
        await call("held")

    async def succeed(state: Any, call: Any) -> None:
        await call("held")

    async def fail_once(registry: Keyed[Any], call: Any) -> None:
        await _fail(call)

    async def fail_twice(registry: Keyed[Any], call: Any) -> None:
        await _fail(call, 2)

    async def switch_off(registry: Keyed[Any], call: Any) -> Any:
        registry.get("held").disable()
        return registry.get("held")

    async def switch_on(toggle: Any, call: Any) -> None:
        toggle.enable()

    async def take_retry_token(registry: Keyed[Any], call: Any) -> None:
        await _fail(call)

    return [
        _Spec("bulkhead", lambda k: bulkhead(1, 2), hold_block, release_block),
        _Spec("cache in flight", lambda k: cache(), hold_flight, release_block),
        _Spec(
            "failfast open",
            lambda k: failfast(failure_threshold=1, recovery_time=100),
            fail_once,
            settle=100,
        ),
        _Spec("failfast counting", lambda k: failfast(failure_threshold=3), fail_once, succeed),
        _Spec(
            "consecutive breaker",
            lambda k: consecutive_breaker(ConnectionError, 2, 100, 1),
            fail_twice,
            succeed,  # the probe after recovery_time closes it
            settle=100,
        ),
        _Spec(
            "rate breaker",
            lambda k: circuitbreaker(
                on=ConnectionError, failure_rate=0.5, window_time=100, min_calls=4
            ),
            fail_once,  # one failure in the window: not open, but remembered
            settle=100,
        ),
        _Spec("tokenbucket", lambda k: tokenbucket(1, 100), call_once, settle=100),
        _Spec(
            "tokenbucket waiting",
            lambda k: tokenbucket(1, 100, max_wait=1000),
            call_once,
            settle=100,
        ),
        _Spec("slidingwindow", lambda k: slidingwindow(2, 100), call_once, settle=100),
        _Spec(
            "keyed limiter",
            lambda k: tokenbucket(1, 100, key=lambda *a, **kw: 0),
            call_once,
            settle=100,
        ),
        _Spec("featuretoggle", lambda k: featuretoggle(), switch_off, switch_on),
        _Spec(
            "bucket_retry",
            lambda k: bucket_retry(
                on=ConnectionError, attempts=1, backoff=0, per_time_secs=100, bucket_size=1
            ),
            take_retry_token,
            settle=100,
        ),
        _Spec(
            "keyed in keyed",
            lambda k: keyed(lambda kk: tokenbucket(1, 100), key=lambda *a, **kw: 0, max_keys=1),
            call_once,
            settle=100,
        ),
    ]


@pytest.mark.parametrize("idle_after", [None, 1.0], ids=["lru", "idle"])
@pytest.mark.parametrize("spec", _specs(), ids=repr)
async def test_nothing_that_holds_state_is_forgotten(
    clock: FakeClock, instant: None, spec: _Spec, idle_after: float | None
) -> None:
    registry: Keyed[Any] = keyed(
        spec.factory, key=lambda k, **kw: k, max_keys=2, idle_after=idle_after
    )

    @registry
    async def call(key: str, fail: bool = False) -> str:
        if fail:
            raise ConnectionError(key)
        return key

    state = await spec.hold(registry, call)
    held = registry.get("held")
    assert held._holds_state(), f"{spec.name}: holds state but says it does not"
    for i in range(6):  # other keys come and go, with time passing beyond idle_after
        clock.advance(2 if i % 2 else 0.5)
        with contextlib.suppress(RegistryFull):
            await call(f"other{i}")
        assert "held" in registry, f"{spec.name}: forgotten"
        assert registry.get("held") is held
    clock.advance(spec.settle)
    if spec.release is not None:
        await spec.release(state, call)
    assert not held._holds_state(), f"{spec.name}: still says it holds state"
    for i in range(2):
        await call(f"late{i}")
    assert "held" not in registry  # nothing held: its place went to a newer key


async def test_a_policy_is_kept_while_a_call_runs_through_the_registry() -> None:
    """Even a policy that keeps no state of its own (a Plain one) stays while its call runs:
    a second call of that key finds the same policy."""
    registry: Keyed[Plain] = keyed(Plain, key=lambda k: k, max_keys=1)
    gate = asyncio.Event()

    @registry
    async def work(k: str) -> str:
        if k == "slow":
            await gate.wait()
        return k

    slow = asyncio.create_task(work("slow"))
    await asyncio.sleep(0)
    policy = registry.get("slow")
    with pytest.raises(RegistryFull):
        await work("other")
    gate.set()
    assert await slow == "slow"
    assert policy.calls == 1
    assert await work("other") == "other"  # now its place is free
    assert "slow" not in registry


# -- the C route of known keys (issue 17) --------------------------------------------------------


def _breakers(max_keys: int = 10_000, **kw: Any) -> Keyed[Any]:
    from failsafe.circuitbreaker import consecutive_breaker

    return keyed(
        lambda host: consecutive_breaker(ConnectionError, 3, 60, 1),
        key=lambda host, fail=False: host,
        max_keys=max_keys,
        **kw,
    )


async def test_hundreds_of_tasks_across_keys_with_cancellations() -> None:
    """Calls of known keys (routed in C) from many tasks: failures land on their own key's
    breaker, cancelled calls count as nothing and release what they pinned, so every idle key
    can be evicted afterwards."""
    registry = _breakers(max_keys=20)
    gate = asyncio.Event()

    @registry
    async def fetch(host: int, fail: bool = False) -> int:
        await gate.wait()
        if fail:
            raise ConnectionError(host)
        return host

    for k in range(20):  # made through the registry's Python path; the calls below are known
        assert await _settled(fetch(k), gate) == k
    gate.clear()
    tasks = [asyncio.create_task(fetch(i % 20, fail=i % 20 == 7)) for i in range(400)]
    await asyncio.sleep(0)
    with pytest.raises(RegistryFull):  # every place pinned by a running call
        await fetch(99)
    for t in tasks[::3]:
        t.cancel()
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    assert cancelled == len(tasks[::3])
    for i, r in enumerate(results):
        if not isinstance(r, asyncio.CancelledError):
            assert (r == i % 20) if i % 20 != 7 else isinstance(r, (ConnectionError, FailsafeError))
    assert registry.get(7).state == "failing"  # its failures all reached one breaker
    assert all(registry.get(k).state == "working" for k in range(20) if k != 7)
    # Nothing stays pinned: 19 new keys take the places of the 19 closed breakers; the open
    # one stays.
    for k in range(100, 119):
        assert await fetch(k) == k
    assert 7 in registry
    assert sorted(registry) == [7, *range(100, 119)]
    assert registry.stats().evicted == 19


async def _settled(coro: Any, gate: asyncio.Event) -> Any:
    gate.set()
    return await coro


async def test_a_running_call_of_a_known_key_keeps_its_breaker() -> None:
    registry = _breakers(max_keys=1)
    gate = asyncio.Event()

    @registry
    async def fetch(host: str, fail: bool = False) -> str:
        if host == "slow":
            await gate.wait()
        return host

    gate.set()
    assert await fetch("slow") == "slow"  # made
    gate.clear()
    breaker = registry.get("slow")
    running = asyncio.create_task(fetch("slow"))  # a known key: routed in C
    await asyncio.sleep(0)
    assert registry._entries["slow"].pins == 1  # held by the running call's FsCall
    with pytest.raises(RegistryFull):
        await fetch("other")
    never_awaited = fetch("slow")
    assert registry._entries["slow"].pins == 2
    never_awaited.close()  # a call closed before it ran holds nothing
    assert registry._entries["slow"].pins == 1
    gate.set()
    assert await running == "slow"
    assert registry.stats().refused == 1
    assert await fetch("other") == "other"  # nothing pinned any more
    assert "slow" not in registry
    assert registry.get("slow") is not breaker  # forgotten once idle, made anew


async def test_eviction_churn_is_counted_in_stats_and_metrics() -> None:
    from failsafe import _core

    registry = _breakers(max_keys=10, name="churn")

    @registry
    async def fetch(host: int, fail: bool = False) -> int:
        return host

    for i in range(100):
        assert await fetch(i % 20) == i % 20  # 20 live keys through 10 places
    stats = registry.stats()
    assert (stats.created, stats.evicted, stats.expired, stats.refused) == (100, 90, 0, 0)
    assert stats["keys"] == stats.held_keys == 10
    assert stats.max_keys == 10
    assert stats.name == registry.name == "churn"
    for i in range(10):
        assert await fetch(19 - i) == 19 - i  # the last 10 keys: known, nothing made
    assert registry.stats().created == 100
    series = {(n, p): s for n, p, _, s in _core.all_series()}[("churn", "keyed")]
    assert dict(zip(_native_metrics(), series.read(), strict=False)) == {
        "created": 100,
        "evicted": 90,
        "expired": 0,
        "refused": 0,
    }


def _native_metrics() -> tuple[str, ...]:
    from failsafe import _native

    return _native.METRICS["keyed"]


async def test_idle_keys_expire_while_calls_take_the_c_route(clock: FakeClock) -> None:
    registry = _breakers(idle_after=10)

    @registry
    async def fetch(host: str, fail: bool = False) -> str:
        return host

    for host in ("a", "b", "a", "b"):
        assert await fetch(host) == host
    clock.advance(5)
    for _ in range(3):
        assert await fetch("b") == "b"  # known: in C, and nothing idle yet
    clock.advance(6)  # a idle for 11 s, b for 6
    assert await fetch("b") == "b"
    assert "a" not in registry
    assert registry.stats().expired == 1
    assert "b" in registry


async def test_key_functions_and_their_errors() -> None:
    """A key function that returns an argument is read without a call, but only for calls of
    its exact shape; any other key function is called; its errors (and an unhashable key) are
    raised where the call is awaited."""
    seen: list[object] = []

    def noting(host: object, fail: bool = False) -> object:
        seen.append(host)
        return host

    for key in (lambda host, fail=False: host, noting):
        registry: Keyed[Plain] = keyed(Plain, key=key)

        @registry
        async def fetch(host: object, fail: bool = False) -> object:
            return host

        assert await fetch("a") == "a"
        assert await fetch("a") == "a"
        assert await fetch(host="a") == "a"  # by keyword: the key function is called
        assert await fetch("a", True) == "a"
        assert registry.get("a").calls == 4
        call = fetch(["unhashable"])
        with pytest.raises(TypeError, match="unhashable"):
            await call
    assert seen == ["a", "a", "a", "a", ["unhashable"]]

    def bad_key(host: str) -> str:
        raise ValueError(host)

    failing = keyed(Plain, key=bad_key)(host_of)
    call = failing("https://a/")  # making the call raises nothing
    with pytest.raises(ValueError, match="https://a/"):
        await call


async def test_a_breaker_template_is_copied_per_key(clock: FakeClock) -> None:
    """keyed(breaker, ...): each new key gets a copy of the template's configuration (none of
    its state), reporting under the template's name; the template itself is never called."""
    from failsafe import _core
    from failsafe.circuitbreaker import BreakerFailing, CircuitBreaker, consecutive_breaker

    template = consecutive_breaker(ConnectionError, 2, 30, 1, name="per_host")
    template.open_for(100)  # state of the template is not copied
    registry = keyed(template, key=lambda host, fail=False: host, max_keys=2)

    @registry
    async def fetch(host: str, fail: bool = False) -> str:
        if fail:
            raise ConnectionError(host)
        return host

    assert await fetch("a") == "a"
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await fetch("b", True)
    with pytest.raises(BreakerFailing):
        await fetch("b")
    a, b = registry.get("a"), registry.get("b")
    assert type(a) is CircuitBreaker
    assert a is not b
    assert a is not template
    assert (a.state, b.state, template.state) == ("working", "failing", "failing")
    assert a.name == b.name == "per_host"
    with pytest.raises(ValueError, match="x"):  # a's own filter: ValueError is no failure
        await registry.get("a")(_raise_value_error)()
    assert a.state == "working"
    series = {(n, p): s for n, p, _, s in _core.all_series()}[("per_host", "circuitbreaker")]
    assert series.live == 3  # the template and its two copies
    for i in range(3):  # the open breaker is kept while other hosts come and go
        assert await fetch(f"up{i}") == f"up{i}"
    assert registry.get("b") is b
    clock.advance(30)
    assert await fetch("b") == "b"  # its probe closes it
    assert b.state == "working"


async def _raise_value_error() -> None:
    raise ValueError("x")


def test_a_template_must_be_a_breaker() -> None:
    from failsafe.bulkhead import bulkhead

    with pytest.raises(TypeError, match="factory must be a callable key -> policy, or a circuit"):
        keyed(bulkhead(1), key=lambda user: user)


def _bytes_per_key(registry: Keyed[Any], keys: int = 2_000) -> float:
    """Bytes a registry holds per key made (its entry, its policy, its place in the registry),
    measured with tracemalloc over making `keys` keys through a decorated function."""
    import gc
    import tracemalloc

    @registry
    async def fetch(host: int) -> int:
        return host

    async def make(hosts: range) -> None:
        for host in hosts:
            assert await fetch(host) == host

    asyncio.run(make(range(-10, 0)))  # the first keys: the guard, the series, the lock
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        asyncio.run(make(range(keys)))
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert len(registry) == keys + 10
    return grown / keys


@pytest.mark.parametrize("form", ["template", "factory"])
def test_memory_per_key_is_bounded(form: str) -> None:
    """A key costs its breaker (sharing the configuration of the template, or of the breakers
    the factory made before) and its place: about 580 B; the bound catches a per-key __dict__,
    guard or copy of the configuration coming back (1,430 B and 1,940 B before)."""
    from failsafe.circuitbreaker import consecutive_breaker

    def breaker() -> Any:
        return consecutive_breaker(ConnectionError, 3, 60, 1)

    factory: Any = breaker() if form == "template" else (lambda host: breaker())
    per_key = _bytes_per_key(keyed(factory, key=lambda host: host, max_keys=10**6))
    assert per_key < 800, f"{per_key:.0f} B per key"


async def test_copies_share_the_configuration_not_the_state(clock: FakeClock) -> None:
    """Copies of a template (and breakers built from the same arguments) share the validated
    configuration, yet each keeps its own state, counters, `async with` blocks and refusal."""
    from failsafe.circuitbreaker import BreakerFailing, CircuitBreaker, circuitbreaker

    template = circuitbreaker(
        on=ConnectionError, failure_rate=0.5, window_calls=4, min_calls=2, recovery_time=10
    )
    registry = keyed(template, key=lambda host, fail=False: host)

    @registry
    async def fetch(host: str, fail: bool = False) -> str:
        if fail:
            raise ConnectionError(host)
        return host

    for fail in (False, True, True):
        with contextlib.suppress(ConnectionError, BreakerFailing):
            await fetch("a", fail)
    assert await fetch("b") == "b"
    a, b = registry.get("a"), registry.get("b")
    assert (a.state, b.state) == ("failing", "working")
    with pytest.raises(BreakerFailing, match="failing state") as refused:
        await fetch("a")
    assert refused.value.retry_after == pytest.approx(10)
    sa, sb = a.stats(), b.stats()
    assert (sa.success, sa.failure, sa.rejected, sa.mode) == (1, 1, 2, "count_window")
    assert (sb.success, sb.failure, sb.rejected, sb.window_calls) == (1, 0, 0, 1)
    assert a.recovery_time == b.recovery_time == 10
    async with b:  # a copy's own block entries
        assert b.stats().window_calls == 1
    assert b.stats().window_calls == 2
    assert template.stats().success == 0  # never called
    # The same arguments again: validated once, each breaker its own.
    first, second = (CircuitBreaker(failure_threshold=1, recovery_time=5) for _ in range(2))
    first.isolate()
    assert (first.state, second.state) == ("failing", "working")
    assert second.failure_threshold == 1
    assert second.recovery_time == 5
    with pytest.raises(TypeError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=True, recovery_time=5)  # True == 1, still refused
    with pytest.raises(ValueError, match="recovery_time"):
        CircuitBreaker(failure_threshold=1, recovery_time=-5)


async def test_copies_keep_the_subclass_settings_and_join_the_latency_of_their_name() -> None:
    """A template's subclass attributes are copied (slots and __dict__), the listeners built
    for the template by factories are not; copies are timed once latency is enabled, even when
    made before."""
    from failsafe import _core
    from failsafe.circuitbreaker import CircuitBreaker

    class Tagged(CircuitBreaker):
        def __init__(self, tag: str, **kw: Any) -> None:
            super().__init__(**kw)
            self.tag = tag

    template = Tagged("edge", name="tagged_hosts")
    template._factory_listeners = {}
    registry = keyed(template, key=lambda host: host)

    @registry
    async def fetch(host: str) -> str:
        return host

    assert await fetch("a") == "a"
    a = registry.get("a")
    assert type(a) is Tagged
    assert a.tag == "edge"
    assert a.name == "tagged_hosts"
    assert not hasattr(a, "_factory_listeners")
    assert a._latency is None
    _core.enable_latency()
    try:
        histogram = _core._latency_of("tagged_hosts", "circuitbreaker")
        assert a._latency is histogram
        assert template._latency is histogram
        assert await fetch("a") == "a"
        assert await fetch("b") == "b"  # made while enabled
        assert registry.get("b")._latency is histogram
        assert sum(point[1] for point in histogram.read()) == 2
    finally:
        _core.disable_latency()
    assert a._latency is None
    assert registry.get("b")._latency is None


async def test_a_registry_decorating_two_functions_and_a_python_policy() -> None:
    """Each decorated function has its own guard of a key's policy (the second kept in the
    entry's dict); a policy written in Python is called through its own decorator."""
    from failsafe.circuitbreaker import consecutive_breaker

    registry: Keyed[Any] = keyed(
        lambda host: consecutive_breaker(ConnectionError, 1, 60, 1), key=lambda host: host
    )

    @registry
    async def first(host: str) -> str:
        return "first " + host

    @registry
    async def second(host: str) -> str:
        raise ConnectionError(host)

    assert await first("a") == "first a"
    with pytest.raises(ConnectionError):
        await second("a")
    from failsafe.circuitbreaker import BreakerFailing

    with pytest.raises(BreakerFailing):  # the same breaker, opened through the second
        await first("a")
    assert await first("b") == "first b"
    assert registry.get("a").stats().failure == 1

    plain = keyed(Plain, key=lambda host: host)
    fetch = plain(host_of)
    again = plain(host_of)
    for _ in range(3):
        assert await fetch("https://x/") == "x"
    assert await again("https://x/") == "x"
    assert plain.get("https://x/").calls == 4
