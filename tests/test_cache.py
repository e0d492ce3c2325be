"""failsafe.cache: keys, LRU and TTL, single-flight misses, cancellation, invalidation,
methods, listeners, stats, composition, and a model-based test of the C index."""

from __future__ import annotations

import asyncio
import gc
import inspect
import math
import weakref
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import failsafe.cache
import failsafe.cache.exceptions
from failsafe import _native
from failsafe.cache import Cache, CacheListener, cache, register_cache_listener
from failsafe.cache._options import CacheOptions
from failsafe.events import EventManager, get_event_manager
from failsafe.exceptions import FailsafeError
from failsafe.fallback import fallback
from failsafe.retry import retry
from failsafe.testing import FakeClock
from failsafe.timeout import TimeoutError as FailsafeTimeoutError
from failsafe.timeout import timeout

METRICS = ("hit", "miss", "set", "evict", "expired", "shared", "stale")


def counts(policy: Cache) -> dict[str, int]:
    """The counters, read without side effects (stats() drops expired entries first)."""
    return dict(zip(METRICS, policy._counters(), strict=False))


class Backend:
    """An async function counting its calls; with gate set, each call waits for the gate."""

    def __init__(self, gated: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.gate: asyncio.Event | None = asyncio.Event() if gated else None
        self.started = asyncio.Event()
        self.fail: BaseException | None = None

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((*args, *sorted(kwargs.items())))
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return ("value", len(self.calls), args, tuple(sorted(kwargs.items())))


def cached(backend: Backend, **options: Any) -> Any:
    async def fn(*args: Any, **kwargs: Any) -> Any:
        return await backend(*args, **kwargs)

    return cache(**options)(fn)


class Recorder(CacheListener):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_cache_hit(self, cache: Cache, key: Any, value: Any) -> None:
        self.events.append(("hit", key, value))

    def on_cache_miss(self, cache: Cache, key: Any) -> None:
        self.events.append(("miss", key))

    def on_cache_set(self, cache: Cache, key: Any, value: Any) -> None:
        self.events.append(("set", key, value))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# --------------------------------------------------------------------------------------------
# API and validation


def test_exported_names() -> None:
    assert set(failsafe.cache.__all__) == {
        "Cache",
        "CacheListener",
        "CacheStats",
        "CacheMiss",
        "CacheUnavailable",
        "cache",
        "register_cache_listener",
    }
    assert issubclass(failsafe.cache.exceptions.CacheMiss, FailsafeError)
    assert failsafe.cache.CacheMiss is failsafe.cache.exceptions.CacheMiss


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"maxsize": 0}, ValueError, "maxsize"),
        ({"maxsize": -1}, ValueError, "maxsize"),
        ({"maxsize": 2**30 + 1}, ValueError, "maxsize"),
        ({"maxsize": 1.5}, TypeError, "maxsize"),
        ({"maxsize": True}, TypeError, "maxsize"),
        ({"maxsize": "3"}, TypeError, "maxsize"),
        ({"ttl": 0}, ValueError, "ttl"),
        ({"ttl": -1}, ValueError, "ttl"),
        ({"ttl": math.nan}, ValueError, "ttl"),
        ({"ttl": math.inf}, ValueError, "ttl"),
        ({"ttl": 1e30}, ValueError, "ttl"),
        ({"ttl": "1"}, TypeError, "ttl"),
        ({"ttl": True}, TypeError, "ttl"),
        ({"key_func": 3}, TypeError, "key_func"),
        ({"ttl": 1, "stale_if_error": 0}, ValueError, "stale_if_error"),
        ({"ttl": 1, "stale_if_error": -1}, ValueError, "stale_if_error"),
        ({"ttl": 1, "stale_if_error": math.nan}, ValueError, "stale_if_error"),
        ({"ttl": 1, "stale_if_error": 1e30}, ValueError, "stale_if_error"),
        ({"ttl": 1, "stale_if_error": "1"}, TypeError, "stale_if_error"),
        ({"stale_if_error": 1}, ValueError, "needs a ttl"),
        ({"name": "1bad"}, ValueError, "name"),
        ({"name": 3}, TypeError, "name"),
        ({"listeners": 3}, TypeError, "listeners"),
        ({"event_manager": 3}, TypeError, "event_manager"),
    ],
)
def test_validation_names_the_parameter(kwargs: dict[str, Any], exc: type, words: str) -> None:
    with pytest.raises(exc, match=words):
        cache(**kwargs)


def test_async_key_func_and_sync_functions_are_rejected() -> None:
    async def key(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="key_func"):
        cache(key_func=key)

    def sync(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="async"):
        cache()(sync)  # type: ignore[arg-type]


