"""The example service: the README's FastAPI service plus a price quote endpoint in two
versions, guarded by failsafe and not, both calling the same flaky dependency.

Run: cd examples/service && uv run uvicorn main:app
(set OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 to export to a collector)
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from quotes import DEFAULT_PRICE, guarded_price, unguarded_price
from telemetry import failsafe_counters, failsafe_latency, setup_otel

from failsafe.integrations.fastapi import install_exception_handlers

setup_otel("failsafe-service")
app = FastAPI()
install_exception_handlers(app)  # failsafe rejections become 429 / 503 / 504 / 403

try:  # the README's orders endpoint needs hedge, failfast and featuretoggle
    from orders import router as orders_router
except ModuleNotFoundError as e:
    if not (e.name or "").startswith("failsafe."):
        raise
else:
    app.include_router(orders_router)


@app.get("/quote/{item}")
async def quote(item: int) -> dict[str, object]:
    price = await guarded_price(item)
    return {"item": item, "price": price, "fresh": price != DEFAULT_PRICE}


@app.get("/quote-unguarded/{item}")
async def quote_unguarded(item: int) -> dict[str, object]:
    try:
        price = await unguarded_price(item)
    except ConnectionError:
        raise HTTPException(status_code=502, detail="price service failed") from None
    return {"item": item, "price": price, "fresh": True}


@app.get("/metrics/failsafe")
async def metrics() -> dict[str, int]:
    """failsafe's counters, read back from OpenTelemetry."""
    return failsafe_counters()


@app.get("/metrics/failsafe/latency")
async def latency() -> dict[str, dict[str, object]]:
    """failsafe's latency histograms by outcome, read back from OpenTelemetry."""
    return failsafe_latency()
