"""OpenTelemetry wiring of the example service.

Metrics go to an OTLP/HTTP collector when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``) is set, every ``OTEL_METRIC_EXPORT_INTERVAL`` ms. An
in-process reader is always attached too, so the service can show its own counters
(``GET /metrics/failsafe``) and latency histograms (``GET /metrics/failsafe/latency``) without
any collector.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.metrics import set_meter_provider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    InMemoryMetricReader,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from failsafe.integrations.opentelemetry import FailsafeOtelInstrumentor

NAMESPACE = "failsafe.service"
local_reader = InMemoryMetricReader()


def otlp_endpoint() -> str | None:
    """The configured OTLP endpoint, or None."""
    return os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )


def setup_otel(service_name: str) -> MeterProvider:
    resource = Resource.create({"service.name": service_name})
    readers: list[MetricReader] = [local_reader]
    if otlp_endpoint():
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        # The exporter reads the endpoint, headers and timeout from the OTEL_* variables.
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    provider = MeterProvider(resource=resource, metric_readers=readers)
    set_meter_provider(provider)

    FailsafeOtelInstrumentor().instrument(
        namespace=NAMESPACE,
        meter_provider=provider,
        latency=True,  # one duration histogram per component, by outcome
    )
    return provider


def failsafe_counters() -> dict[str, int]:
    """Every failsafe counter as the in-process reader collects it now: {metric name: value}."""
    counters: dict[str, int] = {}
    data = local_reader.get_metrics_data()
    if data is None:
        return counters
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != "failsafe":
                continue
            for metric in scope_metrics.metrics:
                if isinstance(metric.data, Histogram):
                    continue
                points = getattr(metric.data, "data_points", ())
                counters[metric.name] = int(sum(getattr(p, "value", 0) for p in points))
    return counters


def failsafe_latency() -> dict[str, dict[str, Any]]:
    """Every failsafe latency histogram the in-process reader collects now:
    {metric name: {outcome: {"bounds": [s, ...], "counts": [...], "count": n, "sum": s}}}."""
    out: dict[str, dict[str, Any]] = {}
    data = local_reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != "failsafe":
                continue
            for metric in scope_metrics.metrics:
                if isinstance(metric.data, Histogram):
                    out[metric.name] = {
                        str((p.attributes or {}).get("outcome")): {
                            "bounds": list(p.explicit_bounds),
                            "counts": list(p.bucket_counts),
                            "count": p.count,
                            "sum": p.sum,
                        }
                        for p in metric.data.data_points
                    }
    return out