def test_valid_edge_values() -> None:
    c = cache(maxsize=1, ttl=1e-9, key_func=lambda *a, **k: 0, name="svc.users")
    assert (c.maxsize, c.ttl, c.name) == (1, 1e-9, "svc.users")
    assert cache(maxsize=2**30).maxsize == 2**30
    assert cache().maxsize is None
    assert cache().ttl is None


async def test_bare_decorator() -> None:
    calls = 0

    @cache
    async def f(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    assert await f(3) == await f(3) == 3
    assert calls == 1
    assert f.policy.maxsize is None  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="async function"):
        cache(1, maxsize=3)  # type: ignore[call-overload]


async def test_one_cache_guards_one_function() -> None:
    c = cache()

    @c
    async def a(x: int) -> int:
        return x

    async def b(x: int) -> int:
        return -x

    with pytest.raises(TypeError, match="one cache"):
        c(b)
    assert await a(1) == 1


async def test_guard_looks_like_the_function() -> None:
    @cache(maxsize=4)
    async def fetch(x: int) -> int:
        """Doc."""
        return x

    assert inspect.iscoroutinefunction(fetch)
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Doc."
    assert isinstance(fetch.policy, Cache)  # type: ignore[attr-defined]
    assert fetch.policy.name.endswith("fetch")  # type: ignore[attr-defined]
    assert fetch.invalidate == fetch.policy.invalidate  # type: ignore[attr-defined]
    assert fetch.clear == fetch.policy.clear  # type: ignore[attr-defined]
    assert inspect.signature(fetch) == inspect.signature(fetch.__wrapped__)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Hits and misses


async def test_hit_returns_the_stored_value_without_calling() -> None:
    b = Backend()
    f = cached(b)
    first = await f(1)
    assert await f(1) is first
    assert len(b.calls) == 1
    assert counts(f.policy) == {**dict.fromkeys(METRICS, 0), "hit": 1, "miss": 1, "set": 1}


async def test_a_hit_creates_no_coroutine_and_behaves_like_one() -> None:
    b = Backend()
    f = cached(b)
    await f(1)
    aw = f(1)
    assert type(aw) is _native.Done
    assert not inspect.iscoroutine(aw)
    assert inspect.isawaitable(aw)
    value = await aw
    assert value[1] == 1
    with pytest.raises(RuntimeError, match="reuse"):
        await aw
    # driven by hand, as a task or an outer coroutine would
    aw = f(1)
    with pytest.raises(StopIteration) as stop:
        aw.send(None)
    assert stop.value.value is value
    aw = f(1)
    aw.close()  # never awaited: no warning, nothing leaked
    aw = f(1)
    with pytest.raises(KeyError):
        aw.throw(KeyError("x"))
    # tasks accept it
    assert await asyncio.create_task(f(1)) is value
    assert await asyncio.gather(f(1), f(1)) == [value, value]


@pytest.mark.parametrize("value", [None, (1, 2), ValueError("v"), StopIteration(3), 0])
async def test_any_value_survives_a_hit(value: Any) -> None:
    @cache()
    async def f() -> Any:
        return value

    assert await f() is value
    assert await f() is value
    assert await asyncio.create_task(f()) is value


async def test_keys_follow_failsafe_py_argument_semantics() -> None:
    b = Backend()
    f = cached(b)
    await f(1)
    await f(x=1)
    await f((1,))
    await f(1, 2)
    await f((1, 2))
    await f(((1, 2), frozenset()))
    await f()
    assert len(b.calls) == 7  # all different keys
    await f(1.0)  # equal values are one key
    await f(True)
    await f(x=True)
    await f(1, 2.0)
    await f()
    assert len(b.calls) == 7
    await f(a=1, b=2)
    await f(b=2, a=1)  # keyword order does not matter
    await f(1, b=2)
    await f(1, a=2)
    assert len(b.calls) == 10
    await f(1, 2, 3, 4, 5, 6, k=7, j=8)
    await f(1, 2, 3, 4, 5, 6, j=8, k=7)
    await f(1, 2, 3, 4, 5, 6, j=8, k=9)
    await f(1, 2, 3, 4, 5, 6, j=8, m=7)
    await f(1, 2, 3, 4, 5, 6, j=8)
    assert len(b.calls) == 14


async def test_unhashable_arguments_raise_type_error_naming_them() -> None:
    b = Backend()
    f = cached(b)
    with pytest.raises(TypeError, match=r"argument 0 is unhashable \(list\)"):
        await f([1])
    with pytest.raises(TypeError, match=r"argument 1 is unhashable \(dict\)"):
        await f(1, {})
    with pytest.raises(TypeError, match=r"keyword argument 'x' is unhashable \(set\)"):
        await f(1, x={2})
    assert b.calls == []
    assert counts(f.policy)["miss"] == 0


