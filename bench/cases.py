"""The benchmark cases: one row per (pattern, path, implementation).

A case's ``setup`` runs inside a fresh event loop once per run and returns what its ``body``
uses: a single object (bound as ``g``) or a dict of names. The body is one statement that the
driver inlines into its loop (``r = await g()`` by default) and that must leave ``r`` equal to
``expect``. Anything importing a library does so inside ``setup``, so that a library that fails
to import costs only its own rows.

To add a pattern: write its fixtures and setups here and append rows to ``CASES``; the first row
of a (pattern, path) group need not be anything special, every row is reported net of its
``baseline`` (the bare ``await f()`` unless said otherwise).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AsyncFn = Callable[[], Coroutine[Any, Any, Any]]

CALL = "r = await g()"
ASYNC_WITH = "async with g:\n    r = await f()"
FIRED = "try:\n    r = await g()\nexcept TimeoutError:\n    r = 'fired'"
FIRED_ASYNC_WITH = (
    "try:\n    async with g:\n        r = await f()\nexcept TimeoutError:\n    r = 'fired'"
)

BARE = "bare/await f()/bare"


@dataclass(frozen=True)
class Case:
    pattern: str
    path: str
    impl: str
    setup: Callable[[], Any]
    body: str = CALL
    expect: object = 1
    divisor: int = 1  # slow peers run N / divisor calls (timing and callgrind alike)
    baseline: str = BARE  # key of the case whose cost is subtracted
    budget: int | None = None  # the path's net Ir budget (failsafe rows only)

    @property
    def key(self) -> str:
        return f"{self.pattern}/{self.path}/{self.impl}"

    @property
    def group(self) -> str:
        return f"{self.pattern}/{self.path}"


# --- protected functions (fixtures) -----------------------------------------------------------


async def f() -> int:
    return 1


async def failing() -> int:
    raise ValueError("primary failed")


async def slow() -> int:
    await asyncio.sleep(0)
    return 1


def flaky() -> AsyncFn:
    """A fresh f whose every guarded call sees two failures, then 1.

    The attempt counter cycles (attempts 3k+1 and 3k+2 raise, 3k+3 returns), so it needs no
    per-call reset and costs every library exactly the same three calls and two raises.
    """
    attempts = [0]

    async def flaky_f() -> int:
        attempts[0] += 1
        if attempts[0] % 3:
            raise ValueError("transient")
        return 1

    return flaky_f


async def _zero(_result_or_exc: object, *_args: object, **_kwargs: object) -> int:
    return 0


class NoopContext:
    async def __aenter__(self) -> NoopContext:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


# --- setups -------------------------------------------------------------------------------------
# Each retry setup takes the protected function, so one setup serves the ok and fail2 paths.


def _failsafe_retry(fn: AsyncFn) -> Any:
    from failsafe.retry import retry

    return retry(attempts=3, backoff=0)(fn)


def _tenacity(fn: AsyncFn) -> Any:
    import tenacity

    return tenacity.retry(stop=tenacity.stop_after_attempt(4), wait=tenacity.wait_none())(fn)


def _stamina(fn: AsyncFn) -> Any:
    import stamina

    # stamina's default retry hook logs each retry at WARNING; a NullHandler keeps the
    # console quiet (the hook's cost stays, as in a default install).
    logger = logging.getLogger("stamina")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return stamina.retry(on=Exception, attempts=4, wait_initial=0, wait_max=0, wait_jitter=0)(fn)


def _backoff(fn: AsyncFn) -> Any:
    import backoff

    return backoff.on_exception(backoff.constant, Exception, max_tries=4, interval=0)(fn)


def _hyx_retry(fn: AsyncFn) -> Any:
    from hyx.retry import retry

    return retry(attempts=3, backoff=0)(fn)  # hyx counts retries: 4 calls at most


def _loop_retry(fn: AsyncFn) -> Any:
    async def retried() -> Any:
        for attempt in range(4):
            try:
                return await fn()
            except Exception:
                if attempt == 3:
                    raise
        raise AssertionError("unreachable")

    return retried


RETRY_IMPLS: list[tuple[str, Callable[[AsyncFn], Any], int, int | None, int | None]] = [
    # impl, setup, divisor, budget ok, budget fail2
    ("failsafe", _failsafe_retry, 1, 1_500, 12_000),
    ("tenacity", _tenacity, 10, None, None),
    ("stamina", _stamina, 10, None, None),
    ("backoff", _backoff, 2, None, None),
    ("hyx", _hyx_retry, 1, None, None),
    ("hand-rolled for loop", _loop_retry, 1, None, None),
]


def _failsafe_timeout(seconds: float) -> Any:
    from failsafe.timeout import timeout

    return timeout(seconds)


def _failsafe_stack3(fn: AsyncFn) -> Any:
    from failsafe.fallback import fallback
    from failsafe.retry import retry
    from failsafe.timeout import timeout

    return fallback(0)(retry(attempts=3, backoff=0)(timeout(10)(fn)))


def _hyx_stack3(fn: AsyncFn) -> Any:
    from hyx.fallback import fallback
    from hyx.retry import retry
    from hyx.timeout import timeout

    return fallback(_zero)(retry(attempts=3, backoff=0)(timeout(10)(fn)))


def _hyx_timeout() -> Any:
    from hyx.timeout import timeout

    return timeout(10)


def _failsafe_fallback(fn: AsyncFn) -> Any:
    from failsafe.fallback import fallback

    return fallback(0)(fn)


def _hyx_fallback(fn: AsyncFn) -> Any:
    from hyx.fallback import fallback

    return fallback(_zero)(fn)


def _try_fallback(fn: AsyncFn) -> Any:
    async def guarded() -> Any:
        try:
            return await fn()
        except Exception:
            return 0

    return guarded


def _failsafe_fallback_async(fn: AsyncFn) -> Any:
    from failsafe.fallback import fallback

    return fallback(_zero)(fn)


def _try_fallback_async(fn: AsyncFn) -> Any:
    async def guarded() -> Any:
        try:
            return await fn()
        except Exception as e:
            return await _zero(e)

    return guarded


def _wrapper() -> Any:
    async def wrapped() -> Any:
        return await f()

    return wrapped


# --- the table ----------------------------------------------------------------------------------

CASES: list[Case] = [
    Case("bare", "await f()", "bare", lambda: f),
    Case("reference", "floor", "plain async def wrapper", _wrapper),
    Case(
        "reference", "floor", "no-op async with", lambda: {"g": NoopContext(), "f": f}, ASYNC_WITH
    ),
]

for _impl, _setup, _div, _ok_budget, _fail_budget in RETRY_IMPLS:
    CASES.append(Case("retry", "ok", _impl, lambda s=_setup: s(f), divisor=_div, budget=_ok_budget))
for _impl, _setup, _div, _ok_budget, _fail_budget in RETRY_IMPLS:
    CASES.append(
        Case(
            "retry", "fail2", _impl, lambda s=_setup: s(flaky()), divisor=_div, budget=_fail_budget
        )
    )

CASES += [
    Case(
        "timeout",
        "not reached",
        "failsafe @timeout(10)",
        lambda: _failsafe_timeout(10)(f),
        budget=3_500,
    ),
    Case(
        "timeout",
        "not reached",
        "failsafe async with T (shared)",
        lambda: {"g": _failsafe_timeout(10), "f": f},
        ASYNC_WITH,
        budget=3_500,
    ),
    Case(
        "timeout",
        "not reached",
        "failsafe async with timeout(10) (one per use)",
        lambda: {"g": _failsafe_timeout, "f": f},
        "async with g(10):\n    r = await f()",
    ),
    Case(
        "timeout",
        "not reached",
        "async with asyncio.timeout(10)",
        lambda: {"g": asyncio.timeout, "f": f},
        "async with g(10):\n    r = await f()",
    ),
    Case(
        "timeout",
        "not reached",
        "asyncio.wait_for(f(), 10)",
        lambda: {"g": asyncio.wait_for, "f": f},
        "r = await g(f(), 10)",
    ),
    Case("timeout", "not reached", "hyx @timeout(10)", lambda: _hyx_timeout()(f)),
    Case(
        "timeout",
        "not reached",
        "hyx async with T (shared)",
        lambda: {"g": _hyx_timeout(), "f": f},
        ASYNC_WITH,
    ),
]

FIRED_BODY = "timeout/fired/body alone (await asyncio.sleep(0))"
CASES += [
    Case("timeout", "fired", "body alone (await asyncio.sleep(0))", lambda: slow),
    Case(
        "timeout",
        "fired",
        "failsafe @timeout(0)",
        lambda: _failsafe_timeout(0)(slow),
        FIRED,
        expect="fired",
        baseline=FIRED_BODY,
        budget=25_000,
    ),
    Case(
        "timeout",
        "fired",
        "failsafe async with T0 (shared)",
        lambda: {"g": _failsafe_timeout(0), "f": slow},
        FIRED_ASYNC_WITH,
        expect="fired",
        baseline=FIRED_BODY,
        budget=25_000,
    ),
    Case(
        "timeout",
        "fired",
        "async with asyncio.timeout(0)",
        lambda: {"g": asyncio.timeout, "f": slow},
        "try:\n    async with g(0):\n        r = await f()\nexcept TimeoutError:\n    r = 'fired'",
        expect="fired",
        baseline=FIRED_BODY,
    ),
]

CASES += [
    Case("fallback", "ok", "failsafe @fallback(0)", lambda: _failsafe_fallback(f), budget=1_500),
    Case("fallback", "ok", "hyx", lambda: _hyx_fallback(f)),
    Case("fallback", "ok", "hand-rolled try/except", lambda: _try_fallback(f)),
    Case(
        "fallback", "taken", "failsafe @fallback(0)", lambda: _failsafe_fallback(failing), expect=0
    ),
    Case("fallback", "taken", "hyx", lambda: _hyx_fallback(failing), expect=0),
    Case("fallback", "taken", "hand-rolled try/except", lambda: _try_fallback(failing), expect=0),
    Case(
        "fallback",
        "taken async",
        "failsafe @fallback(async handler)",
        lambda: _failsafe_fallback_async(failing),
        expect=0,
        budget=7_000,
    ),
    Case(
        "fallback",
        "taken async",
        "hand-rolled try/except + await handler",
        lambda: _try_fallback_async(failing),
        expect=0,
    ),
]

CASES += [
    Case(
        "stack",
        "fallback+retry+timeout ok",
        "failsafe",
        lambda: _failsafe_stack3(f),
    ),
    Case("stack", "fallback+retry+timeout ok", "hyx", lambda: _hyx_stack3(f)),
]

# Each later pattern keeps its rows in bench/cases_<pattern>.py, a module with its own CASES list
# (it imports Case, f and friends from here).
for _path in sorted(Path(__file__).parent.glob("cases_*.py")):
    CASES += importlib.import_module(_path.stem).CASES

BY_KEY: dict[str, Case] = {case.key: case for case in CASES}
assert len(BY_KEY) == len(CASES), "duplicate case key"
assert all(case.baseline in BY_KEY for case in CASES), "unknown baseline"
