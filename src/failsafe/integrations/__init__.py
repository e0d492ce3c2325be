"""Integrations with other libraries: ``opentelemetry`` (metrics) and ``fastapi`` (exception
handlers). Each is imported on its own and needs its library installed (extras ``otel`` and
``fastapi``)."""
