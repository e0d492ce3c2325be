"""Timeout and hedge on each event loop: the default loop and uvloop, beside asyncio.timeout.

    uv run python bench/loops.py [--python LABEL=PATH ...] [--output FILE]

For each interpreter (default: this one, labelled "this"; give several, e.g. the venvs of two
checkouts, to compare them in one run) and each loop it measures:

- Ir per call (callgrind, as bench/measure.py: (Ir(12,000) - Ir(2,000)) / 10,000, net of a bare
  ``await f()``, the loop yielding once every 1,000 calls) of a deadline not reached:
  ``@timeout(10)``, ``hedge(delay=10)`` answered by its first attempt, ``async with
  asyncio.timeout(10)``;
- CPU seconds (``time.process_time``, median of 5 runs) for 100 expiries one after another of a
  2 ms deadline around ``await asyncio.sleep(10)``: ``@timeout(0.002)`` and
  ``asyncio.timeout(0.002)``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

N1, N2 = 2_000, 12_000
BLOCK = 1_000
EXPIRIES = 100
ROUNDS = 5
LOOPS = ("asyncio", "uvloop")
CALLS = ("bare", "failsafe @timeout", "failsafe hedge", "asyncio.timeout")
FIRES = ("failsafe @timeout", "asyncio.timeout")


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def f() -> int:
    return 1


def _call(variant: str) -> Callable[[], Awaitable[Any]]:
    from failsafe.hedge import hedge
    from failsafe.timeout import timeout

    if variant == "bare":
        return f
    if variant == "failsafe @timeout":
        return timeout(10)(f)
    if variant == "failsafe hedge":
        return hedge(attempts=2, delay=10)(f)

    async def under_asyncio() -> int:
        async with asyncio.timeout(10):
            return await f()

    return under_asyncio


async def _calls(variant: str, n: int) -> None:
    g = _call(variant)
    for _ in range(500):  # warm-up, the same in both counts
        await g()
    done = 0
    while done < n:
        for _ in range(min(BLOCK, n - done)):
            await g()
        done += BLOCK
        await asyncio.sleep(0)


async def _expiries(variant: str) -> float:
    from failsafe.timeout import timeout

    async def hang() -> None:
        await asyncio.sleep(10)

    guarded = timeout(0.002)(hang)

    async def once() -> None:
        if variant == "asyncio.timeout":
            async with asyncio.timeout(0.002):
                await hang()
        else:
            await guarded()

    start = time.process_time()
    for _ in range(EXPIRIES):
        try:
            await once()
        except TimeoutError:
            pass
        else:
            raise AssertionError("the deadline did not fire")
    return time.process_time() - start


def _worker(args: list[str]) -> None:
    mode, variant, loop, n = args
    with asyncio.Runner(loop_factory=lambda: _new_loop(loop)) as runner:
        if mode == "calls":
            runner.run(_calls(variant, int(n)))
        else:
            print(statistics.median(runner.run(_expiries(variant)) for _ in range(ROUNDS)))


def _ir(python: str, variant: str, loop: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                python,
                __file__,
                "--worker",
                "calls",
                variant,
                loop,
                str(n),
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        m = re.search(r"^(?:totals|summary): (\d+)", out.read_text(), re.M)
        assert m is not None, "no totals in the callgrind output"
        return int(m.group(1))


def _cpu(python: str, variant: str, loop: str) -> float:
    cmd = [python, __file__, "--worker", "fire", variant, loop, "0"]
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        _worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--output", type=Path)
    opts = parser.parse_args()
    pythons = [p.split("=", 1) for p in opts.python] or [["this", sys.executable]]
    lines = [
        "| failsafe | loop | "
        + " | ".join(f"Ir {c}" for c in CALLS[1:])
        + " | "
        + " | ".join(f"CPU s, {EXPIRIES} expiries: {c}" for c in FIRES)
        + " |",
        "|---|---|" + "---:|" * (len(CALLS) - 1 + len(FIRES)),
    ]
    for label, python in pythons:
        for loop in LOOPS:
            per_call = {
                c: (_ir(python, c, loop, N2) - _ir(python, c, loop, N1)) / (N2 - N1) for c in CALLS
            }
            cells = [f"+{per_call[c] - per_call['bare']:,.0f}" for c in CALLS[1:]]
            cells += [f"{_cpu(python, c, loop):.4f}" for c in FIRES]
            lines.append(f"| {label} | {loop} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    print()
    print(table)
    if opts.output is not None:
        opts.output.write_text(table + "\n")


if __name__ == "__main__":
    main()
