"""The overload scenario of examples/demo.py (--overload): adaptive vs fixed concurrency.

A simulated dependency serves 100 calls/s at 50 ms; the offered load ramps from 50 to 300
calls/s, callers give up after 1 s. The same seeded run goes through no limit, a bulkhead
guessed at 50, and an adaptive concurrency limit, on virtual time (it takes a few seconds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from failsafe.adaptive import concurrency_limit
from failsafe.bulkhead import bulkhead
from failsafe.simulation import Dependency, Report, plot, ramp
from failsafe.testing import simulate
from failsafe.timeout import timeout


def run(policy: Any) -> Report:
    to = timeout(1.0)

    def stack(call: Any) -> Any:
        return policy(to(call)) if policy is not None else to(call)

    return simulate(
        stack,
        load=ramp(50, 300, 15, hold=5),
        duration=30,
        dependency=Dependency(capacity=100, latency=0.05),
        seed=1,
    )


def main() -> None:
    print(
        "Overload: a dependency serving 100 calls/s at 50 ms, offered 50 -> 300 calls/s"
        " (simulated, seeded); callers give up after 1 s. At the peak (20-30 s):"
    )
    reports = {
        "no limit": run(None),
        "bulkhead(50), fixed": run(bulkhead(50)),
        "concurrency_limit, adaptive": run(
            concurrency_limit(algorithm="vegas", initial=5, probe_multiplier=0)
        ),
    }
    print(f"  {'':28} {'goodput':>12} {'p99':>9} {'refused':>8} {'timed out':>10}")
    for name, report in reports.items():
        s = report.summary(20, 30)
        p99 = "-" if s["p99"] != s["p99"] else f"{s['p99'] * 1000:.0f} ms"
        print(
            f"  {name:28} {s['goodput']:8.1f} /s {p99:>9} {s['rejected']:8.0%}"
            f" {s['timed_out']:10.0%}"
        )
    try:
        path = plot(reports, Path("demo-overload.png").resolve(), panels=("goodput", "p99"))
    except ImportError:  # matplotlib is optional (the bench group has it)
        return
    print(f"\noverload plot: {path}")