async def test_key_func_makes_the_key() -> None:
    b = Backend()
    f = cached(b, key_func=lambda user, *, verbose=False: user)
    one = await f(1, verbose=True)
    assert await f(1) is one
    assert await f(1, verbose=False) is one
    await f(2)
    assert len(b.calls) == 2
    g = cached(Backend(), key_func=lambda x: [x])
    with pytest.raises(TypeError, match=r"key_func returned an unhashable key \(list\)"):
        await g(1)

    def boom(x: int) -> int:
        raise LookupError("no key")

    h = cached(b, key_func=boom)
    with pytest.raises(LookupError):
        await h(1)
    assert len(b.calls) == 2


async def test_keys_with_custom_equality_and_hash_collisions() -> None:
    class K:
        def __init__(self, v: int) -> None:
            self.v = v

        def __hash__(self) -> int:
            return 7  # every key collides

        def __eq__(self, other: object) -> bool:
            return isinstance(other, K) and other.v == self.v

    b = Backend()
    f = cached(b, maxsize=50)
    for i in range(20):
        await f(K(i))
    for i in range(20):
        assert (await f(K(i)))[1] == i + 1
    assert len(b.calls) == 20


async def test_an_eq_that_changes_the_cache_is_survived() -> None:
    holder: dict[str, Any] = {}

    class Meddler:
        def __hash__(self) -> int:
            return 1

        def __eq__(self, other: object) -> bool:
            holder["f"].clear()
            return False

    b = Backend()
    f = holder["f"] = cached(b)
    await f(Meddler())
    await f(Meddler())  # the lookup restarts, then gives up as a miss
    assert len(b.calls) == 2
    assert len(f.policy) <= 1


async def test_an_eq_that_raises_propagates() -> None:
    class Bad:
        def __hash__(self) -> int:
            return 1

        def __eq__(self, other: object) -> bool:
            raise ArithmeticError("eq")

    b = Backend()
    f = cached(b)
    await f(Bad())
    with pytest.raises(ArithmeticError):
        await f(Bad())
    assert len(b.calls) == 1


# --------------------------------------------------------------------------------------------
# LRU and TTL


async def test_lru_evicts_the_least_recently_used() -> None:
    b = Backend()
    f = cached(b, maxsize=3)
    for k in (1, 2, 3):
        await f(k)
    await f(1)  # 1 is now the most recent: 2 is the oldest
    await f(4)  # evicts 2
    assert f.policy._keys() == [((k,), frozenset()) for k in (3, 1, 4)]
    await f(2)  # a miss again, evicts 3
    assert len(b.calls) == 5
    assert f.policy._keys() == [((k,), frozenset()) for k in (1, 4, 2)]
    assert counts(f.policy)["evict"] == 2
    assert len(f.policy) == 3


async def test_unbounded_cache_grows(clock: FakeClock) -> None:
    b = Backend()
    f = cached(b)
    for k in range(5000):
        await f(k)
    for k in range(5000):
        await f(k)
    assert len(b.calls) == 5000
    assert len(f.policy) == 5000
    assert counts(f.policy)["evict"] == 0


async def test_bounded_cache_grows_up_to_maxsize() -> None:
    b = Backend()
    f = cached(b, maxsize=3000)
    for k in range(4000):
        await f(k)
    assert len(f.policy) == 3000
    assert counts(f.policy)["evict"] == 1000
    for k in range(1000, 4000):
        await f(k)
    assert len(b.calls) == 4000


async def test_ttl_expires_entries_on_the_fake_clock(clock: FakeClock) -> None:
    b = Backend()
    f = cached(b, ttl=10)
    await f(1)
    clock.advance(5)
    await f(2)
    clock.advance(4.999)
    await f(1)  # still fresh; a hit does not extend the ttl
    assert len(b.calls) == 2
    clock.advance(0.001)  # 1 is 10 s old
    await f(1)
    assert len(b.calls) == 3
    assert counts(f.policy)["expired"] == 1
    clock.advance(5)  # 2 is 10 s old; the new 1 is 5 s old
    assert len(f.policy) == 1  # expired entries are dropped when counted
    assert counts(f.policy)["expired"] == 2
    await f(1)
    assert len(b.calls) == 3


async def test_expired_entries_make_room_before_evictions(clock: FakeClock) -> None:
    b = Backend()
    f = cached(b, ttl=1, maxsize=2)
    await f(1)
    await f(2)
    clock.advance(2)
    await f(3)
    await f(4)
    c = counts(f.policy)
    assert (c["expired"], c["evict"]) == (2, 0)


# --------------------------------------------------------------------------------------------
# stale_if_error


