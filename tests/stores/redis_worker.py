"""A worker process of the multi-process Redis tests; prints its observations as JSON.

redis_worker.py limit URL NAME SECONDS TASKS START   admitted wall-clock times
redis_worker.py bulkhead URL NAME SECONDS TASKS START   [start, end] of each guarded body
redis_worker.py hold URL NAME   holds one permit of a 1-permit bulkhead until killed
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from failsafe.bulkhead import bulkhead
from failsafe.ratelimit import RateLimitExceeded, tokenbucket
from failsafe.stores import RedisStore

RATE, PER, BURST = 50, 1, 5
CONCURRENCY, LEASE = 3, 5


async def limit(url: str, name: str, seconds: float, tasks: int, start: float) -> list[float]:
    store = RedisStore(url, prefix="procs", op_timeout=2)
    policy = tokenbucket(RATE, PER, bucket_size=BURST, store=store, name=name)
    await asyncio.sleep(max(0.0, start - time.time()))
    admitted: list[float] = []
    end = start + seconds

    async def task() -> None:
        while time.time() < end:
            try:
                await policy.acquire()
            except RateLimitExceeded as exc:
                await asyncio.sleep(min(exc.retry_after_seconds or 0.01, 0.05))
                continue
            admitted.append(time.time())

    await asyncio.gather(*(task() for _ in range(tasks)))
    assert store.stats()["fallbacks"] == 0, store.stats()
    await store.aclose()
    return admitted


async def bulk(url: str, name: str, seconds: float, tasks: int, start: float) -> list[list[float]]:
    store = RedisStore(url, prefix="procs", op_timeout=2)
    policy = bulkhead(CONCURRENCY, 1000, max_wait=30, store=store, name=name, lease=LEASE)
    spans: list[list[float]] = []

    @policy
    async def body() -> None:
        t0 = time.time()
        await asyncio.sleep(0.02)
        spans.append([t0, time.time()])

    await asyncio.sleep(max(0.0, start - time.time()))
    end = start + seconds

    async def task() -> None:
        while time.time() < end:
            await body()

    await asyncio.gather(*(task() for _ in range(tasks)))
    assert store.stats()["fallbacks"] == 0, store.stats()
    await store.aclose()
    return spans


async def hold(url: str, name: str) -> None:
    store = RedisStore(url, prefix="procs", op_timeout=2)
    policy = bulkhead(1, 2, max_wait=0, store=store, name=name, lease=1)
    async with policy:
        print("held", flush=True)
        await asyncio.sleep(3600)


def main() -> None:
    mode, url, name = sys.argv[1:4]
    if mode == "hold":
        asyncio.run(hold(url, name))
        return
    seconds, tasks = float(sys.argv[4]), int(sys.argv[5])
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    run = limit if mode == "limit" else bulk
    print(json.dumps(asyncio.run(run(url, name, seconds, tasks, start))))


if __name__ == "__main__":
    main()
