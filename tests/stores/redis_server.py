"""Real redis-server processes for the tests: one node, or a 3-node cluster, on free ports."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from failsafe.stores import RedisStore

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
MISSING = "redis-server not found on PATH (apt-get install -y redis-server; .ci/run installs it)"


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A free port p with p + 10000 free too (a cluster node's bus port), so p <= 55535."""
    for _ in range(1000):
        port = random.randrange(20000, 55000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair found")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server on 127.0.0.1:port (no persistence); start(), stop(), kill(), restart()
    on the same port."""

    def __init__(self, port: int | None = None, *extra: str, workdir: Path | None = None) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError(MISSING)
        self.port = port or free_port()
        self.extra = extra
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="failsafe-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--enable-debug-command", "local",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited at start")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def cli(self, *args: str) -> str:
        assert REDIS_CLI is not None
        out = subprocess.run(
            [REDIS_CLI, "-p", str(self.port), *args], capture_output=True, check=True, timeout=30
        )
        return out.stdout.decode()


def _cluster_args(i: int) -> list[str]:
    return [
        "--cluster-enabled", "yes",
        "--cluster-config-file", f"nodes-{i}.conf",
        "--cluster-node-timeout", "5000",
    ]  # fmt: skip


class RedisCluster:
    """Three cluster-enabled redis-servers joined with `redis-cli --cluster create`."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="failsafe-cluster-"))
        self.nodes = [RedisServer(None, *_cluster_args(i), workdir=self.workdir) for i in range(3)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> RedisCluster:
        assert REDIS_CLI is not None
        for node in self.nodes:
            node.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            check=True,
            timeout=60,
        )
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Until every node sees the cluster up (one that has not heard of the others yet, or
        of a restarted one, answers CLUSTERDOWN)."""
        deadline = time.monotonic() + timeout
        while not all("cluster_state:ok" in n.cli("cluster", "info") for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def node_of(self, key: str) -> RedisServer:
        """The node serving key's slot."""
        slot = int(self.nodes[0].cli("cluster", "keyslot", key))
        for line in self.nodes[0].cli("cluster", "nodes").splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for served in fields[8:]:
                low, _, high = served.partition("-")
                if not served.startswith("[") and int(low) <= slot <= int(high or low):
                    return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no node serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class Outage:
    """The server to kill under a policy: a single redis-server, or the cluster node serving
    the policy's key (killed briefly: the cluster stays up, below its node timeout)."""

    def __init__(self, url: str, server: RedisServer | RedisCluster) -> None:
        self.url = url
        self._server = server
        self._killed: RedisServer | None = None

    def kill(self, key: str) -> None:
        server = self._server
        node = server.node_of(key) if isinstance(server, RedisCluster) else server
        node.kill()
        self._killed = node

    def start(self) -> None:
        """Restarts what kill() killed (empty, same port) and waits until it serves."""
        node, self._killed = self._killed, None
        if node is not None:
            node.start()
        if isinstance(self._server, RedisCluster):
            self._server.wait_ok()


@contextlib.contextmanager
def running(server: RedisServer | RedisCluster) -> Iterator[None]:
    server.start()
    try:
        yield
    finally:
        server.stop()


async def connected[S: RedisStore](store: S) -> S:
    """store, its connection opened (bounded by the store's connect timeout, not op_timeout):
    a test's first call then meets Redis, even on a slow (sanitized, loaded) interpreter where
    connecting outlasts a 0.05 s op_timeout and would make that call fall back."""
    await store._client()
    return store
