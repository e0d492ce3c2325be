"""Turns results into the console table and docs/benchmarks.md."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from cases import BARE, Case
from measure import BLOCK, WARMUP
from plots import FIGURES

PACKAGES = (
    "failsafe-py",
    "tenacity",
    "stamina",
    "backoff",
    "hyx",
    "purgatory",
    "aiobreaker",
    "aiolimiter",
    "limits",
    "aiocache",
    "cashews",
    "opentelemetry-sdk",
)
HEADER = ("pattern (path)", "implementation", "ns/call", "net ns", "Ir/call", "net Ir", "budget")


@dataclass
class Result:
    case: Case
    ns: float | None = None  # median gross ns per call
    ir: float | None = None  # gross instructions per call
    error: str | None = None  # why the case has no ns (and no Ir)
    ir_error: str | None = None  # why the case has no Ir


@dataclass(frozen=True)
class Settings:
    runs: int
    calls: int
    ir_calls: tuple[int, int]
    jobs: int
    callgrind: bool


@dataclass(frozen=True)
class RunInfo:
    elapsed: float  # s, whole run
    timing: float  # s, the ns rounds
    callgrind: float  # s, the callgrind workers
    load: tuple[float, float]  # 1-minute load average before and after the ns rounds


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+,.0f}" if signed else f"{value:,.0f}"


def _net(results: dict[str, Result], result: Result, attr: str) -> float | None:
    base = results[result.case.baseline]
    own, ref = getattr(result, attr), getattr(base, attr)
    if own is None or ref is None or base is result:
        return None
    return float(own - ref)


def rows(results: dict[str, Result]) -> list[tuple[str, ...]]:
    """One tuple of cells per case, in table order; the group label only on a group's first row."""
    out: list[tuple[str, ...]] = []
    last_group = None
    for result in results.values():
        case = result.case
        group = f"{case.pattern} ({case.path})" if case.group != last_group else ""
        last_group = case.group
        if result.error:
            out.append((group, case.impl, f"n/a (error: {result.error})", "", "", "", ""))
            continue
        net_ir = _net(results, result, "ir")
        budget = ""
        if case.budget is not None:
            mark = "" if net_ir is None else (" ✓" if net_ir <= case.budget else " ✗")
            budget = f"≤ {case.budget:,}{mark}"
        ir = _num(result.ir) if result.ir_error is None else f"n/a (error: {result.ir_error})"
        out.append(
            (
                group,
                case.impl,
                _num(result.ns),
                _num(_net(results, result, "ns"), signed=True),
                ir,
                _num(net_ir, signed=True),
                budget,
            )
        )
    return out


def _error_at(row: tuple[str, ...]) -> int:
    """Index of a row's first n/a cell (an error spans the cells after it), else its length."""
    return next((i for i, c in enumerate(row) if c.startswith("n/a")), len(row))


