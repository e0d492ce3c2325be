"""Scale: 10,000 tasks through a concurrency limit of 100, per limiter: wall time and memory.

Each task awaits ``asyncio.sleep(0)`` three times inside the limit; all tasks start at once in
one ``TaskGroup``, so about 9,900 of them wait in the limiter's queue. Every (limiter, run)
is a fresh process: one run measures wall time, another (with ``tracemalloc`` on, which slows
everything) the peak of Python allocations; ``ru_maxrss`` gives the peak RSS of the timing run.

    uv run --group bench python bench/scale_bulkhead.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

TASKS = 10_000
LIMIT = 100
TURNS = 3


class Probe:
    """Counts the calls inside the limit, keeping the highest count seen."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def work(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        for _ in range(TURNS):
            await asyncio.sleep(0)
        self.now -= 1


def _limited(probe: Probe, kind: str) -> Callable[[], Awaitable[None]]:
    if kind == "no limit":
        return probe.work
    if kind == "asyncio.Semaphore":
        sem = asyncio.Semaphore(LIMIT)

        async def with_semaphore() -> None:
            async with sem:
                await probe.work()

        return with_semaphore
    if kind.startswith("failsafe"):
        from failsafe.bulkhead import bulkhead

        b = bulkhead(LIMIT, TASKS)  # capacity: every task may queue
        if kind.endswith("@bulkhead"):
            return b(probe.work)

        async def with_bulkhead() -> None:
            async with b:
                await probe.work()

        return with_bulkhead
    if kind == "hyx bulkhead":
        from hyx.bulkhead import bulkhead as hyx_bulkhead

        guarded: Callable[[], Awaitable[None]] = hyx_bulkhead(LIMIT, TASKS)(probe.work)
        return guarded
    raise ValueError(kind)


KINDS = [
    "no limit",
    "asyncio.Semaphore",
    "failsafe @bulkhead",
    "failsafe async with",
    "hyx bulkhead",
]


async def _run(kind: str) -> dict[str, Any]:
    probe = Probe()
    run = _limited(probe, kind)
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(TASKS):
            tg.create_task(run())
    wall = time.perf_counter() - t0
    return {"wall_ms": wall * 1e3, "peak_inside": probe.peak}


def child(kind: str, trace: bool) -> None:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if trace:
        tracemalloc.start()
    out = asyncio.run(_run(kind))
    if trace:
        out["tracemalloc_peak_kib"] = tracemalloc.get_traced_memory()[1] / 1024
        tracemalloc.stop()
    out["rss_before_kib"] = rss0
    out["rss_peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out))


def _spawn(kind: str, trace: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind] + (["--trace"] if trace else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind}: {done.stderr.strip().splitlines()[-1:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child")
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.trace)
        return
    print(f"{TASKS:,} tasks, limit {LIMIT}, {TURNS} x asyncio.sleep(0) each; median of {args.runs}")
    print(
        f"{'limiter':<22} {'wall ms':>9} {'peak RSS MiB':>13} {'RSS delta MiB':>14}"
        f" {'tracemalloc peak MiB':>21} {'max inside':>10}"
    )
    for kind in KINDS:
        try:
            timed = [_spawn(kind, False) for _ in range(args.runs)]
            traced = [_spawn(kind, True) for _ in range(max(1, args.runs // 2))]
        except RuntimeError as e:
            print(f"{kind:<22} n/a ({e})")
            continue
        wall = statistics.median(r["wall_ms"] for r in timed)
        rss = statistics.median(r["rss_peak_kib"] for r in timed) / 1024
        delta = statistics.median(r["rss_peak_kib"] - r["rss_before_kib"] for r in timed) / 1024
        peak_py = statistics.median(r["tracemalloc_peak_kib"] for r in traced) / 1024
        inside = max(r["peak_inside"] for r in timed)
        print(f"{kind:<22} {wall:>9.1f} {rss:>13.1f} {delta:>14.1f} {peak_py:>21.2f} {inside:>10}")


if __name__ == "__main__":
    main()
