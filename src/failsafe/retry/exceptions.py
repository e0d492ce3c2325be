"""Retry exceptions."""

from __future__ import annotations

from typing import Any

from failsafe.exceptions import FailsafeError

__all__ = ["AttemptsExceeded"]

_NO_RESULT: Any = object()


class AttemptsExceeded(FailsafeError):
    """Retrying gave up. Raised ``from`` the last exception, if the last attempt raised.

    ``attempts`` is the number of calls made, ``last_exception`` the last attempt's exception
    (None when it returned a result that ``if_result`` rejected, then in ``last_result``), and
    ``reason`` one of ``"attempts"``, ``"max_duration"``, ``"budget"``, ``"retry_after"``
    (the wait the last failure asked for would outlast ``max_duration``; ``retry_after`` is
    that wait in seconds). (``bucket_retry`` raises ``EmptyBucket`` when its bucket has no
    token left.)
    """

    def __init__(
        self,
        attempts: int = 0,
        last_exception: BaseException | None = None,
        *,
        reason: str = "attempts",
        last_result: Any = _NO_RESULT,
        retry_after: float | None = None,
    ) -> None:
        self.attempts = attempts
        self.last_exception = last_exception
        self.reason = reason
        self.retry_after = retry_after
        self.has_result = last_result is not _NO_RESULT
        self.last_result = None if last_result is _NO_RESULT else last_result
        why = {
            "attempts": "attempts exhausted",
            "max_duration": "max_duration would be exceeded",
            "budget": "retry budget exhausted",
            "retry_after": f"the {retry_after}s wait asked for would exceed max_duration",
        }.get(reason, reason)
        last = repr(last_exception) if last_exception is not None else "a rejected result"
        super().__init__(f"gave up after {attempts} attempt(s) ({why}); last: {last}")
