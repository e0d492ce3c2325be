"""Keyed policy rows: a breaker per host, through ``failsafe.keyed`` and by hand.

Known key: every call names the same host (its breaker exists), beside the breaker called
directly and a hand-rolled dict of decorated functions. New key: every call names a host never
seen (its breaker is made: by the factory, or copied from a breaker given as the template).
Eviction churn: 200 hosts in turn through a registry of 100, so every call forgets one breaker
and makes another; the hand-rolled dict keeps all 200.
"""

from __future__ import annotations

import itertools
from typing import Any

from cases import Case

BY_HOST = "r = await g(k)"
NEXT_HOST = "r = await g(next(keys))"


async def fetch(host: object) -> int:
    return 1


def _breaker() -> Any:
    from failsafe.circuitbreaker import consecutive_breaker

    return consecutive_breaker(failure_threshold=5, recovery_time_secs=1e6)


def _keyed(max_keys: int = 10**6) -> Any:
    from failsafe.keyed import keyed

    return keyed(lambda host: _breaker(), key=lambda host: host, max_keys=max_keys)(fetch)


def _keyed_template(max_keys: int = 10**6) -> Any:
    """The breaker given as a template: each new key gets a copy of it."""
    from failsafe.keyed import keyed

    return keyed(_breaker(), key=lambda host: host, max_keys=max_keys)(fetch)


def _by_hand() -> Any:
    """A dict of decorated functions, filled on first use: what one writes without keyed."""
    guards: dict[object, Any] = {}

    def call(host: object) -> Any:
        guard = guards.get(host)
        if guard is None:
            guard = guards[host] = _breaker()(fetch)
        return guard(host)

    return call


CASES: list[Case] = [
    Case(
        "keyed",
        "known key",
        "failsafe breaker alone",
        lambda: {"g": _breaker()(fetch), "k": "h"},
        BY_HOST,
    ),
    Case("keyed", "known key", "failsafe keyed", lambda: {"g": _keyed(), "k": "h"}, BY_HOST),
    Case(
        "keyed",
        "known key",
        "dict of decorated functions",
        lambda: {"g": _by_hand(), "k": "h"},
        BY_HOST,
    ),
    Case(
        "keyed",
        "new key",
        "failsafe keyed",
        lambda: {"g": _keyed(), "keys": itertools.count()},
        NEXT_HOST,
    ),
    Case(
        "keyed",
        "new key",
        "failsafe keyed (breaker template)",
        lambda: {"g": _keyed_template(), "keys": itertools.count()},
        NEXT_HOST,
    ),
    Case(
        "keyed",
        "new key",
        "dict of decorated functions",
        lambda: {"g": _by_hand(), "keys": itertools.count()},
        NEXT_HOST,
    ),
    Case(
        "keyed",
        "eviction churn",
        "failsafe keyed",
        lambda: {"g": _keyed(100), "keys": itertools.cycle(range(200))},
        NEXT_HOST,
    ),
    Case(
        "keyed",
        "eviction churn",
        "failsafe keyed (breaker template)",
        lambda: {"g": _keyed_template(100), "keys": itertools.cycle(range(200))},
        NEXT_HOST,
    ),
    Case(
        "keyed",
        "eviction churn",
        "dict of decorated functions",
        lambda: {"g": _by_hand(), "keys": itertools.cycle(range(200))},
        NEXT_HOST,
    ),
]
