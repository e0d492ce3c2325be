"""Machinery shared by every pattern: names, validation, guards, counters, listeners."""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import logging
import math
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

from failsafe import _native
from failsafe._types import Decorated
from failsafe.stats import PolicyStats, attribute

# Pattern indexes of the C module's global "somebody listens" flags, defined by the C module.
PATTERNS: Final[dict[str, int]] = _native.PATTERNS


def counter_indexes(
    pattern: str, *names: str, table: dict[str, tuple[str, ...]] = _native.METRICS
) -> tuple[int, ...]:
    """The C counter index of each metric name of pattern (the C module defines the order;
    table=_native.STORE_METRICS for the stores' own counters)."""
    metrics = table[pattern]
    return tuple(metrics.index(name) for name in names)


# OpenTelemetry instrument names: an ASCII letter, then letters, digits, '_', '.', '-', '/'.
# A component name is one segment of such a name, so the whole name stays valid.
_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.\-/]{0,62}")
_NAME_STRIP: Final = re.compile(r"[^A-Za-z0-9_.\-/]+")


# Names already validated: policies are often built per use (`async with timeout(...)`).
_valid_names: set[str] = set()


def check_name(name: object) -> str | None:
    """Validates an explicit component name; None stays None."""
    if name is None or name in _valid_names:
        return name
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"name {name!r} is not a valid metric name segment: start with a letter, then use"
            " letters, digits, '_', '.', '-' or '/', at most 63 characters"
        )
    if len(_valid_names) < 4096:
        _valid_names.add(name)
    return name


def name_from(fn: Callable[..., Any], pattern: str) -> str:
    """Default component name from a function's qualified name, made metric-safe.

    A name that lost information on the way (characters replaced, a cut to 63 characters, or
    the pattern put in front) ends with ``-`` and a short hash of the qualified name, so that
    distinct functions keep distinct names (and metrics series). Dropping ``<locals>`` and
    leading or trailing ``_`` keeps a name as it is.
    """
    raw = str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or pattern)
    return _name_of(raw, pattern)


@functools.lru_cache(maxsize=1024)  # the same function names a policy per key of a registry
def _name_of(raw: str, pattern: str) -> str:
    readable = raw.replace(".<locals>.", ".")
    substituted = _NAME_STRIP.sub("_", readable)
    cleaned = substituted.strip("_.-/")
    lossy = substituted != readable
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"{pattern}_{cleaned}" if cleaned else pattern
        lossy = True
    if not lossy and len(cleaned) <= 63:
        return cleaned
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[: 63 - len(digest) - 1].rstrip('_.-/')}-{digest}"


# Slots of Component's own state, for subclasses that avoid a per-instance __dict__ (policies
# built per use, like `async with timeout(...)`).
COMPONENT_SLOTS: Final = ("_explicit_name", "_listeners", "_event_manager", "_factory_listeners")


