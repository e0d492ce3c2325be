"""The orders endpoint of the README's FastAPI example."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException

from failsafe.failfast import FailFastOpen, failfast
from failsafe.featuretoggle import FeatureDisabled, featuretoggle
from failsafe.hedge import HedgeTimeout, hedge
from failsafe.retry import retry
from failsafe.timeout import TimeoutError as FsTimeoutError
from failsafe.timeout import timeout

router = APIRouter()


@hedge(name="price_quote", attempts=3, delay=0.03, timeout=0.25)
@retry(name="price_quote", attempts=3)
async def fetch_price(venue: str) -> float:
    await asyncio.sleep(0.1)
    return 123.45


@featuretoggle(name="beta_orders", enabled=True)
@failfast(name="orders_write_guard", failure_threshold=1)
async def create_order_impl(payload: dict[str, str]) -> dict[str, object]:
    async with timeout(name="db_write_timeout", seconds=0.3):
        await asyncio.sleep(0.05)
    price = await fetch_price(payload["venue"])
    return {"ok": True, "price": price}


@router.post("/orders")
async def create_order(payload: dict[str, str]) -> dict[str, object]:
    try:
        return await create_order_impl(payload)
    except FeatureDisabled:
        raise HTTPException(status_code=403, detail="feature disabled") from None
    except FailFastOpen:
        raise HTTPException(status_code=503, detail="fail-fast open") from None
    except HedgeTimeout:
        raise HTTPException(status_code=504, detail="pricing timed out") from None
    except FsTimeoutError:
        raise HTTPException(status_code=504, detail="db timeout") from None
