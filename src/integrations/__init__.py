"""failsafe-py's top-level spelling of ``failsafe.integrations``, kept so code written for it
(``from integrations.opentelemetry import FailsafeOtelInstrumentor``) runs unchanged."""
