"""One place that builds Redis clients from settings: a plain client, or a Redis Cluster client when
``redis.cluster`` is set. Every process (worker, pusher, candidate library and API, ranking service, MRLM refresh)
gets its client here, so the deployment choice is configuration.

The connection pool is bounded (``redis.max_connections`` per node). On a single Redis a caller beyond the bound
waits for a free connection (up to the timeout, a BlockingConnectionPool) instead of failing, so a burst of requests
queues instead of opening thousands of connections. redis-py's cluster clients raise instead of waiting
(``MaxConnectionsError`` / "Too many connections"), so a caller that may run more than ``max_connections`` commands
at once on a cluster bounds itself: the candidate API does, with a semaphore of that size
(:class:`serving.candidates.AsyncCandidateGenerator`).
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from redis.exceptions import ClusterDownError, ClusterError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from topicfs.settings import RedisConfig

# Redis, or a cluster node, is unreachable for now (down, failing over, resharding): callers retry the work later
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ClusterDownError, ClusterError, TryAgainError, OSError)


def sync_client(config: RedisConfig, timeout_s: float | None = None) -> redis.Redis | RedisCluster:
    """A synchronous client of ``config``'s Redis (or Redis Cluster)."""
    return _client(config, timeout_s, RedisCluster, redis.BlockingConnectionPool, redis.Redis)


def async_client(config: RedisConfig, timeout_s: float | None = None) -> aioredis.Redis | AsyncRedisCluster:
    """An asyncio client of ``config``'s Redis (or Redis Cluster)."""
    return _client(config, timeout_s, AsyncRedisCluster, aioredis.BlockingConnectionPool, aioredis.Redis)


def _client(config: RedisConfig, timeout_s: float | None, cluster_class, pool_class, client_class):
    options = _timeouts(timeout_s)
    if config.cluster:
        return cluster_class.from_url(config.url, max_connections=config.max_connections, **options)
    pool = pool_class.from_url(config.url, max_connections=config.max_connections, timeout=timeout_s or 20, **options)
    return client_class(connection_pool=pool)


def _timeouts(timeout_s: float | None) -> dict:
    if timeout_s is None:
        return {}
    return {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
