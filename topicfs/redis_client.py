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

from redis.exceptions import ClusterDownError, ClusterError, NoScriptError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from topicfs.settings import RedisConfig

# Redis, or a cluster node, is unreachable for now (down, failing over, resharding): callers retry the work later
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ClusterDownError, ClusterError, TryAgainError, OSError)


def sync_client(config: RedisConfig, timeout_s: float | None = None) -> redis.Redis | RedisCluster:
    """A synchronous client of ``config``'s Redis (or Redis Cluster)."""
    return _client(config, timeout_s, RedisCluster, redis.BlockingConnectionPool, redis.Redis)


def async_client(config: RedisConfig, timeout_s: float | None = None) -> aioredis.Redis | AsyncRedisCluster:
    """An asyncio client of ``config``'s Redis (or Redis Cluster); long commands are packed by :class:`_FastPack`."""
    client = _client(config, timeout_s, AsyncRedisCluster, aioredis.BlockingConnectionPool, aioredis.Redis)
    _use_fast_pack(client)
    return client


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


# ------------------------------------------------------------ commands with many arguments


class _FastPack:
    """A connection whose ``pack_command`` is faster for commands with many arguments (a batch script's KEYS:
    thousands of key names per call), with the same bytes on the wire as redis-py's. redis-py's packer copies its
    growing buffer and calls the encoder once per argument; here each argument is one ``%``-format into a list that
    is joined once (58% fewer instructions to pack a batch call, docs/BENCH_STREAM.md). Short commands keep
    redis-py's packer."""

    _MANY_ARGS = 64

    def pack_command(self, *args):
        if len(args) < self._MANY_ARGS:
            return super().pack_command(*args)
        if isinstance(args[0], str):  # as redis-py: a command name may hold several words ("SCRIPT LOAD")
            args = tuple(args[0].encode().split()) + args[1:]
        elif b" " in args[0]:
            args = tuple(args[0].split()) + args[1:]
        encoder = self.encoder
        encode, encoding, errors = encoder.encode, encoder.encoding, encoder.encoding_errors
        cutoff = self._buffer_cutoff
        output = []
        pieces = [b"*%d\r\n" % len(args)]
        for arg in args:
            arg = arg.encode(encoding, errors) if type(arg) is str else encode(arg)
            if len(arg) > cutoff or isinstance(arg, memoryview):  # a large value is sent as it is, not copied
                pieces.append(b"$%d\r\n" % len(arg))
                output.append(b"".join(pieces))
                output.append(arg)
                pieces = [b"\r\n"]
            else:
                pieces.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
        output.append(b"".join(pieces))
        return output


_fast_classes: dict[type, type] = {}


def fast_pack_class(connection_class: type) -> type:
    """``connection_class`` (plain, TLS or Unix socket) with :class:`_FastPack`'s packer."""
    if issubclass(connection_class, _FastPack):
        return connection_class
    fast = _fast_classes.get(connection_class)
    if fast is None:
        fast = _fast_classes[connection_class] = type(f"FastPack{connection_class.__name__}", (_FastPack, connection_class), {})
    return fast


def _use_fast_pack(client) -> None:
    """Make an asyncio client's future connections pack long commands with :class:`_FastPack` (its pool's connection
    class, or on a cluster the class every node is built with)."""
    if isinstance(client, AsyncRedisCluster):
        kwargs = client.connection_kwargs  # the dict the nodes manager builds each node from
        kwargs["connection_class"] = fast_pack_class(kwargs.get("connection_class") or aioredis.Connection)
        for node in client.startup_nodes:
            node.connection_class = fast_pack_class(node.connection_class)
    else:
        pool = client.connection_pool
        pool.connection_class = fast_pack_class(pool.connection_class)


# ------------------------------------------------------------ scripts whose keys share one slot


class SlotScript:
    """A Lua script whose KEYS all sit in one Redis Cluster slot (one state shard's hash tag), called as redis-py's
    ``AsyncScript``: ``await script(keys=[...], args=[...])``.

    On a single Redis this is redis-py's script call. On a Redis Cluster, redis-py hashes every KEYS entry to find
    the slot and check that they share it, and a batch call has thousands (the stream worker's state step then took
    27% more Python instructions per event, docs/BENCH_STREAM.md). Here the slot is that of the first key and the
    EVALSHA goes straight to the master that owns it (Redis itself refuses keys of another slot: CROSSSLOT). A MOVED or ASK reply (the slot moved) is followed by redis-py, which updates its slot
    map; a NOSCRIPT reply (a master that never saw the script: new, or restarted empty) loads the script on every
    master and sends the call again to the slot's owner.
    """

    def __init__(self, client, source: str) -> None:
        self.client = client
        self.script = client.register_script(source)
        self.cluster = isinstance(client, AsyncRedisCluster)

    async def __call__(self, keys=(), args=()):
        if not self.cluster or not keys:
            return await self.script(keys=keys, args=args)
        client, script = self.client, self.script
        await client.initialize()  # nothing once the slot map is known; after a connection error it is read again
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await client.execute_command(*command, target_nodes=client.get_node_from_key(keys[0]))
        except NoScriptError:
            await client.script_load(script.script)  # on every master
            return await client.execute_command(*command, target_nodes=client.get_node_from_key(keys[0]))
