"""`demo.py --workers N`: N uvicorn worker processes calling a partner API that allows 50 calls
per second in total, first with a rate limit per process, then with one shared through Redis.

Starts a local redis-server when one is on the PATH (or uses --redis URL), runs
`uvicorn partner_limit:app --workers N` for each mode, drives it with many concurrent requests
and prints, per second, the partner calls the workers made together: a table and a plot.
Then, per mode, an inventory outage (how many calls reached the failing service before the
breakers stopped them: once for the fleet when shared) and a feature toggle switched off
through one worker (which workers see it, and when).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

SERVICE = Path(__file__).resolve().parent / "service"
RATE = 50
CONCURRENCY = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("--workers needs redis-server on the PATH, or --redis URL")
    port = _free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    return proc, f"redis://127.0.0.1:{port}/0"


async def _ready(client: httpx.AsyncClient, proc: asyncio.subprocess.Process, workers: int) -> None:
    """Waits until every worker has answered (distinct pids): up to 3 minutes (a busy machine
    starts workers slowly)."""
    seen: set[int] = set()
    deadline = time.monotonic() + 180
    while len(seen) < workers:
        if proc.returncode is not None:
            raise RuntimeError("uvicorn exited")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers - len(seen)} of {workers} workers did not start")
        try:
            seen.update(b["pid"] for b in await _round(client, "/stats", 2 * workers))
        except httpx.HTTPError:
            await asyncio.sleep(0.2)


async def _round(client: httpx.AsyncClient, path: str, n: int) -> list[Any]:
    """n concurrent requests, each on a new connection (a kept-alive one stays with the worker
    that accepted it), so that they spread over the workers."""
    close = {"Connection": "close"}
    return [
        r.json() for r in await asyncio.gather(*(client.get(path, headers=close) for _ in range(n)))
    ]


@contextlib.asynccontextmanager
async def _service(mode: str, workers: int, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """`uvicorn partner_limit:app --workers N` in one mode, every worker answering."""
    port = _free_port()
    env = {**os.environ, "FAILSAFE_DEMO_MODE": mode, "FAILSAFE_DEMO_REDIS": redis_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "partner_limit:app", "--workers", str(workers),
        "--port", str(port), "--log-level", "warning", "--no-access-log",
        cwd=SERVICE,
        env=env,
    )  # fmt: skip
    try:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=10
        ) as client:
            await _ready(client, proc, workers)
            yield client
    finally:
        proc.terminate()
        await proc.wait()


async def run_mode(mode: str, workers: int, redis_url: str, seconds: float) -> Counter[int]:
    """Partner calls per second (200 answers) of all workers together, in one mode."""
    per_second: Counter[int] = Counter()
    fallbacks: dict[int, int] = {}
    async with _service(mode, workers, redis_url) as client:

        async def drive(start: float, until: float, counts: Counter[int]) -> None:
            while (now := time.monotonic() - start) < until:
                r = await client.get("/partner")
                if r.status_code == 200:
                    counts[int(now)] += 1
                    fallbacks[r.json()["pid"]] = r.json()["fallbacks"]

        # Warm-up (every worker connected), then the tokens come back before measuring.
        warm: Counter[int] = Counter()
        await asyncio.gather(*(drive(time.monotonic(), 1.5, warm) for _ in range(CONCURRENCY)))
        await asyncio.sleep(1.1)
        start = time.monotonic()
        await asyncio.gather(*(drive(start, seconds, per_second) for _ in range(CONCURRENCY)))
    if sum(fallbacks.values()):
        print(f"  ({mode}: {sum(fallbacks.values())} decisions taken without Redis)")
    return per_second


async def _each_worker(client: httpx.AsyncClient, path: str, workers: int) -> dict[int, Any]:
    """One answer of path from every worker (requests land on workers at random)."""
    answers: dict[int, Any] = {}
    for _ in range(100):
        for body in await _round(client, path, 2 * workers):
            answers.setdefault(body["pid"], body)
        if len(answers) == workers:
            break
    return answers


async def fleet_mode(mode: str, workers: int, redis_url: str) -> dict[str, Any]:
    """An inventory outage under the breakers, then the toggle switched off through one
    worker: the calls that reached the failing service, and which workers saw the switch."""
    async with _service(mode, workers, redis_url) as client:
        await _each_worker(client, "/inventory", workers)  # every breaker closed and ready
        before = await _each_worker(client, "/stats", workers)
        statuses = Counter(
            r.status_code
            for r in await asyncio.gather(*(client.get("/inventory?down=1") for _ in range(200)))
        )
        reached = {
            pid: s["inventory_calls"] - before[pid]["inventory_calls"]
            for pid, s in (await _each_worker(client, "/stats", workers)).items()
        }
        await _each_worker(client, "/checkout", workers)  # every toggle has read its state
        switched = (await client.get("/admin/checkout?on=0")).json()["pid"]
        t0 = time.monotonic()
        seen: dict[int, float] = {}
        while len(seen) < workers and time.monotonic() - t0 < 3.0:
            for body in await _round(client, "/checkout", 2 * workers):
                if not body["new_checkout"]:
                    seen.setdefault(body["pid"], time.monotonic() - t0)
    return {"reached": reached, "statuses": statuses, "switched": switched, "seen": seen}


def report_fleet(results: dict[str, dict[str, Any]], workers: int) -> None:
    print(f"\ninventory outage, 200 requests to {workers} workers (breaker: 5 failures open it)")
    for mode, r in results.items():
        reached = r["reached"]
        print(
            f"  {mode:<12} calls that reached the failing service: {sum(reached.values()):>3}"
            f"  (per worker {sorted(reached.values(), reverse=True)}); the rest refused at once"
        )
    print("\nnew_checkout switched off through one worker: workers that see it within 3 s")
    for mode, r in results.items():
        seen = r["seen"]
        when = ", ".join(f"{t * 1000:.0f} ms" for t in sorted(seen.values()))
        print(f"  {mode:<12} {len(seen)} of {workers}  ({when})")


def report(results: dict[str, Counter[int]], workers: int, seconds: int) -> None:
    print(f"\npartner calls per second, {workers} workers, partner limit {RATE}/s in total")
    print("  (by the second each request was sent: a busy machine blurs the seconds' edges)")
    print(f"  {'second':>6}  " + "  ".join(f"{m:>10}" for m in results))
    for s in range(seconds):
        print(f"  {s:>6}  " + "  ".join(f"{results[m][s]:>10}" for m in results))
    for mode, counts in results.items():
        mean = sum(counts.values()) / seconds
        verdict = "held" if mean <= RATE * 1.1 + 5 else f"{mean / RATE:.1f}x the limit"
        print(f"  {mode:<10} mean {mean:6.1f}/s  ({verdict})")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for mode, counts in results.items():
        ax.plot(range(seconds), [counts[s] for s in range(seconds)], marker="o", label=mode)
    ax.axhline(RATE, color="grey", linestyle="--", label="partner limit")
    ax.set_xlabel("second")
    ax.set_ylabel("partner calls / s")
    ax.legend()
    path = Path("demo-workers.png").resolve()
    fig.savefig(path, dpi=100)
    print(f"\nplot: {path}")


async def main(workers: int, redis_url: str | None, seconds: int) -> None:
    proc = None
    if redis_url is None:
        proc, redis_url = start_redis()
    try:
        results = {
            "per-process": await run_mode("local", workers, redis_url, seconds),
            "shared": await run_mode("shared", workers, redis_url, seconds),
        }
        fleet = {
            "per-process": await fleet_mode("local", workers, redis_url),
            "shared": await fleet_mode("shared", workers, redis_url),
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
    report(results, workers, seconds)
    report_fleet(fleet, workers)
