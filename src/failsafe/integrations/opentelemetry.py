"""OpenTelemetry metrics for every failsafe component.

``FailsafeOtelInstrumentor().instrument(namespace="failsafe.service")`` exports each
component's counters as observable (asynchronous) OpenTelemetry counters named
``{namespace}.{component_name}.{pattern}.{metric}``, one per metric the pattern lists. The
callbacks read the C counters when the meter's reader collects, so guarded calls pay nothing
for instrumentation. Components sharing a name and pattern form one series (their counts are
summed), and a component that is garbage-collected leaves its counts in its series: exported
values never go backwards. Components created before and after ``instrument()`` are covered;
components report once they have a name (``name=``, or the function they decorate).

Bounded, however many names come and go (per-host names of keyed policies):

* at most ``max_components`` component names (all patterns together, 200 by default) get
  instruments of their own; the components of any further name are summed into the overflow
  series
  ``{namespace}._overflow.{pattern}.{metric}`` (``_overflow`` cannot be a component name), as
  OpenTelemetry's own cardinality limit folds attribute sets into an overflow point;
* a series whose components are all gone is read one last time at the next collection, its
  final counts kept as a plain number in the instrument that exported it (so totals stay
  monotonic), and the series itself is freed. OpenTelemetry cannot remove an instrument: a gone
  name keeps exporting its final value, which the cap bounds;
* creating a component never waits for a collection: its instruments are created at once when
  no collection is running, else by a background thread as soon as the collection ends.

With ``instrument(latency=True)``, each component also times its decorated calls (in C, into
fixed log-spaced buckets) and the instrumentor exports one explicit-bucket histogram per
component name and pattern, ``{namespace}.{component_name}.{pattern}.duration`` in seconds, by
``outcome`` (success, failure, rejected, cancelled): see ``failsafe.integrations._otel_latency``.
It needs the OpenTelemetry SDK's meter provider. Off by default; when off, calls are not timed.

With ``instrument(spans="events")`` (or ``"spans"``), retry attempts, hedge attempts, waits in
a bulkhead's queue or for a token, and refusals become span events (or child spans) of the
current span: see ``failsafe.integrations._otel_spans``. Off by default.

Listener events failsafe could not deliver are exported too, as
``{namespace}.listener_events.dropped`` and ``{namespace}.listener_events.lost`` (see
:func:`failsafe.events.totals`).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Final

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

from failsafe import __version__, _core, _native, events

__all__ = ["FailsafeOtelInstrumentor", "instrument_name"]

logger: Final = logging.getLogger("failsafe")

# OpenTelemetry's instrument name syntax; names compare case-insensitively.
MAX_NAME_LENGTH: Final = 255
_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.\-/]*")
MAX_NAMESPACE_LENGTH: Final = 128
# Names with instruments of their own, per export, all patterns together (see the module
# docstring): bounds the instruments (6 at most per name) and so the time a collection takes
# (the SDK's work per instrument dominates it), which also stalls the event loop's thread by
# competing for the GIL while it runs.
MAX_COMPONENTS: Final = 200
# The component part of the overflow series: not a valid component name (they start with a
# letter), so it never meets a real one.
OVERFLOW: Final = "_overflow"


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


class NameCap[G]:
    """The groups series are exported in, by (component name, pattern): the first ``limit``
    names (compared case-insensitively, all patterns together) get groups of their own, any
    other name joins its pattern's OVERFLOW group. Also the ids of the series held, so that a
    series joins once (a held series keeps its id; a series let go leaves ``seen``). Its
    owner's lock guards it."""

    __slots__ = ("groups", "limit", "named", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.named = 0  # names with groups of their own
        self.groups: dict[tuple[str, str], G] = {}  # by (name.lower(), pattern)
        self.seen: set[int] = set()

    def place(
        self, series: object, name: str, pattern: str, make: Callable[[str], G]
    ) -> tuple[G | None, bool]:
        """The group series joins, made by ``make(component part of the metric name)`` when
        new, and whether it is new; (None, False) when series is held already."""
        if id(series) in self.seen:
            return None, False
        self.seen.add(id(series))
        key = (name.lower(), pattern)
        group = self.groups.get(key)
        if group is not None:
            return group, False
        if self.named < self.limit:
            self.named += 1
        else:
            name, key = OVERFLOW, (OVERFLOW, pattern)
            group = self.groups.get(key)
            if group is not None:
                return group, False
        group = self.groups[key] = make(name)
        return group, True


class _Group:
    """The series exported under one component name (or the overflow) and pattern: one
    observable counter per metric, each the sum of the live series plus the final counts of
    those gone."""

    __slots__ = ("base", "export", "metrics", "name", "pattern", "series")

    def __init__(self, export: _Export, name: str, pattern: str, metrics_: tuple[str, ...]):
        self.export = export
        self.name = name
        self.pattern = pattern
        self.metrics = metrics_
        self.series: list[tuple[str, _native.Series]] = []  # (component name, series)
        self.base = [0] * len(metrics_)  # final counts of the series folded in

    def observer(self, index: int) -> Any:
        export = self.export

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            if not export.active:
                return ()
            return (Observation(self.value(index)),)

        return observe

    def value(self, index: int) -> int:
        # Only collections take this lock: a component being created never waits for it
        # (adders append to self.series, which is atomic, as is the remove() below).
        with self.export.fold_lock:
            live = 0
            for item in tuple(self.series):
                name, s = item
                counts = s.read()
                if s.live == 0 and not _core.is_current(name, self.pattern, s):
                    # Gone for good (no component can join it again): its final counts stay
                    # here as numbers, and the series is let go.
                    for j in range(len(self.base)):
                        self.base[j] += counts[j]
                    self.series.remove(item)
                    self.export.names.seen.discard(id(s))
                else:
                    live += counts[index]
            return self.base[index] + live


class _Export:
    """The instruments created on one meter under one namespace. Instruments cannot be removed
    from a meter: after ``uninstrument()`` they stay registered and observe nothing, and
    instrumenting the same meter and namespace again revives them."""

    def __init__(self, meter: Meter, namespace: str, max_components: int) -> None:
        self.meter = weakref.ref(meter)  # the meter provider owns its meters
        self.namespace = namespace
        self.max_components = max_components
        self.active = False
        # add_lock orders the adders (a component's creation, instrument()); fold_lock the
        # collections. Neither is held while calling the SDK, and they share no lock: a
        # collection, taking fold_lock once per callback, never makes a creation wait.
        self.add_lock = threading.Lock()
        self.fold_lock = threading.Lock()
        self.names: NameCap[_Group] = NameCap(max_components)
        self.latency: Any = None  # its LatencyExport, once latency=True was asked for
        self._create(
            f"{namespace}.listener_events.dropped",
            "failsafe listener events dropped: an EventManager had max_pending tasks running",
            self._totals_observer("dropped"),
        )
        self._create(
            f"{namespace}.listener_events.lost",
            "failsafe listener events lost: their task was cancelled or their loop closed",
            self._totals_observer("lost"),
        )

    def _totals_observer(self, key: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return ()
            if self.latency is not None and self.latency.active:
                self.latency.hook_readers()  # readers added to the provider since
            return (Observation(events.totals()[key]),)

        return observe

    def add(self, name: str, pattern: str, metrics_: tuple[str, ...], s: _native.Series) -> None:
        if self.meter() is None:
            return
        with self.add_lock:
            group, made = self.names.place(
                s, name, pattern, lambda part: _Group(self, part, pattern, metrics_)
            )
            if group is None:
                return
            group.series.append((name, s))
        if made:
            for index, metric in enumerate(group.metrics):
                what = "names past the cap" if group.name == OVERFLOW else repr(group.name)
                self._create(
                    instrument_name(self.namespace, group.name, pattern, metric),
                    f"failsafe {pattern} {what}: {metric}",
                    group.observer(index),
                )

    def _create(self, name: str, description: str, callback: Any) -> None:
        """Creates an observable counter, never waiting for a collection: the registrar
        thread creates it, and the caller waits for that only while no collection runs (a
        collection holds the SDK's lock that creating an instrument waits on). So when no
        collection runs and none was queued before it, the instrument exists on return."""
        meter = self.meter()
        if meter is None:
            return
        done, behind = _registrar.submit(self.meter, name, description, callback)
        if behind:
            return  # queued during a collection: created right after the ones before it
        # Seen held at two looks in a row: a collection, not the registrar's own brief hold
        # while it adds the instrument.
        held = False
        while not done.wait(_POLL):
            if _collecting(meter):
                if held:
                    return
                held = True
            else:
                held = False

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every queued instrument is created; returns whether they all are."""
        return _registrar.flush(timeout)


# How often a component's creation looks whether a collection has started meanwhile.
_POLL: Final = 0.0005


class _Registrar:
    """The thread that creates instruments, in the order asked for."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None

    def submit(
        self, meter: weakref.ref[Meter], name: str, description: str, callback: Any
    ) -> tuple[threading.Event, bool]:
        """Queues an instrument; returns its done event and whether others were queued
        before it (and are not created yet)."""
        done = threading.Event()
        with self._idle:
            behind = self._pending > 0
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="failsafe-otel-instruments", daemon=True
                )
                self._thread.start()
        self._queue.put((meter, name, description, callback, done))
        return done, behind

    def _run(self) -> None:
        while True:
            meter_ref, name, description, callback, done = self._queue.get()
            try:
                meter = meter_ref()
                if meter is not None:
                    meter.create_observable_counter(
                        name, callbacks=[callback], description=description
                    )
            except Exception:
                logger.exception("failsafe: creating the instrument %r failed", name)
            finally:
                meter = callback = None  # holds nothing while idle: meters die with their provider
                done.set()
                with self._idle:
                    self._pending -= 1
                    if not self._pending:
                        self._idle.notify_all()

    def flush(self, timeout: float | None) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout)


