"""Circuit breaker exceptions."""

from __future__ import annotations

from typing import Any

from failsafe.exceptions import FailsafeError

__all__ = ["BreakerFailing"]


class BreakerFailing(FailsafeError):
    """A call was rejected because its circuit breaker is failing (open), or recovering
    (half-open) with every probe slot taken.

    ``retry_after`` is how many seconds remain of the break, when known (``None`` while the
    breaker is isolated or recovering).
    """

    __slots__ = ("retry_after",)

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        # BaseException.__new__ already set args from the positional arguments; only the
        # keyword spelling of message needs them set here (a rejection stays cheap).
        if message and not self.args:
            self.args = (message,)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # retry_after lives in a slot, which BaseException's own reduce does not see.
        return (type(self), self.args, {**self.__dict__, "retry_after": self.retry_after})

    @property
    def retry_after_seconds(self) -> float | None:
        """The same as ``retry_after`` (the name RateLimitExceeded uses)."""
        return self.retry_after
