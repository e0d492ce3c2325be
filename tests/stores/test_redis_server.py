"""The test servers themselves: a node answers, restarts on its port; the cluster is whole."""

from __future__ import annotations

import redis
from redis_server import RedisCluster, RedisServer


def test_node_answers_and_restarts_on_its_port(own_redis: RedisServer) -> None:
    client = redis.Redis(port=own_redis.port)
    client.set("k", "v")
    own_redis.restart()
    assert client.get("k") is None  # no persistence: a restart forgets
    assert client.ping()
    client.close()


def test_cluster_serves_every_slot(redis_cluster: RedisCluster) -> None:
    client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    for i in range(30):
        client.set(f"key{i}", i)
    assert {int(client.get(f"key{i}") or -1) for i in range(30)} == set(range(30))
    assert len(client.get_primaries()) == 3
    client.close()
