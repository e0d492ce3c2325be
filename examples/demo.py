"""failsafe at work: the example service (examples/service) against a flaky, slow dependency.

Starts the service in-process (uvicorn on a free local port), sends the same load to its quote
endpoint without and with failsafe, then a quarter of it to the unguarded endpoint through a
client guarded by failsafe's httpx transport (retries of 502s, a per-attempt timeout, a breaker
per host), and prints success rates, latencies and every pattern's counters and the retry's
latency histogram as read back from OpenTelemetry (an in-process reader; set
OTEL_EXPORTER_OTLP_ENDPOINT to also export to a collector).

Run: uv run python examples/demo.py [--calls N]; --overload compares an adaptive concurrency
limit with a fixed one under overload, in the simulator (examples/overload_demo.py).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent / "service"))

import main as service
from dependency import dependency
from quotes import patterns_in_use
from telemetry import NAMESPACE

from failsafe._core import PATTERNS
from failsafe.circuitbreaker import consecutive_breaker
from failsafe.exceptions import FailsafeError
from failsafe.integrations.httpx import ResilientTransport

CONCURRENCY = 10


def positive_int(text: str) -> int:
    """argparse type of --calls: a whole number >= 1 (argparse reports anything else)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class Service:
    """The example service served by uvicorn on a free local port, in this event loop."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit it: small responses leave at once (no Nagle delay).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(service.app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> str:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        async with asyncio.timeout(20):
            while not self.server.started:
                if self.task.done():
                    self.task.result()
                    raise RuntimeError("the example service stopped")
                await asyncio.sleep(0.01)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.sock.close()


@dataclass
class Run:
    label: str
    calls: int
    statuses: Counter[int] = field(default_factory=Counter)
    fresh: int = 0
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0

    def rate(self, n: int) -> float:
        return 100.0 * n / self.calls

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Progress:
    """A progress line: redrawn in place on a terminal, a few steps otherwise."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.tty = sys.stdout.isatty()
        self.next_step = 0.25

    def tick(self) -> None:
        self.done += 1
        share = self.done / self.total
        if self.tty:
            bar = "#" * int(30 * share)
            print(f"\r  {self.label:<18} [{bar:<30}] {self.done}/{self.total}", end="", flush=True)
            if self.done == self.total:
                print()
        elif share >= self.next_step:
            print(f"  {self.label:<18} {share:.0%} ({self.done}/{self.total})", flush=True)
            self.next_step += 0.25


async def drive(client: httpx.AsyncClient, path: str, label: str, calls: int) -> Run:
    run = Run(label, calls)
    progress = Progress(label, calls)
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with sem:
            start = time.perf_counter()
            try:
                response = await client.get(f"{path}/{i % 200}")
                run.statuses[response.status_code] += 1
                if response.status_code == 200 and response.json().get("fresh"):
                    run.fresh += 1
            except (httpx.HTTPError, FailsafeError):  # the transport's refusals too
                run.statuses[0] += 1
            run.latencies.append(time.perf_counter() - start)
            progress.tick()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    run.wall = time.perf_counter() - t0
    return run


async def place_orders(client: httpx.AsyncClient, n: int) -> Counter[int]:
    statuses = Counter[int]()

    async def one(i: int) -> None:
        response = await client.post("/orders", json={"venue": f"venue-{i % 3}"})
        statuses[response.status_code] += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return statuses


def print_results(runs: list[Run]) -> None:
    print("\nresults")
    header = f"  {'':<18} {'calls':>6} {'success':>8} {'fresh':>7} {'p50 ms':>8} {'p99 ms':>8}"
    print(header + f" {'wall s':>7}  statuses")
    for r in runs:
        statuses = ", ".join(f"{k or 'error'}: {v}" for k, v in sorted(r.statuses.items()))
        success, fresh = r.rate(r.statuses[200]), r.rate(r.fresh)
        print(
            f"  {r.label:<18} {r.calls:>6} {success:>7.1f}% {fresh:>6.1f}%"
            f" {r.percentile(0.5):>8.1f} {r.percentile(0.99):>8.1f} {r.wall:>7.2f}  {statuses}"
        )
    print("  success: HTTP 200; fresh: a price from the dependency (not the fallback default)")


_METRIC = re.compile(
    rf"{re.escape(NAMESPACE)}\.(?P<component>.+)\.(?P<pattern>{'|'.join(PATTERNS)})"
    r"\.(?P<metric>.+)"
)


def print_counters(counters: dict[str, int]) -> None:
    print(f"\nfailsafe counters, read back from OpenTelemetry ({NAMESPACE}.<component>...)")
    rows: dict[tuple[str, str], list[str]] = {}
    for name, value in counters.items():
        m = _METRIC.fullmatch(name)
        if m is not None:
            key = (m["pattern"], m["component"])
            rows.setdefault(key, []).append(f"{m['metric']}={value}")
    for (pattern, component), values in sorted(rows.items()):
        print(f"  {pattern:<15} {component:<20} {'  '.join(values)}")


