"""Feature-toggle rows: switched on (the function's own coroutine, counted) and off (refused).
The peer is the `if flag:` check a user would write by hand."""

from __future__ import annotations

from typing import Any

from cases import AsyncFn, Case, f

REFUSED = "try:\n    r = await g()\nexcept E:\n    r = 'disabled'"


class Disabled(Exception):
    pass


def _failsafe(fn: AsyncFn, *, enabled: bool) -> Any:
    from failsafe.featuretoggle import FeatureDisabled, featuretoggle

    return {"g": featuretoggle(enabled=enabled)(fn), "E": FeatureDisabled}


def _hand_rolled(fn: AsyncFn, *, enabled: bool) -> Any:
    flags = {"beta": enabled}

    async def guarded() -> Any:
        if not flags["beta"]:
            raise Disabled
        return await fn()

    return {"g": guarded, "E": Disabled}


CASES: list[Case] = [
    Case("featuretoggle", "on", "failsafe", lambda: _failsafe(f, enabled=True), budget=600),
    Case("featuretoggle", "on", "hand-rolled if flag", lambda: _hand_rolled(f, enabled=True)),
    Case(
        "featuretoggle",
        "off",
        "failsafe",
        lambda: _failsafe(f, enabled=False),
        REFUSED,
        expect="disabled",
        budget=4_000,
    ),
    Case(
        "featuretoggle",
        "off",
        "hand-rolled if flag",
        lambda: _hand_rolled(f, enabled=False),
        REFUSED,
        expect="disabled",
    ),
]
