"""Measures one case: wall time in this process, instructions in a callgrind subprocess.

Run as a script (``python bench/measure.py CASE_KEY CALLS``) it is the callgrind worker: it runs
the case once, exactly as a timing run does, and exits non-zero with the error on stderr if the
case fails.
"""

from __future__ import annotations

import asyncio
import builtins
import gc
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from cases import BY_KEY, Case

BLOCK = 1_000  # the loop yields (await asyncio.sleep(0)) once every BLOCK calls
WARMUP = 500  # calls before the measured ones (/ case.divisor), whatever the measured count
CHECKS = 3  # calls whose results are compared with case.expect before measuring
WORKER_ERROR = 3  # the worker's exit code when the case fails

_DRIVE = """
async def _drive(_blocks, _sleep, {names}):
    r = None
    for _size in _blocks:
        for _ in range(_size):
{body}
        await _sleep(0)
    return r

async def _check(_calls, {names}):
    out = []
    for _size in (_calls,):
        for _ in range(_size):
            r = None
{body}
            out.append(r)
    return out
"""

Driver = Callable[..., Coroutine[Any, Any, Any]]


class CaseError(Exception):
    """The case could not be measured (import error, wrong result, crash)."""


@cache
def _drivers(body: str, names: tuple[str, ...]) -> tuple[Driver, Driver]:
    """Compiles the loop with the case's body inlined (no call per iteration but the body's)."""
    source = _DRIVE.replace("{names}", ", ".join(names))
    source = source.replace("{body}", textwrap.indent(body, " " * 12))
    namespace: dict[str, Any] = {"__builtins__": builtins}
    exec(compile(source, f"<driver {body!r}>", "exec"), namespace)
    return namespace["_drive"], namespace["_check"]


def _bind(bound: object) -> dict[str, Any]:
    return dict(bound) if isinstance(bound, Mapping) else {"g": bound}


def blocks(calls: int) -> list[int]:
    full, rest = divmod(calls, BLOCK)
    return [BLOCK] * full + ([rest] if rest else [])


def run_case(case: Case, calls: int) -> int:
    """Runs `calls` calls of the case in a fresh loop with a fresh guard; returns elapsed ns."""

    async def main() -> int:
        names = _bind(case.setup())
        drive, check = _drivers(case.body, tuple(sorted(names)))
        got = await check(CHECKS, **names)
        if any(r != case.expect for r in got):
            raise CaseError(f"returned {got!r}, expected {case.expect!r}")
        await drive(blocks(WARMUP // case.divisor), asyncio.sleep, **names)
        gc.collect()
        start = time.perf_counter_ns()
        await drive(blocks(calls), asyncio.sleep, **names)
        return time.perf_counter_ns() - start

    return asyncio.run(main())


def describe(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, CaseError) else f"{type(exc).__name__}: {exc}"
    text = text.strip().rstrip(":")
    return text.splitlines()[0][:160]


# --- callgrind ----------------------------------------------------------------------------------

_TOTAL = re.compile(rb"^(totals|summary):\s+(\d+)", re.MULTILINE)


def parse_total(path: Path) -> int:
    """Instructions (Ir) of a callgrind output file: its totals: line, else its summary: line."""
    found = dict(_TOTAL.findall(path.read_bytes()))
    total = found.get(b"totals") or found.get(b"summary")
    if total is None:
        raise CaseError(f"no totals/summary line in {path}")
    return int(total)


def callgrind_total(valgrind: str, case: Case, calls: int, out_dir: Path) -> int:
    """Total Ir of one worker process running `calls` calls of the case."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", case.key).strip("-")
    out = out_dir / f"{slug}.{calls}.out"
    cmd = [
        valgrind,
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(Path(__file__).resolve()),
        case.key,
        str(calls),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        lines = [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith("==")]
        raise CaseError(lines[-1] if lines else f"worker exited with {proc.returncode}")
    return parse_total(out)


def _worker(key: str, calls: int) -> int:
    try:
        run_case(BY_KEY[key], calls)
    except Exception as exc:
        print(describe(exc), file=sys.stderr)
        return WORKER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], int(sys.argv[2])))
