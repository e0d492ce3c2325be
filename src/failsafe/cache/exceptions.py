"""Cache exceptions (failsafe-py's module path, kept importable)."""

from __future__ import annotations

from failsafe.exceptions import FailsafeError

__all__ = ["CacheMiss", "CacheUnavailable"]


class CacheMiss(FailsafeError):
    """Kept so that failsafe-py imports keep working; failsafe never raises it (a miss calls
    the function)."""


class CacheUnavailable(FailsafeError):
    """A shared cache (``store=``) with ``on_error="deny"`` could not reach its store: the call
    is refused without calling the function (every process would otherwise call it at once)."""
