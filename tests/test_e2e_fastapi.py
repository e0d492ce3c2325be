"""failsafe.integrations.fastapi over real HTTP: each failsafe exception maps to its status,
headers and JSON body (uvicorn on a free port, httpx)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from fastapi import FastAPI

from e2e_server import serve
from failsafe.integrations.fastapi import (
    HANDLED,
    MAX_RETRY_AFTER,
    install_exception_handlers,
    retry_after_header,
)
from failsafe.ratelimit import EmptyBucket, RateLimitExceeded
from failsafe.timeout import TimeoutError as FsTimeoutError
from failsafe.timeout import timeout

# (module, class, constructor kwargs, status, Retry-After)
CASES: list[tuple[str, str, dict[str, Any], int, str | None]] = [
    ("failsafe.ratelimit", "RateLimitExceeded", {"retry_after_seconds": 1.2}, 429, "2"),
    ("failsafe.ratelimit", "RateLimitExceeded", {"retry_after_ms": 300}, 429, "1"),
    ("failsafe.ratelimit", "RateLimitExceeded", {"retry_after_seconds": 3.0}, 429, "3"),
    ("failsafe.ratelimit", "RateLimitExceeded", {}, 429, None),
    ("failsafe.ratelimit", "EmptyBucket", {"retry_after_seconds": 0.0001}, 429, "1"),
    ("failsafe.circuitbreaker", "BreakerFailing", {"retry_after": 2.5}, 503, "3"),
    ("failsafe.circuitbreaker", "BreakerFailing", {"retry_after": None}, 503, None),
    ("failsafe.failfast", "FailFastOpen", {"retry_after": 10.0}, 503, "10"),
    ("failsafe.failfast", "FailFastOpen", {}, 503, None),
    ("failsafe.bulkhead", "BulkheadFull", {"retry_after": 0.2}, 503, "1"),
    ("failsafe.bulkhead", "BulkheadFull", {}, 503, None),
    ("failsafe.adaptive", "LimitExceeded", {"retry_after": 0.05}, 503, "1"),
    ("failsafe.adaptive", "LimitExceeded", {}, 503, None),
    ("failsafe.adaptive", "Throttled", {"retry_after": 2.5}, 503, "3"),
    ("failsafe.timeout", "TimeoutError", {}, 504, None),
    ("failsafe.hedge", "HedgeTimeout", {}, 504, None),
    ("failsafe.featuretoggle", "FeatureDisabled", {}, 403, None),
]


def _class(module: str, name: str) -> type[Exception]:
    cls: type[Exception] = getattr(pytest.importorskip(module), name)
    return cls


@pytest.mark.parametrize(
    ("module", "name", "kwargs", "status", "retry_after"),
    CASES,
    ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)],
)
async def test_exception_maps_to_status_and_headers(
    module: str, name: str, kwargs: dict[str, Any], status: int, retry_after: str | None
) -> None:
    cls = _class(module, name)
    app = FastAPI()
    installed = install_exception_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise cls("rejected", **kwargs)

    @app.get("/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    async with serve(app) as client:
        response = await client.get("/boom")
        assert (await client.get("/ok")).status_code == 200
    assert response.status_code == status
    assert response.headers.get("retry-after") == retry_after
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == name
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert any(issubclass(cls, handled) for handled in installed)


async def test_real_timeout_rejection_is_504() -> None:
    app = FastAPI()
    install_exception_handlers(app)

    @timeout(0, name="e2e_handler_timeout")
    async def slow() -> None:
        import asyncio

        await asyncio.sleep(10)

    @app.get("/slow")
    async def endpoint() -> None:
        await slow()

    async with serve(app) as client:
        response = await client.get("/slow")
    assert response.status_code == 504
    assert response.json() == {"detail": "timed out", "error": "TimeoutError"}


async def test_real_ratelimit_rejection_is_429_with_retry_after() -> None:
    mod = pytest.importorskip("failsafe.ratelimit")
    if not hasattr(mod, "tokenbucket"):
        pytest.skip("failsafe.ratelimit has no tokenbucket")
    app = FastAPI()
    install_exception_handlers(app)

    @mod.tokenbucket(1, 30, name="e2e_handler_limit")
    async def limited() -> int:
        return 1

    @app.get("/limited")
    async def endpoint() -> int:
        return await limited()

    async with serve(app) as client:
        first = await client.get("/limited")
        second = await client.get("/limited")
    assert first.status_code == 200
    assert second.status_code == 429
    assert 1 <= int(second.headers["retry-after"]) <= 30


async def test_non_failsafe_errors_are_left_alone() -> None:
    app = FastAPI()
    install_exception_handlers(app)

    @app.get("/builtin-timeout")
    async def builtin() -> None:
        raise TimeoutError("not ours")

    async with serve(app) as client:
        response = await client.get("/builtin-timeout")
    assert response.status_code == 500


def test_installs_every_present_pattern_and_returns_them() -> None:
    app = FastAPI()
    installed = install_exception_handlers(app)
    present = {}
    for module, name, status, _ in HANDLED:
        try:
            present[getattr(importlib.import_module(module), name)] = status
        except ModuleNotFoundError:
            continue
    assert installed == present
    assert installed[RateLimitExceeded] == 429
    assert installed[FsTimeoutError] == 504
    assert EmptyBucket not in installed  # handled through its base class


@pytest.mark.parametrize(
    ("value", "header"),
    [(0.0, "1"), (0.4, "1"), (1.0, "1"), (1.01, "2"), (59.9, "60"), (-3, "1"), (None, None)],
)
def test_retry_after_rounds_up(value: float | None, header: str | None) -> None:
    assert retry_after_header(RateLimitExceeded(retry_after_seconds=value)) == header


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "3", True])
def test_retry_after_ignores_nonsense(value: Any) -> None:
    exc = Exception()
    exc.retry_after = value  # type: ignore[attr-defined]
    assert retry_after_header(exc) is None


async def test_huge_retry_after_is_capped_to_a_day() -> None:
    """A limiter whose next token is ages away answers Retry-After: 86400, not a 301-digit
    header."""
    app = FastAPI()
    install_exception_handlers(app)

    @app.get("/far")
    async def far() -> None:
        raise RateLimitExceeded(retry_after_seconds=1e300)

    async with serve(app) as client:
        response = await client.get("/far")
    assert response.status_code == 429
    assert response.headers["retry-after"] == str(MAX_RETRY_AFTER) == "86400"
    assert retry_after_header(RateLimitExceeded(retry_after_seconds=86_399.5)) == "86400"
    assert retry_after_header(RateLimitExceeded(retry_after_seconds=86_401)) == "86400"
