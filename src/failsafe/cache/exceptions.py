"""Cache exceptions (failsafe-py's module path, kept importable)."""

from __future__ import annotations

from failsafe.exceptions import FailsafeError

__all__ = ["CacheMiss"]


class CacheMiss(FailsafeError):
    """Kept so that failsafe-py imports keep working; failsafe never raises it (a miss calls
    the function)."""
