"""Trace events of failsafe components: why a call took as long as it did.

``FailsafeOtelInstrumentor().instrument(spans="events")`` registers one global listener on
the patterns below; each event becomes a span event on the span current where it happens (the
caller's), named ``failsafe.{pattern}.{what}`` with attributes ``failsafe.component`` and the
event's own (attempt, delay, wait, exception type). ``spans="spans"`` makes each one a child
span of it instead (a wait spans the wait; the others last an instant). No current recording
span: nothing is done. Events reach the listener only while it is registered, through the
listener dispatch the C core resolves once per (component, event): with ``spans=None`` (the
default) nothing is registered and calls pay nothing.

==========================  =====================================================
event                       when
==========================  =====================================================
``retry.attempt_failed``    an attempt failed; the next follows after ``delay``
``retry.gave_up``           the call gave up (attempts, budget or time exhausted)
``hedge.attempt``           a hedged call started attempt number 2, 3, ...
``hedge.timeout``           a hedged call ran out of time
``hedge.all_failed``        every attempt of a hedged call failed
``bulkhead.wait``           a call left the bulkhead's queue (``served`` or not)
``ratelimit.wait``          a call waited for its token
``*.rejected``              a refusal: breaker open, fail-fast open, bulkhead full,
                            rate limit hit, feature disabled
``timeout.fired``           a timeout cut the call
==========================  =====================================================
"""

from __future__ import annotations

import time
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import Span, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from failsafe import __version__, events

MODES: Final = ("events", "spans")

# The patterns whose events the listener takes.
PATTERNS: Final = (
    "retry",
    "hedge",
    "bulkhead",
    "ratelimit",
    "circuitbreaker",
    "failfast",
    "featuretoggle",
    "timeout",
)

Attrs = dict[str, AttributeValue]


class TraceListener:
    """The global listener that turns failsafe events into span events or child spans."""

    def __init__(self, mode: str, tracer: Tracer) -> None:
        self.child_spans = mode == "spans"
        self.tracer = tracer

    def _report(
        self, component: Any, what: str, attrs: Attrs | None = None, waited: float = 0.0
    ) -> None:
        span: Span = trace.get_current_span()
        if not span.is_recording():
            return
        pattern = getattr(component, "PATTERN", "component")
        full: Attrs = {"failsafe.component": str(getattr(component, "_name", pattern))}
        if attrs:
            full.update(attrs)
        name = f"failsafe.{pattern}.{what}"
        now = time.time_ns()
        if not self.child_spans:
            span.add_event(name, full, now)
            return
        start = now - max(0, round(waited * 1e9))
        self.tracer.start_span(name, attributes=full, start_time=start).end(now)

    # -- retry ---------------------------------------------------------------------------

    def on_retry(
        self, retry: Any, exception: BaseException | None, counter: Any, delay: float
    ) -> None:
        attrs: Attrs = {"failsafe.attempt": int(counter.current_attempt), "failsafe.delay": delay}
        if exception is not None:
            attrs["exception.type"] = type(exception).__qualname__
            attrs["exception.message"] = str(exception)
        self._report(retry, "attempt_failed", attrs)

    def on_attempts_exceeded(self, retry: Any) -> None:
        self._report(retry, "gave_up")

    # -- hedge ---------------------------------------------------------------------------

    def on_hedge_attempt(self, hedge: Any, attempt: int) -> None:
        self._report(hedge, "attempt", {"failsafe.attempt": attempt})

    def on_hedge_timeout(self, hedge: Any) -> None:
        self._report(hedge, "timeout")

    def on_hedge_all_failed(self, hedge: Any) -> None:
        self._report(hedge, "all_failed")

    # -- waits ---------------------------------------------------------------------------

    def on_bulkhead_wait(self, bulkhead: Any, waited: float, served: bool) -> None:
        attrs: Attrs = {"failsafe.waited": waited, "failsafe.served": served}
        self._report(bulkhead, "wait", attrs, waited)

    def on_rate_limit_wait(self, limiter: Any, waited: float) -> None:
        self._report(limiter, "wait", {"failsafe.waited": waited}, waited)

    # -- refusals ------------------------------------------------------------------------

    def on_rejected(self, breaker: Any, state: Any) -> None:
        self._report(breaker, "rejected", {"failsafe.state": str(getattr(state, "name", state))})

    def on_failfast_rejected(self, failfast: Any) -> None:
        self._report(failfast, "rejected")

    def on_bulkhead_full(self, bulkhead: Any) -> None:
        self._report(bulkhead, "rejected")

    def on_rate_limited(self, limiter: Any, retry_after: float) -> None:
        self._report(limiter, "rejected", {"failsafe.retry_after": retry_after})

    def on_feature_disabled(self, toggle: Any) -> None:
        self._report(toggle, "rejected")

    def on_timeout(self, timeout: Any) -> None:
        self._report(timeout, "fired")


def check_mode(spans: object) -> str | None:
    if spans is None:
        return None
    if not isinstance(spans, str):
        raise TypeError(f"spans must be 'events', 'spans' or None, not {type(spans).__name__}")
    if spans not in MODES:
        raise ValueError(f"spans must be 'events', 'spans' or None, not {spans!r}")
    return spans


def start(mode: str, tracer_provider: TracerProvider | None) -> TraceListener:
    """Registers a listener reporting in mode on every pattern of PATTERNS."""
    provider = tracer_provider or trace.get_tracer_provider()
    listener = TraceListener(mode, provider.get_tracer("failsafe", __version__))
    for pattern in PATTERNS:
        events.register_listener(pattern, listener)
    return listener


def stop(listener: TraceListener) -> None:
    """Unregisters a listener start() registered."""
    for pattern in PATTERNS:
        events.unregister_listener(pattern, listener)
