"""A bulkhead's parameters, checked once.

The in-process bulkhead and the one shared through a store (which builds an in-process one for
its fallback) take their limits from one BulkheadOptions: each parameter has one default and
one check, naming it. The C engine trusts what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from failsafe._core import check_int, check_number

MAX_COUNT: Final = 2**63 - 1
MAX_WAIT: Final = 1e9  # seconds (about 31 years); any longer wait is no limit


@dataclass(frozen=True, slots=True)
class BulkheadOptions:
    """Checked limits of one bulkhead."""

    max_concurrency: int
    max_capacity: int  # running plus queued; max_concurrency: no queue
    max_wait: float | None = None  # seconds in the queue; None: as long as it takes

    @classmethod
    def check(
        cls,
        max_concurrency: object,
        max_capacity: object = None,
        *,
        max_wait: object = None,
    ) -> BulkheadOptions:
        concurrency = int(check_int(max_concurrency, "max_concurrency", maximum=MAX_COUNT))
        capacity = (
            concurrency
            if max_capacity is None
            else int(check_int(max_capacity, "max_capacity", maximum=MAX_COUNT))
        )
        if capacity < concurrency:
            raise ValueError(
                f"max_capacity (running + queued) must be >= max_concurrency ({concurrency}),"
                f" got {capacity}"
            )
        wait = check_number(max_wait, "max_wait", allow_none=True, allow_inf=True)
        if wait is not None:
            # inf, and any wait longer than a loop's timer holds, is as long as it takes.
            wait = None if wait > MAX_WAIT else float(wait)
        return cls(concurrency, capacity, wait)
