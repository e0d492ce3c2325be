"""failsafe-py's ``failsafe.circuitbreaker.context``: what a breaker listener gets first.

failsafe-py passed its listeners a ``BreakerContext`` holding the breaker's name and settings.
failsafe passes the :class:`~failsafe.circuitbreaker.CircuitBreaker` itself, which has those
attributes (and its state, ``stats()`` and controls). ``BreakerContext`` is the protocol of
those attributes, so a listener annotated with it keeps type-checking, and
``isinstance(breaker, BreakerContext)`` holds.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["BreakerContext"]


@runtime_checkable
class BreakerContext(Protocol):
    """The breaker as its listeners see it: failsafe-py's context attributes."""

    @property
    def breaker_name(self) -> str:
        """The component name."""
        ...

    @property
    def exceptions(self) -> Any:
        """What counts as a failure: exception classes, or a predicate."""
        ...

    @property
    def failure_threshold(self) -> int | None:
        """Consecutive failures that open the breaker (None: it judges a window's ratio)."""
        ...

    @property
    def recovery_time_secs(self) -> float:
        """Seconds of the first break before probe calls are admitted."""
        ...

    @property
    def recovery_threshold(self) -> int:
        """Successful probes that close the breaker."""
        ...