async def test_a_failed_refresh_answers_with_the_stale_value(clock: FakeClock) -> None:
    b = Backend()
    f = cached(b, ttl=10, stale_if_error=5)
    old = await f(1)
    clock.advance(10)  # past the ttl, in the stale window
    b.fail = ValueError("down")
    assert await f(1) is old  # refreshed, failed: the old value answers
    assert await f(1) is old  # and stays: every call tries again
    assert len(b.calls) == 3
    c = counts(f.policy)
    assert (c["stale"], c["miss"], c["set"], c["expired"]) == (2, 3, 1, 0)
    clock.advance(4.999)
    assert await f(1) is old
    clock.advance(0.001)  # the window is over
    with pytest.raises(ValueError, match="down"):
        await f(1)
    assert counts(f.policy)["expired"] == 1
    assert len(f.policy) == 0


async def test_a_successful_refresh_replaces_the_stale_value(clock: FakeClock) -> None:
    b = Backend()
    f = cached(b, ttl=10, stale_if_error=5)
    await f(1)
    clock.advance(12)
    new = await f(1)
    assert new[1] == 2
    clock.advance(9.9)  # fresh for a full ttl from the refresh
    assert await f(1) is new
    assert len(f.policy) == 1


async def test_fresh_entries_and_base_exceptions_are_not_stale_answers(clock: FakeClock) -> None:
    class Abort(BaseException):
        pass

    b = Backend()
    f = cached(b, ttl=10, stale_if_error=5)
    old = await f(1)
    b.fail = ValueError("down")
    assert await f(1) is old  # fresh: a hit, no call
    assert len(b.calls) == 1
    clock.advance(11)
    b.fail = Abort()
    with pytest.raises(Abort):
        await f(1)
    b.fail = ValueError("down")
    assert await f(1) is old  # the stale entry was put back after the interruption


async def test_waiters_of_a_failed_refresh_get_the_stale_value(clock: FakeClock) -> None:
    b = Backend()
    f = cached(b, ttl=10, stale_if_error=5)
    old = await f(1)
    clock.advance(11)
    b.gate = asyncio.Event()
    b.fail = ValueError("down")
    tasks = [asyncio.create_task(f(1)) for _ in range(20)]
    await settle()
    assert len(b.calls) == 2  # one refresh
    b.gate.set()
    assert all(r is old for r in await asyncio.gather(*tasks))
    c = counts(f.policy)
    assert (c["stale"], c["shared"]) == (1, 19)


async def test_a_cancelled_refresh_puts_the_stale_entry_back(clock: FakeClock) -> None:
    b = Backend()
    f = cached(b, ttl=10, stale_if_error=5)
    old = await f(1)
    clock.advance(11)
    b.gate = asyncio.Event()
    leader = asyncio.create_task(f(1))
    await settle()
    waiter = asyncio.create_task(f(1))
    await settle()
    assert len(f.policy) == 0  # taken out while refreshed
    leader.cancel()
    await asyncio.gather(leader, return_exceptions=True)
    await settle()
    assert len(b.calls) == 3  # the waiter refreshes it in turn
    b.fail = ValueError("down")
    b.gate.set()
    assert await waiter is old
    assert len(f.policy) == 1


async def test_invalidating_a_refresh_forgets_the_stale_value(clock: FakeClock) -> None:
    b = Backend()
    f = cached(b, ttl=10, stale_if_error=5)
    await f(1)
    clock.advance(11)
    b.gate = asyncio.Event()
    b.fail = ValueError("down")
    leader = asyncio.create_task(f(1))
    await settle()
    assert f.invalidate(1) is True
    b.gate.set()
    with pytest.raises(ValueError, match="down"):
        await leader
    assert len(f.policy) == 0
    assert counts(f.policy)["stale"] == 0


# --------------------------------------------------------------------------------------------
# Single-flight


async def test_concurrent_misses_make_one_call() -> None:
    b = Backend(gated=True)
    f = cached(b)
    tasks = [asyncio.create_task(f("k")) for _ in range(1000)]
    await b.started.wait()
    await settle()
    assert f.policy.stats()["in_flight"] == 1
    assert b.gate is not None
    b.gate.set()
    results = await asyncio.gather(*tasks)
    assert len(b.calls) == 1
    assert all(r is results[0] for r in results)
    assert counts(f.policy) == {**dict.fromkeys(METRICS, 0), "miss": 1, "set": 1, "shared": 999}
    assert f.policy.stats()["in_flight"] == 0
    assert await f("k") is results[0]


async def test_concurrent_misses_of_different_keys_run_concurrently() -> None:
    b = Backend(gated=True)
    f = cached(b, maxsize=2)
    tasks = [asyncio.create_task(f(k % 10)) for k in range(100)]
    await settle()
    assert len(b.calls) == 10
    assert f.policy.stats()["in_flight"] == 10
    assert b.gate is not None
    b.gate.set()
    results = await asyncio.gather(*tasks)
    assert [r[2] for r in results] == [(k % 10,) for k in range(100)]
    assert len(f.policy) == 2


