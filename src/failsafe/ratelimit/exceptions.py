"""Rate-limit exceptions."""

from __future__ import annotations

import math

from failsafe.exceptions import FailsafeError

__all__ = ["EmptyBucket", "RateLimitExceeded"]


class RateLimitExceeded(FailsafeError):
    """A call was refused because its rate limit is exhausted.

    ``retry_after_seconds`` (and ``retry_after_ms``) say when a token will be available,
    when known.
    """

    def __init__(
        self,
        message: str = "Rate limit exceeded",
        retry_after_ms: float | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        if retry_after_seconds is None and retry_after_ms is not None:
            retry_after_seconds = retry_after_ms / 1000
        if retry_after_ms is None and retry_after_seconds is not None:
            retry_after_ms = retry_after_seconds * 1000
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
        self.retry_after_ms = retry_after_ms

    def get_retry_after_header(self) -> str:
        """The ``Retry-After`` header value: whole seconds, rounded up (at least 1)."""
        if self.retry_after_seconds is None:
            return "60"
        return str(max(1, math.ceil(self.retry_after_seconds)))


class EmptyBucket(RateLimitExceeded):
    """A token bucket had no token for the attempt."""