def is_async_callable(obj: object) -> bool:
    """An async function, or an object (not a class) whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(obj) or (
        not inspect.isroutine(obj)
        and not isinstance(obj, type)
        and inspect.iscoroutinefunction(getattr(obj, "__call__", None))  # noqa: B004
    )


def check_async(fn: object, pattern: str) -> Callable[..., Any]:
    """Rejects what cannot be decorated: only async callables are guarded."""
    if not callable(fn):
        raise TypeError(f"@{pattern} decorates an async function, not {type(fn).__name__}")
    if not is_async_callable(fn):
        raise TypeError(
            f"@{pattern} requires an async function (async def), got {fn!r}: "
            "failsafe guards coroutines only"
        )
    return fn


def make_guard(fn: Callable[..., Any], policy: Any) -> Any:
    """Wraps fn in a C guard bound to policy, looking like fn to inspect, FastAPI and mypy."""
    guard = _native.Guard(fn, policy)
    functools.update_wrapper(guard, fn)
    inspect.markcoroutinefunction(guard)
    return guard


INT64_MAX: Final = 2**63 - 1
NS_PER_S: Final = 1_000_000_000


def _bound(limit: float) -> str:
    """A bound as a person reads it: 2**63 - 1 rather than 9223372036854775807."""
    if isinstance(limit, int) and limit > 2**20:
        for k in range(21, 130):
            if limit == 2**k:
                return f"2**{k}"
            if limit == 2**k - 1:
                return f"2**{k} - 1"
    return f"{limit:g}" if isinstance(limit, float) else str(limit)


def check_number(
    value: object,
    param: str,
    *,
    allow_zero: bool = True,
    allow_none: bool = False,
    allow_inf: bool = False,
    integer: bool = False,
    maximum: float | None = None,
) -> Any:
    """Validates a non-negative number, naming param in the error.

    An integer is at most ``maximum`` (default 2**63 - 1: every count the C engines keep fits
    its C type, never wraps); a float is at most ``maximum`` when given. An int too large for
    a float counts as infinite (float(2**1024) would raise OverflowError).
    """
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{param} must be a number, not None")
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an int" if integer else "a number"
        raise TypeError(f"{param} must be {kind}, not {type(value).__name__}")
    if not integer and isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            value = math.inf if value > 0 else -math.inf
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{param} must not be NaN")
    if isinstance(value, float) and math.isinf(value) and not allow_inf:
        raise ValueError(f"{param} must be finite, got {value}")
    if value < 0:
        raise ValueError(f"{param} must be >= 0, got {value}")
    if value == 0 and not allow_zero:
        raise ValueError(f"{param} must be > 0, got {value}")
    limit = INT64_MAX if integer and maximum is None else maximum
    if limit is not None and value > limit and not (allow_inf and math.isinf(value)):
        raise ValueError(f"{param} must be at most {_bound(limit)}, got {value}")
    return value


def check_int(
    value: object,
    param: str,
    *,
    minimum: int = 1,
    maximum: int = INT64_MAX,
    allow_none: bool = False,
) -> Any:
    """Validates an int count in [minimum, maximum] (maximum: what its C field holds)."""
    if value is None and allow_none:
        return None
    checked: int = check_number(value, param, integer=True, maximum=maximum)
    if checked < minimum:
        bound = "> 0" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{param} must be {bound}, got {checked}")
    return checked


def check_ns(
    value: object,
    param: str,
    *,
    allow_zero: bool = False,
    min_ns: int = 0,
    max_ns: int = INT64_MAX,
    saturate: bool = False,
) -> int:
    """A duration in seconds, validated and converted to integer nanoseconds in [0, max_ns]
    (a positive duration is at least 1 ns; one shorter than min_ns is a ValueError).

    A duration beyond max_ns is a ValueError naming param; with ``saturate`` (the parameters
    that take ``inf`` to mean "never"), inf and every longer duration are max_ns instead.
    """
    secs = check_number(value, param, allow_zero=allow_zero, allow_inf=saturate)
    ns = float(secs) * NS_PER_S  # inf for inf or any duration beyond the float range
    if ns > max_ns:
        if saturate:
            return max_ns
        raise ValueError(f"{param} must be at most {max_ns / NS_PER_S:.4g} seconds, got {secs}")
    if ns < min_ns:
        raise ValueError(f"{param} must be at least {min_ns / NS_PER_S:g} seconds, got {secs}")
    return max(1, round(ns)) if secs > 0 else 0


def store_variant[T](cls: type[T], own: type, store: object, where: str) -> type[T]:
    """The class a pattern's __new__ builds: for ``store=`` given to the pattern's class own
    itself, its variant shared through a store (``"module:Class"``, imported on first use);
    else cls (whose __init__ refuses a store when cls is a subclass)."""
    if store is None or cls is not own:
        return cls
    module, _, name = where.partition(":")
    variant: type[T] = getattr(importlib.import_module(module), name)  # a subclass of own
    return variant


def show_init_signature(cls: type) -> None:
    """Shows __init__'s parameters as the signature of cls (help(), IDEs), which a __new__
    taking anything (to route ``store=``) would otherwise hide."""
    init = inspect.signature(cls.__dict__["__init__"])
    cls.__signature__ = init.replace(  # type: ignore[attr-defined]
        parameters=list(init.parameters.values())[1:]
    )


def check_header_name(value: object, param: str) -> str | None:
    """An HTTP header name (ASCII, no colon), lower-cased; None stays None."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or not value.isascii() or ":" in value:
        raise ValueError(f"{param} must be a header name or None, not {value!r}")
    return value.lower()