async def test_an_error_reaches_every_waiter_and_is_not_cached() -> None:
    b = Backend(gated=True)
    b.fail = ValueError("backend down")
    f = cached(b)
    tasks = [asyncio.create_task(f(1)) for _ in range(50)]
    await settle()
    assert b.gate is not None
    b.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(r is b.fail for r in results)
    assert len(b.calls) == 1
    assert len(f.policy) == 0
    assert f.policy.stats()["in_flight"] == 0
    c = counts(f.policy)
    assert (c["miss"], c["set"], c["shared"]) == (1, 0, 49)
    b.fail = None
    assert (await f(1))[1] == 2  # called again


async def test_cancelling_the_leader_hands_the_call_to_a_waiter() -> None:
    b = Backend(gated=True)
    f = cached(b)
    leader = asyncio.create_task(f(1))
    await b.started.wait()
    waiters = [asyncio.create_task(f(1)) for _ in range(10)]
    await settle()
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    await settle()
    assert len(b.calls) == 2  # one waiter leads a new call
    assert b.gate is not None
    b.gate.set()
    results = await asyncio.gather(*waiters)
    assert all(r is results[0] for r in results)
    assert results[0][1] == 2
    assert len(b.calls) == 2
    assert f.policy.stats()["in_flight"] == 0
    assert len(f.policy) == 1


