"""The app of `demo.py --workers N`: each uvicorn worker calls a partner API that allows 50
calls per second in total, under `tokenbucket(50, 1, bucket_size=5)` kept in this process
(FAILSAFE_DEMO_MODE=local) or shared by every worker through Redis (=shared, with
FAILSAFE_DEMO_REDIS=URL). A call the limit refuses answers 429.

Also an inventory service behind a circuit breaker (5 consecutive failures open it for 30 s;
`/inventory?down=1` simulates its outage) and a `new_checkout` feature toggle (`/checkout`,
switched by `/admin/checkout?on=0|1`), per process or shared the same way."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Response

from failsafe.circuitbreaker import BreakerFailing, consecutive_breaker
from failsafe.featuretoggle import FeatureDisabled, featuretoggle
from failsafe.ratelimit import RateLimitExceeded, tokenbucket
from failsafe.stores import RedisStore

RATE, BURST = 50, 5
MODE = os.environ.get("FAILSAFE_DEMO_MODE", "local")

shared: dict[str, Any] = {}
if MODE == "shared":
    store = RedisStore(os.environ["FAILSAFE_DEMO_REDIS"], prefix="demo", op_timeout=0.25)
    shared = {"store": store}
limit: Any = tokenbucket(RATE, 1, bucket_size=BURST, name="partner_api", **shared)
breaker: Any = consecutive_breaker(
    ConnectionError, failure_threshold=5, recovery_time=30, name="inventory", **shared
)
new_checkout: Any = featuretoggle(name="new_checkout", **shared)
inventory_calls = 0  # calls of this worker that reached the inventory service

app = FastAPI()


@limit
async def call_partner() -> str:
    return "ok"  # the partner's answer: counted by the demo as one partner call


def _fallbacks() -> int:
    return int(store.stats()["fallbacks"]) if MODE == "shared" else 0


@app.get("/partner")
async def partner(response: Response) -> dict[str, Any]:
    try:
        return {"answer": await call_partner(), "pid": os.getpid(), "fallbacks": _fallbacks()}
    except RateLimitExceeded as exc:
        response.status_code = 429
        return {"retry_after": exc.retry_after_seconds, "pid": os.getpid()}


@breaker
async def call_inventory(down: bool) -> str:
    global inventory_calls
    inventory_calls += 1
    if down:
        raise ConnectionError("inventory service unreachable")
    return "in stock"


@app.get("/inventory")
async def inventory(response: Response, down: int = 0) -> dict[str, Any]:
    try:
        return {"answer": await call_inventory(bool(down)), "pid": os.getpid()}
    except (ConnectionError, BreakerFailing) as exc:
        response.status_code = 503
        return {"error": type(exc).__name__, "pid": os.getpid()}


@new_checkout
async def new_checkout_flow() -> str:
    return "new"


@app.get("/checkout")
async def checkout() -> dict[str, Any]:
    try:
        flow = await new_checkout_flow()
    except FeatureDisabled:
        flow = "old"
    return {"new_checkout": flow == "new", "pid": os.getpid()}


@app.get("/admin/checkout")
async def switch_checkout(on: int) -> dict[str, Any]:
    # Shared: awaiting the change means it is stored (every worker sees it shortly).
    await (new_checkout.enable() if on else new_checkout.disable())
    return {"new_checkout": new_checkout.enabled, "pid": os.getpid()}


@app.get("/stats")
async def stats() -> dict[str, Any]:
    return {"pid": os.getpid(), "inventory_calls": inventory_calls, "breaker": breaker.state}
