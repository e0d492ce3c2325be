"""Ir per call of chosen cases under several interpreters (checkouts) in one run, net of the
bare await measured by the same interpreter: a before/after table.

    uv run python bench/compare.py --only listeners \
        --python before=../before/.venv/bin/python --python after=.venv/bin/python

Each interpreter runs this checkout's bench/measure.py (so cases added since the "before"
checkout are measured there too) with its own installed failsafe; same method as run.py's Ir
column (callgrind, the difference of two call counts).

With `--keep DIR` the callgrind outputs stay in DIR and a later run reuses every complete one
(same interpreter path, case and call count), so a long comparison can be stopped and resumed,
or an "after" interpreter added to an earlier run without measuring "before" again.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cases import BARE, CASES, Case
from measure import CaseError, parse_total

HERE = Path(__file__).resolve().parent


def _total(valgrind: str, python: str, case: Case, calls: int, out_dir: Path) -> int:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{python}-{case.key}").strip("-")
    out = out_dir / f"{slug}.{calls}.out"
    if out.exists():
        try:
            return parse_total(out)
        except (CaseError, ValueError):
            pass  # cut short by an earlier run: measure again
    cmd = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", python]
    cmd += [str(HERE / "measure.py"), case.key, str(calls)]
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        out.unlink(missing_ok=True)  # a failed run has totals too: never reuse it
        lines = [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith("==")]
        raise CaseError(lines[-1] if lines else f"worker exited with {proc.returncode}")
    return parse_total(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--python", action="append", required=True, metavar="LABEL=PATH")
    parser.add_argument("--only", action="append", required=True, metavar="PATTERN")
    parser.add_argument("--calls", default="2000,12000", help="the two call counts")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep and reuse outputs here")
    args = parser.parse_args(argv)
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("valgrind not found")
    pythons = [tuple(p.split("=", 1)) for p in args.python]
    n1, n2 = (int(n) for n in args.calls.split(","))
    cases = [c for c in CASES if c.key == BARE or any(p in c.key for p in args.only)]
    jobs = [(label, py, c, n) for label, py in pythons for c in cases for n in (n1, n2)]
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        out_dir = args.keep if args.keep is not None else Path(tmp)
        futures = {
            (label, c.key, n): pool.submit(_total, valgrind, py, c, n, out_dir)
            for label, py, c, n in jobs
        }
        ir: dict[tuple[str, str], float | str] = {}
        for label, _py in pythons:
            for c in cases:
                try:
                    a, b = futures[label, c.key, n1].result(), futures[label, c.key, n2].result()
                    ir[label, c.key] = (b - a) / (n2 - n1)
                except CaseError as exc:
                    ir[label, c.key] = f"n/a ({exc})"
    labels = [label for label, _ in pythons]
    print("| case | " + " | ".join(f"{label} net Ir" for label in labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for c in cases:
        if c.key == BARE:
            continue
        cells = []
        for label in labels:
            v, bare = ir[label, c.key], ir[label, BARE]
            ok = isinstance(v, float) and isinstance(bare, float)
            cells.append(f"{v - bare:+,.0f}" if ok else str(v))  # type: ignore[operator]
        print(f"| {c.pattern} ({c.path}): {c.impl} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
