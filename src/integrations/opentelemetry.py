"""Re-export of ``failsafe.integrations.opentelemetry`` under failsafe-py's old path."""

from failsafe.integrations.opentelemetry import *  # noqa: F403
from failsafe.integrations.opentelemetry import __all__ as __all__
