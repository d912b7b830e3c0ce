"""topicfs.redis_client: the faster packer of long commands, on a single Redis and on the 3-master cluster of the
session."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from topicfs.redis_client import async_client, fast_pack_class


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.mark.parametrize("n_keys", [0, 3, 63, 64, 65, 5000])
def test_fast_pack_sends_the_bytes_redis_py_sends(n_keys):
    plain, fast = Connection(), fast_pack_class(Connection)()
    assert isinstance(fast, Connection) and fast_pack_class(type(fast)) is type(fast)
    keys = [f"p:{{s{i % 7}}}:stats:video:{i}" for i in range(n_keys)]
    odd = ["é ü 漢", b"raw\x00bytes", 42, -7, 3.25, 1e300, memoryview(b"view"), "x" * 7000, b"y" * 6001, ""]
    for command in (
        ("EVALSHA", "a" * 40, n_keys, *keys, *odd),
        ("SCRIPT LOAD", *keys, "return 1"),
        (b"CLIENT SETNAME", *keys, b"n"),
        ("MSET", *[x for k in keys for x in (k, 1.5)]),
    ):
        assert b"".join(bytes(c) for c in fast.pack_command(*command)) == b"".join(bytes(c) for c in plain.pack_command(*command))
    with pytest.raises(redis.DataError):
        fast.pack_command("SET", *keys, True, *["k"] * 64)
    assert issubclass(fast_pack_class(SSLConnection), SSLConnection)
    assert issubclass(fast_pack_class(UnixDomainSocketConnection), UnixDomainSocketConnection)


def test_async_clients_pack_long_commands_fast_on_both_deployments(redis_deployment):
    async def go():
        client = async_client(redis_deployment)
        try:
            keys = [f"fp:{{s0}}:{i}" for i in range(200)]
            await client.mset({k: i for i, k in enumerate(keys)})
            assert [int(v) for v in await client.mget(keys)] == list(range(200))
            if redis_deployment.cluster:
                nodes = client.get_nodes()
                assert nodes and all(node.connection_class.__name__.startswith("FastPack") for node in nodes)
                used = client.get_node_from_key(keys[0])._connections  # the connections that ran the commands
                assert used and all(type(c).__name__.startswith("FastPack") for c in used)
            else:
                pool = client.connection_pool
                assert pool.connection_class.__name__.startswith("FastPack")
                assert all(type(c).__name__.startswith("FastPack") for c in pool._available_connections)
        finally:
            await client.aclose()

    run(go())


def test_user_history_names_the_three_user_keys():
    from topicfs.keys import KeyLayout

    for layout in (KeyLayout("p", 1), KeyLayout("p", 5)):
        for user_id in (0, 7, 12_345_678_901):
            assert layout.user_history(user_id) == (
                layout.user_clicks(user_id),
                layout.user_click_topics(user_id),
                layout.user_topic_counts(user_id),
            )
