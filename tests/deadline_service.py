"""Two services for the deadline propagation tests, served by uvicorn in one process of their own.

``python deadline_service.py EDGE_FD PLAIN_FD`` serves on the two inherited listening sockets:

* EDGE, a Starlette app behind ``DeadlineMiddleware`` (``grpc-timeout`` and
  ``X-Request-Timeout``):
  * ``/front/KEY?to=URL&header=NAME&seconds=60``: GETs ``URL/down/KEY?seconds=...`` through a
    ``ResilientTransport`` sending what is left of the deadline in header NAME; answers
    ``{"status": ...}``;
  * ``/remaining``: ``{"remaining": failsafe.deadline.remaining()}``;
* both EDGE and PLAIN (the same routes, PLAIN without the middleware):
  * ``/down/KEY?seconds=S``: records the request's deadline headers, then answers after S s;
  * ``/seen/KEY``: ``[{"grpc-timeout": ..., "x-request-timeout": ...}, ...]`` per hit.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections import defaultdict
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from failsafe.deadline import deadline
from failsafe.integrations.fastapi import DeadlineMiddleware
from failsafe.integrations.httpx import ResilientTransport

seen: dict[str, list[dict[str, str | None]]] = defaultdict(list)


async def down(request: Request) -> Response:
    key = request.path_params["key"]
    seen[key].append({h: request.headers.get(h) for h in ("grpc-timeout", "x-request-timeout")})
    await asyncio.sleep(float(request.query_params.get("seconds", "0")))
    return Response("ok")


async def show(request: Request) -> Response:
    return JSONResponse(seen[request.path_params["key"]])


# One client per header, made at start: the first transport imports httpcore, which takes
# longer than the deadlines under test.
CLIENTS = {
    header: httpx.AsyncClient(
        transport=ResilientTransport(deadline_header=header, breaker=False, limiter=False),
        timeout=60,
    )
    for header in ("x-request-timeout", "grpc-timeout")
}


async def front(request: Request) -> Response:
    key = request.path_params["key"]
    target = request.query_params["to"]
    client = CLIENTS[request.query_params.get("header", "x-request-timeout")]
    seconds = request.query_params.get("seconds", "60")
    answer = await client.get(f"{target}/down/{key}?seconds={seconds}")
    await answer.aclose()
    return JSONResponse({"status": answer.status_code})


async def remaining(request: Request) -> Response:
    return JSONResponse({"remaining": deadline.remaining()})


ROUTES = [
    Route("/down/{key}", down),
    Route("/seen/{key}", show),
    Route("/front/{key}", front),
    Route("/remaining", remaining),
]


def main() -> None:
    edge_sock, plain_sock = (socket.socket(fileno=int(fd)) for fd in sys.argv[1:3])
    edge = Starlette(routes=ROUTES, middleware=[Middleware(DeadlineMiddleware)])
    plain = Starlette(routes=ROUTES)
    options: dict[str, Any] = {
        "log_level": "critical",
        "access_log": False,
        "lifespan": "off",
        "timeout_graceful_shutdown": 1,
    }
    servers = [
        (uvicorn.Server(uvicorn.Config(edge, **options)), edge_sock),
        (uvicorn.Server(uvicorn.Config(plain, **options)), plain_sock),
    ]

    async def serve() -> None:
        await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))

    asyncio.run(serve())


if __name__ == "__main__":
    main()
