"""The acceptance scenarios of adaptive load control, run in failsafe.simulation: shared by
tests/test_simulation.py (which asserts them) and bench/adaptive_plots.py (which draws them
for the docs). Every run is seeded: the numbers are the same on every machine."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from failsafe.adaptive import concurrency_limit, throttle
from failsafe.bulkhead import bulkhead
from failsafe.retry import retry
from failsafe.simulation import Dependency, DependencyError, Report, call_class, ramp, simulate
from failsafe.timeout import timeout

# The adaptive limit of the halving and priority scenarios: vegas as published, without its
# periodic re-measure of the no-load RTT (under a lasting queue a re-measure takes the queued RTT
# as the baseline). The overload ramp uses the default limit (gradient2).
LIMIT: dict[str, Any] = {"algorithm": "vegas", "initial": 5, "probe_multiplier": 0}
CLIENT_TIMEOUT = 1.0  # seconds a caller waits for the dependency


def _timed(policy: Any) -> Callable[[Any], Any]:
    """policy(timeout(call)): the limit sees the client's timeouts as drops."""
    to = timeout(CLIENT_TIMEOUT)
    if policy is None:
        return lambda call: to(call)
    return lambda call: policy(to(call))


def unloaded_p99(dependency: Dependency, seed: int = 1) -> float:
    return simulate(None, load=20, duration=10, dependency=dependency, seed=seed).summary()["p99"]


def overload_ramp() -> tuple[dict[str, Report], float]:
    """Capacity 100 calls/s at 50 ms; offered load ramps 50 -> 300 calls/s over 15 s (after
    5 s at 50), then stays at 300 until 30 s. Three fronts: no limit, a bulkhead mis-set at
    50, the adaptive limit with its defaults (gradient2). Returns the reports and the unloaded
    p99."""
    dep = Dependency(capacity=100, latency=0.05)
    fronts = {
        "no limit": None,
        "bulkhead(50)": bulkhead(50),
        "concurrency_limit()": concurrency_limit(),
    }
    reports = {
        name: simulate(
            _timed(policy), load=ramp(50, 300, 15, hold=5), duration=30, dependency=dep, seed=1
        )
        for name, policy in fronts.items()
    }
    return reports, unloaded_p99(dep)


def capacity_halving() -> tuple[Report, float]:
    """Capacity 200 calls/s at 50 ms halves to 100 calls/s at 20 s, under 300 calls/s offered.
    Returns the report (probe "limit" every 0.25 s) and the seconds from the change until the
    limit (its 2 s rolling mean) settles within 20 % of where it ends (its mean over the
    last 10 s) and stays there."""
    limit = concurrency_limit(**LIMIT)
    report = simulate(
        _timed(limit),
        load=300,
        duration=40,
        dependency=Dependency(capacity=200, spread=0.1),
        changes=[(20.0, Dependency(capacity=100, spread=0.1))],
        probes={"limit": lambda: limit.current},
        interval=0.25,
        seed=4,
    )
    values = report.probes["limit"]
    k = 8  # 2 s of 0.25 s samples
    rolling = [statistics.fmean(values[max(0, i - k + 1) : i + 1]) for i in range(len(values))]
    final = statistics.fmean(values[-40:])
    start = int(20 / 0.25)
    settled = next(
        (
            i
            for i in range(start, len(rolling))
            if all(abs(x - final) <= 0.2 * final for x in rolling[i:])
        ),
        len(rolling),
    )
    return report, (settled - start) * 0.25


def retry_storm() -> dict[str, Report]:
    """100 calls/s offered to a dependency that serves 60 calls/s and sheds the excess at once,
    a refusal costing it a fifth of a call: without retries half the calls fail (it serves
    (0.6 - 0.2) / 0.8 of 100 calls/s). Each call retries up to 3 times at once on a failure
    (up to 4 attempts); the retries add load, which fails more calls. With `throttle` inside
    the retry, attempts refused locally are not sent."""
    dep = Dependency(capacity=60, latency=0.05, shed_cost=0.2)

    def with_throttle(call: Any) -> Any:
        return retry(attempts=3, on=DependencyError, backoff=0.0)(throttle()(call))

    def without(call: Any) -> Any:
        return retry(attempts=3, on=DependencyError, backoff=0.0)(call)

    return {
        name: simulate(stack, load=100, duration=30, dependency=dep, seed=2)
        for name, stack in (
            ("no retry", None),
            ("retry", without),
            ("retry + throttle", with_throttle),
        )
    }


def priorities() -> Report:
    """2x overload (200 calls/s against 100), 30 % of the calls high priority: the adaptive
    limit with a queue serves high first and sheds low."""
    limit = concurrency_limit(
        **LIMIT,
        queue=50,
        max_wait=0.5,
        priority=lambda: 1 if call_class.get() == "high" else 0,
    )
    return simulate(
        lambda call: limit(call),
        load=200,
        duration=30,
        classes={"high": 0.3, "low": 0.7},
        seed=3,
    )
