"""Deadline propagation over HTTP, against real uvicorn services in another process
(tests/deadline_service.py): DeadlineMiddleware reads the caller's deadline, ResilientTransport
cuts the downstream call at it and sends what is left.

The cuts run in real time; the tests assert lower bounds and counts only.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from failsafe.deadline import parse_grpc_timeout
from http_servers import serving

SERVICE = Path(__file__).with_name("deadline_service.py")


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[str, str]]:
    """Base URLs of the edge service (behind DeadlineMiddleware) and the plain one."""
    with serving(SERVICE, "/seen/ready") as urls:
        # Every path once, so that first-use work (imports, connections) is not in a deadline.
        for to in urls:
            for header in ("x-request-timeout", "grpc-timeout"):
                params = {"to": to, "header": header, "seconds": "0"}
                warm = httpx.get(f"{urls[0]}/front/warm-up", params=params, timeout=60)
                assert warm.json() == {"status": 200}, warm.text
        yield urls[0], urls[1]


def seen(base: str, key: str) -> list[dict[str, str | None]]:
    hits: list[dict[str, str | None]] = httpx.get(f"{base}/seen/{key}", timeout=10).json()
    return hits


async def test_an_inbound_grpc_timeout_cuts_the_downstream_call_and_travels_with_it(
    services: tuple[str, str],
) -> None:
    edge, plain = services
    key = uuid.uuid4().hex
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=60) as client:
        answer = await client.get(
            f"{edge}/front/{key}", params={"to": plain}, headers={"grpc-timeout": "500m"}
        )
    elapsed = time.monotonic() - start
    # Cut at 0.5 s (the downstream call stalls for 60 s): the middleware answers 504.
    assert answer.status_code == 504
    assert answer.json()["error"] == "DeadlineExceeded"
    assert 0.45 <= elapsed < 30
    # One downstream attempt (none started past the deadline), told what was left of 0.5 s.
    hits = seen(plain, key)
    assert len(hits) == 1
    sent = hits[0]["x-request-timeout"]
    assert sent is not None
    assert 0 < float(sent) <= 0.5
    assert hits[0]["grpc-timeout"] is None


async def test_the_deadline_travels_in_grpc_syntax_and_the_next_service_keeps_it(
    services: tuple[str, str],
) -> None:
    edge, _ = services
    key = uuid.uuid4().hex
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=60) as client:
        answer = await client.get(
            f"{edge}/front/{key}",
            params={"to": edge, "header": "grpc-timeout"},
            headers={"X-Request-Timeout": "0.5"},
        )
    elapsed = time.monotonic() - start
    # Either service's deadline ends the chain (the downstream one comes first, by a hair).
    assert answer.status_code == 504 or answer.json() == {"status": 504}
    assert 0.4 <= elapsed < 30
    hits = seen(edge, key)
    assert len(hits) == 1
    sent = hits[0]["grpc-timeout"]
    assert sent is not None
    assert 0 < parse_grpc_timeout(sent) <= 0.5
    assert hits[0]["x-request-timeout"] is None


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"X-Request-Timeout": "2"}, 1.0, 2.0),
        ({"grpc-timeout": "1S", "X-Request-Timeout": "5"}, 0.0, 1.0),
        ({"grpc-timeout": "3M"}, 170.0, 180.0),
    ],
)
async def test_the_middleware_sets_the_deadline_for_the_request(
    services: tuple[str, str], headers: dict[str, str], low: float, high: float
) -> None:
    edge, plain = services
    async with httpx.AsyncClient(timeout=60) as client:
        remaining = (await client.get(f"{edge}/remaining", headers=headers)).json()["remaining"]
        assert low < remaining <= high
        # Without the middleware, or without a header: no deadline.
        assert (await client.get(f"{plain}/remaining", headers=headers)).json() == {
            "remaining": None
        }
        assert (await client.get(f"{edge}/remaining")).json() == {"remaining": None}


@pytest.mark.parametrize(
    "headers", [{"grpc-timeout": "soon"}, {"X-Request-Timeout": "-1"}, {"grpc-timeout": "1.5S"}]
)
async def test_a_malformed_deadline_header_is_a_400(
    services: tuple[str, str], headers: dict[str, str]
) -> None:
    edge, _ = services
    async with httpx.AsyncClient(timeout=60) as client:
        answer = await client.get(f"{edge}/remaining", headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"] == "ValueError"