async def test_cancelling_a_waiter_leaves_the_others_alone() -> None:
    b = Backend(gated=True)
    f = cached(b)
    leader = asyncio.create_task(f(1))
    await b.started.wait()
    waiters = [asyncio.create_task(f(1)) for _ in range(3)]
    await settle()
    waiters[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiters[1]
    assert b.gate is not None
    b.gate.set()
    value = await leader
    assert await waiters[0] is value
    assert await waiters[2] is value
    assert len(b.calls) == 1
    c = counts(f.policy)
    assert (c["miss"], c["shared"]) == (1, 2)


async def test_waiters_cancelled_all_at_once_leave_nothing_behind() -> None:
    b = Backend(gated=True)
    f = cached(b)
    leader = asyncio.create_task(f(1))
    await b.started.wait()
    waiters = [asyncio.create_task(f(1)) for _ in range(100)]
    await settle()
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert all(w.cancelled() for w in waiters)
    leader.cancel()
    await asyncio.gather(leader, return_exceptions=True)
    assert f.policy.stats()["in_flight"] == 0
    assert len(f.policy) == 0
    assert b.gate is not None
    b.gate.set()
    assert (await f(1))[1] == 2


async def test_a_leader_never_awaited_releases_its_waiters() -> None:
    b = Backend(gated=True)
    f = cached(b)
    leader = f(1)  # admitted, never awaited
    waiter = asyncio.create_task(f(1))
    await settle()
    assert len(b.calls) == 0  # the leader's coroutine never ran; the waiter waits for it
    leader.close()
    await settle()
    assert len(b.calls) == 1  # the waiter leads now
    assert b.gate is not None
    b.gate.set()
    assert (await waiter)[1] == 1
    del leader
    gc.collect()
    assert f.policy.stats()["in_flight"] == 0


async def test_a_base_exception_of_the_leader_sends_waiters_back() -> None:
    class Abort(BaseException):
        pass

    gate = asyncio.Event()
    calls = 0

    @cache()
    async def f(x: int) -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        if calls == 1:
            raise Abort
        return calls

    leader = asyncio.create_task(f(1))
    await settle()
    waiter = asyncio.create_task(f(1))
    await settle()
    gate.set()
    with pytest.raises(Abort):
        await leader
    assert await waiter == 2  # not an error to share: it led a call of its own
    assert calls == 2


async def test_concurrent_calls_on_two_event_loops_in_threads() -> None:
    import threading

    release = threading.Event()
    calls: list[int] = []

    @cache()
    async def f(x: int) -> int:
        calls.append(x)
        await asyncio.get_running_loop().run_in_executor(None, release.wait)
        return x * 2

    results: list[Any] = []

    def other_loop() -> None:
        async def waiter() -> Any:
            return await f(21)

        results.append(asyncio.run(waiter()))

    leader = asyncio.create_task(f(21))
    await asyncio.sleep(0)
    thread = threading.Thread(target=other_loop)
    thread.start()
    while True:  # until the other loop's caller waits for this loop's call
        state, flight = f.policy._probe(21)
        if state == 1 and flight.waiting == 1:
            break
        await asyncio.sleep(0.001)
    release.set()
    assert await leader == 42
    await asyncio.get_running_loop().run_in_executor(None, thread.join)
    assert results == [42]
    assert calls == [21]


# --------------------------------------------------------------------------------------------
# Invalidation


async def test_invalidate_and_clear() -> None:
    b = Backend()
    f = cached(b)
    await f(1)
    await f(2, x=3)
    assert f.invalidate(1) is True
    assert f.invalidate(1) is False
    assert f.invalidate(2, x=4) is False
    assert f.invalidate(2, x=3) is True
    with pytest.raises(TypeError, match="unhashable"):
        f.invalidate([1])
    await f(1)
    assert len(b.calls) == 3
    f.clear()
    assert len(f.policy) == 0
    await f(1)
    assert len(b.calls) == 4


async def test_invalidating_a_call_in_flight_keeps_its_result_out() -> None:
    b = Backend(gated=True)
    f = cached(b)
    leader = asyncio.create_task(f(1))
    await b.started.wait()
    waiter = asyncio.create_task(f(1))
    await settle()
    assert f.invalidate(1) is True
    newcomer = asyncio.create_task(f(1))  # starts a new call: the old result is stale
    await settle()
    assert len(b.calls) == 2
    assert b.gate is not None
    b.gate.set()
    old = await leader
    assert await waiter is old  # its waiters still get it
    new = await newcomer
    assert new[1] == 2
    assert await f(1) is new
    assert counts(f.policy)["set"] == 1


async def test_clear_detaches_calls_in_flight() -> None:
    b = Backend(gated=True)
    f = cached(b)
    leader = asyncio.create_task(f(1))
    await b.started.wait()
    f.clear()
    assert f.policy.stats()["in_flight"] == 0
    assert b.gate is not None
    b.gate.set()
    await leader
    assert len(f.policy) == 0


# --------------------------------------------------------------------------------------------
# Methods


class Repo:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.calls = 0

    @cache(maxsize=10)
    async def get(self, key: str) -> str:
        self.calls += 1
        return f"{self.prefix}:{key}"


async def test_methods_cache_per_instance_and_keep_instances_alive() -> None:
    Repo.get.clear()  # type: ignore[attr-defined]
    a, b = Repo("a"), Repo("b")
    assert await a.get("x") == "a:x"
    assert await b.get("x") == "b:x"
    assert await a.get("x") == "a:x"
    assert (a.calls, b.calls) == (1, 1)
    ref = weakref.ref(a)
    del a
    gc.collect()
    assert ref() is not None  # the entry's key holds the instance
    inst = ref()
    assert inst is not None
    assert Repo.get.invalidate(inst, "x") is True  # type: ignore[attr-defined]
    del inst
    gc.collect()
    assert ref() is None
    Repo.get.clear()  # type: ignore[attr-defined]


async def test_cached_functions_and_their_values_are_collected() -> None:
    class Value:
        pass

    async def make() -> Any:
        @cache()
        async def f(x: int) -> Any:
            v = Value()
            v.f = f  # type: ignore[attr-defined]  # a cycle through the cache
            return v

        return weakref.ref(await f(1)), weakref.ref(f)

    value_ref, fn_ref = await make()
    gc.collect()
    assert value_ref() is None
    assert fn_ref() is None


# --------------------------------------------------------------------------------------------
# Listeners and stats


async def test_listeners_get_keys_in_failsafe_py_form() -> None:
    rec = Recorder()
    b = Backend()
    f = cached(b, listeners=[rec])
    v = await f(1, y=2)
    await f(1, y=2)
    key = ((1,), frozenset({("y", 2)}))
    assert rec.events == [("miss", key), ("set", key, v), ("hit", key, v)]
    rec.events.clear()
    g = cached(b, listeners=[rec], key_func=lambda x: f"user:{x}")
    v = await g(5)
    await g(5)
    assert rec.events == [("miss", "user:5"), ("set", "user:5", v), ("hit", "user:5", v)]


async def test_global_and_async_listeners(global_listeners: None) -> None:
    rec = Recorder()
    seen: list[str] = []

    class Async(CacheListener):
        async def on_cache_set(self, cache: Cache, key: Any, value: Any) -> None:
            await asyncio.sleep(0)
            seen.append(cache.name)

    manager = EventManager()
    f = cached(Backend(), name="users", event_manager=manager)
    register_cache_listener(rec)
    register_cache_listener(Async())
    await f(1)
    await f(1)
    await manager.wait_for_tasks()
    assert [e[0] for e in rec.events] == ["miss", "set", "hit"]
    assert seen == ["users"]


class _Raising(CacheListener):
    def on_cache_hit(self, cache: Cache, key: Any, value: Any) -> None:
        raise RuntimeError("listener boom")

    on_cache_miss = on_cache_set = lambda self, *a: 1 / 0  # type: ignore[assignment]


async def test_a_raising_listener_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    b = Backend(gated=True)
    f = cached(b, listeners=[_Raising(), rec])
    tasks = [asyncio.create_task(f(1)) for _ in range(3)]
    await settle()
    assert b.gate is not None
    b.gate.set()
    results = await asyncio.gather(*tasks)
    assert await f(1) is results[0]
    assert len(b.calls) == 1
    assert [e[0] for e in rec.events] == ["miss", "set", "hit"]
    assert any("listener boom" in (r.exc_text or "") for r in caplog.records)
    await get_event_manager().wait_for_tasks()


async def test_a_listener_calling_the_cache_reentrantly() -> None:
    b = Backend()
    holder: dict[str, Any] = {}

    class Reentrant(CacheListener):
        def on_cache_hit(self, cache: Cache, key: Any, value: Any) -> None:
            if key == ((1,), frozenset()):
                holder["inner"] = holder["f"](2)  # a nested call from inside admit

        def on_cache_miss(self, cache: Cache, key: Any) -> None:
            cache.invalidate(99)

    f = holder["f"] = cached(b, listeners=[Reentrant()])
    await f(1)
    await f(2)
    assert (await f(1))[2] == (1,)
    assert (await holder["inner"])[2] == (2,)


async def test_stats_and_repr_are_live(clock: FakeClock) -> None:
    f = cached(Backend(), maxsize=5, ttl=2.5, name="svc.users")
    assert f.policy.stats() == {
        "name": "svc.users",
        **dict.fromkeys(METRICS, 0),
        "size": 0,
        "in_flight": 0,
        "maxsize": 5,
        "ttl": 2.5,
    }
    g = cached(Backend(), ttl=1, stale_if_error=2)
    assert g.policy.stale_if_error == 2.0
    assert g.policy.stats()["stale_if_error"] == 2.0
    await f(1)
    await f(1)
    s = f.policy.stats()
    assert (s["hit"], s["miss"], s["set"], s["size"]) == (1, 1, 1, 1)
    assert bool(cache())  # empty, still a policy
    r = repr(f.policy)
    assert r.startswith("<cache 'svc.users'")
    assert "hit=1" in r
    assert "size=1" in r


# --------------------------------------------------------------------------------------------
# Composition


async def test_retry_over_cache_retries_uncached_errors() -> None:
    calls = 0

    @retry(attempts=2, backoff=0)
    @cache()
    async def f(x: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("once")
        return x * 10

    assert await f(1) == 10
    assert await f(1) == 10  # cached after the retry
    assert calls == 2


async def test_cache_over_retry_stores_the_retried_result() -> None:
    attempts = 0

    @cache()
    @retry(attempts=3, backoff=0)
    async def f(x: int) -> int:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ValueError("transient")
        return x

    assert await f(7) == 7
    assert await f(7) == 7
    assert attempts == 3


async def test_timeout_over_cache_times_out_a_slow_miss_and_caches_nothing() -> None:
    b = Backend(gated=True)
    f = timeout(0.01)(cached(b))
    with pytest.raises(FailsafeTimeoutError):
        await f(1)
    inner = f.__wrapped__
    assert len(inner.policy) == 0
    assert inner.policy.stats()["in_flight"] == 0
    assert b.gate is not None
    b.gate.set()
    assert (await f(1))[1] == 2
    assert (await f(1))[1] == 2  # a hit passes the timeout


async def test_cache_over_timeout_does_not_store_the_timeout() -> None:
    b = Backend(gated=True)
    f = cache()(timeout(0.01)(b.__call__))
    waiter_result: list[Any] = []

    async def waiter() -> None:
        try:
            await f(1)
        except FailsafeTimeoutError as e:
            waiter_result.append(e)

    w = asyncio.create_task(waiter())
    with pytest.raises(FailsafeTimeoutError):
        await f(1)
    await w
    assert len(waiter_result) == 1  # the waiter shared the error
    assert len(f.policy) == 0


async def test_fallback_and_cache_in_both_orders() -> None:
    b = Backend()
    b.fail = ValueError("down")
    outer = fallback("default")(cached(b))
    assert await outer(1) == "default"
    assert len(outer.__wrapped__.policy) == 0  # the fallback value is not cached
    inner = cache()(fallback("default")(b.__call__))
    assert await inner(1) == "default"
    assert await inner(1) == "default"
    assert len(b.calls) == 2  # the fallback's answer is the cached result
    assert len(inner.policy) == 1


async def test_stacked_on_a_method_with_retry_and_timeout() -> None:
    class Svc:
        def __init__(self) -> None:
            self.calls = 0

        @retry(attempts=1, backoff=0)
        @timeout(5)
        @cache(maxsize=4)
        async def get(self, x: int) -> int:
            self.calls += 1
            return x + self.calls

    s = Svc()
    assert await s.get(1) == 2
    assert await s.get(1) == 2
    assert s.calls == 1


# --------------------------------------------------------------------------------------------
# Model-based: the C index against an OrderedDict with the same fake clock


class CacheModel(RuleBasedStateMachine):
    """Drives a cached function (maxsize 3, ttl 5 s, stale_if_error 3 s) with hits, misses,
    failures, invalidations, clears and time, and checks the values, the LRU order and the
    counters against an OrderedDict model on the same fake clock."""

    TTL_NS = 5_000_000_000
    STALE_NS = 3_000_000_000
    MAXSIZE = 3

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.clock.install()
        self.calls = 0
        self.failing = False
        # key -> (value, fresh until, expires), least recently used first
        self.model: OrderedDict[int, tuple[int, int, int]] = OrderedDict()
        self.expected = dict.fromkeys(METRICS, 0)

        async def fn(k: int) -> int:
            self.calls += 1
            if self.failing:
                raise ValueError(k)
            return k * 1000 + self.calls

        self.f = cache(maxsize=self.MAXSIZE, ttl=5, stale_if_error=3)(fn)

    def teardown(self) -> None:
        self.clock.uninstall()

    def _drop_expired(self) -> None:
        now = self.clock.now_ns
        for k, entry in list(self.model.items()):
            if now >= entry[2]:
                del self.model[k]
                self.expected["expired"] += 1

    def _store(self, k: int, entry: tuple[int, int, int]) -> None:
        self._drop_expired()
        if len(self.model) >= self.MAXSIZE:
            self.model.popitem(last=False)
            self.expected["evict"] += 1
        self.model[k] = entry

    @rule(k=st.integers(0, 5))
    def call(self, k: int) -> None:
        now = self.clock.now_ns
        entry = self.model.get(k)
        if entry is not None and now >= entry[2]:
            del self.model[k]
            self.expected["expired"] += 1
            entry = None
        expect: Any
        if entry is not None and now < entry[1]:
            self.model.move_to_end(k)
            self.expected["hit"] += 1
            expect = entry[0]
        else:
            stale = self.model.pop(k, None)  # taken out while refreshed
            self.expected["miss"] += 1
            if self.failing and stale is not None:
                self.expected["stale"] += 1
                self._store(k, stale)  # put back
                expect = stale[0]
            elif self.failing:
                expect = ValueError
            else:
                expect = k * 1000 + self.calls + 1
                fresh = now + self.TTL_NS
                self._store(k, (expect, fresh, fresh + self.STALE_NS))
                self.expected["set"] += 1
        aw = self.f(k)
        if expect is ValueError:
            with pytest.raises(ValueError, match=str(k)):
                aw.send(None)
            return
        with pytest.raises(StopIteration) as stop:
            aw.send(None)
        assert stop.value.value == expect

    @rule(failing=st.booleans())
    def backend(self, failing: bool) -> None:
        self.failing = failing

    @rule(k=st.integers(0, 5))
    def invalidate(self, k: int) -> None:
        entry = self.model.pop(k, None)
        assert self.f.invalidate(k) is (entry is not None)

    @rule()
    def clear(self) -> None:
        self.model.clear()
        self.f.clear()

    @rule(ms=st.integers(0, 4000))
    def advance(self, ms: int) -> None:
        self.clock.advance_ns(ms * 1_000_000)

    @invariant()
    def same_counters(self) -> None:
        assert counts(self.f.policy) == self.expected

    @rule()
    def same_order(self) -> None:
        self._drop_expired()
        assert self.f.policy._keys() == [((k,), frozenset()) for k in self.model]
        assert counts(self.f.policy) == self.expected


CacheModel.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestCacheModel = CacheModel.TestCase


def test_options_hold_the_checked_parameters() -> None:
    assert CacheOptions.check() == CacheOptions()  # one set of defaults
    o = CacheOptions.check(maxsize=8, ttl=2, stale_if_error=1, key_func=str)
    assert (o.maxsize, o.ttl, o.ttl_ns, o.stale_ns) == (8, 2.0, 2 * 10**9, 10**9)
    assert o.configuration() == (8, 2 * 10**9, str, 10**9)
    local = o.with_ttl(0.5, "local_ttl")  # a shared cache's layer in front of the store
    assert (local.maxsize, local.ttl_ns, local.stale_ns, local.key_func) == (8, 5 * 10**8, -1, str)
    with pytest.raises(ValueError, match="local_ttl must be > 0"):
        o.with_ttl(0, "local_ttl")
    with pytest.raises(AttributeError):
        o.maxsize = 1  # type: ignore[misc]


def test_a_layer_built_from_options_is_a_cache_of_them() -> None:
    layer = Cache._of(CacheOptions.check(maxsize=2, ttl=5), "layer")
    assert (layer.name, layer.maxsize, layer.ttl, layer.stale_if_error) == ("layer", 2, 5.0, None)
    assert layer.stats()["maxsize"] == 2
