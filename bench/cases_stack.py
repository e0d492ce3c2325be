"""The five-pattern stack of DESIGN §6 (retry, breaker, bulkhead, timeout, fallback), all
passing, beside the same stack built from hyx."""

from __future__ import annotations

from typing import Any

from cases import AsyncFn, Case, _zero, f


def _failsafe_stack5(fn: AsyncFn) -> Any:
    from failsafe.bulkhead import bulkhead
    from failsafe.circuitbreaker import consecutive_breaker
    from failsafe.fallback import fallback
    from failsafe.retry import retry
    from failsafe.timeout import timeout

    breaker = consecutive_breaker(failure_threshold=5, recovery_time_secs=30)
    return fallback(0)(retry(attempts=3, backoff=0)(breaker(bulkhead(100)(timeout(10)(fn)))))


def _hyx_stack5(fn: AsyncFn) -> Any:
    from hyx.bulkhead import bulkhead
    from hyx.circuitbreaker import consecutive_breaker
    from hyx.fallback import fallback
    from hyx.retry import retry
    from hyx.timeout import timeout

    breaker = consecutive_breaker(failure_threshold=5, recovery_time_secs=30)
    guarded = bulkhead(max_concurrency=100, max_capacity=100)(timeout(10)(fn))
    return fallback(_zero)(retry(attempts=3, backoff=0)(breaker(guarded)))


PATH = "fallback+retry+breaker+bulkhead+timeout ok"
CASES = [
    Case("stack", PATH, "failsafe", lambda: _failsafe_stack5(f), budget=5_000),
    Case("stack", PATH, "hyx", lambda: _hyx_stack5(f)),
]
