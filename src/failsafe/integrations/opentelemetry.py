"""OpenTelemetry metrics for every failsafe component.

``FailsafeOtelInstrumentor().instrument(namespace="failsafe.service")`` exports each
component's counters as observable (asynchronous) OpenTelemetry counters named
``{namespace}.{component_name}.{pattern}.{metric}``, one per metric the pattern lists. The
callbacks read the C counters when the meter's reader collects, so guarded calls pay nothing
for instrumentation. Components sharing a name and pattern form one series (their counts are
summed), and a component that is garbage-collected leaves its counts in its series: exported
values never go backwards. Components created before and after ``instrument()`` are covered;
components report once they have a name (``name=``, or the function they decorate).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import weakref
from collections.abc import Iterable
from typing import ClassVar, Final

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
except ModuleNotFoundError as missing:  # pragma: no cover - depends on what is installed
    if (missing.name or "").partition(".")[0] != "opentelemetry":
        raise
    raise ModuleNotFoundError(
        "failsafe.integrations.opentelemetry needs the OpenTelemetry API:"
        " pip install 'failsafe-py[otel]'",
        name=missing.name,
    ) from missing

from failsafe import __version__, _core, _native

__all__ = ["FailsafeOtelInstrumentor", "instrument_name"]

logger: Final = logging.getLogger("failsafe")

# OpenTelemetry's instrument name syntax; names compare case-insensitively.
MAX_NAME_LENGTH: Final = 255
_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.\-/]*")
MAX_NAMESPACE_LENGTH: Final = 128


def _check_namespace(namespace: object) -> str:
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
    if not _NAME_RE.fullmatch(namespace) or len(namespace) > MAX_NAMESPACE_LENGTH:
        raise ValueError(
            f"namespace {namespace!r} is not a valid instrument name prefix: start with a"
            " letter, then use letters, digits, '_', '.', '-' or '/', at most"
            f" {MAX_NAMESPACE_LENGTH} characters"
        )
    return namespace


def instrument_name(namespace: str, component: str, pattern: str, metric: str) -> str:
    """``{namespace}.{component}.{pattern}.{metric}``, kept within OpenTelemetry's 255
    characters: a name that would be longer gets its component part cut and suffixed with a
    short hash of the whole name, so distinct components stay distinct."""
    name = f"{namespace}.{component}.{pattern}.{metric}"
    if len(name) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    room = MAX_NAME_LENGTH - len(f"{namespace}..{pattern}.{metric}") - len(digest) - 1
    if room < 1:
        raise ValueError(f"instrument name too long even with its component shortened: {name!r}")
    return f"{namespace}.{component[:room]}-{digest}.{pattern}.{metric}"


class _Instrument:
    """One observable counter: the sum of one counter of one or more series (more than one
    only when component names differ in case alone, as instrument names ignore case)."""

    __slots__ = ("export", "name", "sources")

    def __init__(self, export: _Export, name: str) -> None:
        self.export = export
        self.name = name
        self.sources: list[tuple[_native.Series, int]] = []

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self.export.active:
            return ()
        return (Observation(sum(s.read()[i] for s, i in self.sources)),)


class _Export:
    """The instruments created on one meter under one namespace. Instruments cannot be removed
    from a meter: after ``uninstrument()`` they stay registered and observe nothing, and
    instrumenting the same meter and namespace again revives them."""

    def __init__(self, meter: Meter, namespace: str) -> None:
        self.meter = weakref.ref(meter)  # the meter provider owns its meters
        self.namespace = namespace
        self.active = False
        self.instruments: dict[str, _Instrument] = {}
        self.seen: set[int] = set()  # ids of series already exported (series live forever)

    def add(self, name: str, pattern: str, metrics_: tuple[str, ...], s: _native.Series) -> None:
        meter = self.meter()
        if meter is None or id(s) in self.seen:
            return
        self.seen.add(id(s))
        for index, metric in enumerate(metrics_):
            full = instrument_name(self.namespace, name, pattern, metric)
            inst = self.instruments.get(full.lower())
            if inst is None:
                inst = self.instruments[full.lower()] = _Instrument(self, full)
                meter.create_observable_counter(
                    full,
                    callbacks=[inst.observe],
                    description=f"failsafe {pattern} '{name}': {metric}",
                )
            inst.sources.append((s, index))


class FailsafeOtelInstrumentor:
    """Exports failsafe's counters to OpenTelemetry. One per process: every construction
    returns the same instrumentor."""

    _instance: ClassVar[FailsafeOtelInstrumentor | None] = None
    _lock: ClassVar = threading.RLock()

    _export: _Export | None
    _exports: weakref.WeakKeyDictionary[Meter, dict[str, _Export]]  # by meter, then namespace

    def __new__(cls) -> FailsafeOtelInstrumentor:
        with cls._lock:
            if cls._instance is None:
                self = super().__new__(cls)
                self._export = None
                self._exports = weakref.WeakKeyDictionary()
                cls._instance = self
            return cls._instance

    @property
    def is_instrumented(self) -> bool:
        """Whether failsafe's counters are being exported."""
        return self._export is not None

    def instrument(
        self,
        namespace: str = "failsafe.service",
        meter_provider: MeterProvider | None = None,
        meter: Meter | None = None,
    ) -> None:
        """Exports every component's counters, for components existing now and later.

        ``meter`` wins over ``meter_provider``; with neither, the global meter provider is
        used. Calling it again while instrumented does nothing (call ``uninstrument()`` first
        to change the namespace or the meter).
        """
        namespace = _check_namespace(namespace)
        with self._lock:
            if self._export is not None:
                return
            if meter is None:
                provider = meter_provider or metrics.get_meter_provider()
                meter = provider.get_meter("failsafe", __version__)
            by_namespace = self._exports.setdefault(meter, {})
            export = by_namespace.get(namespace)
            if export is None:
                export = by_namespace[namespace] = _Export(meter, namespace)
            export.active = True
            self._export = export
            # Hook first, then the series so far: a series born in between is added once
            # (add() skips a series it has), never missed.
            _core.on_new_series(self._on_new_series)
            for name, pattern, metrics_, s in _core.all_series():
                export.add(name, pattern, metrics_, s)

    def uninstrument(self) -> None:
        """Stops exporting: the instruments observe nothing from the next collection on."""
        with self._lock:
            if self._export is None:
                return
            _core.off_new_series(self._on_new_series)
            self._export.active = False
            self._export = None

    def _on_new_series(
        self, name: str, pattern: str, metrics_: tuple[str, ...], s: _native.Series
    ) -> None:
        with self._lock:
            if self._export is not None:
                self._export.add(name, pattern, metrics_, s)
