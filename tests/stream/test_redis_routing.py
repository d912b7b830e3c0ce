"""topicfs.redis_client: the faster packer of long commands and the per-slot script calls (SlotScript), on a single
Redis and on the 3-master cluster of the session."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from topicfs.redis_client import SlotScript, async_client, fast_pack_class
from topicfs.settings import RedisConfig

ECHO_KEYS = "return {#KEYS, KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}"


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


def _cluster_config(redis_cluster) -> RedisConfig:
    return RedisConfig(url=redis_cluster.url, cluster=True, shards=6)


def test_slot_script_runs_on_a_single_redis(redis_url):
    async def go():
        client = async_client(RedisConfig(url=redis_url))
        try:
            script = SlotScript(client, ECHO_KEYS)
            assert await script(keys=["a", "b"], args=["x"]) == [2, b"a", b"x", 1]
            await client.script_flush()
            assert await script(keys=["a"], args=["y"]) == [1, b"a", b"y", 2]  # NOSCRIPT: loaded again by redis-py
        finally:
            await client.aclose()

    run(go())


def test_slot_script_goes_straight_to_the_slot_master_without_hashing_every_key(redis_cluster, monkeypatch):
    """Each shard's call reaches only the master owning its slot (INFO commandstats per master), and redis-py's
    per-key slot determination is never used for it."""
    from tests.conftest import flush_cluster

    flush_cluster(redis_cluster)
    nodes = [redis.Redis.from_url(redis_cluster.node_url(i)) for i in range(3)]

    def evalsha_calls() -> list[int]:
        return [int(n.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)) for n in nodes]

    async def go():
        client = async_client(_cluster_config(redis_cluster))
        try:
            script = SlotScript(client, ECHO_KEYS)
            await client.initialize()
            determined = []
            original = client._determine_slot

            async def counting(*args):
                determined.append(args[0])
                return await original(*args)

            monkeypatch.setattr(client, "_determine_slot", counting)
            for shard in range(6):
                keys = [f"route:{{s{shard}}}:k{i}" for i in range(300)]
                owner = client.get_node_from_key(keys[0]).port
                before = evalsha_calls()
                assert await script(keys=keys, args=[str(shard)]) == [300, keys[0].encode(), str(shard).encode(), 1]
                after = evalsha_calls()
                changed = [redis_cluster.nodes[i].port for i in range(3) if after[i] != before[i]]
                assert changed == [owner]
            assert not [c for c in determined if str(c).upper() == "EVALSHA"]
            with pytest.raises(redis.ResponseError, match="same slot"):  # Redis itself refuses keys of two slots (CROSSSLOT)
                await script(keys=["route:{s0}:a", "route:{s1}:b"], args=["z"])
        finally:
            await client.aclose()

    run(go())
    for n in nodes:
        n.close()


def test_slot_script_loads_itself_on_masters_that_lost_it(redis_cluster):
    """NOSCRIPT (SCRIPT FLUSH on every master, as after a restart): the call loads the script and succeeds."""
    from tests.conftest import flush_cluster

    flush_cluster(redis_cluster)

    async def go():
        client = async_client(_cluster_config(redis_cluster))
        try:
            script = SlotScript(client, ECHO_KEYS)
            assert (await script(keys=["ns:{s1}:a"], args=["1"]))[3] == 1
            for i in range(3):
                redis.Redis.from_url(redis_cluster.node_url(i)).script_flush()
            assert (await script(keys=["ns:{s1}:a"], args=["2"]))[3] == 2
            assert (await script(keys=["ns:{s2}:a"], args=["3"]))[3] == 1
        finally:
            await client.aclose()

    run(go())


def test_slot_script_follows_moved_when_its_slot_map_is_stale(redis_cluster):
    """The client's slot map names the wrong master (as after a resharding): the master answers MOVED, redis-py
    follows it and fixes its map; the next call goes straight to the right master."""
    from tests.conftest import flush_cluster

    flush_cluster(redis_cluster)

    async def go():
        client = async_client(_cluster_config(redis_cluster))
        try:
            script = SlotScript(client, ECHO_KEYS)
            await client.initialize()
            key = "moved:{s3}:a"
            slot = client.keyslot(key)
            right = client.get_node_from_key(key)
            wrong = next(node for node in client.get_primaries() if node.name != right.name)
            client.nodes_manager.slots_cache[slot] = [wrong]
            assert (await script(keys=[key], args=["m"]))[3] == 1
            assert client.get_node_from_key(key).name == right.name
            assert (await script(keys=[key], args=["m"]))[3] == 2
        finally:
            await client.aclose()

    run(go())


def test_slot_script_follows_ask_during_a_slot_migration(redis_cluster):
    """A slot in migration (MIGRATING on its master, IMPORTING on another): for keys the old master does not hold it
    answers ASK; redis-py sends ASKING and the call to the new master, which has never seen the script (NOSCRIPT: it
    is loaded and the call sent again). The slot is put back to stable afterwards."""
    from tests.conftest import flush_cluster

    flush_cluster(redis_cluster)
    key = "ask:{s4}:a"

    async def go():
        client = async_client(_cluster_config(redis_cluster))
        admin = {}
        try:
            await client.initialize()
            slot = client.keyslot(key)
            source = client.get_node_from_key(key)
            target = next(node for node in client.get_primaries() if node.name != source.name)
            admin = {node.name: redis.Redis(host=node.host, port=node.port) for node in (source, target)}
            ids = {name: c.execute_command("CLUSTER", "MYID").decode() for name, c in admin.items()}
            for c in admin.values():
                c.script_flush()
            admin[target.name].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.name])
            admin[source.name].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.name])
            script = SlotScript(client, ECHO_KEYS)
            assert await script(keys=[key], args=["a"]) == [1, key.encode(), b"a", 1]
            counts = {name: c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) for name, c in admin.items()}
            assert counts == {source.name: 0, target.name: 1}  # written on the new master
        finally:
            for c in admin.values():
                c.execute_command("CLUSTER", "SETSLOT", client.keyslot(key), "STABLE")
                c.close()
            await client.aclose()

    try:
        run(go())
    finally:
        flush_cluster(redis_cluster)  # the key written on the importing master, which does not own its slot now


def test_user_history_names_the_three_user_keys():
    from topicfs.keys import KeyLayout

    for layout in (KeyLayout("p", 1), KeyLayout("p", 5)):
        for user_id in (0, 7, 12_345_678_901):
            assert layout.user_history(user_id) == (
                layout.user_clicks(user_id),
                layout.user_click_topics(user_id),
                layout.user_topic_counts(user_id),
            )
