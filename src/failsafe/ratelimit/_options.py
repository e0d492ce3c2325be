"""A rate limit's parameters, checked once.

Every limiter (token bucket, sliding window, keyed, and the one shared through a store, which
keeps an in-process limiter for its fallback) is configured from one LimitOptions: each
parameter has one default and one check, naming it, wherever the limit is built.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from failsafe import _core

NS: Final = 1_000_000_000
MAX_NS: Final = (2**63 - 1) // 4  # the C core's margin for int64 time arithmetic
MAX_KEYS: Final = 1 << 30
MAX_SLIDING: Final = 1 << 24  # a sliding window logs each admission (8 bytes)
DEFAULT_MAX_KEYS: Final = 10_000


@dataclass(frozen=True, slots=True)
class LimitOptions:
    """Checked parameters of one limit, in the units the C core takes."""

    max_executions: int
    period_ns: int
    bucket_size: int  # a sliding window's is max_executions
    interval_ns: int  # between two tokens, rounded up: never faster than the rate
    max_wait_ns: int  # MAX_NS: waits as long as it takes
    sliding: bool
    key: Callable[..., Any] | None = None
    max_keys: int = 0

    @classmethod
    def check(
        cls,
        max_executions: object,
        per_time_secs: object,
        bucket_size: object,
        *,
        sliding: bool,
        max_wait: object,
        key: object = None,
        max_keys: object = DEFAULT_MAX_KEYS,
    ) -> LimitOptions:
        count = int(_core.check_int(max_executions, "max_executions"))
        period_ns = _core.check_ns(per_time_secs, "per_time_secs", min_ns=1, max_ns=MAX_NS)
        burst = count if bucket_size is None else int(_core.check_int(bucket_size, "bucket_size"))
        interval_ns = -(-period_ns // count)
        if burst > MAX_NS // interval_ns:
            raise ValueError(f"bucket_size ({burst}) * per_time_secs / max_executions is too large")
        if sliding and count > MAX_SLIDING:
            raise ValueError(f"max_executions must be at most 2**24 for a sliding window: {count}")
        # inf, and any wait beyond the core's range, waits as long as it takes.
        wait_ns = _core.check_ns(
            max_wait, "max_wait", allow_zero=True, max_ns=MAX_NS, saturate=True
        )
        keys = 0
        if key is not None:
            if not callable(key):
                raise TypeError(f"key must be a callable (*args, **kwargs) -> key, not {key!r}")
            if inspect.iscoroutinefunction(key):
                raise TypeError("key must be a sync callable, not an async function")
            keys = int(_core.check_int(max_keys, "max_keys", maximum=MAX_KEYS))
        return cls(
            max_executions=count,
            period_ns=period_ns,
            bucket_size=count if sliding else burst,
            interval_ns=interval_ns,
            max_wait_ns=wait_ns,
            sliding=sliding,
            key=key,
            max_keys=keys,
        )

    @property
    def per_time_secs(self) -> float:
        return self.period_ns / NS

    @property
    def max_wait(self) -> float:
        return math.inf if self.max_wait_ns == MAX_NS else self.max_wait_ns / NS

    def configuration(self) -> dict[str, Any]:
        """The keyword arguments of the C limiter's _configure."""
        kwargs: dict[str, Any] = {
            "interval_ns": self.interval_ns,
            "burst": self.bucket_size,
            "sliding": self.sliding,
            "window_ns": self.period_ns,
            "max_wait_ns": self.max_wait_ns,
        }
        if self.key is not None:
            kwargs.update(key=self.key, max_keys=self.max_keys)
        return kwargs
