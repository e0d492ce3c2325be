"""OpenTelemetry: the same named policies with failsafe's counters exported and without.

Exported counters are observable: read from the C counters when a reader collects, so the
instrumented rows must cost what the plain ones cost (DESIGN: within +5 %). The latency rows
time every call into a C histogram (budget: +300 Ir per call); the span rows add the trace
listener (events only on retries, waits and refusals: the happy path must not pay).
"""

from __future__ import annotations

from typing import Any

from cases import ASYNC_WITH, Case, f


def _instrumented(on: bool | str) -> None:
    from failsafe.integrations.opentelemetry import FailsafeOtelInstrumentor

    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    if on:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        inst.instrument(
            namespace="bench",
            meter_provider=MeterProvider(metric_readers=[reader]),
            latency=on == "latency",
            spans="events" if on == "spans" else None,
        )
        reader.collect()  # the callbacks are live


def _toggle(on: bool | str) -> Any:
    from failsafe.featuretoggle import featuretoggle

    _instrumented(on)
    return featuretoggle(name="bench_toggle")(f)


def _retry(on: bool | str) -> Any:
    from failsafe.retry import retry

    _instrumented(on)
    return retry(attempts=3, backoff=0, name="bench_retry")(f)


def _stack3(on: bool | str) -> Any:
    from failsafe.fallback import fallback
    from failsafe.retry import retry
    from failsafe.timeout import timeout

    _instrumented(on)
    return fallback(0, name="bench_fallback")(
        retry(attempts=3, backoff=0, name="bench_retry")(timeout(10, name="bench_timeout")(f))
    )


def _bulkhead(on: bool | str) -> Any:
    from failsafe.bulkhead import bulkhead

    _instrumented(on)
    return bulkhead(100, name="bench_bulkhead")(f)


def _breaker(on: bool | str) -> Any:
    from failsafe.circuitbreaker import consecutive_breaker

    _instrumented(on)
    return consecutive_breaker(name="bench_breaker")(f)


def _timeout_shared(on: bool | str) -> Any:
    from failsafe.timeout import timeout

    _instrumented(on)
    return {"g": timeout(10, name="bench_timeout"), "f": f}


def _timeout_per_use(on: bool | str) -> Any:
    from failsafe.timeout import timeout

    _instrumented(on)
    return {"g": timeout, "f": f}


def _retry_fail2_traced(spans: str | None) -> Any:
    """retry over a function failing twice per call, inside a recording span made current in
    the measuring task: with spans on, each call adds its attempts to the trace."""
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider

    from cases import flaky
    from failsafe.integrations.opentelemetry import FailsafeOtelInstrumentor
    from failsafe.retry import retry

    inst = FailsafeOtelInstrumentor()
    inst.uninstrument()
    provider = TracerProvider()
    if spans is not None:
        from opentelemetry.sdk.metrics import MeterProvider

        inst.instrument(
            namespace="bench", meter_provider=MeterProvider(), spans=spans, tracer_provider=provider
        )
    span = provider.get_tracer("bench").start_span("request")
    context.attach(trace.set_span_in_context(span))
    return retry(attempts=3, backoff=0, name="bench_retry")(flaky())


CASES: list[Case] = []
# Span events when they fire: two failed attempts per call, in a recording span.
for _label, _spans in (
    ("spans off", None),
    ("span events", "events"),
    ("child spans", "spans"),
):
    CASES.append(
        Case(
            "otel",
            "retry fail2 in a span (named)",
            f"failsafe, {_label}",
            lambda m=_spans: _retry_fail2_traced(m),
        )
    )
_MODES: tuple[tuple[str, bool | str], ...] = (
    ("not instrumented", False),
    ("instrumented", True),
    ("latency", "latency"),
    ("span events", "spans"),
)
for _label, _on in _MODES:
    CASES += [
        Case("otel", "toggle on (named)", f"failsafe, {_label}", lambda o=_on: _toggle(o)),
        Case(
            "otel", "retry ok (named)", f"failsafe, {_label}", lambda o=_on: _retry(o), budget=1_500
        ),
        Case("otel", "bulkhead free (named)", f"failsafe, {_label}", lambda o=_on: _bulkhead(o)),
        Case("otel", "breaker closed (named)", f"failsafe, {_label}", lambda o=_on: _breaker(o)),
        Case(
            "otel",
            "fallback+retry+timeout ok (named)",
            f"failsafe, {_label}",
            lambda o=_on: _stack3(o),
        ),
        Case(
            "otel",
            "async with T (shared, named)",
            f"failsafe, {_label}",
            lambda o=_on: _timeout_shared(o),
            ASYNC_WITH,
            budget=3_500,
        ),
        Case(
            "otel",
            "async with timeout(10, name=...) (one per use)",
            f"failsafe, {_label}",
            lambda o=_on: _timeout_per_use(o),
            "async with g(10, name='bench_per_use'):\n    r = await f()",
        ),
    ]
