"""The README's examples as a user writes them, checked by ``mypy --strict`` (and basedpyright)
in CI: ``assert_type`` pins what failsafe's types promise, and each ``# type: ignore[...]``
marks a misuse that must stay a type error (``warn_unused_ignores`` fails when it is not).

Nothing here runs under pytest (the file name is not collected); it is only type-checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, assert_type

from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from failsafe import CachedFunction, Decorated
from failsafe.bulkhead import Bulkhead, BulkheadFull, bulkhead
from failsafe.cache import Cache, CacheListener, CacheStats, cache
from failsafe.circuitbreaker import (
    BreakerFailing,
    BreakerState,
    CircuitBreaker,
    circuitbreaker,
    consecutive_breaker,
)
from failsafe.failfast import FailFast, FailFastOpen, failfast
from failsafe.fallback import Fallback, fallback
from failsafe.featuretoggle import FeatureDisabled, FeatureToggle, featuretoggle
from failsafe.hedge import Hedge, HedgeAllFailed, HedgeTimeout, hedge, percentile
from failsafe.integrations.fastapi import install_exception_handlers
from failsafe.integrations.opentelemetry import FailsafeOtelInstrumentor
from failsafe.keyed import Keyed, keyed
from failsafe.ratelimit import (
    KeyedTokenBucketLimiter,
    RateLimitExceeded,
    SlidingWindowLimiter,
    TokenBucketLimiter,
    slidingwindow,
    tokenbucket,
)
from failsafe.retry import (
    Attempt,
    AttemptsExceeded,
    Retry,
    RetryBudget,
    backoffs,
    jitters,
    retry,
)
from failsafe.timeout import Timeout, TimeoutError, timeout
from failsafe.timeout import TimeoutScope as Scope

# -- the opening example: three stacked decorators ------------------------------------------


@fallback(None, on=AttemptsExceeded)
@retry(attempts=3, backoff=backoffs.expo(min_delay_secs=0.1, max_delay_secs=2), name="quotes")
@timeout(0.5)
async def fetch_quote(symbol: str) -> float | None:
    await asyncio.sleep(0)
    return 1.0


assert_type(fetch_quote.policy, Fallback)
quote_call: Coroutine[Any, Any, float | None] = fetch_quote("ACME")
quote_call.close()


async def misuse_quote() -> None:
    await fetch_quote(1)  # type: ignore[arg-type]  # the parameters are the function's own


# -- retry ----------------------------------------------------------------------------------


async def refresh_cache() -> None: ...


@retry(
    on=(ConnectionError, TimeoutError),
    attempts=3,
    backoff=backoffs.expo(min_delay_secs=0.1, max_delay_secs=5, jitter=jitters.full),
    max_duration=10,
    budget=RetryBudget(0.2),
    name="inventory",
)
async def get_stock(sku: str) -> int:
    return 1


as_declared: Decorated[[str], int, Retry] = get_stock  # the callable, plus its policy
assert_type(get_stock.policy, Retry)


@retry
async def bare(x: int) -> str:
    return str(x)


assert_type(bare.policy, Retry)


async def refresh() -> None:
    async for attempt in retry(attempts=2, backoff=0.1):  # the block form
        assert_type(attempt, Attempt)
        with attempt:
            await refresh_cache()
    assert_type(await get_stock("sku"), int)
    async with get_stock:  # type: ignore[misc]  # retry's block form is `async for`
        pass


# -- timeout --------------------------------------------------------------------------------


class Db:
    async def execute(self, sql: str) -> list[tuple[object, ...]]:
        return []


db = Db()


@timeout(0.3)
async def write(row: dict[str, object]) -> None: ...


assert_type(write.policy, Timeout)
db_timeout = timeout(0.3, name="db")
assert_type(db_timeout, Timeout)


async def query(sql: str) -> list[tuple[object, ...]]:
    async with db_timeout as scope:
        assert_type(scope, Scope)
        scope.reschedule(None)
        return await db.execute(sql)


async def write_with_deadline(row: dict[str, object]) -> None:
    async with write as scope:  # a decorated function enters its policy's block form
        assert_type(scope, Scope)
    async with timeout(0.3) as scope:
        assert_type(scope.expired(), bool)


# -- fallback -------------------------------------------------------------------------------


@fallback(lambda exc, user_id: {"id": user_id, "name": "unknown"}, on=LookupError)
async def get_user(user_id: int) -> dict[str, object]:
    return {"id": user_id}


assert_type(get_user.policy, Fallback)


# -- circuit breaker ------------------------------------------------------------------------

payments = consecutive_breaker(
    exceptions=ConnectionError,
    failure_threshold=5,
    recovery_time_secs=30,
    recovery_threshold=3,
    name="payments",
)
assert_type(payments, CircuitBreaker)


@payments
async def charge(order_id: str) -> str:
    await asyncio.sleep(0.01)
    return f"charged {order_id}"


assert_type(charge.policy, CircuitBreaker)
assert_type(charge.policy.state, BreakerState)

inventory = circuitbreaker(
    on=(ConnectionError, TimeoutError),
    failure_rate=0.5,
    window_time=60,
    min_calls=20,
    slow_call_duration=2.0,
    slow_call_rate=0.8,
    recovery_time=10,
    recovery_backoff=2,
    max_recovery_time=120,
    recovery_threshold=2,
    half_open_max_calls=2,
    name="inventory",
)


async def stock(sku: str) -> int | None:
    try:
        async with inventory as breaker:
            assert_type(breaker, CircuitBreaker)
            await asyncio.sleep(0.01)
            return 3
    except BreakerFailing as e:
        assert_type(e.retry_after, float | None)
        return None


async def charge_in_block() -> None:
    async with charge as breaker:
        assert_type(breaker, CircuitBreaker)


# -- fail fast and feature toggles ----------------------------------------------------------


@failfast(name="inventory", failure_threshold=3, recovery_time=30, on=ConnectionError)
async def reserve(sku: str, qty: int) -> dict[str, object]:
    return {"sku": sku, "reserved": qty}


assert_type(reserve.policy, FailFast)


async def reserve_or_busy(sku: str, qty: int) -> dict[str, object]:
    try:
        return await reserve(sku, qty)
    except FailFastOpen as e:
        return {"sku": sku, "busy": True, "retry_after": e.retry_after}


latch = failfast(name="payments", failure_threshold=5, recovery_time=10)
assert_type(latch, FailFast)


async def pay(amount: int) -> str:
    async with latch as opened:
        assert_type(opened, FailFast)
        return f"charged {amount}"


@featuretoggle(name="new_checkout", rollout=25, key=lambda user_id, *a, **kw: user_id)
async def new_checkout(user_id: str, cart: list[str]) -> str:
    return f"new checkout for {user_id}"


assert_type(new_checkout.policy, FeatureToggle)


async def checkout(user_id: str, cart: list[str]) -> str:
    try:
        return await new_checkout(user_id, cart)
    except FeatureDisabled:
        return f"old checkout for {user_id}"


def kill_switch() -> None:
    new_checkout.policy.disable()


async def toggled_block() -> None:
    async with new_checkout as toggle:  # `async with fn:` on a decorated function
        assert_type(toggle, FeatureToggle)
    async with reserve as latch_of_reserve:
        assert_type(latch_of_reserve, FailFast)
    async with get_user:  # type: ignore[misc]  # a fallback has no block form
        pass


# -- bulkhead -------------------------------------------------------------------------------

db_pool = bulkhead(10, 50, max_wait=2.0, name="db_pool")
assert_type(db_pool, Bulkhead)


@db_pool
async def pooled_query(sql: str) -> list[tuple[object, ...]]:
    await asyncio.sleep(0.01)
    return []


assert_type(pooled_query.policy, Bulkhead)


async def nightly_report() -> None:
    async with db_pool:
        await asyncio.sleep(0.01)
    async with pooled_query:
        pass


async def handler(sql: str) -> list[tuple[object, ...]] | None:
    try:
        return await pooled_query(sql)
    except BulkheadFull as exc:
        print(f"shed load: {exc}")
        return None


# -- rate limiting --------------------------------------------------------------------------


@tokenbucket(10, 1, bucket_size=20, name="search")
async def search(q: str) -> list[str]:
    return [q]


assert_type(search.policy, TokenBucketLimiter)
search_call = search("q")
assert_type(search_call, Coroutine[Any, Any, list[str]]).close()


async def limited_block() -> None:
    async with search as nothing:  # a limiter's block binds nothing
        assert_type(nothing, None)


async def answer(q: str) -> list[str] | str:
    try:
        return await search(q)
    except RateLimitExceeded as e:
        return f"busy, retry in {e.retry_after_seconds:.2f} s"


@tokenbucket(5, 1, max_wait=2.0, name="payments")
async def charge_limited(amount: int) -> int:
    return amount


@tokenbucket(100, 60, key=lambda user_id, payload: user_id, max_keys=100_000, name="per_user")
async def handle(user_id: str, payload: dict[str, str]) -> str:
    return user_id


assert_type(handle.policy, KeyedTokenBucketLimiter)

exports = slidingwindow(3, 1, name="exports")
assert_type(exports, SlidingWindowLimiter)


async def export(data: bytes) -> int:
    async with exports:
        return len(data)


per_tenant = keyed(
    lambda tenant: tokenbucket(50, 1), key=lambda tenant, sql: tenant, idle_after=600
)
assert_type(per_tenant, Keyed[TokenBucketLimiter])


@per_tenant
async def tenant_query(tenant: str, sql: str) -> str:
    return sql


tenant_call = tenant_query("t", "select 1")
assert_type(tenant_call, Coroutine[Any, Any, str]).close()
assert_type(per_tenant.get("t"), TokenBucketLimiter)


# -- cache ----------------------------------------------------------------------------------


class HitLogger(CacheListener):
    def on_cache_hit(self, cache: Cache, key: object, value: object) -> None:
        print("hit", key)


@cache(maxsize=1024, ttl=60, stale_if_error=300, listeners=[HitLogger()])
async def get_account(user_id: int) -> dict[str, int]:
    await asyncio.sleep(0.1)
    return {"id": user_id}


cached: CachedFunction[[int], dict[str, int], Cache] = get_account
assert_type(get_account.policy, Cache)


@cache
async def bare_cached(x: int) -> int:
    return x


assert_type(bare_cached.policy, Cache)


async def cache_main() -> None:
    users = await asyncio.gather(*(get_account(7) for _ in range(100)))
    assert_type(users, list[dict[str, int]])
    await get_account(7)
    assert_type(get_account.invalidate(7), bool)
    get_account.clear()
    print(get_account.policy.stats())
    stats = get_account.policy.stats()
    assert_type(stats, CacheStats)
    assert_type(stats.hit, int)
    assert_type(stats.stale_if_error, float | None)
    assert_type(stats["hit"], Any)  # still readable as a mapping
    assert_type(dict(stats), dict[str, Any])
    stats.hit = 0  # type: ignore[misc]  # frozen
    async with get_account:  # type: ignore[misc]  # a cache has no block form
        pass


class Users:
    """Decorated methods bind like functions: self is not part of the call."""

    @cache(maxsize=10)
    async def get(self, user_id: int) -> str:
        return str(user_id)

    @retry(attempts=1)
    async def put(self, user_id: int, name: str) -> None: ...


async def methods() -> None:
    users = Users()
    assert_type(await users.get(1), str)
    assert_type(users.get.policy, Cache)
    assert_type(Users.get.policy, Cache)
    await users.put(1, "a")
    assert_type(users.put.policy, Retry)
    await users.put("a")  # type: ignore[arg-type, call-arg]


# -- hedge ----------------------------------------------------------------------------------


@hedge(attempts=3, delay=0.05, timeout=1.0, name="price_quote")
async def fetch_price(venue: str) -> float:
    await asyncio.sleep(0.01)
    return 123.45


assert_type(fetch_price.policy, Hedge)


@hedge(attempts=2, delay=percentile(95, fallback=0.05), max_hedged_ratio=0.1)
async def read_key(key: str) -> bytes:
    await asyncio.sleep(0.002)
    return b"value"


async def quote(venue: str) -> float | None:
    try:
        return await fetch_price(venue)
    except HedgeTimeout:
        return None
    except HedgeAllFailed as exc:
        raise RuntimeError(f"{len(exc.errors)} attempts failed") from exc


async def hedge_block() -> None:
    async with hedge(timeout=1.0) as nothing:
        assert_type(nothing, None)
    async with fetch_price as bound:  # a hedge's block form: the timeout only
        assert_type(bound, None)


# -- stacking: each layer's policy, and the call, keep their types --------------------------


@fallback(0.0, on=Exception)
@hedge(attempts=2, delay=0.05)
@retry(attempts=2, on=ConnectionError)
@failfast(failure_threshold=3)
@payments
@db_pool
@tokenbucket(10, 1)
@timeout(1.0)
async def everything(venue: str, *, depth: int = 1) -> float:
    return 1.0


assert_type(everything.policy, Fallback)
stacked: Coroutine[Any, Any, float] = everything("XNYS", depth=2)
stacked.close()


async def misuse_stacked() -> None:
    await everything("XNYS", depth="2")  # type: ignore[arg-type]


# -- OpenTelemetry and FastAPI --------------------------------------------------------------

reader = InMemoryMetricReader()
provider = MeterProvider(metric_readers=[reader])
FailsafeOtelInstrumentor().instrument(namespace="failsafe.service", meter_provider=provider)

app = FastAPI()
install_exception_handlers(app)


@retry(attempts=2, name="inventory")
async def get_stock_level(sku: str) -> int:
    return 1


@app.get("/stock/{sku}")
async def stock_endpoint(sku: str) -> dict[str, int]:
    return {"stock": await get_stock_level(sku)}