def check_exceptions(on: object, param: str = "on") -> tuple[type[BaseException], ...] | None:
    """Normalises an exception class or tuple of classes; None when on is a predicate."""
    if isinstance(on, type) and issubclass(on, BaseException):
        return (on,)
    if isinstance(on, type):
        raise TypeError(f"{param} must be an exception class, got the class {on.__name__}")
    if isinstance(on, tuple) and on:
        for item in on:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise TypeError(f"{param} must hold exception classes, got {item!r}")
        return on
    if isinstance(on, tuple):
        raise ValueError(f"{param} must not be an empty tuple")
    if callable(on):
        if is_async_callable(on):  # the C engines call it inline, where nothing is awaited
            raise TypeError(f"{param} must be a sync predicate over the exception, not async")
        return None
    raise TypeError(
        f"{param} must be an exception class, a tuple of them or a predicate, got {on!r}"
    )


# Metrics registry: one series per (component name, pattern), summing every component that
# reports under that pair, live or gone (a component folds its counters into its series when it
# is deallocated, in C). Named components join at construction, unnamed ones when they decorate
# a function and take its name: an anonymous policy used only as `async with` reports nothing.
# Joining is one dict lookup and one C call; the hot path never sees the registry.
# A series whose components are all gone leaves the registry when it has grown (amortised, so
# names that come and go do not grow it without bound): an exporter that holds the series reads
# its final counts once more, and a component created later under that name starts a new one.
# Per pattern: component name -> series (each Component subclass holds its pattern's dict).
_series: dict[str, dict[str, _native.Series]] = {}
_series_metrics: dict[str, tuple[str, ...]] = {}  # per pattern
_series_hooks: list[Callable[[str, str, tuple[str, ...], _native.Series], None]] = []
_PRUNE_MIN: Final = 1024
_prune_at: dict[str, int] = {}  # per pattern: the size at which gone series are let go


def _new_series(component: Component) -> _native.Series:
    name, pattern = component._name, component.PATTERN
    by_name = _series.setdefault(pattern, {})
    series = by_name.get(name)
    if series is None:
        if len(by_name) >= _prune_at.get(pattern, _PRUNE_MIN):
            for gone in [n for n, s in by_name.items() if s.live == 0]:
                del by_name[gone]
            _prune_at[pattern] = max(_PRUNE_MIN, 2 * len(by_name))
        series = by_name[name] = _native.Series()
        _series_metrics[pattern] = component.METRICS
        for hook in tuple(_series_hooks):
            try:
                hook(name, pattern, component.METRICS, series)
            except Exception:  # an exporter's failure never stops a component
                logging.getLogger("failsafe").exception("metrics series hook %r failed", hook)
    return series


def is_current(name: str, pattern: str, series: _native.Series) -> bool:
    """Whether series is the registry's series of (name, pattern): components may still join
    it. A series no longer current never gains a member again."""
    by_name = _series.get(pattern)
    return by_name is not None and by_name.get(name) is series


# Latency histograms (off until enable_latency()): one _native.Latency per (pattern, component
# name), into which every component reporting under that pair times its decorated calls. Enabling
# reaches the named components made before as the members of their series; a component that
# joins later is attached as it joins. Calls of components not attached pay one pointer test.
_latency: dict[tuple[str, str], _native.Latency] = {}
_latency_on = False
_latency_hooks: list[Callable[[str, str, _native.Latency], None]] = []


