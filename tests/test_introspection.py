"""What debuggers and asyncio task dumps see of guarded calls: the guarded function's name,
frame and code (Task.get_stack(), print_stack(), repr(task), inspect.getcoroutinestate), for
running and refused calls; and invalidate() of a cached method."""

from __future__ import annotations

import asyncio
import inspect
import io
from collections.abc import Callable
from typing import Any

import pytest

from failsafe.bulkhead import BulkheadFull, bulkhead
from failsafe.cache import cache
from failsafe.circuitbreaker import circuitbreaker
from failsafe.failfast import FailFastOpen, failfast
from failsafe.ratelimit import RateLimitExceeded, tokenbucket
from failsafe.retry import retry
from failsafe.timeout import timeout

POLICIES: dict[str, Callable[[], Any]] = {
    "timeout": lambda: timeout(60),
    "retry": lambda: retry(attempts=2),
    "retry-immediate": lambda: retry(attempts=2, backoff=0),
    "circuitbreaker": lambda: circuitbreaker(failure_threshold=2),
    "failfast": lambda: failfast(failure_threshold=2),
    "bulkhead": lambda: bulkhead(2),
    "tokenbucket": lambda: tokenbucket(5, 1),
    "cache": lambda: cache(),
}


@pytest.mark.parametrize("make", POLICIES.values(), ids=POLICIES.keys())
async def test_a_suspended_guarded_call_shows_its_function(make: Callable[[], Any]) -> None:
    gate = asyncio.Event()

    async def load_profile(user: int) -> int:
        await gate.wait()
        return user

    guarded = make()(load_profile)
    call = guarded(7)
    task = asyncio.ensure_future(call)
    await asyncio.sleep(0)
    stack = task.get_stack()
    assert [f.f_code.co_name for f in stack] == ["load_profile"]
    out = io.StringIO()
    task.print_stack(file=out)
    assert "in load_profile" in out.getvalue()
    assert "coro=<test_a_suspended_guarded_call_shows_its_function.<locals>.load_profile()" in (
        repr(task)
    )
    assert "running at" in repr(task)
    assert call.__name__ == "load_profile"
    assert call.cr_running is False
    assert call.cr_await is not None
    assert inspect.getcoroutinestate(call) == inspect.CORO_SUSPENDED
    gate.set()
    assert await task == 7
    assert call.cr_frame is None
    assert call.cr_await is None
    assert inspect.getcoroutinestate(call) == inspect.CORO_CLOSED


REFUSING: dict[str, tuple[Callable[[], Any], type[Exception]]] = {
    "bulkhead": (lambda: bulkhead(1), BulkheadFull),
    "tokenbucket": (lambda: tokenbucket(1, 60), RateLimitExceeded),
    "failfast": (lambda: failfast(failure_threshold=1), FailFastOpen),
}


@pytest.mark.parametrize(("make", "refusal"), REFUSING.values(), ids=REFUSING.keys())
async def test_a_refused_call_is_named_after_its_function(
    make: Callable[[], Any], refusal: type[Exception]
) -> None:
    gate = asyncio.Event()

    async def charge_card(amount: int) -> int:
        await gate.wait()
        return amount

    policy = make()
    guarded = policy(charge_card)
    if isinstance(policy, type(failfast())):
        policy.open()
        first = None
    else:
        first = asyncio.ensure_future(guarded(1))  # takes the only slot or token
        await asyncio.sleep(0)
    refused = guarded(2)
    assert refused.__name__ == "charge_card"
    assert refused.__qualname__.endswith("<locals>.charge_card")
    assert refused.cr_frame is None
    assert refused.cr_await is None
    assert not refused.cr_running
    task = asyncio.ensure_future(refused)
    assert "<locals>.charge_card()" in repr(task)
    assert "without __name__" not in repr(task)
    with pytest.raises(refusal):
        await task
    gate.set()
    if first is not None:
        assert await first == 1


class Repo:
    def __init__(self) -> None:
        self.loads = 0

    @cache
    async def get(self, key: str) -> str:
        self.loads += 1
        return key * 2


async def test_invalidate_through_an_instance_is_refused_not_silently_ignored() -> None:
    repo = Repo()
    assert await repo.get("x") == "xx"
    with pytest.raises(TypeError, match=r"type\(obj\)\.get\.invalidate\(obj, \.\.\.\)"):
        repo.get.invalidate("x")  # type: ignore[attr-defined]
    assert await repo.get("x") == "xx"
    assert repo.loads == 1  # still cached: nothing was invalidated
    assert repo.get.invalidate(repo, "x") is True  # type: ignore[attr-defined]
    assert Repo.get.invalidate(repo, "x") is False  # type: ignore[attr-defined]
    assert await repo.get("x") == "xx"
    assert repo.loads == 2


async def test_invalidate_of_a_plain_function_keeps_its_arguments() -> None:
    @cache
    async def double(x: int) -> int:
        return 2 * x

    assert await double(3) == 6
    assert double.invalidate(3) is True  # type: ignore[attr-defined]
