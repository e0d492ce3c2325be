"""A retry budget's parameters, checked once.

RetryBudget (shared by retry and hedge policies, and built by hedge's max_hedged_ratio) takes
its parameters from one BudgetOptions: each has one default and one check, naming it. The C
budget trusts what it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from failsafe import _core


@dataclass(frozen=True, slots=True)
class BudgetOptions:
    """Checked parameters of one retry budget."""

    ratio: float = 0.2  # retries per call
    min_per_second: float = 10.0  # retries always allowed
    ttl: float = 10.0  # seconds: the window both are measured over

    @classmethod
    def check(
        cls, ratio: object = 0.2, *, min_per_second: object = 10.0, ttl: object = 10.0
    ) -> BudgetOptions:
        r = float(_core.check_number(ratio, "ratio"))
        m = float(_core.check_number(min_per_second, "min_per_second"))
        t = float(_core.check_number(ttl, "ttl", allow_zero=False))
        if not 1e-8 <= t <= 1e9:  # the C window needs 10 slots of >= 1 ns
            raise ValueError(f"ttl must be between 1e-08 and 1e9 seconds, got {t}")
        if not math.isfinite(m * t):
            raise ValueError(f"min_per_second * ttl must be finite, got {m} * {t}")
        return cls(r, m, t)
