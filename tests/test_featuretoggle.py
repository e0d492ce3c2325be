"""failsafe.featuretoggle: switching, predicates, stable rollouts, block forms, listeners, stats,
concurrency, cancellation and composition."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failsafe import _native
from failsafe.events import EventManager
from failsafe.exceptions import FailsafeError
from failsafe.failfast import FailFastOpen, failfast
from failsafe.fallback import fallback
from failsafe.featuretoggle import (
    FeatureDisabled,
    FeatureToggle,
    FeatureToggleListener,
    FeatureToggleManager,
    featuretoggle,
    register_featuretoggle_listener,
    rollout_bucket,
)
from failsafe.retry import AttemptsExceeded, retry
from failsafe.timeout import timeout


class Recorder(FeatureToggleListener):
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_feature_enabled(self, toggle: FeatureToggle) -> None:
        self.events.append("enabled")

    def on_feature_disabled(self, toggle: FeatureToggle) -> None:
        self.events.append("disabled")

    def on_feature_toggled(self, toggle: FeatureToggle, enabled: bool) -> None:
        self.events.append(("toggled", enabled))


class Service:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def __call__(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append((args, kwargs))
        await asyncio.sleep(0)
        return "ok"


def guarded(policy: FeatureToggle, svc: Service) -> Callable[..., Coroutine[Any, Any, str]]:
    async def call(*args: Any, **kwargs: Any) -> str:
        return await svc(*args, **kwargs)

    return policy(call)


def counts(policy: FeatureToggle) -> tuple[int, int]:
    s = policy.stats()
    return s["enabled"], s["disabled"]


# ------------------------------------------------------------------------------------------
# Names and validation


def test_public_names_and_exceptions() -> None:
    exc_mod = importlib.import_module("failsafe.featuretoggle.exceptions")
    assert exc_mod.FeatureDisabled is FeatureDisabled
    assert issubclass(FeatureDisabled, FailsafeError)
    assert FeatureToggleManager is FeatureToggle


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"enabled": 1}, TypeError, "enabled"),
        ({"enabled": None}, TypeError, "enabled"),
        ({"enabled": "yes"}, TypeError, "enabled"),
        ({"predicate": 3}, TypeError, "predicate"),
        ({"rollout": -1, "key": str}, ValueError, "rollout"),
        ({"rollout": 100.5, "key": str}, ValueError, "rollout"),
        ({"rollout": float("nan"), "key": str}, ValueError, "rollout"),
        ({"rollout": "10", "key": str}, TypeError, "rollout"),
        ({"rollout": True, "key": str}, TypeError, "rollout"),
        ({"rollout": 10}, ValueError, "key"),
        ({"key": str}, ValueError, "rollout"),
        ({"rollout": 10, "key": 3}, TypeError, "key"),
        ({"name": "no spaces"}, ValueError, "name"),
        ({"listeners": "x"}, TypeError, "listeners"),
        ({"event_manager": 1}, TypeError, "event_manager"),
    ],
)
def test_every_parameter_is_validated(kwargs: dict[str, Any], error: type, param: str) -> None:
    with pytest.raises(error, match=param):
        featuretoggle(**kwargs)


def test_async_key_is_rejected() -> None:
    async def key(*args: Any) -> str:
        return "k"

    with pytest.raises(TypeError, match="key"):
        featuretoggle(rollout=10, key=key)


def test_sync_functions_are_rejected_at_decoration() -> None:
    def sync() -> int:
        return 1

    with pytest.raises(TypeError, match="async"):
        featuretoggle()(sync)  # type: ignore[arg-type]


def test_enabled_setter_validates() -> None:
    t = featuretoggle()
    with pytest.raises(TypeError, match="enabled"):
        t.enabled = 0  # type: ignore[assignment]
    with pytest.raises(AttributeError):
        del t.enabled
    assert t.enabled is True


async def test_guard_looks_like_the_function() -> None:
    policy = featuretoggle()

    async def beta(x: int) -> int:
        """Doc."""
        return x

    g = policy(beta)
    assert inspect.iscoroutinefunction(g)
    assert g.__name__ == "beta"
    assert g.__doc__ == "Doc."
    assert g.__wrapped__ is beta
    assert g.policy is policy
    assert g._manager is policy
    assert policy._manager is policy
    assert await g(5) == 5

    @featuretoggle
    async def bare() -> int:
        return 1

    assert await bare() == 1


# ------------------------------------------------------------------------------------------
# Switching


async def test_enabled_calls_run_the_function_itself() -> None:
    svc = Service()
    policy = featuretoggle()
    g = guarded(policy, svc)
    coro = g(1, k=2)
    assert inspect.iscoroutine(coro)  # the function's own coroutine: nothing wrapped
    assert await coro == "ok"
    assert svc.calls == [((1,), {"k": 2})]
    assert counts(policy) == (1, 0)


async def test_disabled_calls_raise_without_calling() -> None:
    svc = Service()
    policy = featuretoggle(enabled=False, name="beta")
    g = guarded(policy, svc)
    for _ in range(3):
        with pytest.raises(FeatureDisabled, match="beta"):
            await g()
    assert svc.calls == []
    assert counts(policy) == (0, 3)


async def test_refusal_surfaces_where_the_call_is_awaited() -> None:
    policy = featuretoggle(enabled=False)

    @policy
    async def f() -> int:
        return 1

    pending = f()  # making the call raises nothing, as for a coroutine
    assert type(pending) is _native.Done
    assert asyncio.iscoroutine(pending)
    assert inspect.isawaitable(pending)
    task = asyncio.create_task(f())
    with pytest.raises(FeatureDisabled):
        await pending
    with pytest.raises(FeatureDisabled):
        await task
    with pytest.raises(RuntimeError, match="already awaited"):
        await pending
    results = await asyncio.gather(f(), f(), return_exceptions=True)
    assert all(type(r) is FeatureDisabled for r in results)
    never = f()
    never.close()
    thrown = f()
    with pytest.raises(KeyError):
        thrown.throw(KeyError("x"))


async def test_enable_and_disable_work_plainly_and_awaited() -> None:
    svc = Service()
    rec = Recorder()
    policy = featuretoggle(listeners=[rec])
    g = guarded(policy, svc)
    policy.disable()
    assert policy.enabled is False
    assert policy.stats()["state"] == "disabled"
    with pytest.raises(FeatureDisabled):
        await g()
    await policy.enable()  # failsafe-py's async manager methods
    assert policy.enabled is True
    assert await g() == "ok"
    await policy.disable()
    policy.disable()  # no change: no event
    policy.enabled = True
    policy.enabled = True
    assert rec.events == [
        ("toggled", False),
        "disabled",
        ("toggled", True),
        "enabled",
        ("toggled", False),
        ("toggled", True),
    ]
    # The returned awaitable is reusable and already done.
    done = policy.enable()
    assert await done is None
    assert await done is None
    # failsafe-py's manager path.
    await g._manager.disable()  # type: ignore[attr-defined]
    assert not policy.enabled


# ------------------------------------------------------------------------------------------
# Predicates


async def test_sync_predicate_sees_the_arguments() -> None:
    svc = Service()
    seen: list[Any] = []

    def beta_user(user: str, **kwargs: Any) -> bool:
        seen.append((user, kwargs))
        return user.startswith("beta")

    policy = featuretoggle(predicate=beta_user)
    g = guarded(policy, svc)
    assert await g("beta-1", region="eu") == "ok"
    with pytest.raises(FeatureDisabled):
        await g("alice")
    assert seen == [("beta-1", {"region": "eu"}), ("alice", {})]
    assert len(svc.calls) == 1
    assert counts(policy) == (1, 1)


async def test_async_predicate_is_awaited() -> None:
    svc = Service()

    async def allowed(user: str) -> bool:
        await asyncio.sleep(0)
        return user != "mallory"

    policy = featuretoggle(predicate=allowed)
    g = guarded(policy, svc)
    assert await g("alice") == "ok"
    with pytest.raises(FeatureDisabled):
        await g("mallory")
    assert [c[0] for c in svc.calls] == [("alice",)]
    assert counts(policy) == (1, 1)
    policy.disable()
    with pytest.raises(FeatureDisabled):
        await g("alice")  # refused before the predicate runs
    assert counts(policy) == (1, 2)


async def test_disabling_while_an_async_predicate_runs_refuses_the_call() -> None:
    svc = Service()

    async def switched_off_meanwhile() -> bool:
        policy.disable()
        return True

    policy = featuretoggle(predicate=switched_off_meanwhile)
    g = guarded(policy, svc)
    with pytest.raises(FeatureDisabled):
        await g()
    assert svc.calls == []
    assert counts(policy) == (0, 1)


async def test_predicate_errors_and_awaitables_from_sync_predicates() -> None:
    def broken() -> bool:
        raise LookupError("flags down")

    async def verdict() -> bool:
        return True

    svc = Service()
    with pytest.raises(LookupError):
        await guarded(featuretoggle(predicate=broken), svc)()
    with pytest.raises(TypeError, match="async def"):
        await guarded(featuretoggle(predicate=lambda: verdict()), svc)()
    assert svc.calls == []


# ------------------------------------------------------------------------------------------
# Rollout


def _fnv_bucket(data: bytes) -> int:
    """The rollout bucket, computed independently: FNV-1a 64, splitmix64 finaliser, mod 1e6."""
    mask = 2**64 - 1
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & mask
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & mask
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & mask
    h ^= h >> 31
    return h % 1_000_000


@given(st.text(max_size=40) | st.binary(max_size=40) | st.integers(-(10**30), 10**30))
def test_bucket_is_the_documented_hash(key: str | bytes | int) -> None:
    if isinstance(key, int):
        data = str(key).encode()
    elif isinstance(key, str):
        try:
            data = key.encode()
        except UnicodeEncodeError:
            with pytest.raises(UnicodeEncodeError):
                rollout_bucket(key)
            return
    else:
        data = key
    assert rollout_bucket(key) == _fnv_bucket(data)


def test_buckets_are_stable_across_processes() -> None:
    keys = ["user-1", "user-2", "é", "12345"]
    code = (
        "from failsafe.featuretoggle import rollout_bucket;"
        f"print([rollout_bucket(k) for k in {keys!r}])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert outs == {f"{[rollout_bucket(k) for k in keys]}\n"}
    assert rollout_bucket(12345) == rollout_bucket("12345")


def test_bad_keys_are_type_errors() -> None:
    for bad in (None, 1.5, True, ("a",)):
        with pytest.raises(TypeError, match="str, bytes or int"):
            rollout_bucket(bad)  # type: ignore[arg-type]


async def test_rollout_admits_a_stable_share_of_keys() -> None:
    svc = Service()
    policy = featuretoggle(rollout=30, key=lambda user, **kw: user)
    g = guarded(policy, svc)
    admitted: set[str] = set()
    for i in range(10_000):
        try:
            await g(f"user-{i}")
            admitted.add(f"user-{i}")
        except FeatureDisabled:
            pass
    assert 2_800 < len(admitted) < 3_200
    assert counts(policy) == (len(admitted), 10_000 - len(admitted))
    assert admitted == {f"user-{i}" for i in range(10_000) if policy.in_rollout(f"user-{i}")}
    # The same keys again: the same verdicts.
    again = policy.__class__(rollout=30, key=lambda user, **kw: user)
    assert all(again.in_rollout(k) for k in admitted)
    # A larger rollout keeps every key of a smaller one.
    wider = featuretoggle(rollout=50, key=str)
    assert all(wider.in_rollout(k) for k in admitted)


async def test_rollout_edges_and_key_errors() -> None:
    svc = Service()
    none = guarded(featuretoggle(rollout=0, key=lambda x: x), svc)
    everyone = guarded(featuretoggle(rollout=100, key=lambda x: x), svc)
    for i in range(200):
        with pytest.raises(FeatureDisabled):
            await none(i)
        assert await everyone(i) == "ok"
    bad_key = guarded(featuretoggle(rollout=50, key=lambda x: [x]), svc)
    with pytest.raises(TypeError, match="rollout key"):
        await bad_key(1)
    assert featuretoggle().in_rollout("anything")


async def test_rollout_with_an_async_predicate() -> None:
    svc = Service()

    async def pred(user: str) -> bool:
        return True

    policy = featuretoggle(predicate=pred, rollout=50, key=lambda user: user)
    g = guarded(policy, svc)
    for i in range(100):
        key = f"k{i}"
        if policy.in_rollout(key):
            assert await g(key) == "ok"
        else:
            with pytest.raises(FeatureDisabled):
                await g(key)


# ------------------------------------------------------------------------------------------
# Block forms


async def test_async_with_the_policy_and_the_decorated_function() -> None:
    flag = {"on": True}

    async def pred() -> bool:
        return flag["on"]

    policy = featuretoggle(predicate=pred)

    @policy
    async def f() -> int:
        return 1

    async with policy as entered:
        assert entered is policy
    async with f:  # type: ignore[attr-defined]
        assert await f() == 1
    flag["on"] = False
    with pytest.raises(FeatureDisabled):
        async with f:  # type: ignore[attr-defined]
            pytest.fail("must not run")
    policy.disable()
    flag["on"] = True
    with pytest.raises(FeatureDisabled):
        async with policy:
            pass
    # The block form never suppresses.
    policy.enable()
    with pytest.raises(KeyError):
        async with policy:
            raise KeyError
    assert counts(policy) == (4, 2)


async def test_block_form_rollout_calls_the_key_without_arguments() -> None:
    current = {"user": "x"}
    policy = featuretoggle(rollout=50, key=lambda: current["user"])
    for i in range(50):
        current["user"] = f"u{i}"
        if policy.in_rollout(current["user"]):
            async with policy:
                pass
        else:
            with pytest.raises(FeatureDisabled):
                async with policy:
                    pass


# ------------------------------------------------------------------------------------------
# Listeners and stats


async def test_global_listeners_reach_existing_and_future_toggles(global_listeners: None) -> None:
    before = featuretoggle()
    rec = Recorder()
    register_featuretoggle_listener(rec)
    after = featuretoggle(enabled=False)
    async with before:
        pass
    with pytest.raises(FeatureDisabled):
        async with after:
            pass
    after.enable()
    assert rec.events == ["enabled", "disabled", ("toggled", True)]


async def test_async_listener_runs_as_tracked_task() -> None:
    got: list[str] = []
    manager = EventManager()

    class Async:
        async def on_feature_disabled(self, toggle: FeatureToggle) -> None:
            await asyncio.sleep(0)
            got.append(toggle.name)

    policy = featuretoggle(name="beta", enabled=False, listeners=[Async()], event_manager=manager)
    with pytest.raises(FeatureDisabled):
        async with policy:
            pass
    await manager.wait_for_tasks()
    assert got == ["beta"]


async def test_a_raising_listener_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="failsafe")

    class Raising:
        def on_feature_enabled(self, toggle: Any) -> None:
            raise RuntimeError("bug")

        def on_feature_disabled(self, toggle: Any) -> None:
            raise RuntimeError("bug")

        def on_feature_toggled(self, toggle: Any, enabled: bool) -> None:
            raise RuntimeError("bug")

    svc = Service()
    policy = featuretoggle(listeners=[Raising()])
    g = guarded(policy, svc)
    assert await g() == "ok"
    policy.disable()
    with pytest.raises(FeatureDisabled):
        await g()
    assert counts(policy) == (1, 1)
    assert not policy.enabled
    assert len([r for r in caplog.records if r.name == "failsafe"]) == 3


def test_stats_and_repr() -> None:
    policy = featuretoggle(name="beta", rollout=12.5, key=str)
    assert policy.stats() == {"name": "beta", "enabled": 0, "disabled": 0, "state": "enabled"}
    assert repr(policy) == "<featuretoggle 'beta' enabled=0, disabled=0, state='enabled'>"
    assert policy.rollout == 12.5
    assert featuretoggle().rollout is None


# ------------------------------------------------------------------------------------------
# Concurrency and cancellation


async def test_thousand_concurrent_tasks_and_a_switch_midway() -> None:
    policy = featuretoggle()
    gate = asyncio.Event()

    @policy
    async def f(i: int) -> int:
        await gate.wait()
        return i

    first = [asyncio.create_task(f(i)) for i in range(1000)]
    await asyncio.sleep(0)
    policy.disable()  # admitted calls finish; new ones are refused
    second = [asyncio.create_task(f(i)) for i in range(1000)]
    gate.set()
    assert await asyncio.gather(*first) == list(range(1000))
    results = await asyncio.gather(*second, return_exceptions=True)
    assert all(type(r) is FeatureDisabled for r in results)
    assert counts(policy) == (1000, 1000)


async def test_cancellation_during_an_async_predicate_and_the_call() -> None:
    svc = Service()
    entered = asyncio.Event()

    async def pred() -> bool:
        entered.set()
        await asyncio.Event().wait()
        return True

    policy = featuretoggle(predicate=pred)
    task = asyncio.create_task(guarded(policy, svc)())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert svc.calls == []
    assert counts(policy) == (0, 0)

    started = asyncio.Event()

    @featuretoggle()
    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert counts(hang.policy) == (1, 0)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------
# Methods and composition


async def test_methods() -> None:
    class Api:
        toggle = featuretoggle(predicate=lambda self, x: x > 0)

        @toggle
        async def get(self, x: int) -> tuple[Api, int]:
            return self, x

    api = Api()
    assert await api.get(1) == (api, 1)
    with pytest.raises(FeatureDisabled):
        await api.get(0)


async def test_fallback_over_a_disabled_toggle_answers_in_both_orders() -> None:
    svc = Service()
    toggle = featuretoggle(enabled=False)
    outer_fb = fallback("old path", on=FeatureDisabled)(guarded(toggle, svc))
    assert await outer_fb() == "old path"
    inner_fb = toggle(fallback("old path", on=FeatureDisabled)(svc))
    with pytest.raises(FeatureDisabled):  # the toggle refuses before the fallback runs
        await inner_fb()
    assert svc.calls == []


async def test_retry_and_timeout_stack_with_a_toggle_in_both_orders() -> None:
    svc = Service()
    toggle = featuretoggle(enabled=False)
    g1 = retry(attempts=3, backoff=0)(timeout(1)(guarded(toggle, svc)))
    g2 = toggle(retry(attempts=3, backoff=0)(timeout(1)(svc)))
    # FeatureDisabled is an Exception: a retry on Exception retries it, then gives up.
    with pytest.raises(AttemptsExceeded) as info:
        await g1()
    assert isinstance(info.value.__cause__, FeatureDisabled)
    with pytest.raises(FeatureDisabled):
        await g2()
    assert counts(toggle) == (0, 5)
    toggle.enable()
    assert await g1() == "ok"
    assert await g2() == "ok"
    assert len(svc.calls) == 2


async def test_toggle_over_failfast_and_back() -> None:
    svc = Service()
    toggle = featuretoggle()
    ff = failfast(failure_threshold=2)
    g = toggle(ff(svc))
    ff.open()
    with pytest.raises(FailFastOpen):
        await g()
    toggle.disable()
    with pytest.raises(FeatureDisabled):
        await g()
    h = ff(toggle(svc))
    ff.close()
    with pytest.raises(FeatureDisabled):
        await h()
    assert ff.failures == 1  # a refusal of the inner toggle is a failure of the outer latch


def test_native_type_is_registered() -> None:
    assert issubclass(FeatureToggle, _native.FeatureToggle)
