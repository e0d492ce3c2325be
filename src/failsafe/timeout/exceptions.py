"""Timeout exceptions."""

from __future__ import annotations

import builtins

from failsafe.exceptions import FailsafeError

__all__ = ["MaxDurationExceeded", "TimeoutError"]


class TimeoutError(builtins.TimeoutError, FailsafeError):
    """A failsafe timeout expired. Its ``__cause__`` is the CancelledError that interrupted the
    guarded code, as with ``asyncio.timeout``. ``except TimeoutError`` (the builtin) catches it.
    """


MaxDurationExceeded = TimeoutError
"""The name failsafe-py 0.0.1 raised; the same class."""
