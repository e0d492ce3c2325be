"""A worker process of the shared breaker tests; reads commands on stdin, prints JSON lines.

breaker_worker.py URL NAME RECOVERY [failfast|block|failfast-block]   a consecutive breaker (2
failures, 2 probes) or a fail-fast latch (2 failures) as a decorator, or either as `async with`
("block"), shared by NAME
  watch        calls its (healthy) function until rejected: {"at", "retry_after", "called_after"}
  probe START  5 tasks call at once at wall time START: {"ran": calls of the function}
  until STATE  calls until admitted (closed) or rejected (open): {"at"}
A loop that has not seen what it waits for after LOOP_DEADLINE seconds answers {"error": ...}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from workers import SLOWDOWN

from failsafe.circuitbreaker import BreakerFailing, consecutive_breaker
from failsafe.failfast import FailFastOpen, failfast
from failsafe.stores import RedisStore

PROBES = 2
LOOP_DEADLINE = 60.0
Refused = (BreakerFailing, FailFastOpen)


async def serve(url: str, name: str, recovery: float, kind: str) -> None:
    # A decision timed out on a sanitized interpreter would fall back to this process's own
    # breaker (on_error="local") and its probe limit: the sharing would go untested.
    store = RedisStore(url, prefix="breakers", op_timeout=0.5 * SLOWDOWN)
    breaker: Any = (
        failfast(
            failure_threshold=2, recovery_time=recovery, on=ConnectionError, store=store, name=name
        )
        if kind.startswith("failfast")
        else consecutive_breaker(
            ConnectionError,
            failure_threshold=2,
            recovery_time=recovery,
            recovery_threshold=PROBES,
            half_open_max_calls=PROBES,
            store=store,
            name=name,
        )
    )
    ran = 0

    async def body(pause: float = 0.0) -> None:
        nonlocal ran
        ran += 1
        await asyncio.sleep(pause)

    async def block(pause: float = 0.0) -> None:
        async with breaker:
            await body(pause)

    healthy = block if kind.endswith("block") else breaker(body)

    await healthy()
    print(json.dumps("ready"), flush=True)
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).split():
        out: dict[str, object] = {}
        give_up = time.monotonic() + LOOP_DEADLINE
        if line[0] == "watch":
            while True:
                try:
                    await healthy()
                except Refused as exc:
                    out = {"at": time.time(), "retry_after": exc.retry_after}
                    break
                if time.monotonic() > give_up:
                    out = {"error": f"watch: still admitted after {LOOP_DEADLINE} s"}
                    break
                await asyncio.sleep(0.002)
            before = ran
            for _ in range(20):
                with contextlib.suppress(*Refused):
                    await healthy()
                await asyncio.sleep(0.005)
            out["called_after"] = ran - before
        elif line[0] == "probe":
            await asyncio.sleep(max(0.0, float(line[1]) - time.time()))
            before = ran
            await asyncio.gather(*(healthy(0.3) for _ in range(5)), return_exceptions=True)
            out = {"ran": ran - before}
        elif line[0] == "until":
            want_open = line[1] == "open"
            out = {"error": f"until {line[1]}: not {line[1]} after {LOOP_DEADLINE} s"}
            while time.monotonic() < give_up:
                try:
                    await healthy()
                    if not want_open:
                        out = {"at": time.time()}
                        break
                except Refused:
                    if want_open:
                        out = {"at": time.time()}
                        break
                await asyncio.sleep(0.002)
        if "error" in out:
            out["error"] += f" ({_state(store, breaker)})"
        print(json.dumps(out), flush=True)
    await store.aclose()


def _state(store: RedisStore, policy: Any) -> str:
    """What a stuck loop reports: the store's counters and whether its watcher still runs."""
    tasks = list(policy._watchers.values())
    watcher = [
        "running" if not t.done() else repr(t.exception() if not t.cancelled() else "cancelled")
        for t in tasks
    ]
    return f"store {dict(store.stats())}, watcher {watcher}, gate {policy._gate}"


if __name__ == "__main__":
    kind = sys.argv[4] if len(sys.argv) > 4 else "breaker"
    asyncio.run(serve(sys.argv[1], sys.argv[2], float(sys.argv[3]), kind))
