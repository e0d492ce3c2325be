"""Feature toggle: switch a code path on and off at runtime, or roll it out by percentage.

``featuretoggle(enabled=True)`` admits calls while enabled and refuses them with
:class:`FeatureDisabled` (without calling the function) while disabled. ``enable()`` and
``disable()`` switch it at once; they return an already finished awaitable, so failsafe-py's
``await toggle.enable()`` works too. A ``predicate(*args, **kwargs)`` (sync or async) must
accept the call, and with ``rollout=30, key=lambda user, *a, **k: user.id`` only the keys whose
stable bucket (a hash of the key's str / bytes / int, the same in every process) falls in the
first 30 % run. Raising the percentage only adds keys, and every toggle puts a key in the same
bucket. An admitted call is the function's own coroutine: nothing is wrapped.

``async with toggle:`` (or ``async with decorated_fn:``) guards a block; there the predicate
and the key function are called with no arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self, overload

from failsafe import _core, _native, events
from failsafe._types import Decorated
from failsafe.featuretoggle.exceptions import FeatureDisabled
from failsafe.stats import FeatureToggleStats

__all__ = [
    "FeatureDisabled",
    "FeatureToggle",
    "FeatureToggleListener",
    "FeatureToggleManager",
    "FeatureToggleStats",
    "featuretoggle",
    "register_featuretoggle_listener",
    "rollout_bucket",
]


ENABLED, DISABLED = _core.counter_indexes("featuretoggle", "enabled", "disabled")


def rollout_bucket(key: str | bytes | int) -> int:
    """The stable bucket (0 .. 999,999) of a rollout key: a key is in a rollout of ``p`` % when
    its bucket is below ``p * 10,000``. The same in every process and on every platform."""
    return _native._rollout_bucket(key)


class FeatureToggleListener:
    """Feature-toggle events. Methods may be sync or async; override the ones you need."""

    def on_feature_enabled(self, toggle: FeatureToggle) -> Any:
        """A call was admitted."""

    def on_feature_disabled(self, toggle: FeatureToggle) -> Any:
        """A call was refused (switched off, predicate, or outside the rollout)."""

    def on_feature_toggled(self, toggle: FeatureToggle, enabled: bool) -> Any:
        """``enable()``, ``disable()`` or ``enabled = ...`` changed the switch."""


def register_featuretoggle_listener(listener: Any) -> None:
    """Adds a listener (or listener factory) to every feature toggle, existing and future."""
    events.register_listener("featuretoggle", listener)


class FeatureToggle(_core.Component, _native.FeatureToggle):
    """A feature toggle: decorate async functions with it, or ``async with`` it.

    Metrics: ``enabled`` and ``disabled``, one per admitted or refused call.
    """

    PATTERN: ClassVar[str] = "featuretoggle"
    METRICS: ClassVar[tuple[str, ...]] = _native.METRICS["featuretoggle"]

    def __new__(cls, *args: Any, store: Any = None, **kw: Any) -> Self:
        # The switch and rollout shared through a store: a SharedFeatureToggle.
        where = "failsafe.stores._toggle:SharedFeatureToggle"
        return super().__new__(_core.store_variant(cls, FeatureToggle, store, where))

    def __init__(
        self,
        *,
        enabled: bool = True,
        predicate: Callable[..., Any] | None = None,
        rollout: float | None = None,
        key: Callable[..., str | bytes | int] | None = None,
        name: str | None = None,
        listeners: Iterable[Any] | None = None,
        event_manager: events.EventManager | None = None,
        store: Any = None,
    ) -> None:
        if store is not None:
            raise TypeError("store= is not supported by subclasses of FeatureToggle")
        self._init_component(name, listeners, event_manager)
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, not {type(enabled).__name__}")
        if predicate is not None and not callable(predicate):
            raise TypeError(f"predicate must be a callable (sync or async), not {predicate!r}")
        percent = _core.check_number(rollout, "rollout", allow_none=True)
        if percent is not None and percent > 100:
            raise ValueError(f"rollout must be a percentage from 0 to 100, got {percent}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be a callable returning a str, bytes or int, not {key!r}")
        if key is not None and _core.is_async_callable(key):
            raise TypeError("key must be a sync callable, not async")
        if percent is not None and key is None:
            raise ValueError("rollout needs key=: a callable giving each call's stable key")
        if key is not None and percent is None:
            raise ValueError("key= is only used with rollout=")
        self._predicate = predicate
        self._built_enabled = enabled
        self._rollout: float | None = None if percent is None else float(percent)
        self._configure(
            enabled=enabled,
            predicate=predicate,
            pred_async=predicate is not None and _core.is_async_callable(predicate),
            key=key,
            rollout=100.0 if percent is None else float(percent),
        )

    # -- decorator and block form ------------------------------------------------------------

    async def __aenter__(self) -> Self:
        # Timed (latency histograms) only while _latency is set: a slot read otherwise.
        t0 = None if self._latency is None else _native.now_ns()
        verdict: Any = True
        try:
            if self.enabled and self._predicate is not None:
                verdict = self._predicate()
                if inspect.isawaitable(verdict):
                    verdict = await verdict
            self._decide(verdict, (), {})
        except BaseException as exc:
            if t0 is not None:
                self._block_refused(t0, exc)
            raise
        if t0 is not None:
            self._block_open(t0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._latency is not None:
            self._block_exited(exc)

    async def _call_slow(
        self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> Any:
        """A call whose predicate is async (the C guard found the toggle enabled)."""
        assert self._predicate is not None
        verdict = await self._predicate(*args, **kwargs)
        self._decide(verdict, args, kwargs)
        return await fn(*args, **kwargs)

    # -- state -------------------------------------------------------------------------------

    @property
    def rollout(self) -> float | None:
        return self._rollout

    @property
    def _manager(self) -> Self:
        """failsafe-py's manager object: the policy itself (``await _manager.enable()``)."""
        return self

    def _holds_state(self) -> bool:
        """For keyed registries: switched at runtime (a new toggle would start as built)."""
        return bool(self.enabled != self._built_enabled)

    def _stat_values(self) -> dict[str, Any]:
        return {**super()._stat_values(), "state": "enabled" if self.enabled else "disabled"}

    def stats(self) -> FeatureToggleStats:
        return FeatureToggleStats(**self._stat_values())


