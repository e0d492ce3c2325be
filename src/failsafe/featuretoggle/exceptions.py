"""Feature-toggle exceptions."""

from __future__ import annotations

from failsafe.exceptions import FailsafeError

__all__ = ["FeatureDisabled"]


class FeatureDisabled(FailsafeError):
    """A call was refused: the feature is switched off, its predicate said no, or the call's key
    is outside the rollout. The guarded function was not called."""
