"""Fail-fast exceptions."""

from __future__ import annotations

from failsafe.exceptions import FailsafeError

__all__ = ["FailFastOpen"]


class FailFastOpen(FailsafeError):
    """A call was refused because the fail-fast is open (or its predicate refused it).

    ``retry_after`` is how many seconds remain until it closes by itself, when known (None when
    only ``close()`` reopens it, or when the predicate refused the call). Raised by the call
    that opened it ``from`` that call's exception.

    The C engine builds it without calling ``__init__`` (args ``(message,)`` and, when known,
    ``retry_after`` set on the instance): keep ``__init__`` to storing those two.
    """

    retry_after: float | None = None

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