def _join(component: Component, series: Any) -> None:
    series.attach(component)
    if _latency_on and isinstance(series, _native.Series):
        _latency_of(component._name, component.PATTERN).attach(component)


def _named() -> list[Any]:
    """Every live named component (the members of the metrics series)."""
    return [
        c for by_name in list(_series.values()) for s in list(by_name.values()) for c in s.members()
    ]


def _latency_of(name: str, pattern: str) -> _native.Latency:
    key = (pattern, name)
    latency = _latency.get(key)
    if latency is None:
        if len(_latency) >= _prune_at.get("", _PRUNE_MIN):
            for gone in [k for k in _latency if _series_get(k) is None]:
                del _latency[gone]
            _prune_at[""] = max(_PRUNE_MIN, 2 * len(_latency))
        latency = _latency[key] = _native.Latency()
        for hook in tuple(_latency_hooks):
            try:
                hook(name, pattern, latency)
            except Exception:  # an exporter's failure never stops a component
                logging.getLogger("failsafe").exception("latency hook %r failed", hook)
    return latency


def _series_get(key: tuple[str, str]) -> Any:
    """The series of (pattern, name) while it has live components, else None."""
    by_name = _series.get(key[0])
    s = None if by_name is None else by_name.get(key[1])
    return s if s is not None and s.live else None


def enable_latency() -> None:
    """Times the decorated calls of every named component, existing and future, into one
    latency histogram per (component name, pattern)."""
    global _latency_on
    _latency_on = True
    for component in _named():
        _latency_of(component._name, component.PATTERN).attach(component)


def disable_latency() -> None:
    """Stops timing calls (the histograms keep their counts; calls in flight still count)."""
    global _latency_on
    _latency_on = False
    for component in _named():
        latency = _latency.get((component.PATTERN, component._name))
        if latency is not None:
            latency.detach(component)


def latency_enabled() -> bool:
    """Whether components time their calls (enable_latency())."""
    return _latency_on


def all_latency() -> list[tuple[str, str, _native.Latency]]:
    """Every latency histogram so far: (component name, pattern, histogram)."""
    return [(name, pattern, h) for (pattern, name), h in list(_latency.items())]


def is_current_latency(name: str, pattern: str, latency: _native.Latency) -> bool:
    """Whether latency is the registry's histogram of (name, pattern): calls may still count
    into it. One no longer current only keeps the counts of calls that were in flight."""
    return _latency.get((pattern, name)) is latency


def on_new_latency(hook: Callable[[str, str, _native.Latency], None]) -> None:
    """Calls hook(name, pattern, histogram) for each latency histogram created from now on."""
    _latency_hooks.append(hook)


def off_new_latency(hook: Callable[[str, str, _native.Latency], None]) -> None:
    """Stops calling a hook given to on_new_latency."""
    if hook in _latency_hooks:
        _latency_hooks.remove(hook)


class _NoSeries(dict[str, Any]):
    """_SERIES of a component class that has no C counters: its components report nothing."""

    class _Null:
        def attach(self, component: object) -> None:
            pass

    _null: Final = _Null()

    def get(self, key: str, default: Any = None) -> Any:
        return self._null


def all_series() -> list[tuple[str, str, tuple[str, ...], _native.Series]]:
    """Every metrics series so far: (component name, pattern, metric names, series)."""
    return [
        (name, pattern, _series_metrics[pattern], s)
        for pattern, by_name in list(_series.items())
        for name, s in list(by_name.items())
    ]


def on_new_series(hook: Callable[[str, str, tuple[str, ...], _native.Series], None]) -> None:
    """Calls hook(name, pattern, metrics, series) for each series created from now on."""
    _series_hooks.append(hook)


def off_new_series(hook: Callable[[str, str, tuple[str, ...], _native.Series], None]) -> None:
    """Stops calling a hook given to on_new_series."""
    if hook in _series_hooks:
        _series_hooks.remove(hook)


