"""Fixtures shared by every test folder: a private Redis for integration tests."""

from __future__ import annotations

import prometheus_client  # noqa: F401  before anything imports feast.metrics, which turns on prometheus_client's multiprocess mode for later imports
import pytest

from topicfs.services import LocalRedis


@pytest.fixture(scope="session")
def redis_server():
    """A memory-only redis-server of this test session, on its own port (never the shared 6379)."""
    server = LocalRedis.start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server):
    """URL of the private Redis, emptied before each test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster():
    """A memory-only 3-master Redis Cluster of this test session (redis-server --cluster-enabled + redis-cli --cluster create)."""
    from topicfs.services import LocalRedisCluster

    cluster = LocalRedisCluster.start(3)
    yield cluster
    cluster.stop()


def flush_cluster(cluster) -> None:
    import redis

    for url in (node.url for node in cluster.nodes):
        client = redis.Redis.from_url(url)
        client.flushall()
        client.close()


@pytest.fixture(params=["single", "cluster"])
def redis_deployment(request):
    """Each test using it runs twice: on a single Redis and on the 3-master cluster, emptied first.

    Yields a :class:`topicfs.settings.RedisConfig` (url, cluster, and 5 shards on the cluster so state spreads
    over every master).
    """
    from topicfs.settings import RedisConfig

    if request.param == "single":
        url = request.getfixturevalue("redis_url")
        yield RedisConfig(url=url, cluster=False, shards=1)
    else:
        cluster = request.getfixturevalue("redis_cluster")
        flush_cluster(cluster)
        yield RedisConfig(url=cluster.url, cluster=True, shards=5)
