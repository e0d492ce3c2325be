"""Latency histograms of the `async with` blocks of policies shared through a real Redis: timed
from the entry to the end of the block, by outcome, as the in-process forms are."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis_server import RedisServer, connected

from failsafe.bulkhead import bulkhead
from failsafe.circuitbreaker import consecutive_breaker
from failsafe.ratelimit import tokenbucket
from failsafe.stores import RedisStore
from test_otel_latency import NS, Otel, otel, unique

__all__ = ["otel"]  # the fixture, shared with test_otel_latency


@pytest.fixture
async def store(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[RedisStore]:
    s = await connected(
        RedisStore(redis_server.url, prefix=f"lat-{request.node.name}"[:60], op_timeout=2)
    )
    yield s
    await s.aclose()


async def test_shared_blocks_time_success_and_failure(otel: Otel, store: RedisStore) -> None:
    names = {p: unique(p[:2]) for p in ("bulkhead", "ratelimit", "circuitbreaker")}
    policies = [
        ("bulkhead", bulkhead(2, store=store, name=names["bulkhead"], lease=5)),
        ("ratelimit", tokenbucket(100, 1, store=store, name=names["ratelimit"])),
        (
            "circuitbreaker",
            consecutive_breaker(failure_threshold=5, store=store, name=names["circuitbreaker"]),
        ),
    ]
    for _, policy in policies:
        async with policy:
            await asyncio.sleep(0.02)
        with pytest.raises(ZeroDivisionError):
            async with policy:
                raise ZeroDivisionError
    h = otel.histograms()
    for pattern, name in names.items():
        points = h[f"{NS}.{name}.{pattern}.duration"]
        # Each block counted once (never twice by a shared form and the local one under it).
        assert (points["success"].count, points["failure"].count) == (1, 1), pattern
        assert points["success"].sum >= 0.02, pattern
