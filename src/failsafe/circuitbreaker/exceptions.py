"""Circuit breaker exceptions."""

from __future__ import annotations

from failsafe.exceptions import FailsafeError

__all__ = ["BreakerFailing"]


class BreakerFailing(FailsafeError):
    """A call was rejected because its circuit breaker is failing (open), or recovering
    (half-open) with every probe slot taken.

    ``retry_after`` is how many seconds remain of the break, when known (``None`` while the
    breaker is isolated or recovering).
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retry_after_seconds(self) -> float | None:
        """The same as ``retry_after`` (the name RateLimitExceeded uses)."""
        return self.retry_after
