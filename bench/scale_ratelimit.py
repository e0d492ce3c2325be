"""Keyed rate limiter at scale: 1,000,000 distinct keys in one limiter.

Standalone: ``uv run python bench/scale_ratelimit.py [--keys N]``. Prints the C table's bytes
per key, the process's resident memory growth per key (C table plus the key objects), and ns
per acquire for new keys (insert), known keys (lookup), and new keys once the table is full
(evicting keys whose bucket is full again), on the fake clock so the numbers do not depend on
how fast the machine is.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time

from failsafe.ratelimit import KeyedTokenBucketLimiter
from failsafe.testing import FakeClock


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def timed(label: str, n: int, fn: object) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    fn()  # type: ignore[operator]
    ns = (time.perf_counter_ns() - start) / n
    print(f"{label:<48} {ns:8.0f} ns/acquire")
    return ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000)
    n = parser.parse_args().keys
    keys = [f"user-{i}" for i in range(n)]  # made before measuring: not the limiter's cost
    with FakeClock(10**12) as clock:
        before = rss_bytes()
        limiter = KeyedTokenBucketLimiter(10, 1, key=lambda k: k, max_keys=n)
        allocated = rss_bytes() - before
        _, _, _, c_bytes = limiter._key_stats()
        acquire = limiter.try_acquire

        def insert_all() -> None:
            for k in keys:
                acquire(k)

        timed(f"new key ({n:,} keys, table filling)", n, insert_all)
        grown = rss_bytes() - before
        timed("known key (lookup + take)", n, insert_all)
        held, limited, _, _ = limiter._key_stats()
        assert held == n, held
        assert limited == n, limited
        # every key limited: a new key is refused without a sweep (until the first refills)
        refused = [f"late-{i}" for i in range(n // 10)]

        def refuse() -> None:
            for k in refused:
                acquire(k)

        timed("new key, table full of limited keys (refused)", len(refused), refuse)
        clock.advance(1)  # all buckets full again: every place may be reused
        fresh = [f"fresh-{i}" for i in range(n)]

        def evict() -> None:
            for k in fresh:
                acquire(k)

        timed("new key, table full of idle keys (evict + insert)", n, evict)
        table = dict.fromkeys(keys, 0)
        get = table.get

        def dict_lookups() -> None:
            for k in keys:
                get(k)

        timed("for scale: a dict.get of the same keys", n, dict_lookups)
        print(f"C memory per key (table + key pointer): {c_bytes} bytes")
        print(f"resident growth per key at construction: {allocated / n:.1f} bytes")
        print(f"resident growth per key with {n:,} keys held: {grown / n:.1f} bytes")
        print(f"stats: {limiter.stats()}")


if __name__ == "__main__":
    main()