def console_table(results: dict[str, Result]) -> str:
    """Aligned columns; an error spans the columns after it instead of widening them."""
    table = [HEADER, *rows(results)]
    widths = [
        max((len(row[i]) for row in table if i < _error_at(row)), default=0)
        for i in range(len(HEADER))
    ]
    lines = []
    for n, row in enumerate(table):
        cut = _error_at(row)
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row[:cut], widths, strict=False))
        ]
        lines.append("  ".join(cells + list(row[cut : cut + 1])).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results: dict[str, Result]) -> str:
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows(results):
        cells = [c.replace("|", "\\|") for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- machine ------------------------------------------------------------------------------------


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _python_build() -> str:
    config = sysconfig.get_config_var("CONFIG_ARGS") or ""
    pgo = "PGO" if "--enable-optimizations" in config else "no PGO"
    lto = "LTO" if "--with-lto" in config else "no LTO"
    return f"{platform.python_implementation()} {platform.python_version()} ({pgo}, {lto})"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _source() -> str:
    """The commit the measured failsafe was built from, and whether the tree had changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        )
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown commit"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src", "native", "setup.py")
    return f"commit {commit}" + (" plus uncommitted changes" if dirty else "")


def valgrind_version(valgrind: str | None) -> str:
    if valgrind is None:
        return "not found"
    proc = subprocess.run([valgrind, "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"


def machine(valgrind: str | None) -> list[str]:
    return [
        f"CPU: {_cpu()}, {os.cpu_count()} logical cores; {platform.platform()}",
        f"Python: {_python_build()}, `{sys.version.splitlines()[0]}`",
        "Event loop: asyncio default (`asyncio.run`, selector loop); callgrind: "
        + valgrind_version(valgrind),
        "Packages: " + ", ".join(f"{p} {_version(p)}" for p in PACKAGES),
        f"failsafe source: {_source()}",
    ]


def _reduced(results: dict[str, Result]) -> str:
    slow = sorted({(r.case.impl, r.case.divisor) for r in results.values() if r.case.divisor > 1})
    if not slow:
        return ""
    return (
        " Slow peers run fewer calls, for both measures: "
        + ", ".join(f"{impl} N/{div}" for impl, div in slow)
        + "."
    )


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _bare_line(results: dict[str, Result]) -> str:
    bare = results.get(BARE)
    if bare is None or bare.ns is None:
        return "Bare `await f()`: not measured."
    ir = f", **{bare.ir:,.0f} Ir/call**" if bare.ir is not None else ""
    return f"Bare `await f()` (gross): **{bare.ns:,.0f} ns/call**{ir}."


def markdown(
    results: dict[str, Result],
    settings: Settings,
    valgrind: str | None,
    info: RunInfo,
    command: str,
) -> str:
    n1, n2 = settings.ir_calls
    method = (
        "Protected function `async def f(): return 1` (decorator form where the implementation "
        "has one, else its `async with`). **ns/call** = median of "
        f"{settings.runs} runs x {settings.calls:,} calls, all cases interleaved in one process, "
        f"a fresh event loop and a fresh guard per run ({WARMUP} warm-up calls first, fewer for "
        "slow peers), the loop "
        f"yielding (`await asyncio.sleep(0)`) once every {BLOCK:,} calls. **Ir/call** = callgrind "
        f"instructions of a worker process running {n2:,} calls minus one running {n1:,}, "
        f"divided by {n2 - n1:,} (`PYTHONHASHSEED=0`; the `totals:` line of the output file). "
        "**net** = minus the bare `await f()` row, except the `timeout (fired)` rows: minus "
        "the same body without a timeout (`await asyncio.sleep(0)` inside `f`). "
        "The `retry (fail2)` function fails on attempts 1 and 2 and returns on attempt 3 of "
        "every call (a cycling counter, the same fixture for every library), so its net "
        "figures include those three calls and two raises. **budget** = the design's per-call "
        "instruction budget for the path (net Ir): ✓ within it, ✗ over it." + _reduced(results)
    )
    errors = [r for r in results.values() if r.error or r.ir_error]
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` (bench/README.md); do not edit by hand. "
        f"Whole run: {_duration(info.elapsed)} ({_duration(info.timing)} of ns rounds, "
        f"{_duration(info.callgrind)} of callgrind workers).",
        "",
        *[f"- {line}" for line in machine(valgrind)],
        f"- 1-minute load average before / after the ns rounds: {info.load[0]:.2f} / "
        f"{info.load[1]:.2f} (ns is wall time and moves with other work on the machine; "
        "Ir does not)",
        "",
        "## Method",
        "",
        method,
        "",
        "## Results",
        "",
        "Focused before/after measurements (listeners, latency histograms, trace events, "
        "keyed policies, expiring timeouts) are in [Cost studies](cost-studies.md).",
        "",
        _bare_line(results),
        "",
        markdown_table(results),
        "",
    ]
    if errors:
        parts += ["Rows marked n/a could not be measured in this run; the error is shown.", ""]
    parts += [
        "## Plots",
        "",
        "Drawn from the table above by `bench/plots.py` (net Ir: repeatable on a shared machine).",
        "",
    ]
    for name, alt in FIGURES.items():
        parts += [f"![{alt}](img/{name})", ""]
    return "\n".join(parts)
