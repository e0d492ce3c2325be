"""failsafe-py's ``failsafe.ratelimit.buckets``: :class:`TokenBucket`, its bucket interface
(``tokens``, ``empty``, ``await take()``), now backed by the exact C token bucket of a
:class:`~failsafe.ratelimit.TokenBucketLimiter`."""

from failsafe.ratelimit import TokenBucket as TokenBucket
from failsafe.ratelimit.exceptions import EmptyBucket as EmptyBucket

__all__ = ["EmptyBucket", "TokenBucket"]
