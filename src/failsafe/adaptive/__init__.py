"""Adaptive load control: a concurrency limit that finds the dependency's capacity, and
client-side throttling that stops a client from sending what the dependency refuses.

``concurrency_limit(*, algorithm="gradient2", initial=20, min_limit=1, max_limit=1000,
queue=0, max_wait=None, priority=None, tenant=None, drop_on=None, ...)``: at most ``limit``
calls run at once, and the limit moves with what the calls measure. ``gradient2`` and
``vegas`` compare the recent round-trip time with a no-load estimate and lower the limit as a
queue builds at the dependency; ``aimd`` adds one per call and cuts by ``backoff_ratio`` on a
drop. A drop is a call that raised an exception in ``drop_on`` (default: timeouts); a result
is a plain sample; other exceptions, and cancellation, give the place back without a sample.
A call that finds no room waits in a queue of ``queue`` places for at most ``max_wait``
seconds (no queue by default), else raises :class:`LimitExceeded`. With ``priority`` the
queue serves higher priorities first and sheds the lowest for a higher one when full; with
``tenant`` each busy tenant gets a fair share of the limit and freed places go to the tenant
with the fewest calls in flight.

``throttle(*, k=2.0, window=120, accept=None, max_reject=0.9, priority=None)``: the SRE
book's client-side throttling. Over the last ``window`` seconds, a new call is refused locally
with probability ``max(0, (requests - k * accepts) / (requests + 1))`` (at most
``max_reject``), raising :class:`Throttled`. ``accept(result, exception)`` says whether an
outcome counts as accepted (default: the call returned). With ``priority``, each level above 0
halves a call's refusal probability, each level below doubles it.

Both are decorators and ``async with`` blocks, shared by every call that uses them.
"""

from __future__ import annotations

from failsafe.adaptive._limit import (
    ConcurrencyLimit,
    ConcurrencyLimitListener,
    concurrency_limit,
    register_concurrency_limit_listener,
)
from failsafe.adaptive._throttle import (
    Throttle,
    ThrottleListener,
    register_throttle_listener,
    throttle,
)
from failsafe.adaptive.exceptions import LimitExceeded, Throttled
from failsafe.stats import ConcurrencyLimitStats, ThrottleStats

__all__ = [
    "ConcurrencyLimit",
    "ConcurrencyLimitListener",
    "ConcurrencyLimitStats",
    "LimitExceeded",
    "Throttle",
    "ThrottleListener",
    "ThrottleStats",
    "Throttled",
    "concurrency_limit",
    "register_concurrency_limit_listener",
    "register_throttle_listener",
    "throttle",
]
