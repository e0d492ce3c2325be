"""The demo (`uv run python examples/demo.py`, the README's run command) runs to completion
well within a minute, and its tables make sense."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e_server import Receiver
from failsafe._core import PATTERNS

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(
    r"^\s+(?P<label>without failsafe|with failsafe|httpx transport)\s+(?P<calls>\d+)"
    r"\s+(?P<success>[\d.]+)%"
    r"\s+(?P<fresh>[\d.]+)%\s+(?P<p50>[\d.]+)\s+(?P<p99>[\d.]+)\s",
    re.M,
)


# Under a sanitizer build everything runs many times slower: a shorter run, a looser bound.
SANITIZED = "libasan" in os.environ.get("LD_PRELOAD", "")


def _run_timed(
    cmd: list[str], env: dict[str, str], cwd: Path
) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Runs cmd; its result, its wall time and the seconds its main thread waited for a CPU
    (Linux's schedstat, read until it exits; 0.0 where there is none)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stat = Path(f"/proc/{proc.pid}/schedstat")
    starved = 0.0
    while True:
        with contextlib.suppress(OSError, IndexError, ValueError):  # gone, or no schedstat
            starved = int(stat.read_text().split()[1]) / 1e9
        try:
            out, err = proc.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() - start > 500:
                proc.kill()
                raise
    elapsed = time.monotonic() - start
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), elapsed, starved


@pytest.mark.timeout(600)
def test_demo_runs_and_reports_sensible_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    args = ["--calls", "100"] if SANITIZED else []
    # Run elsewhere than the checkout: the demo writes its latency plot where it runs.
    done, elapsed, starved = _run_timed(
        [sys.executable, str(ROOT / "examples" / "demo.py"), *args], env, tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if importlib.util.find_spec("matplotlib") is not None:  # the plot is drawn when it can be
        assert (tmp_path / "demo-latency.png").stat().st_size > 0
    # Its own time: the wall time less the time it waited for a CPU (a loaded machine).
    took = elapsed - starved
    assert took < (400 if SANITIZED else 60), f"the demo took {took:.1f} s ({elapsed:.1f} s)"
    out = done.stdout

    rows = {m["label"]: m for m in ROW.finditer(out)}
    assert set(rows) == {"without failsafe", "with failsafe", "httpx transport"}, out
    for row in rows.values():
        assert int(row["calls"]) > 0
        for column in ("success", "fresh"):
            assert 0.0 <= float(row[column]) <= 100.0
        assert 0.0 < float(row["p50"]) <= float(row["p99"])
    without, with_ = rows["without failsafe"], rows["with failsafe"]
    assert float(with_["success"]) >= float(without["success"])
    assert float(without["success"]) < 100.0  # the dependency does fail
    # A timeout bounds each attempt: the stalls (1 s) do not reach the guarded tail.
    assert float(with_["p99"]) < float(without["p99"])
    # The unguarded endpoint again, a quarter of the load, through the httpx transport.
    assert int(rows["httpx transport"]["calls"]) == int(without["calls"]) // 4

    # Every pattern present in this failsafe shows its counters, read back from OpenTelemetry.
    counters = out[out.index("failsafe counters") :]
    shown = {line.split()[0] for line in counters.splitlines()[1:] if line.startswith("  ")}
    present = {p for p in PATTERNS if importlib.util.find_spec(f"failsafe.{p}") is not None}
    if importlib.util.find_spec("failsafe.ratelimit") is not None:
        import failsafe.ratelimit

        if not hasattr(failsafe.ratelimit, "tokenbucket"):
            present.discard("ratelimit")  # its exceptions only: no limiter to guard with
    assert present <= shown, counters
    retry_line = next(line for line in counters.splitlines() if "quote_retry" in line)
    transport = [line.split() for line in counters.splitlines() if "demo_host" in line]
    assert [line[:2] for line in transport] == [["circuitbreaker", "demo_host"]], counters
    # Every request through the transport passed its host's breaker at least once.
    seen = {k: int(v) for k, v in (f.split("=") for f in transport[0][2:])}
    assert seen["success"] + seen["failure"] + seen["rejected"] >= int(
        rows["httpx transport"]["calls"]
    ), counters
    assert re.search(r"attempt=[1-9]\d*", retry_line)
    assert re.search(r"success=[1-9]\d*", retry_line)

    # The retry's latency histogram, timed in C and read back from OpenTelemetry: every
    # guarded request is one call of it, in a bucket.
    histogram = out[out.index("latency histogram of") :]
    calls = {m[1]: int(m[2]) for m in re.finditer(r"^  (\w+): (\d+) calls", histogram, re.M)}
    assert calls.get("success", 0) > 0, histogram
    assert sum(calls.values()) <= int(with_["calls"]), histogram  # a cache hit skips it
    assert "cancelled" not in calls

    # The README's orders endpoint is served once hedge, failfast and featuretoggle exist.
    orders_patterns = ("hedge", "failfast", "featuretoggle")
    orders = re.search(r"orders endpoint: \{(?P<statuses>[^}]*)\}", out)
    if all(p in present for p in orders_patterns):
        assert orders is not None, out
        assert re.search(r"\b200: [1-9]", orders["statuses"]), orders["statuses"]
    else:
        assert orders is None


@pytest.mark.timeout(600)
def test_demo_exports_over_otlp_when_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with Receiver() as receiver:
        env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] = receiver.endpoint
        env["OTEL_METRIC_EXPORT_INTERVAL"] = "600000"  # the export at exit only
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "demo.py"), "--calls", "40"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=500,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        metrics = receiver.latest()
        assert receiver.resource_attributes()["service.name"] == "failsafe-service"
    success = metrics["failsafe.service.quote_retry.retry.success"]
    assert success.sum.is_monotonic
    assert sum(p.as_int for p in success.sum.data_points) > 0
    assert "failsafe.service.quote_timeout.timeout.fired" in metrics


@pytest.mark.parametrize("calls", ["0", "-5", "many"])
def test_demo_rejects_a_bad_call_count_with_a_usage_message(calls: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--calls", calls],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2  # argparse's usage error
    assert "Traceback" not in done.stderr
    assert "--calls" in done.stderr
    assert "usage:" in done.stderr


OVERLOAD_ROW = re.compile(
    r"^\s+(?P<label>no limit|bulkhead\(50\), fixed|concurrency_limit, adaptive)\s+"
    r"(?P<goodput>[\d.]+) /s\s+(?P<p99>[\d]+ ms|-)\s",
    re.M,
)


def test_demo_overload_compares_adaptive_and_fixed(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--overload"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {m["label"]: m for m in OVERLOAD_ROW.finditer(done.stdout)}
    assert len(rows) == 3, done.stdout
    adaptive = rows["concurrency_limit, adaptive"]
    fixed = rows["bulkhead(50), fixed"]
    assert float(adaptive["goodput"]) >= 90
    assert float(rows["no limit"]["goodput"]) < 10  # collapse
    assert int(adaptive["p99"].split()[0]) * 3 < int(fixed["p99"].split()[0])
