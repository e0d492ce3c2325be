"""A real HTTP server script in a subprocess for the HTTP tests: it listens on sockets bound here
(free ports, no race for them) and is ready once every URL answers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def serving(script: Path, ready_path: str, ports: int = 2) -> Iterator[tuple[str, ...]]:
    """Runs `python script fd...` and yields the base URL of each socket once GET ready_path
    answers on all of them; terminates the process afterwards."""
    socks = [listening_socket() for _ in range(ports)]
    fds = [s.fileno() for s in socks]
    proc = subprocess.Popen(
        [sys.executable, str(script), *map(str, fds)],
        pass_fds=fds,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    urls = tuple(f"http://127.0.0.1:{s.getsockname()[1]}" for s in socks)
    try:
        until = time.monotonic() + 30
        while True:
            try:
                for url in urls:
                    httpx.get(f"{url}{ready_path}", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > until:
                    raise
                time.sleep(0.05)
        yield urls
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for s in socks:
            s.close()
