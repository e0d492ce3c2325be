"""failsafe at work against a flaky, slow, simulated dependency.

Run: uv run python examples/demo.py
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

from failsafe.fallback import fallback
from failsafe.retry import AttemptsExceeded, backoffs, retry
from failsafe.timeout import TimeoutError as FsTimeoutError
from failsafe.timeout import timeout

CALLS = 400
FAIL_RATE = 0.3  # the dependency raises ConnectionError this often
STALL_RATE = 0.05  # ... and hangs for a second this often
rng = random.Random(7)
dependency_calls = Counter[str]()


async def dependency(item: int) -> str:
    """A remote service that fails and stalls at random."""
    dependency_calls["total"] += 1
    await asyncio.sleep(0.001)
    roll = rng.random()
    if roll < FAIL_RATE:
        dependency_calls["failed"] += 1
        raise ConnectionError("connection reset")
    if roll < FAIL_RATE + STALL_RATE:
        dependency_calls["stalled"] += 1
        await asyncio.sleep(1.0)
    return f"price-{item}"


async def unguarded(item: int) -> str:
    return await dependency(item)


# Innermost first: each attempt is bounded to 50 ms, retried up to 3 times on connection errors
# or timeouts with exponential backoff, and a cached default answers when all attempts fail.
@fallback("price-from-cache", on=(AttemptsExceeded, ConnectionError), name="quote_fallback")
@retry(
    on=(ConnectionError, FsTimeoutError),
    attempts=3,
    backoff=backoffs.expo(min_delay_secs=0.002, max_delay_secs=0.02),
    name="quote_retry",
)
@timeout(0.05, name="quote_timeout")
async def guarded(item: int) -> str:
    return await dependency(item)


async def drive(fn, label: str) -> None:  # type: ignore[no-untyped-def]
    outcomes = Counter[str]()
    latencies: list[float] = []
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        async with sem:
            start = time.perf_counter()
            try:
                value = await fn(i)
                outcomes["default answer" if value == "price-from-cache" else "ok"] += 1
            except Exception as e:
                outcomes[type(e).__name__] += 1
            latencies.append(time.perf_counter() - start)

    dependency_calls.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(CALLS)))
    wall = time.perf_counter() - t0
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    print(f"\n{label}: {CALLS} calls in {wall:.2f}s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    for outcome, n in outcomes.most_common():
        print(f"  {outcome:<18} {n:>5}  ({100 * n / CALLS:.1f} %)")
    print(f"  dependency calls: {dict(dependency_calls)}")


async def main() -> None:
    print(
        f"A dependency that fails {FAIL_RATE:.0%} of calls and stalls for 1 s on"
        f" {STALL_RATE:.0%} of them."
    )
    await drive(unguarded, "without failsafe")
    await drive(guarded, "with timeout(50 ms) + retry(3, expo) + fallback")
    print("\ncounters:")
    layer = guarded
    while hasattr(layer, "policy"):  # outermost first
        print(f"  {layer.policy!r}")
        layer = layer.__wrapped__


if __name__ == "__main__":
    asyncio.run(main())
