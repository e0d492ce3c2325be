"""Retry's two re-attempt loops driven against each other.

A zero-delay retry re-attempts in C (retry.c) while nobody listens; otherwise (and for every
re-attempt when the C loop is switched off here) the Python loop (``Retry._retry_loop``) does.
Each scenario runs once per path; both must give the same outcome, the same calls of the
function, the same counters, the same loop turns and the same time on the fake clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import failsafe.retry as retry_module
from failsafe import _native
from failsafe.ratelimit.exceptions import RateLimitExceeded
from failsafe.retry import AttemptsExceeded, Retry, retry
from failsafe.testing import FakeClock

PATHS = ["c", "python"]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """ "c": zero-delay re-attempts run in C; "python": the same policies re-attempt in Python
    only (a zero backoff reads as non-zero, so the C loop is never configured)."""
    if request.param == "python":
        monkeypatch.setattr(retry_module, "_is_zero_backoff", lambda backoff: False)
    return request.param


@dataclass
class Run:
    """What one scenario did on one path."""

    outcome: tuple[str, Any] = ("", None)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    turns: int = 0  # times another task ran while the call was in flight
    waited_ns: int = 0  # fake-clock time the call took


def _describe(exc: BaseException) -> tuple[str, Any]:
    if isinstance(exc, AttemptsExceeded):
        last = exc.__cause__
        return ("gave up", (exc.attempts, exc.reason, type(last).__name__, str(last)))
    return ("raised", (type(exc).__name__, str(exc)))


async def _drive(policy: Retry, fn: Callable[..., Awaitable[Any]], *args: Any) -> Run:
    run = Run()

    async def counted(*a: Any) -> Any:
        run.calls.append(a)
        return await fn(len(run.calls), *a)

    guarded = policy(counted)
    stop = False

    async def ticker() -> None:
        while not stop:
            run.turns += 1
            await asyncio.sleep(0)

    t = asyncio.get_running_loop().create_task(ticker())
    await asyncio.sleep(0)  # the ticker starts before the call
    run.turns = 0
    start = _native.now_ns()
    try:
        run.outcome = ("returned", await guarded(*args))
    except Exception as exc:
        run.outcome = _describe(exc)
    run.waited_ns = _native.now_ns() - start
    stop = True
    await t
    run.counters = dict(zip(policy.METRICS, policy._counters(), strict=False))
    return run


def _fails_until(n: int, exc: Callable[[int], Exception] = lambda i: ValueError(i)) -> Any:
    async def fn(attempt: int, *args: Any) -> Any:
        if attempt <= n:
            raise exc(attempt)
        return ("ok", attempt, args)

    return fn


def _always(exc: Callable[[int], Exception]) -> Any:
    async def fn(attempt: int, *args: Any) -> Any:
        raise exc(attempt)

    return fn


class Unhandled(Exception):
    pass


def _then_unhandled(n: int) -> Any:
    async def fn(attempt: int, *args: Any) -> Any:
        if attempt <= n:
            raise ValueError(attempt)
        raise Unhandled(attempt)

    return fn


def _limited(delay: float) -> Any:
    """Fails first with a refusal that asks for delay seconds, then with plain errors."""

    async def fn(attempt: int, *args: Any) -> Any:
        if attempt == 1:
            raise RateLimitExceeded(retry_after=delay)
        if attempt <= 3:
            raise ValueError(attempt)
        return attempt

    return fn


SCENARIOS: dict[str, tuple[Callable[[], Retry], Any, tuple[Any, ...]]] = {
    "first try": (lambda: retry(attempts=3, backoff=0), _fails_until(0), ("a",)),
    "two failures": (lambda: retry(attempts=3, backoff=0), _fails_until(2), ("a", 1)),
    "last attempt": (lambda: retry(attempts=3, backoff=0), _fails_until(3), ()),
    "gives up": (lambda: retry(attempts=3, backoff=0), _always(ValueError), ()),
    "no retries": (lambda: retry(attempts=0, backoff=0), _always(ValueError), ()),
    "unhandled stops": (
        lambda: retry(on=ValueError, attempts=5, backoff=0),
        _then_unhandled(2),
        (),
    ),
    "on tuple": (
        lambda: retry(on=(KeyError, ValueError), attempts=4, backoff=0),
        _fails_until(2, lambda i: KeyError(i) if i % 2 else ValueError(i)),
        (),
    ),
    "on predicate": (
        lambda: retry(on=lambda e: "again" in str(e), attempts=4, backoff=0),
        _fails_until(3, lambda i: ValueError("again" if i < 3 else "stop")),
        (),
    ),
    "zero list": (lambda: retry(attempts=None, backoff=[0, 0, 0]), _fails_until(5), ()),
    # Past YIELD_EVERY failures both loops let the event loop turn.
    "unbounded": (lambda: retry(attempts=None, backoff=0), _fails_until(40), ()),
    "bounded long": (lambda: retry(attempts=35, backoff=0), _always(ValueError), ()),
    # A refusal carrying a delay leaves the C loop: both wait what it asks.
    "server signal": (lambda: retry(attempts=5, backoff=0), _limited(2.5), ()),
    "signals ignored": (
        lambda: retry(attempts=5, backoff=0, retry_after=False),
        _limited(2.5),
        (),
    ),
    "result rejected": (
        lambda: retry(attempts=4, backoff=0, if_result=lambda r: r[1] < 3),
        _fails_until(1),
        (),
    ),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_both_paths_agree(scenario: str, path: str, clock: FakeClock, instant: None) -> None:
    make, fn, args = SCENARIOS[scenario]
    run = await _drive(make(), fn, *args)
    expected = EXPECTED[scenario]
    assert (run.outcome, len(run.calls), run.counters, run.turns, run.waited_ns) == expected
    assert all(call == args for call in run.calls)


# What both paths must give: (outcome, calls, counters, loop turns, fake-clock ns).
EXPECTED: dict[str, tuple[tuple[str, Any], int, dict[str, int], int, int]] = {
    "first try": (
        ("returned", ("ok", 1, ("a",))),
        1,
        {"attempt": 0, "success": 1, "giveup": 0},
        0,
        0,
    ),
    "two failures": (
        ("returned", ("ok", 3, ("a", 1))),
        3,
        {"attempt": 2, "success": 1, "giveup": 0},
        0,
        0,
    ),
    "last attempt": (
        ("returned", ("ok", 4, ())),
        4,
        {"attempt": 3, "success": 1, "giveup": 0},
        0,
        0,
    ),
    "gives up": (
        ("gave up", (4, "attempts", "ValueError", "4")),
        4,
        {"attempt": 3, "success": 0, "giveup": 1},
        0,
        0,
    ),
    "no retries": (
        ("gave up", (1, "attempts", "ValueError", "1")),
        1,
        {"attempt": 0, "success": 0, "giveup": 1},
        0,
        0,
    ),
    "unhandled stops": (
        ("raised", ("Unhandled", "3")),
        3,
        {"attempt": 2, "success": 0, "giveup": 0},
        0,
        0,
    ),
    "on tuple": (("returned", ("ok", 3, ())), 3, {"attempt": 2, "success": 1, "giveup": 0}, 0, 0),
    "on predicate": (
        ("raised", ("ValueError", "stop")),
        3,
        {"attempt": 2, "success": 0, "giveup": 0},
        0,
        0,
    ),
    "zero list": (("returned", ("ok", 6, ())), 6, {"attempt": 5, "success": 1, "giveup": 0}, 0, 0),
    "unbounded": (
        ("returned", ("ok", 41, ())),
        41,
        {"attempt": 40, "success": 1, "giveup": 0},
        40 // _native.YIELD_EVERY,
        0,
    ),
    "bounded long": (
        ("gave up", (36, "attempts", "ValueError", "36")),
        36,
        {"attempt": 35, "success": 0, "giveup": 1},
        35 // _native.YIELD_EVERY,
        0,
    ),
    "server signal": (
        ("returned", 4),
        4,
        {"attempt": 3, "success": 1, "giveup": 0},
        1,
        2_500_000_000,
    ),
    "signals ignored": (("returned", 4), 4, {"attempt": 3, "success": 1, "giveup": 0}, 0, 0),
    "result rejected": (
        ("returned", ("ok", 3, ())),
        3,
        {"attempt": 2, "success": 1, "giveup": 0},
        0,
        0,
    ),
}


async def test_the_c_loop_is_what_the_c_path_runs(clock: FakeClock) -> None:
    """The suite compares two loops, not one loop twice: on the "c" path a zero-delay retry
    re-attempts without a Python frame of the retry loop."""
    frames: list[str] = []
    policy = retry(attempts=3, backoff=0)
    original = policy._retry_loop

    def spy(*args: Any, **kwargs: Any) -> Any:
        frames.append("python")
        return original(*args, **kwargs)

    policy._retry_loop = spy  # type: ignore[method-assign]
    run = await _drive(policy, _fails_until(2))
    assert run.outcome[0] == "returned"
    assert frames == []
    python = retry(attempts=3, backoff=0, retry_after=lambda e: None)  # a user reader: Python
    python._retry_loop = spy  # type: ignore[method-assign]
    run = await _drive(python, _fails_until(2))
    assert run.outcome[0] == "returned"
    assert frames == ["python"]
