"""The root of every exception failsafe raises."""

__all__ = ["FailsafeError"]


class FailsafeError(Exception):
    """Base class of failsafe's own exceptions."""
