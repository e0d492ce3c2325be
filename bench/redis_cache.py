"""Shared-cache hits per second on Redis, at 50 concurrent tasks, in one run.

    uv run --group bench python bench/redis_cache.py [--redis URL] [--hits N]

failsafe's ``cache(store=RedisStore(...))`` without and with its in-process layer
(``local_ttl``), beside cashews' Redis cache and aiocache's Redis backend, and failsafe's
in-process cache for scale. Every case caches the same function returning a small dict, fills
its entry, then answers N hits from 50 tasks (one process). Starts its own redis-server on a
free port unless ``--redis`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

TASKS = 50
VALUE = {"id": 7, "name": "Ada", "roles": ["admin", "dev"]}


async def _drive(call: Callable[[], Awaitable[Any]], hits: int) -> tuple[float, list[float]]:
    per_task = hits // TASKS
    latencies: list[float] = []

    async def task() -> None:
        for _ in range(per_task):
            t0 = time.perf_counter()
            value = await call()
            latencies.append(time.perf_counter() - t0)
            assert value == VALUE, value

    for _ in range(200):  # warm-up: the entry, connections, scripts
        await call()
    t0 = time.perf_counter()
    await asyncio.gather(*(task() for _ in range(TASKS)))
    return time.perf_counter() - t0, latencies


async def _case(name: str, url: str, hits: int) -> dict[str, Any]:
    calls = 0

    async def load(user_id: int) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return dict(VALUE)

    close: Callable[[], Awaitable[Any]] | None = None
    if name.startswith("failsafe"):
        from failsafe.cache import cache
        from failsafe.stores import RedisStore

        if name == "failsafe in-process":
            fn: Any = cache(ttl=60)(load)
        else:
            store = RedisStore(url, prefix="benchcache", op_timeout=1.0)
            local = 1.0 if "local" in name else None
            fn = cache(ttl=60, store=store, name=f"u{int(local or 0)}", local_ttl=local)(load)
            close = store.aclose
    elif name == "cashews redis":
        from cashews import Cache

        c = Cache()
        c.setup(url)
        fn = c(ttl=60)(load)
        close = c.close
    else:
        from aiocache import Cache as ACache
        from aiocache import cached

        parsed = urlparse(url)
        fn = cached(ttl=60, cache=ACache.REDIS, endpoint=parsed.hostname, port=parsed.port)(load)
    seconds, lat = await _drive(lambda: fn(7), hits)
    if close is not None:
        await close()
    lat.sort()
    return {
        "case": name,
        "hits_per_s": len(lat) / seconds,
        "p50_us": statistics.median(lat) * 1e6,
        "p99_us": lat[int(len(lat) * 0.99)] * 1e6,
        "calls": calls,
    }


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


CASES = (
    "failsafe shared",
    "failsafe shared + local_ttl",
    "cashews redis",
    "aiocache redis",
    "failsafe in-process",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="a Redis URL (default: start a redis-server)")
    parser.add_argument("--hits", type=int, default=20_000)
    args = parser.parse_args()
    proc = None
    url = args.redis
    if url is None:
        proc, url = _start_redis()
    try:
        rows = [asyncio.run(_case(case, url, args.hits)) for case in CASES]
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
    print(f"{args.hits} hits from {TASKS} tasks, one process, Redis at {url}")
    print("| case | hits/s | p50 µs | p99 µs | function calls |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['case']} | {r['hits_per_s']:,.0f} | {r['p50_us']:,.0f} | {r['p99_us']:,.0f}"
            f" | {r['calls']} |"
        )


if __name__ == "__main__":
    main()
