"""Per-call cost of failsafe beside a bare await and the peers, in ns and callgrind Ir.

    uv run --group bench python bench/run.py [--quick] [--only PATTERN] [--no-callgrind]

Prints the table and, on a full run (or with --output), writes it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from cases import BY_KEY, CASES, Case
from measure import callgrind_total, describe, run_case
from report import Result, RunInfo, Settings, console_table, markdown

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
COMMAND = "uv run --group bench python bench/run.py"

FULL = Settings(runs=5, calls=100_000, ir_calls=(2_000, 12_000), jobs=2, callgrind=True)
QUICK = Settings(runs=3, calls=20_000, ir_calls=(500, 2_500), jobs=2, callgrind=True)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def select(only: list[str] | None) -> list[Case]:
    """Cases whose "pattern/path/impl" key contains one of `only`, plus the baselines they need."""
    if not only:
        return list(CASES)
    wanted = {c.key for c in CASES if any(o.lower() in c.key.lower() for o in only)}
    if not wanted:
        raise SystemExit(
            f"--only {only}: no case matches; groups: "
            + ", ".join(sorted({c.group for c in CASES}))
        )
    wanted |= {BY_KEY[k].baseline for k in wanted}
    return [c for c in CASES if c.key in wanted]


def time_cases(cases: list[Case], results: dict[str, Result], settings: Settings) -> None:
    samples: dict[str, list[float]] = {c.key: [] for c in cases}
    for run in range(settings.runs):
        log(f"timing: run {run + 1}/{settings.runs}")
        for case in cases:
            result = results[case.key]
            if result.error:
                continue
            calls = settings.calls // case.divisor
            try:
                samples[case.key].append(run_case(case, calls) / calls)
            except Exception as exc:
                result.error = describe(exc)
                log(f"  {case.key}: n/a ({result.error})")
    for key, values in samples.items():
        if values and not results[key].error:
            results[key].ns = statistics.median(values)


def count_instructions(
    cases: list[Case], results: dict[str, Result], settings: Settings, valgrind: str
) -> None:
    jobs = [
        (case, n // case.divisor)
        for case in cases
        if not results[case.key].error
        for n in settings.ir_calls
    ]
    # Longest first, so the pool's last jobs are short ones.
    jobs.sort(key=lambda job: -(results[job[0].key].ns or 0.0) * job[1])
    totals: dict[tuple[str, int], int] = {}
    with (
        tempfile.TemporaryDirectory(prefix="failsafe-bench-") as tmp,
        ThreadPoolExecutor(settings.jobs) as pool,
    ):
        futures: list[tuple[Case, int, Future[int]]] = [
            (case, calls, pool.submit(callgrind_total, valgrind, case, calls, Path(tmp)))
            for case, calls in jobs
        ]
        for done, (case, calls, future) in enumerate(futures, 1):
            try:
                totals[case.key, calls] = future.result()
            except Exception as exc:
                results[case.key].ir_error = describe(exc)
            log(f"callgrind: {done}/{len(futures)} {case.key} ({calls:,} calls)")
    for case in cases:
        n1, n2 = (n // case.divisor for n in settings.ir_calls)
        if (case.key, n1) in totals and (case.key, n2) in totals:
            results[case.key].ir = (totals[case.key, n2] - totals[case.key, n1]) / (n2 - n1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 runs x 20,000 calls, callgrind 500/2,500 calls; doc not written",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="only cases whose pattern/path/impl contains PATTERN (repeatable); doc not written",
    )
    parser.add_argument("--no-callgrind", action="store_true", help="ns only")
    parser.add_argument("--jobs", type=int, default=2, help="parallel callgrind workers")
    parser.add_argument(
        "--output",
        type=Path,
        help=f"markdown file to write (default {DOC.relative_to(ROOT)} on a full run)",
    )
    args = parser.parse_args(argv)

    base = QUICK if args.quick else FULL
    valgrind = None if args.no_callgrind else shutil.which("valgrind")
    if valgrind is None and not args.no_callgrind:
        log("valgrind not found: measuring ns only")
    settings = Settings(base.runs, base.calls, base.ir_calls, args.jobs, valgrind is not None)
    cases = select(args.only)
    results = {c.key: Result(c) for c in cases}

    start = time.monotonic()
    load_before = os.getloadavg()[0]
    time_cases(cases, results, settings)
    timed = time.monotonic()
    load_after = os.getloadavg()[0]
    if valgrind is not None:
        count_instructions(cases, results, settings, valgrind)
    end = time.monotonic()
    info = RunInfo(end - start, timed - start, end - timed, (load_before, load_after))

    print(console_table(results))
    print(f"\n{len(cases)} cases in {info.elapsed:.0f} s ({info.timing:.0f} s timing)")
    output = args.output
    if output is None and not (args.quick or args.only or args.no_callgrind):
        output = DOC
    if output is not None:
        command = COMMAND + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(markdown(results, settings, valgrind, info, command.strip()))
        log(f"wrote {output}")
        if args.no_callgrind or valgrind is None:
            log("no Ir measured: plots not redrawn (they plot Ir)")
            return 0
        try:
            import plots
        except ImportError:  # pragma: no cover - the bench group brings matplotlib
            log("matplotlib is missing: plots not redrawn (uv run --group bench ...)")
        else:
            plots.main(["--doc", str(output), "--out", str(output.parent / "img")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
