"""Runs the adaptive load control scenarios (tests/sim_scenarios.py) in the simulator, prints
their figures and draws the plots of docs/patterns/adaptive.md into docs/img/.

    uv run --group bench python bench/adaptive_plots.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import sim_scenarios  # noqa: E402
from failsafe.simulation import plot  # noqa: E402

IMG = ROOT / "docs" / "img"


def main() -> None:
    reports, base = sim_scenarios.overload_ramp()
    print(f"overload ramp (capacity 100/s, unloaded p99 {base * 1000:.0f} ms), at peak (20-30 s):")
    for name, r in reports.items():
        s = r.summary(20, 30)
        print(
            f"  {name:28} goodput {s['goodput']:6.1f}/s  p99 {s['p99'] * 1000:7.0f} ms"
            f"  ({s['p99'] / base:.2f}x)  refused {s['rejected']:.0%}"
            f"  timed out {s['timed_out']:.0%}"
        )
    plot(
        reports,
        IMG / "adaptive-ramp.png",
        title="Offered load 50 -> 300 calls/s against a capacity of 100 calls/s",
        panels=("offered", "goodput", "p99"),
        capacity=[(0.0, 100.0)],
    )

    report, settle = sim_scenarios.capacity_halving()
    before, after = report.summary(10, 20), report.summary(25, 40)
    limit = report.probes["limit"]
    print(
        f"capacity halving 200 -> 100/s at 20 s: limit settles in {settle:.2f} s"
        f" (limit ~{sum(limit[40:80]) / 40:.1f} before, ~{sum(limit[-40:]) / 40:.1f} after);"
        f" goodput {before['goodput']:.0f}/s -> {after['goodput']:.0f}/s,"
        f" p99 {before['p99'] * 1000:.0f} -> {after['p99'] * 1000:.0f} ms"
    )
    plot(
        {"concurrency_limit (vegas, probe_multiplier=0)": report},
        IMG / "adaptive-halving.png",
        title="Capacity halves at 20 s (300 calls/s offered)",
        panels=("goodput", "p99", "limit"),
        capacity=[(0.0, 200.0), (20.0, 100.0)],
    )

    storm = sim_scenarios.retry_storm()
    for name, r in storm.items():
        s = r.summary(5)
        print(
            f"retry storm, {name:18} amplification {s['amplification']:.2f}x"
            f"  goodput {s['goodput']:.1f}/s  success {s['success']:.0%}"
        )
    plot(
        storm,
        IMG / "adaptive-retry-storm.png",
        title="3 retries against a dependency failing half the load (it sheds its excess)",
        panels=("sent", "goodput", "amplification"),
        capacity=[(0.0, 60.0)],
    )

    prio = sim_scenarios.priorities()
    for cls in ("high", "low"):
        s = prio.summary(5, cls=cls)
        print(
            f"priorities at 2x overload, {cls:4}: success {s['success']:.1%}"
            f"  p99 {s['p99'] * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
