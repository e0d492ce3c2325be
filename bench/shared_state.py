"""Hot-path cost of a closed breaker and an enabled toggle shared through Redis, beside the
in-process ones, and how fast a change reaches another client.

    uv run --group bench python bench/shared_state.py [--calls N]

Ir/call: each case runs under ``valgrind --tool=callgrind`` with N and 6 x N calls (same setup
and warm-up, which includes the first call's read of the shared state and the watcher's
subscription); Ir = the difference / 5 N. After the warm-up every other task on the loop (the
watcher, the pub/sub reader) is cancelled and awaited, in both cases, and callgrind counts only
between two marker calls around the measured calls (it dumps its counters on entering
``_rollout_bucket``): setup and background work, whose amount depends on timing, are not
counted. The measured calls never yield to the event loop. ns/call: median of 5 runs of
100,000 calls, after the same warm-up.

Propagation: a breaker tripped (a toggle switched off) in this process until each of 3 other
processes, calling every 0.5 ms, is rejected (sees it): 20 runs, median and max over
all. Starts its own redis-server on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from redis_store import _start_redis

CASES = ("breaker in-process", "breaker shared", "toggle in-process", "toggle shared")


async def f() -> int:
    return 1


def _policy(case: str, url: str) -> tuple[Any, Any]:
    from failsafe.circuitbreaker import consecutive_breaker
    from failsafe.featuretoggle import featuretoggle
    from failsafe.stores import RedisStore

    store = RedisStore(url, prefix=f"bench-{os.getpid()}", op_timeout=1.0)
    kw: dict[str, Any] = {"store": store, "name": "bench"} if "shared" in case else {}
    policy = consecutive_breaker(**kw) if case.startswith("breaker") else featuretoggle(**kw)
    return policy, policy(f)


async def _ready(case: str, url: str) -> Any:
    """The guarded function, warmed up, its shared state read and watched."""
    policy, g = _policy(case, url)
    for _ in range(500):
        assert await g() == 1
    await asyncio.sleep(0.3)  # the watcher subscribes and re-reads once
    if "shared" in case:  # the C path decides: no call goes to Python
        assert getattr(policy, "_gate", 0) == 0, case
        assert getattr(policy, "_loaded", True), case
    await _quiesce()
    gc.collect()
    gc.disable()  # a collection's place among the calls would differ between N and 6N runs
    return g


async def _quiesce() -> None:
    """Cancels and awaits every other task of the loop (watchers, pub/sub reader, sends): no
    background work is left to run among the measured calls."""
    me = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not me]
    for t in others:
        t.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    assert asyncio.all_tasks() == {me}


async def _run(case: str, url: str, calls: int) -> None:
    from failsafe._native import _rollout_bucket as mark

    g = await _ready(case, url)
    mark(0)  # callgrind dumps here: the measured window starts
    for _ in range(calls):  # never yields: nothing else runs on the loop meanwhile
        await g()
    mark(0)  # and here: it ends
    os._exit(0)  # no shutdown work (closing clients, cancelling watchers) in the count


async def _ns(case: str, url: str, calls: int = 100_000) -> float:
    g = await _ready(case, url)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            await g()
        runs.append((time.perf_counter_ns() - t0) / calls)
        await asyncio.sleep(0)  # between runs only
    return statistics.median(runs)


def _ir(case: str, url: str, calls: int) -> float:
    totals = []
    for n in (calls, 6 * calls):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "cg.out"
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}",
                    f"--dump-before={_MARK}",
                    sys.executable,
                    __file__,
                    "--measure",
                    case,
                    "--url",
                    url,
                    "--calls",
                    str(n),
                ],
                check=True,
                capture_output=True,
                env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"},
            )
            # Dumps: .1 the setup, .2 the measured calls, then the rest.
            found = re.search(r"^totals: (\d+)", Path(f"{out}.2").read_text(), re.M)
            assert found is not None
            totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / (5 * calls)


# The C function of failsafe._native._rollout_bucket: the marker callgrind dumps before.
_MARK = "mod_rollout_bucket"

WATCHERS, RUNS = 3, 20


async def _watch(kind: str, url: str, runs: int) -> None:
    """A watcher process: per run, a fresh policy (read and watched), then "ready", then calls
    until it is rejected (the toggle is off): prints that wall time."""
    from failsafe.circuitbreaker import BreakerFailing, consecutive_breaker
    from failsafe.featuretoggle import featuretoggle
    from failsafe.stores import RedisStore

    store = RedisStore(url, prefix="bench-prop", op_timeout=1.0)
    for i in range(runs):
        if kind == "breaker":
            g = consecutive_breaker(
                failure_threshold=1, recovery_time=60, store=store, name=f"b{i}"
            )(f)
            await g()
            print(json.dumps("ready"), flush=True)
            while True:
                try:
                    await g()
                except BreakerFailing:
                    break
                await asyncio.sleep(0.0005)
        else:
            toggle = await featuretoggle(store=store, name=f"t{i}").ready()  # type: ignore[attr-defined]
            print(json.dumps("ready"), flush=True)
            while toggle.enabled:
                await asyncio.sleep(0.0005)
        print(json.dumps(time.time()), flush=True)
    await store.aclose()


async def _propagation(url: str) -> dict[str, float]:
    """Trip -> rejection and flip -> seen in other processes, ms: median and max."""
    from failsafe.circuitbreaker import consecutive_breaker
    from failsafe.featuretoggle import featuretoggle
    from failsafe.stores import RedisStore

    async def broken() -> None:
        raise ConnectionError

    store = RedisStore(url, prefix="bench-prop", op_timeout=1.0)
    out: dict[str, float] = {}
    for kind in ("breaker", "toggle"):
        procs = [
            await asyncio.create_subprocess_exec(
                *(sys.executable, __file__, "--watch", kind, "--url", url, "--calls", str(RUNS)),
                stdout=subprocess.PIPE,
            )
            for _ in range(WATCHERS)
        ]
        outs = [p.stdout for p in procs if p.stdout is not None]

        async def lines(outs: list[asyncio.StreamReader] = outs) -> list[Any]:
            return [json.loads(x) for x in await asyncio.gather(*(o.readline() for o in outs))]

        delays = []
        for i in range(RUNS):
            assert all(x == "ready" for x in await lines())
            await asyncio.sleep(0.1)  # the watchers' subscriptions are in place
            if kind == "breaker":
                policy = await consecutive_breaker(
                    failure_threshold=1, recovery_time=60, store=store, name=f"b{i}"
                ).ready()  # type: ignore[attr-defined]
                t0 = time.time()
                with contextlib.suppress(ConnectionError):
                    await policy(broken)()
            else:
                toggle = await featuretoggle(store=store, name=f"t{i}").ready()  # type: ignore[attr-defined]
                t0 = time.time()
                toggle.disable()
            delays += [x - t0 for x in await lines()]
        for p in procs:
            await p.wait()
        label = (
            "trip -> rejection elsewhere" if kind == "breaker" else "toggle off -> seen elsewhere"
        )
        out[f"{label}, median ms"] = statistics.median(delays) * 1e3
        out[f"{label}, max ms"] = max(delays) * 1e3
    await store.aclose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--measure")
    ap.add_argument("--url")
    ap.add_argument("--watch")
    ap.add_argument("--only", default="", help="only the cases containing this text")
    ap.add_argument("--propagation", action="store_true", help="only the propagation times")
    args = ap.parse_args()
    if args.measure:
        asyncio.run(_run(args.measure, args.url, args.calls))
        return
    if args.watch:
        asyncio.run(_watch(args.watch, args.url, args.calls))
        return
    proc, url = _start_redis()
    try:
        cases = [] if args.propagation else [c for c in CASES if args.only in c]
        irs: list[float | None] = [None] * len(cases)
        if shutil.which("valgrind"):
            with ThreadPoolExecutor(2) as pool:
                irs = list(pool.map(lambda c: _ir(c, url, args.calls), cases))
        print("| case | Ir/call | ns/call |\n|---|---:|---:|")
        for case, ir in zip(cases, irs, strict=True):
            ns = asyncio.run(_ns(case, url))
            print(f"| {case} | {'n/a' if ir is None else f'{ir:,.0f}'} | {ns:,.0f} |")
        for k, v in asyncio.run(_propagation(url)).items():
            print(f"{k}: {v:.1f}")
    finally:
        proc.kill()


if __name__ == "__main__":
    main()
