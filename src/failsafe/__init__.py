"""failsafe: resiliency patterns for asyncio services, with the engine in C.

Patterns live in their own modules: ``failsafe.retry``, ``failsafe.timeout``,
``failsafe.fallback``. Events and listeners are in ``failsafe.events``; test helpers in
``failsafe.testing``.
"""

from failsafe import _native, events
from failsafe._types import CachedFunction, Decorated
from failsafe.exceptions import FailsafeError

_native._bind(emit=events.emit, resolve=events.resolve, finish=events.finish)

__all__ = ["CachedFunction", "Decorated", "FailsafeError"]
__version__ = "0.1.0"
