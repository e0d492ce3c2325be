"""The app of `demo.py --workers N`: each uvicorn worker calls a partner API that allows 50
calls per second in total, under `tokenbucket(50, 1, bucket_size=5)` kept in this process
(FAILSAFE_DEMO_MODE=local) or shared by every worker through Redis (=shared, with
FAILSAFE_DEMO_REDIS=URL). A call the limit refuses answers 429."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Response

from failsafe.ratelimit import RateLimitExceeded, tokenbucket
from failsafe.stores import RedisStore

RATE, BURST = 50, 5
MODE = os.environ.get("FAILSAFE_DEMO_MODE", "local")

if MODE == "shared":
    store = RedisStore(os.environ["FAILSAFE_DEMO_REDIS"], prefix="demo", op_timeout=0.25)
    limit: Any = tokenbucket(RATE, 1, bucket_size=BURST, store=store, name="partner_api")
else:
    limit = tokenbucket(RATE, 1, bucket_size=BURST, name="partner_api")

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
