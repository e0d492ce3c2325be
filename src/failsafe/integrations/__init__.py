"""Integrations with other libraries: ``opentelemetry`` (metrics), ``fastapi`` (exception
handlers) and ``httpx`` (a resilient transport). Each is imported on its own and needs its
library installed (extras ``otel``, ``fastapi`` and ``httpx``)."""
