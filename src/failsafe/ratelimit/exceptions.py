"""Rate-limit exceptions."""

from __future__ import annotations

import math

from failsafe.exceptions import FailsafeError

__all__ = ["EmptyBucket", "RateLimitExceeded"]


class RateLimitExceeded(FailsafeError):
    """A call was refused because its rate limit is exhausted.

    ``retry_after_seconds`` (``retry_after``) and ``retry_after_ms`` say when the limit would
    admit a call again, when known. Accepts ``retry_after=`` (seconds, as the C core passes it)
    and failsafe-py's ``retry_after_ms=`` / ``retry_after_seconds=``. The limiters build it in
    C without calling ``__init__``: they set ``args`` and ``_after`` only, so subclasses must
    not rely on ``__init__`` running.
    """

    _after: float | None = None

    def __init__(
        self,
        message: str = "Rate limit exceeded",
        retry_after_ms: float | None = None,
        retry_after_seconds: float | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        if retry_after is None:
            retry_after = retry_after_seconds
        if retry_after is None and retry_after_ms is not None:
            retry_after = retry_after_ms / 1000
        self._after = retry_after

    @property
    def retry_after_seconds(self) -> float | None:
        """Seconds until the limit would admit a call again (None: unknown)."""
        return self._after

    @property
    def retry_after(self) -> float | None:
        """Same as retry_after_seconds."""
        return self._after

    @property
    def retry_after_ms(self) -> float | None:
        """Milliseconds until the limit would admit a call again (None: unknown)."""
        return None if self._after is None else self._after * 1000

    def get_retry_after_header(self) -> str:
        """The ``Retry-After`` header value: whole seconds, rounded up (at least 1)."""
        if self._after is None:
            return "60"
        return str(max(1, math.ceil(self._after)))


class EmptyBucket(RateLimitExceeded):
    """A token bucket had no token (``TokenBucket.take()``, ``bucket_retry``)."""
