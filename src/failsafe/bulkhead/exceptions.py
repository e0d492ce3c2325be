"""Bulkhead exceptions."""

from __future__ import annotations

from failsafe.exceptions import FailsafeError

__all__ = ["BulkheadFull"]


class BulkheadFull(FailsafeError):
    """A call was refused by a bulkhead without being run: it was full (``max_capacity`` calls
    running or queued), or the call waited ``max_wait`` seconds in its queue without getting a
    slot (then ``timed_out`` is True).

    ``retry_after`` is always None: a bulkhead cannot tell when a slot will free up.
    """

    # Class defaults: the C engine builds its refusals without running __init__.
    retry_after: float | None = None
    timed_out: bool = False

    def __init__(
        self, message: str = "", *, retry_after: float | None = None, timed_out: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.timed_out = timed_out
