"""Decisions per second of a rate limit shared through Redis, at 50 concurrent tasks.

    uv run --group bench python bench/redis_store.py [--redis URL] [--decisions N]

failsafe's ``tokenbucket(..., store=RedisStore(...))`` (plain and with ``prefetch``) beside the
``limits`` library's moving window and sliding-window counter (its ``redis.asyncio`` storage),
and an in-process tokenbucket for the latency it adds. Each case makes N decisions from 50 tasks
in one process, then again from 4 processes at once; the limit is high enough that every
decision admits, so each is a real, exact decision (no local refusal shortcut). Starts its own
redis-server on a free port unless ``--redis`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

TASKS = 50
RATE = 10_000_000  # per second: every decision admits


async def _drive(
    acquire: Callable[[], Awaitable[Any]], decisions: int
) -> tuple[float, list[float]]:
    """decisions acquire() calls from TASKS tasks; (seconds, latencies)."""
    per_task = decisions // TASKS
    latencies: list[float] = []

    async def task() -> None:
        for _ in range(per_task):
            t0 = time.perf_counter()
            await acquire()
            latencies.append(time.perf_counter() - t0)

    for _ in range(200):  # warm-up: connections, scripts
        await acquire()
    t0 = time.perf_counter()
    await asyncio.gather(*(task() for _ in range(TASKS)))
    return time.perf_counter() - t0, latencies


async def _case(name: str, url: str, decisions: int, tag: str) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if name.startswith("failsafe"):
        from failsafe.ratelimit import tokenbucket
        from failsafe.stores import RedisStore

        if name == "failsafe in-process":
            limit = tokenbucket(RATE, 1)
            seconds, lat = await _drive(limit.acquire, decisions)
        else:
            store = RedisStore(url, prefix=f"bench-{tag}", op_timeout=1.0)
            prefetch = 10 if "prefetch" in name else None
            limit = tokenbucket(RATE, 1, store=store, name="bench", prefetch=prefetch)
            seconds, lat = await _drive(limit.acquire, decisions)
            s = store.stats()
            assert s["fallbacks"] == 0, s
            extra["round_trips_per_call"] = s["round_trips"] / (decisions + 200)
            extra["scripts_per_call"] = s["decisions"] / (decisions + 200)
            await store.aclose()
    else:
        from limits import parse
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

        storage = RedisStorage(
            url.replace("redis://", "async+redis://"),
            implementation="redispy",
            key_prefix=f"bench-{tag}",
        )
        strategy = MovingWindowRateLimiter if "moving" in name else SlidingWindowCounterRateLimiter
        limiter = strategy(storage)
        item = parse(f"{RATE}/second")
        refused = 0

        async def acquire() -> None:
            nonlocal refused
            if not await limiter.hit(item, "bench"):
                refused += 1

        seconds, lat = await _drive(acquire, decisions)
        assert refused == 0
    lat.sort()
    return {
        "case": name,
        "decisions_per_s": len(lat) / seconds,
        "p50_us": statistics.median(lat) * 1e6,
        "p99_us": lat[int(len(lat) * 0.99)] * 1e6,
        **extra,
    }


CASES = (
    "failsafe in-process",
    "failsafe shared tokenbucket",
    "failsafe shared tokenbucket, prefetch=10",
    "limits moving window",
    "limits sliding-window counter",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_redis() -> tuple[subprocess.Popen[bytes], str]:
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("redis-server not found: give --redis URL")
    port = _free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit("redis-server did not start")


def _processes(case: str, url: str, decisions: int, n: int) -> dict[str, Any]:
    """n processes at once, each making decisions; total decisions/s and the worst p99."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                case,
                "--redis",
                url,
                "--decisions",
                str(decisions),
                "--tag",
                f"p{n}-{case}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    results = [json.loads(p.communicate()[0]) for p in procs]
    return {
        "case": case,
        "decisions_per_s": sum(r["decisions_per_s"] for r in results),
        "p50_us": statistics.median(r["p50_us"] for r in results),
        "p99_us": max(r["p99_us"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", help="a Redis URL (default: start a redis-server)")
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="1", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = asyncio.run(_case(args.worker, args.redis, args.decisions, args.tag))
        print(json.dumps(result))
        return
    proc = None
    url = args.redis
    if url is None:
        proc, url = _start_redis()
    try:
        print(f"{args.decisions} decisions, {TASKS} concurrent tasks per process\n")
        print("| processes | case | decisions/s | p50 µs | p99 µs | round trips/call |")
        print("|---:|---|---:|---:|---:|---:|")
        for case in CASES:
            r = asyncio.run(_case(case, url, args.decisions, "one"))
            trips = r.get("round_trips_per_call")
            print(
                f"| 1 | {case} | {r['decisions_per_s']:,.0f} | {r['p50_us']:,.0f} |"
                f" {r['p99_us']:,.0f} | {'' if trips is None else f'{trips:.3f}'} |"
            )
        for case in CASES[1:]:
            r = _processes(case, url, args.decisions, args.processes)
            print(
                f"| {args.processes} | {case} | {r['decisions_per_s']:,.0f} |"
                f" {r['p50_us']:,.0f} | {r['p99_us']:,.0f} | |"
            )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