class Component:
    """Mixin of every policy: name, listeners, counters, stats() and a live repr.

    Subclasses set PATTERN and METRICS (counter names, in the C counter order). Its state
    lives in the subclass (a __dict__, or the slots in COMPONENT_SLOTS).
    """

    if not TYPE_CHECKING:  # mypy would reject the attributes the methods below set
        __slots__ = ()

    PATTERN: ClassVar[str]
    METRICS: ClassVar[tuple[str, ...]]
    DECORATOR: ClassVar[str | None] = None  # the factory users write, when not PATTERN
    _SERIES: ClassVar[dict[str, _native.Series]]  # this pattern's series by component name

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        pattern = cls.__dict__.get("PATTERN")
        if isinstance(pattern, str):
            # Policies (C types) have _counters; anything else has nothing to report.
            has_counters = hasattr(cls, "_counters")
            cls._SERIES = _series.setdefault(pattern, {}) if has_counters else _NoSeries()

    _listeners: tuple[Any, ...]
    _explicit_name: bool

    def _init_component(
        self, name: str | None, listeners: Iterable[Any] | None, event_manager: Any = None
    ) -> None:
        if event_manager is not None:
            from failsafe import events  # events imports this module

            event_manager = events.check_event_manager(event_manager)
        self._event_manager = event_manager
        checked = check_name(name)
        self._explicit_name = checked is not None
        self._name = checked or self.PATTERN
        if checked is not None:
            _join(self, self._SERIES.get(checked) or _new_series(self))
        if listeners is None:
            self._listeners = ()
            return
        if not isinstance(listeners, Iterable) or isinstance(listeners, (str, bytes)):
            raise TypeError(f"listeners must be an iterable of listeners, not {listeners!r}")
        from failsafe import events  # events imports this module

        self._listeners = tuple(events.check_listener(x, "listeners") for x in listeners)
        self._local_listening = 1 if self._listeners else 0

    def _adopt_name(self, fn: Callable[..., Any]) -> None:
        if not self._explicit_name:
            self._name = name_from(fn, self.PATTERN)
            self._explicit_name = True
            _join(self, self._SERIES.get(self._name) or _new_series(self))

    def __call__[**P, T](self, fn: Callable[P, Awaitable[T]]) -> Decorated[P, T, Self]:
        """Decorates an async function (or method) with this policy: the C guard returned
        looks like fn to inspect, FastAPI and type checkers; ``fn.policy`` is this policy."""
        check_async(fn, self.DECORATOR or self.PATTERN)
        self._adopt_name(fn)
        guard = make_guard(fn, self)
        guard._manager = self  # failsafe-py's decorated._manager
        typed: Decorated[P, T, Self] = guard
        return typed

    @property
    def name(self) -> str:
        name: str = self._name
        return name

    def add_listener(self, listener: Any) -> None:
        """Adds a listener of this component only."""
        from failsafe import events

        self._listeners = (*self._listeners, events.check_listener(listener, "listener"))
        self._local_listening = 1
        _native._listeners_changed()  # drops the handlers the C core resolved

    def _stat_values(self) -> dict[str, Any]:
        """The name and counters, by attribute of the pattern's statistics class; a pattern
        with state adds it."""
        counts = self._counters()
        return {
            "name": self._name,
            **{attribute(m): c for m, c in zip(self.METRICS, counts, strict=False)},
        }

    def stats(self) -> PolicyStats:
        """A snapshot of this component's counters (and state, where it has one): each
        pattern returns its own statistics class (failsafe.stats)."""
        raise NotImplementedError(f"{type(self).__name__} has no statistics")

    if TYPE_CHECKING:  # provided by the C base type of every policy

        def _counters(self) -> tuple[int, ...]: ...

        def _count(self, index: int, n: int = 1) -> None: ...

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.stats().items() if k != "name")
        return f"<{self.PATTERN} {self._name!r} {fields}>"


Coro = Coroutine[Any, Any, Any]
