"""Plots of the benchmark results, for the docs: reads the results table that bench/run.py wrote
to docs/benchmarks.md and draws PNGs into docs/img/.

    uv run --group bench python bench/plots.py [--doc docs/benchmarks.md] [--out docs/img]

bench/run.py calls it after writing docs/benchmarks.md. The figures use callgrind instruction
counts (net Ir per call: repeatable, unlike wall time on a shared machine).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
OUT = ROOT / "docs" / "img"
# Written into docs/benchmarks.md by bench/report.py, under "## Plots".
FIGURES = {
    "bench-peers.png": "failsafe beside the other libraries: net instructions per call (log scale)",
    "bench-budget.png": "failsafe's net instructions per call against the design's budget",
    "bench-keyed.png": "a breaker per host: keyed beside a dict of decorated functions",
}


@dataclass(frozen=True)
class Row:
    group: str  # "retry (ok)"
    implementation: str
    net_ir: float | None
    budget: float | None


def _number(cell: str) -> float | None:
    digits = re.sub(r"[^0-9.\-]", "", cell.replace("\u2212", "-"))
    return float(digits) if digits not in ("", "-", ".") else None


def read_rows(doc: Path) -> list[Row]:
    """The rows of the results table (the one whose header starts with "pattern (path)")."""
    rows: list[Row] = []
    group = ""
    in_table = False
    for line in doc.read_text().splitlines():
        if line.startswith("| pattern (path)"):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if set(cells[0]) <= {"-", ":"} and cells[0]:
            continue  # the alignment row
        if len(cells) < 7:
            continue
        group = cells[0] or group
        budget = re.search(r"≤\s*([\d,]+)", cells[6])
        rows.append(
            Row(
                group=group,
                implementation=cells[1],
                net_ir=_number(cells[5]),
                budget=_number(budget.group(1)) if budget else None,
            )
        )
    if not rows:
        raise SystemExit(f"{doc}: no results table found")
    return rows


def _groups(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        if r.net_ir is not None and r.net_ir > 0:
            out.setdefault(r.group, []).append(r)
    return out


def plot_peers(rows: list[Row], path: Path) -> None:
    """Per path with at least one other library: failsafe's first row and every other row."""
    import matplotlib.pyplot as plt

    groups = {
        g: rs
        for g, rs in _groups(rows).items()
        if any(r.implementation.startswith("failsafe") for r in rs)
        and any(not r.implementation.startswith("failsafe") for r in rs)
        and not g.startswith(("reference", "otel"))
    }
    # The fired-timeout rows' baseline (the body alone) is not a peer.
    groups = {
        g: [r for r in rs if not r.implementation.startswith("body alone")]
        for g, rs in groups.items()
    }
    labels: list[str] = []
    values: list[float] = []
    colors: list[str] = []
    for g, rs in groups.items():
        first = next(r for r in rs if r.implementation.startswith("failsafe"))
        for r in [first, *(r for r in rs if not r.implementation.startswith("failsafe"))]:
            labels.append(f"{g}: {r.implementation}" if r is first else f"    {r.implementation}")
            values.append(r.net_ir or 0.0)
            colors.append("#2e7d32" if r is first else "#9e9e9e")
    height = max(4.0, 0.22 * len(labels))
    fig, ax = plt.subplots(figsize=(10, height))
    y = range(len(labels))
    ax.barh(list(y), values, color=colors)
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("net instructions per call (callgrind Ir, log scale; lower is better)")
    ax.set_title("failsafe (green) beside the libraries a user would otherwise pick")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_budget(rows: list[Row], path: Path) -> None:
    """Every failsafe row that has a budget: its net Ir beside the budget."""
    import matplotlib.pyplot as plt

    budgeted = [
        r
        for r in rows
        if r.budget is not None and r.net_ir is not None and r.implementation.startswith("failsafe")
    ]
    labels = [f"{r.group}: {r.implementation}" for r in budgeted]
    fig, ax = plt.subplots(figsize=(10, max(4.0, 0.3 * len(labels))))
    y = list(range(len(labels)))
    ax.barh(
        y,
        [r.budget or 0 for r in budgeted],
        color="#e0e0e0",
        label="budget (net Ir)",
    )
    ax.barh(
        y,
        [r.net_ir or 0 for r in budgeted],
        height=0.45,
        color=["#2e7d32" if (r.net_ir or 0) <= (r.budget or 0) else "#c62828" for r in budgeted],
        label="measured (green: within, red: over)",
    )
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("net instructions per call (callgrind Ir)")
    ax.set_title("failsafe's hot paths against their per-call budgets")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_keyed(rows: list[Row], path: Path) -> None:
    """The keyed rows: each path (known key, new key, eviction churn) with every implementation
    measured on it, on one log scale."""
    import matplotlib.pyplot as plt

    keyed = [r for r in rows if r.group.startswith("keyed") and r.net_ir is not None]
    labels = [f"{r.group.removeprefix('keyed ')}: {r.implementation}" for r in keyed]
    colors = ["#2e7d32" if r.implementation.startswith("failsafe") else "#9e9e9e" for r in keyed]
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.35 * len(labels))))
    if not keyed:  # a run with --only that left them out
        ax.text(0.5, 0.5, "no keyed rows in this run", ha="center", transform=ax.transAxes)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    y = list(range(len(labels)))
    ax.barh(y, [max(r.net_ir or 0.0, 1.0) for r in keyed], color=colors)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("net instructions per call (callgrind Ir, log scale; lower is better)")
    ax.set_title("A breaker per host: failsafe's keyed (green) beside the alternatives")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--doc", type=Path, default=DOC, help="the benchmarks markdown to read")
    parser.add_argument("--out", type=Path, default=OUT, help="directory of the PNGs")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    rows = read_rows(args.doc)
    args.out.mkdir(parents=True, exist_ok=True)
    plot_peers(rows, args.out / "bench-peers.png")
    plot_budget(rows, args.out / "bench-budget.png")
    plot_keyed(rows, args.out / "bench-keyed.png")
    for name in FIGURES:
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
