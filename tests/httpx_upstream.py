"""A misbehaving upstream for the httpx transport tests, served by uvicorn in its own process.

``python httpx_upstream.py FD...`` serves on the listening sockets FD... (inherited). Routes, where
KEY names a test's own counter and the first ``n`` hits of a key misbehave (default 1):

* ``/ok/KEY``: 200;
* ``/status/KEY?code=503&retry_after=1``: answers ``code`` (with that ``Retry-After``);
* ``/stall/KEY?seconds=30``: answers only after ``seconds``;
* ``/reset/KEY``: resets the connection (RST) before answering anything;
* ``/drop/KEY``: starts a 200 with a 100-byte body, sends 5 bytes and drops the connection;
* ``/hits/KEY``: JSON ``{"hits": [monotonic seconds of each hit], "methods": [...]}``.

After the misbehaving hits every route answers 200 with ``ok <hit number>``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import sys
import time
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

hits: dict[str, list[float]] = defaultdict(list)
methods: dict[str, list[str]] = defaultdict(list)


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):  # read the request body
        pass
    _, route, key = scope["path"].split("/", 2)
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if route == "hits":
        body = json.dumps({"hits": hits[key], "methods": methods[key]}).encode()
        await _answer(send, 200, body, [(b"content-type", b"application/json")])
        return
    if route == "reset":  # counted by the protocol, which let this one through
        await _answer(send, 200, f"ok {len(hits[key])}".encode(), [])
        return
    hits[key].append(time.monotonic())
    methods[key].append(scope["method"])
    number = len(hits[key])
    if number <= int(query.get("n", "1")):
        if route == "status":
            extra = []
            if "retry_after" in query:
                extra.append((b"retry-after", query["retry_after"].encode()))
            await _answer(send, int(query.get("code", "503")), b"busy " * 200, extra)
            return
        if route == "stall":
            await asyncio.sleep(float(query.get("seconds", "30")))
        elif route == "drop":
            start = {"type": "http.response.start", "status": 200}
            await send({**start, "headers": [(b"content-length", b"100")]})
            await send({"type": "http.response.body", "body": b"12345", "more_body": True})
            raise ConnectionAbortedError("dropped on purpose")
    await _answer(send, 200, f"ok {number}".encode(), [])


_RESET = re.compile(rb"^[A-Z]+ /reset/([^/?\s]+)(?:\?n=(\d+))?")


class Resetting(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, but a request for /reset/KEY resets the connection (the
    first n times), which no ASGI app can do."""

    def data_received(self, data: bytes) -> None:
        match = _RESET.match(data)
        if match is not None:
            key = match.group(1).decode()
            hits[key].append(time.monotonic())
            methods[key].append(data.split(b" ", 1)[0].decode())
            if len(hits[key]) <= int(match.group(2) or 1):
                sock = self.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.transport.abort()
                return
        super().data_received(data)


def main() -> None:
    socks = [socket.socket(fileno=int(fd)) for fd in sys.argv[1:]]
    config = uvicorn.Config(
        app,
        log_level="critical",
        access_log=False,
        lifespan="off",
        http=Resetting,
        timeout_graceful_shutdown=1,  # stalled requests do not hold the exit
    )
    uvicorn.Server(config).run(sockets=socks)


if __name__ == "__main__":
    main()