HISTOGRAM = f"{NAMESPACE}.quote_retry.retry.duration"


def _bound(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:g} {unit}"
    return f"{seconds * 1e9:g} ns"


def print_histogram(latency: dict[str, Any]) -> None:
    """The guarded calls' duration histogram (quote_retry: whole calls, retries included)."""
    outcomes = latency.get(HISTOGRAM)
    if not outcomes:
        return
    print(f"\nlatency histogram of {HISTOGRAM}, by outcome (timed in C)")
    widest = max(max(o["counts"]) for o in outcomes.values()) or 1
    for outcome, o in sorted(outcomes.items()):
        print(f"  {outcome}: {o['count']} calls, mean {1000 * o['sum'] / o['count']:.2f} ms")
        bounds, counts = o["bounds"], o["counts"]
        for i, n in enumerate(counts):
            if n:
                upper = f"<= {_bound(bounds[i])}" if i < len(bounds) else f"> {_bound(bounds[-1])}"
                print(f"    {upper:>10} {n:>6} {'#' * max(1, round(40 * n / widest))}")


def plot(runs: list[Run], latency: dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (ax, hist) = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        ordered = sorted(x * 1000 for x in r.latencies)
        ax.plot([100 * (i + 1) / len(ordered) for i in range(len(ordered))], ordered, label=r.label)
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.legend()
    for outcome, o in sorted(latency.get(HISTOGRAM, {}).items()):
        labels = [_bound(b) for b in o["bounds"]] + ["more"]
        hist.bar(labels, o["counts"], label=outcome, alpha=0.7)
    hist.set_title("quote_retry duration (OpenTelemetry histogram)", fontsize=9)
    hist.set_xlabel("bucket (upper bound)")
    hist.set_ylabel("calls")
    hist.tick_params(axis="x", labelrotation=90, labelsize=6)
    hist.legend()
    fig.tight_layout()
    path = Path("demo-latency.png").resolve()
    fig.savefig(path, dpi=100)
    print(f"\nlatency plot: {path}")


async def main(calls: int) -> None:
    print(
        f"A price service that fails {dependency.fail_rate:.0%} of calls and stalls for"
        f" {dependency.stall:.0f} s on {dependency.stall_rate:.0%} of them;"
        f" {calls} requests per run, {CONCURRENCY} at a time."
    )
    print(f"guarded by: {' > '.join(patterns_in_use())}\n")
    async with Service() as url:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            runs = [
                await drive(client, "/quote-unguarded", "without failsafe", calls),
                await drive(client, "/quote", "with failsafe", calls),
            ]
            orders: Counter[int] | None = None
            if hasattr(service, "orders_router"):  # the orders endpoint is mounted
                orders = await place_orders(client, 20)
            dependency_calls = dict(dependency.calls)
            # The same unguarded endpoint, guarded on the client's side instead: 502s retried
            # (GETs are idempotent), a stalled attempt cut at 500 ms and tried again, and a
            # breaker for the host that 30 % of failures alone do not open.
            transport = ResilientTransport(
                httpx.AsyncHTTPTransport(limits=limits),
                attempt_timeout=0.5,
                timeout=5,
                breaker=lambda host: consecutive_breaker(
                    failure_threshold=10, recovery_time=1, name="demo_host"
                ),
            )
            async with httpx.AsyncClient(base_url=url, transport=transport) as guarded:
                runs.append(
                    await drive(guarded, "/quote-unguarded", "httpx transport", max(1, calls // 4))
                )
            counters: dict[str, Any] = (await client.get("/metrics/failsafe")).json()
            latency: dict[str, Any] = (await client.get("/metrics/failsafe/latency")).json()
    print_results(runs)
    if orders is not None:
        print(f"  orders endpoint: {dict(sorted(orders.items()))}")
    print(f"  dependency calls (first two runs): {dependency_calls}")
    print(
        "  httpx transport: the unguarded endpoint through"
        " AsyncClient(transport=ResilientTransport(...))"
    )
    print_counters(counters)
    print_histogram(latency)
    plot(runs, latency)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--calls", type=positive_int, default=400, help="requests per run (default 400)"
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        help="N uvicorn workers sharing a partner's limit through Redis",
    )
    parser.add_argument("--redis", help="Redis URL for --workers (default: a local redis-server)")
    parser.add_argument(
        "--seconds", type=positive_int, default=5, help="seconds per mode for --workers"
    )
    parser.add_argument(
        "--overload", action="store_true", help="adaptive vs fixed concurrency under overload"
    )
    opts = parser.parse_args()
    if opts.overload:
        from overload_demo import main as overload_main

        overload_main()
    elif opts.workers:
        from workers_demo import main as workers_main

        asyncio.run(workers_main(opts.workers, opts.redis, opts.seconds))
    else:
        asyncio.run(main(opts.calls))
