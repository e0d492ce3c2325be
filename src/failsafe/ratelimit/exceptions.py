"""Rate-limit exceptions."""

from __future__ import annotations

import math

from failsafe.exceptions import FailsafeError

__all__ = ["EmptyBucket", "RateLimitExceeded"]


class RateLimitExceeded(FailsafeError):
    """A call was refused because its rate limit is exhausted.

    ``retry_after_seconds`` (and ``retry_after_ms``) say when the limit would admit a call
    again, when known. The C core builds it as ``RateLimitExceeded(message, retry_after=s)``;
    failsafe-py's ``retry_after_ms=`` / ``retry_after_seconds=`` keywords work too.
    """

    retry_after_seconds: float | None
    retry_after_ms: float | None

    def __init__(
        self,
        message: str = "Rate limit exceeded",
        retry_after_ms: float | None = None,
        retry_after_seconds: float | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        if retry_after is not None:
            retry_after_seconds = retry_after
        elif retry_after_seconds is None and retry_after_ms is not None:
            retry_after_seconds = retry_after_ms / 1000
        self.retry_after_seconds = retry_after_seconds
        self.retry_after_ms = (
            retry_after_ms
            if retry_after_ms is not None or retry_after_seconds is None
            else retry_after_seconds * 1000
        )

    @property
    def retry_after(self) -> float | None:
        """Seconds until the limit would admit a call again (same as retry_after_seconds)."""
        return self.retry_after_seconds

    def get_retry_after_header(self) -> str:
        """The ``Retry-After`` header value: whole seconds, rounded up (at least 1)."""
        if self.retry_after_seconds is None:
            return "60"
        return str(max(1, math.ceil(self.retry_after_seconds)))


class EmptyBucket(RateLimitExceeded):
    """A token bucket had no token (``TokenBucket.take()``, ``bucket_retry``)."""
