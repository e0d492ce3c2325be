"""Circuit breaker exceptions."""

from __future__ import annotations

from typing import Any

from failsafe import _native
from failsafe.exceptions import FailsafeError

__all__ = ["BreakerFailing"]


class BreakerFailing(_native.BreakerFailingBase, FailsafeError):
    """A call was rejected because its circuit breaker is failing (open), or recovering
    (half-open) with every probe slot taken.

    ``BreakerFailing(message="", *, retry_after=None)``: ``retry_after`` is how many seconds
    remain of the break, when known (``None`` while the breaker is isolated or recovering).
    """

    # __init__(message="", *, retry_after=None) is the C base's: a rejection runs no Python.

    def __reduce__(self) -> tuple[Any, ...]:
        # retry_after is a field of the C base, which BaseException's own reduce does not see.
        return (type(self), self.args, {**self.__dict__, "retry_after": self.retry_after})

    @property
    def retry_after_seconds(self) -> float | None:
        """The same as ``retry_after`` (the name RateLimitExceeded uses)."""
        return self.retry_after
