"""failsafe-py's ``failsafe.ratelimit.buckets``: :class:`TokenBucket`, its bucket interface
(``tokens``, ``empty``, ``await take()``), now backed by the exact C token bucket of a
:class:`~failsafe.ratelimit.TokenBucketLimiter`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from failsafe.ratelimit.exceptions import EmptyBucket as EmptyBucket

if TYPE_CHECKING:
    from failsafe.ratelimit import TokenBucketLimiter

__all__ = ["EmptyBucket", "TokenBucket"]


class TokenBucket:
    """failsafe-py's bucket interface: ``tokens``, ``empty`` and ``await take()`` (raises
    :class:`EmptyBucket` when no token is left). Backed by a :class:`TokenBucketLimiter`."""

    __slots__ = ("_limiter",)

    def __init__(
        self, max_executions: int, per_time_secs: float, bucket_size: int | None = None
    ) -> None:
        from failsafe.ratelimit import TokenBucketLimiter  # which imports this module

        self._limiter = TokenBucketLimiter(max_executions, per_time_secs, bucket_size)

    @classmethod
    def _of(cls, limiter: TokenBucketLimiter) -> TokenBucket:
        bucket = cls.__new__(cls)
        bucket._limiter = limiter
        return bucket

    @property
    def limiter(self) -> TokenBucketLimiter:
        return self._limiter

    @property
    def tokens(self) -> float:
        """Tokens available now (a partial token shows as a fraction)."""
        return self._limiter._tokens()

    @property
    def empty(self) -> bool:
        """No whole token available now."""
        return self._limiter._tokens() < 1

    async def take(self) -> None:
        """Takes a token now, or raises EmptyBucket (with retry_after) when none is left."""
        if not self._limiter.try_acquire():
            raise EmptyBucket(retry_after=self._limiter._retry_after())

    def __repr__(self) -> str:
        lim = self._limiter
        return (
            f"TokenBucket(max_executions={lim.max_executions},"
            f" per_time_secs={lim.per_time_secs}, bucket_size={lim.bucket_size},"
            f" tokens={self.tokens:.3f})"
        )