_core.show_init_signature(FeatureToggle)

# failsafe-py's name of the object holding the state.
FeatureToggleManager = FeatureToggle


if TYPE_CHECKING:  # the methods C calls by name
    _slow_call: type[_native.SlowCall] = FeatureToggle


@overload
def featuretoggle[**P, T](fn: Callable[P, Awaitable[T]], /) -> Decorated[P, T, FeatureToggle]: ...
@overload
def featuretoggle(
    fn: None = None,
    /,
    *,
    enabled: bool = ...,
    predicate: Callable[..., Any] | None = ...,
    rollout: float | None = ...,
    key: Callable[..., str | bytes | int] | None = ...,
    name: str | None = ...,
    listeners: Iterable[Any] | None = ...,
    event_manager: events.EventManager | None = ...,
    store: Any = ...,
) -> FeatureToggle: ...
def featuretoggle(
    fn: Callable[..., Awaitable[Any]] | None = None,
    /,
    *,
    enabled: bool = True,
    predicate: Callable[..., Any] | None = None,
    rollout: float | None = None,
    key: Callable[..., str | bytes | int] | None = None,
    name: str | None = None,
    listeners: Iterable[Any] | None = None,
    event_manager: events.EventManager | None = None,
    store: Any = None,
) -> FeatureToggle | Decorated[..., Any, FeatureToggle]:
    """A feature toggle: ``@featuretoggle(enabled=True)``, switched with ``enable()`` /
    ``disable()``; ``predicate`` (sync or async) and ``rollout`` + ``key`` narrow it further.
    With ``store=`` (and ``name=``) the switch and the rollout are shared by every process.
    """
    policy = FeatureToggle(
        enabled=enabled,
        predicate=predicate,
        rollout=rollout,
        key=key,
        name=name,
        listeners=listeners,
        event_manager=event_manager,
        store=store,
    )
    return policy if fn is None else policy(fn)
