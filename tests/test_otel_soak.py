"""Soak of the OpenTelemetry instrumentor, short enough for CI: distinct component names
created and dropped under a periodic reader (bench/soak_otel.py runs the full size)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "soak_otel.py"
# Under a sanitizer build everything runs many times slower and takes more memory: fewer names,
# time and memory not judged.
SANITIZED = "libasan" in os.environ.get("LD_PRELOAD", "")
NAMES = 3_000 if SANITIZED else 30_000


def _soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak_otel", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(300)
async def test_thirty_thousand_names_under_a_periodic_reader_stay_bounded() -> None:
    soak = _soak_module()
    figures = await soak.soak(NAMES, interval=0.25, max_seconds=240, max_components=100)
    assert not figures.stopped_early
    assert figures.names == NAMES
    # Totals only ever grew, and every call is in them once, gone components included.
    assert figures.monotonic
    assert figures.exported_total - figures.exported_before == figures.total_calls == NAMES
    # Bounded: 100 names with their own instruments (6 at most each), the overflow series,
    # and the listener event counters; not one series per name.
    # Counted from what the session already exported (components other tests keep alive).
    assert figures.series - figures.series_before <= 100 * 6 + 2 * 6 + 2
    if SANITIZED:
        return
    # The SDK gives a periodic collection its interval to finish: unbounded, nearly every one
    # times out; bounded, hardly any (a loaded machine may make one late).
    assert figures.collection_failures <= figures.collections // 4
    # Generous bounds for a loaded 2-core machine; without bounds, 30,000 names take hundreds
    # of MiB and collections of many seconds, each stalling the loop that creates a name.
    assert figures.rss_growth_mib < 120, figures
    assert figures.max_collection_ms < 5_000, figures
    assert figures.max_stall_ms < 1_000, figures
