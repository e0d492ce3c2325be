"""Rate limiter rows: a call admitted, and a call refused, beside aiolimiter, limits and hyx.

Admitted: each limiter allows far more calls than a run makes. Refused: the limit is one call
per very long period and setup spends it, so every measured call is refused (raising, or for
the peers whose API answers yes/no, answering 'limited' without calling f).
"""

from __future__ import annotations

from typing import Any

from cases import ASYNC_WITH, Case, f

BIG = 10**9  # calls per second: never refused in a run
LONG = 10**6  # seconds: one call, then refused for the whole run

REFUSED = "try:\n    r = await g()\nexcept Exception:\n    r = 'limited'"
REFUSED_WITH = (
    "try:\n    async with g:\n        r = await f()\nexcept Exception:\n    r = 'limited'"
)
LIMITS_HIT = "r = (await f()) if await lim.hit(item) else 'limited'"
AIOLIMITER_CHECK = (
    "if g.has_capacity():\n    async with g:\n        r = await f()\nelse:\n    r = 'limited'"
)


def _failsafe(per: float, drain: bool = False, **kw: Any) -> Any:
    from failsafe.ratelimit import tokenbucket

    limiter = tokenbucket(1 if drain else BIG, per, **kw)
    if drain:
        limiter.try_acquire("k" if "key" in kw else None)
    return limiter


def _failsafe_admitted() -> Any:
    return _failsafe(1)(f)


def _failsafe_keyed_admitted() -> Any:
    return _failsafe(1, key=lambda: "k")(f)


def _failsafe_sliding_admitted() -> Any:
    from failsafe.ratelimit import slidingwindow

    return slidingwindow(1000, 1e-6)(f)


def _failsafe_with() -> Any:
    return {"g": _failsafe(1), "f": f}


def _failsafe_refused() -> Any:
    return _failsafe(LONG, drain=True)(f)


def _failsafe_keyed_refused() -> Any:
    return _failsafe(LONG, drain=True, key=lambda: "k")(f)


def _aiolimiter(rate: float, per: float) -> Any:
    from aiolimiter import AsyncLimiter

    return {"g": AsyncLimiter(rate, per), "f": f}


def _aiolimiter_refused() -> Any:
    names = _aiolimiter(1, LONG)
    names["g"]._level = 1.0  # the one call of the period spent
    return names


def _limits(strategy: str, amount: int, per: str) -> Any:
    from limits import parse
    from limits.aio import storage, strategies

    lim = getattr(strategies, strategy)(storage.MemoryStorage())
    return {"lim": lim, "item": parse(f"{amount}/{per}"), "f": f}


def _limits_refused(strategy: str) -> Any:
    """The one hit of the day already made (setup runs inside the loop but cannot await)."""
    import time

    from limits.aio.storage.memory import Entry

    names = _limits(strategy, 1, "day")
    item = names["item"]
    storage, key = names["lim"].storage, item.key_for()
    if strategy == "MovingWindowRateLimiter":
        storage.events[key] = [Entry(item.get_expiry())]
    else:
        storage.storage[key] = 1
        storage.expirations[key] = time.time() + item.get_expiry()
    return names


def _hyx(rate: float, per: float) -> Any:
    from hyx.ratelimit import tokenbucket

    return tokenbucket(rate, per)(f)


def _hyx_refused() -> Any:
    from hyx.ratelimit import tokenbucket

    limiter = tokenbucket(1, LONG)
    limiter._limiter._tokens = 0  # the one token of the period spent
    return limiter(f)


CASES: list[Case] = [
    Case("ratelimit", "admitted", "failsafe", _failsafe_admitted, budget=600),
    Case("ratelimit", "admitted", "failsafe keyed", _failsafe_keyed_admitted),
    Case("ratelimit", "admitted", "failsafe sliding window", _failsafe_sliding_admitted),
    Case("ratelimit", "admitted", "failsafe async with", _failsafe_with, body=ASYNC_WITH),
    Case("ratelimit", "admitted", "aiolimiter", lambda: _aiolimiter(BIG, 1), body=ASYNC_WITH),
    Case(
        "ratelimit",
        "admitted",
        "limits fixed window",
        lambda: _limits("FixedWindowRateLimiter", BIG, "second"),
        body=LIMITS_HIT,
    ),
    Case("ratelimit", "admitted", "hyx", lambda: _hyx(BIG, 1)),
    Case(
        "ratelimit",
        "rejected",
        "failsafe",
        _failsafe_refused,
        body=REFUSED,
        expect="limited",
        budget=4000,
    ),
    Case(
        "ratelimit",
        "rejected",
        "failsafe keyed",
        _failsafe_keyed_refused,
        body=REFUSED,
        expect="limited",
    ),
    Case(
        "ratelimit",
        "rejected",
        "aiolimiter (has_capacity)",
        _aiolimiter_refused,
        body=AIOLIMITER_CHECK,
        expect="limited",
    ),
    Case(
        "ratelimit",
        "rejected",
        "limits moving window",
        lambda: _limits_refused("MovingWindowRateLimiter"),
        body=LIMITS_HIT,
        expect="limited",
    ),
    Case(
        "ratelimit",
        "rejected",
        "limits fixed window",
        lambda: _limits_refused("FixedWindowRateLimiter"),
        body=LIMITS_HIT,
        expect="limited",
    ),
    Case("ratelimit", "rejected", "hyx", _hyx_refused, body=REFUSED, expect="limited"),
]
