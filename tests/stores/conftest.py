"""Fixtures starting real Redis servers: skipped with a clear reason when redis-server is absent
(CI installs it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_server import MISSING, REDIS_CLI, REDIS_SERVER, Outage, RedisCluster, RedisServer

needs_redis = pytest.mark.skipif(REDIS_SERVER is None or REDIS_CLI is None, reason=MISSING)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "stores" in item.path.parts:
            item.add_marker(needs_redis)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (tests use distinct key prefixes)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone: it may kill, restart or stall it."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone that keeps its data across a crash (append-only file,
    synced on every write): the state stored before an outage is there when it returns."""
    server = RedisServer(None, "--appendonly", "yes", "--appendfsync", "always").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-node cluster (no replicas) for the session."""
    cluster = RedisCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["single", "cluster"])
def outage(request: pytest.FixtureRequest) -> Iterator[Outage]:
    """A server a test may kill under a policy and restart: its own redis-server, or a node of
    the session's cluster (restarted, the cluster up again, after the test)."""
    if request.param == "single":
        server = RedisServer().start()
        yield Outage(server.url, server)
        server.stop()
        return
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    target = Outage(cluster.url, cluster)
    yield target
    target.start()
