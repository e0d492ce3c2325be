"""A worker process of the shared feature-toggle tests.

toggle_worker.py URL NAME   prints "first <verdict>" after its first call (its function says
whether it ran), then "<0|1> <wall-clock time>" each time it sees the switch change; ends when
its stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
import time

from failsafe.featuretoggle import FeatureDisabled, featuretoggle
from failsafe.stores import RedisStore


async def watch(url: str, name: str) -> None:
    store = RedisStore(url, prefix="toggles", op_timeout=0.5)
    await store._client()  # connected first: a slow start-up must not pass for a store down
    toggle = featuretoggle(enabled=True, name=name, store=store)

    @toggle
    async def feature() -> str:
        return "ran"

    try:
        verdict = await feature()
    except FeatureDisabled:
        verdict = "refused"
    print("first", verdict, flush=True)
    closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    seen = toggle.enabled
    while not closed.done():
        if toggle.enabled != seen:
            seen = toggle.enabled
            print(int(seen), time.time(), flush=True)
        await asyncio.sleep(0.002)
    await store.aclose()


if __name__ == "__main__":
    asyncio.run(watch(sys.argv[1], sys.argv[2]))
