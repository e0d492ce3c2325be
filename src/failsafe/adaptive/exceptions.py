"""Adaptive load control exceptions."""

from __future__ import annotations

from failsafe.exceptions import FailsafeError

__all__ = ["LimitExceeded", "Throttled"]


class LimitExceeded(FailsafeError):
    """A call was refused by an adaptive concurrency limit without being run: the limit was
    reached and the call could not wait (no queue, queue full, ``max_wait`` elapsed, or it was
    shed from the queue for a call of higher priority).

    ``retry_after`` is a hint in seconds: the limit's last measured RTT (a place frees up about
    that often), or None before any was measured. ``shed`` is True when the call left the queue
    for a call of higher priority, ``timed_out`` when it waited ``max_wait`` in vain.
    """

    retry_after: float | None = None
    shed: bool = False
    timed_out: bool = False

    def __init__(
        self,
        message: str = "",
        *,
        retry_after: float | None = None,
        shed: bool = False,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.shed = shed
        self.timed_out = timed_out


class Throttled(FailsafeError):
    """A call was refused locally by client-side throttling: the dependency accepted too few of
    the recent requests, so this one was not sent.

    ``retry_after`` is the time in seconds until the throttle's window next moves (the refusal
    probability can only drop then without new outcomes).
    """

    retry_after: float | None = None

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