_registrar = _Registrar()


def _collecting(meter: Meter) -> bool:
    """Whether a collection is running on meter, without waiting (the SDK's measurement
    consumer holds its lock for a whole collection). Unknown SDKs: assumed not."""
    lock = getattr(getattr(meter, "_measurement_consumer", None), "_lock", None)
    locked = getattr(lock, "locked", None)
    return bool(locked()) if callable(locked) else False


class FailsafeOtelInstrumentor:
    """Exports failsafe's counters to OpenTelemetry. One per process: every construction
    returns the same instrumentor."""

    _instance: ClassVar[FailsafeOtelInstrumentor | None] = None
    _lock: ClassVar = threading.RLock()

    _export: _Export | None
    _spans: Any  # the trace listener while spans are on
    _exports: weakref.WeakKeyDictionary[Meter, dict[str, _Export]]  # by meter, then namespace

    def __new__(cls) -> FailsafeOtelInstrumentor:
        with cls._lock:
            if cls._instance is None:
                self = super().__new__(cls)
                self._export = None
                self._spans = None
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
        *,
        max_components: int = MAX_COMPONENTS,
        latency: bool = False,
        spans: str | None = None,
        tracer_provider: Any = None,
    ) -> None:
        """Exports every component's counters, for components existing now and later.

        ``meter`` wins over ``meter_provider``; with neither, the global meter provider is
        used. ``max_components``: how many component names get instruments of their own, the
        others being summed into the overflow series (see the module docstring); it applies
        to exports started from now on.

        ``latency=True`` also times every component's decorated calls and exports their
        latency histograms (see the module docstring); it needs an OpenTelemetry SDK meter.
        ``spans="events"`` reports retry and hedge attempts, waits and refusals as events of
        the current span, ``spans="spans"`` as child spans of it, on ``tracer_provider`` (the
        global one by default); ``None`` reports nothing.

        Calling it again while instrumented, with the same namespace and no other meter or
        meter provider, does nothing. With another namespace, meter or meter provider it
        re-targets: the export moves there (as ``uninstrument()`` then ``instrument()`` would,
        so a test suite that builds a provider per test gets metrics in each), and a warning
        says so.
        """
        namespace = _check_namespace(namespace)
        max_components = _core.check_int(max_components, "max_components", minimum=0)
        if not isinstance(latency, bool):
            raise TypeError(f"latency must be a bool, not {type(latency).__name__}")
        from failsafe.integrations import _otel_spans

        mode = _otel_spans.check_mode(spans)
        with self._lock:
            current = self._export
            if meter is None and (meter_provider is not None or current is None):
                provider = meter_provider or metrics.get_meter_provider()
                meter = provider.get_meter("failsafe", __version__)
            if current is not None:
                same_meter = meter is None or current.meter() is meter
                if same_meter and current.namespace == namespace:
                    self._set_latency(current, latency)
                    self._set_spans(mode, tracer_provider)
                    return
                logger.warning(
                    "failsafe: instrument() called again with another %s: the export moves"
                    " there (the previous one stops)",
                    "namespace" if same_meter else "meter",
                )
                if meter is None:
                    meter = current.meter()
                self.uninstrument()
            assert meter is not None
            by_namespace = self._exports.setdefault(meter, {})
            export = by_namespace.get(namespace)
            if export is None:
                export = by_namespace[namespace] = _Export(meter, namespace, max_components)
            export.active = True
            self._export = export
            # Hook first, then the series so far: a series born in between is added once
            # (add() skips a series it has), never missed.
            _core.on_new_series(self._on_new_series)
            for name, pattern, metrics_, s in _core.all_series():
                export.add(name, pattern, metrics_, s)
            self._set_latency(export, latency)
            self._set_spans(mode, tracer_provider)

    def _set_latency(self, export: _Export, on: bool) -> None:
        """Starts or stops timing calls and exporting their histograms on export."""
        if on == (export.latency is not None and export.latency.active):
            return
        if not on:
            _core.off_new_latency(self._on_new_latency)
            _core.disable_latency()
            export.latency.active = False
            return
        from failsafe.integrations import _otel_latency  # needs the SDK

        meter = export.meter()
        if export.latency is None and meter is not None:
            export.latency = _otel_latency.LatencyExport(
                meter, export.namespace, export.max_components
            )
        export.latency.active = True
        export.latency.hook_readers()
        _core.on_new_latency(self._on_new_latency)
        _core.enable_latency()
        for name, pattern, h in _core.all_latency():
            export.latency.add(name, pattern, h)

    def _set_spans(self, mode: str | None, tracer_provider: Any) -> None:
        from failsafe.integrations import _otel_spans

        if self._spans is not None:
            _otel_spans.stop(self._spans)
            self._spans = None
        if mode is not None:
            self._spans = _otel_spans.start(mode, tracer_provider)

    @property
    def latency(self) -> bool:
        """Whether calls are timed and their latency histograms exported."""
        export = self._export
        return export is not None and export.latency is not None and export.latency.active

    def uninstrument(self) -> None:
        """Stops exporting: the instruments observe nothing from the next collection on, and
        calls are no longer timed."""
        with self._lock:
            if self._export is None:
                return
            _core.off_new_series(self._on_new_series)
            self._set_latency(self._export, False)
            self._set_spans(None, None)
            self._export.active = False
            self._export = None

    def flush(self, timeout: float | None = None) -> bool:
        """Waits (up to timeout seconds) until the instruments of every component created so
        far exist, which is at once unless a collection was running when a component was
        created. Returns whether they all do."""
        export = self._export
        return True if export is None else export.flush(timeout)

    def _on_new_latency(self, name: str, pattern: str, h: _native.Latency) -> None:
        export = self._export
        if export is not None and export.latency is not None and export.latency.active:
            export.latency.add(name, pattern, h)

    def _on_new_series(
        self, name: str, pattern: str, metrics_: tuple[str, ...], s: _native.Series
    ) -> None:
        # Not under the instrumentor's lock: a component is never made to wait for it.
        export = self._export
        if export is not None:
            export.add(name, pattern, metrics_, s)
