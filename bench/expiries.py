"""Ir per expiry when N timeouts fire together, for N = 10, 1,000, 100,000: N tasks enter
``async with T`` (one shared failsafe timeout) or ``asyncio.timeout`` and await a future that
never completes; their deadlines pass and each task catches the TimeoutError.

- Ir per expiry = (Ir(K2 rounds) - Ir(K1 rounds)) / ((K2 - K1) * N) under callgrind, one
  warm-up round in both (``PYTHONHASHSEED=0``).
- net = minus the same N tasks cancelled by hand (``task.cancel()``, the CancelledError caught):
  what the deadline machinery adds to the cancellation itself.
- net of a callback = minus the same N tasks cancelled from one loop callback that the first
  task schedules with ``call_soon`` at its first step, as a timer armed at entry is: the same
  loop turns and one Handle per batch, the part of a fired deadline that is asyncio's own (a
  timer's callback runs one loop turn after the step that armed it; the by-hand baseline cancels
  in the turn the tasks start).
- ``--delay 0``: every deadline is due at entry (deterministic). ``--delay 0.001``: a real
  deadline; under callgrind the N entries take longer than natively, so their deadlines spread
  and small batches fire over several loop iterations.

``--python LABEL=PATH`` (repeatable) measures several checkouts in one run::

    uv run python bench/expiries.py --python before=../old/.venv/bin/python \
        --python after=.venv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Rounds (K1, K2) per N: at N = 1,000 ten rounds apart, as the cyclic GC collects every few
# hundred allocations and the cost of a collection depends on where in a batch it falls.
ROUNDS = {10: (20, 120), 1_000: (2, 12), 100_000: (0, 1)}
VARIANTS = ("failsafe", "asyncio.timeout", "cancelled by hand", "cancelled from a callback")


async def _failsafe(t: object, fut: asyncio.Future[None]) -> int:
    try:
        async with t:  # type: ignore[attr-defined]
            await fut
    except TimeoutError:
        return 1
    return 0


async def _asyncio(delay: float, fut: asyncio.Future[None]) -> int:
    try:
        async with asyncio.timeout(delay):
            await fut
    except TimeoutError:
        return 1
    return 0


async def _cancelled(fut: asyncio.Future[None]) -> int:
    try:
        await fut
    except asyncio.CancelledError:
        return 1
    return 0


def _cancel_all(tasks: list[asyncio.Task[int]]) -> None:
    for task in tasks:
        task.cancel()


async def _cancelled_later(fut: asyncio.Future[None], tasks: list[asyncio.Task[int]] | None) -> int:
    if tasks is not None:
        asyncio.get_running_loop().call_soon(_cancel_all, tasks)
    try:
        await fut
    except asyncio.CancelledError:
        return 1
    return 0


async def _rounds(variant: str, n: int, rounds: int, delay: float) -> None:
    from failsafe.timeout import timeout

    shared = timeout(delay)
    loop = asyncio.get_running_loop()
    for _ in range(rounds + 1):
        futs = [loop.create_future() for _ in range(n)]
        if variant == "failsafe":
            tasks = [loop.create_task(_failsafe(shared, f)) for f in futs]
        elif variant == "asyncio.timeout":
            tasks = [loop.create_task(_asyncio(delay, f)) for f in futs]
        elif variant == "cancelled from a callback":
            tasks = []
            tasks[:] = [
                loop.create_task(_cancelled_later(f, None if i else tasks))
                for i, f in enumerate(futs)
            ]
        else:
            tasks = [loop.create_task(_cancelled(f)) for f in futs]
            await asyncio.sleep(0)
            for task in tasks:
                task.cancel()
        fired = 0
        for task in tasks:
            fired += await task
        if fired != n:
            raise RuntimeError(f"{fired} of {n} expired")


def _total(python: str, variant: str, n: int, rounds: int, delay: float, tmp: Path) -> int:
    out = tmp / f"{abs(hash((python, variant, n, rounds)))}.out"
    valgrind = shutil.which("valgrind") or "valgrind"
    cmd = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", python, __file__]
    cmd += ["--worker", variant, str(n), str(rounds), str(delay)]
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    for line in out.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--worker":
        variant, n, rounds, delay = args[1], int(args[2]), int(args[3]), float(args[4])
        asyncio.run(_rounds(variant, n, rounds, delay))
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--python", action="append", metavar="LABEL=PATH")
    parser.add_argument("--n", action="append", type=int, help="batch sizes (default all)")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--jobs", type=int, default=2)
    opts = parser.parse_args(args)
    pythons = [tuple(p.split("=", 1)) for p in opts.python or [f"this={sys.executable}"]]
    sizes = opts.n or list(ROUNDS)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(opts.jobs) as pool:
        futures = {
            (label, v, n, k): pool.submit(_total, py, v, n, k, opts.delay, Path(tmp))
            for label, py in pythons
            for n in sizes
            for v in VARIANTS
            for k in ROUNDS[n]
        }
        per: dict[tuple[str, str, int], float] = {}
        for label, _py in pythons:
            for n in sizes:
                k1, k2 = ROUNDS[n]
                for v in VARIANTS:
                    a, b = futures[label, v, n, k1].result(), futures[label, v, n, k2].result()
                    per[label, v, n] = (b - a) / ((k2 - k1) * n)
    # (measured variant, baseline) per column: net of a task cancelled by hand, then of one
    # cancelled from a loop callback.
    columns = [(v, VARIANTS[2]) for v in VARIANTS[:2]] + [(v, VARIANTS[3]) for v in VARIANTS[:2]]
    print(
        f"delay {opts.delay:g} s; Ir per expiry, net of a task cancelled by hand | from a callback"
    )
    heads = [f"{label}: {v} - {b.split()[-1]}" for label, _ in pythons for v, b in columns]
    print("| N | " + " | ".join(heads) + " |")
    print("|---:|" + "---:|" * len(heads))
    for n in sizes:
        cells = [
            f"{per[label, v, n] - per[label, b, n]:+,.0f}"
            for label, _ in pythons
            for v, b in columns
        ]
        print(f"| {n:,} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
