"""A fail-fast's parameters, checked once.

The in-process fail-fast and the one shared through a store (a subclass) take their parameters
from one FailFastOptions: each has one default and one check, naming it. The C latch trusts
what it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from failsafe import _core


@dataclass(frozen=True, slots=True)
class FailFastOptions:
    """Checked parameters of one fail-fast, in the units the C latch takes."""

    failure_threshold: int | None = None  # None: failures are not counted
    recovery_time: float | None = None  # seconds, as given; None: stays open until close()
    recovery_ns: int = -1  # the same in the C latch's unit; -1: none
    on: tuple[type[BaseException], ...] | None = (Exception,)
    on_pred: Callable[[BaseException], Any] | None = None  # on= given as a predicate
    predicate: Callable[..., Any] | None = None
    pred_async: bool = False

    @classmethod
    def check(
        cls,
        *,
        failure_threshold: object = None,
        predicate: object = None,
        recovery_time: object = None,
        on: object = Exception,
    ) -> FailFastOptions:
        threshold = _core.check_int(failure_threshold, "failure_threshold", allow_none=True)
        recovery_ns = -1
        if recovery_time is not None:
            recovery_ns = _core.check_ns(recovery_time, "recovery_time")
        types = _core.check_exceptions(on)
        if predicate is not None and not callable(predicate):
            raise TypeError(f"predicate must be a callable (sync or async), not {predicate!r}")
        return cls(
            failure_threshold=threshold,
            recovery_time=None if recovery_time is None else float(recovery_time),  # type: ignore[arg-type]
            recovery_ns=recovery_ns,
            on=types,
            on_pred=None if types is not None else on,  # type: ignore[arg-type]
            predicate=predicate,
            pred_async=predicate is not None and _core.is_async_callable(predicate),
        )

    def configuration(self) -> dict[str, Any]:
        """The keyword arguments of the C latch's _configure."""
        return {
            "threshold": self.failure_threshold or 0,
            "recovery_ns": self.recovery_ns,
            "on": self.on,
            "on_pred": self.on_pred,
            "predicate": self.predicate,
            "pred_async": self.pred_async,
        }
