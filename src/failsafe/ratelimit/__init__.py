"""Rate limiting. The token bucket used by ``bucket_retry`` raises these exceptions."""

from failsafe.ratelimit.exceptions import EmptyBucket, RateLimitExceeded

__all__ = ["EmptyBucket", "RateLimitExceeded"]
