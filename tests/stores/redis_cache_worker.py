"""A worker process of the shared-cache tests; prints its observations as JSON lines.

redis_cache_worker.py flight URL NAME TASKS   at the time read from stdin, TASKS tasks call the
    cached function with one key; prints {"calls": calls made here, "values": [...]}
redis_cache_worker.py get URL NAME            one call; prints {"calls": ..., "value": ...}
redis_cache_worker.py lead URL NAME           leads a miss whose function never returns (until
    the process is killed); prints "leading" once the function runs
redis_cache_worker.py watch URL NAME SECONDS  calls every 20 ms with a local layer of 60 s;
    prints each new value it sees with the time, then "done"

The function's value is {"source": <the Redis key source:NAME, read when it runs>, "pid": ...}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import redis.asyncio as aioredis

from failsafe.cache import cache
from failsafe.stores import RedisStore

COMPUTE_SECONDS, LOCK_TTL = 0.3, 1.0


def make(url: str, name: str, local_ttl: float | None = None) -> tuple[object, list[int], object]:
    store = RedisStore(url, prefix="cacheprocs", op_timeout=1.0)
    source = aioredis.RedisCluster.from_url(url) if "cluster" in name else aioredis.from_url(url)
    calls = [0]

    @cache(ttl=60, store=store, name=name, lock_ttl=LOCK_TTL, local_ttl=local_ttl)
    async def compute(key: str) -> dict[str, object]:
        calls[0] += 1
        if name.startswith("lead"):
            print("leading", flush=True)
            await asyncio.sleep(3600)
        await asyncio.sleep(COMPUTE_SECONDS)
        raw = await source.get(f"source:{name}")
        return {"source": None if raw is None else raw.decode(), "pid": os.getpid(), "key": key}

    return compute, calls, store


async def flight(url: str, name: str, tasks: int, start: float) -> dict[str, object]:
    compute, calls, store = make(url, name)
    await asyncio.sleep(max(0.0, start - time.time()))
    values = await asyncio.gather(*(compute("k") for _ in range(tasks)))  # type: ignore[operator]
    await store.aclose()  # type: ignore[attr-defined]
    return {"calls": calls[0], "values": values}


async def get(url: str, name: str) -> dict[str, object]:
    compute, calls, store = make(url, name)
    value = await compute("k")  # type: ignore[operator]
    await store.aclose()  # type: ignore[attr-defined]
    return {"calls": calls[0], "value": value}


async def lead(url: str, name: str) -> None:
    compute, _, _ = make(url, name)
    await compute("k")  # type: ignore[operator]


async def watch(url: str, name: str, seconds: float) -> None:
    compute, _, store = make(url, name, local_ttl=60)
    seen = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = await compute("k")  # type: ignore[operator]
        if value["source"] != seen:
            seen = value["source"]
            print(json.dumps({"source": seen, "at": time.time()}), flush=True)
        await asyncio.sleep(0.02)
    await store.aclose()  # type: ignore[attr-defined]
    print("done", flush=True)


def main() -> None:
    mode, url, name = sys.argv[1:4]
    if mode == "flight":
        print("ready", flush=True)
        start = float(sys.stdin.readline())
        print(json.dumps(asyncio.run(flight(url, name, int(sys.argv[4]), start))), flush=True)
    elif mode == "get":
        print(json.dumps(asyncio.run(get(url, name))), flush=True)
    elif mode == "lead":
        asyncio.run(lead(url, name))
    else:
        asyncio.run(watch(url, name, float(sys.argv[4])))


if __name__ == "__main__":
    main()
