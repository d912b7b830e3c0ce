"""The plugin's address: Feast's own `connection_string` / `redis_type` used as Feast's Redis store uses them,
`url` and the project's `redis.url` / `redis.cluster` as other sources, a conflicting second source an error
naming both; on a cluster a packed read is one round trip per node."""

from __future__ import annotations

import numpy as np
import pytest
import redis
from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType

from topicfs import feast_names as names
from topicfs.feature_client import PackedFeatureClient
from topicfs.online_store import TopicRedisOnlineStoreConfig
from topicfs.settings import get_settings

PLUGIN = "topicfs.online_store.TopicRedisOnlineStore"


@pytest.fixture()
def clean_env(monkeypatch):
    for name in ("TOPICFS_REDIS__URL", "TOPICFS_REDIS__CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def _config(monkeypatch, env=None, **fields):
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return TopicRedisOnlineStoreConfig(type=PLUGIN, **fields)


def test_connection_string_and_redis_type_as_feast_uses_them(clean_env):
    config = _config(clean_env, connection_string="10.0.0.5:7000,10.0.0.6:7000,password=pw,ssl=true", redis_type="redis_cluster")
    feast_config = RedisOnlineStoreConfig(connection_string="10.0.0.5:7000,10.0.0.6:7000,password=pw,ssl=true", redis_type="redis_cluster")
    assert (config.connection_string, config.redis_type) == (feast_config.connection_string, feast_config.redis_type)
    plain = _config(clean_env, connection_string="cache:6380,db=3")
    assert (plain.connection_string, plain.redis_type) == ("cache:6380,db=3", RedisType.redis)


def test_url_and_the_redis_settings(clean_env):
    assert _config(clean_env, url="redis://:pw@cache:6380/2").connection_string == "cache:6380,db=2,password=pw"
    from_settings = _config(clean_env, env={"TOPICFS_REDIS__URL": "redis://node1:7001/0", "TOPICFS_REDIS__CLUSTER": "true"})
    assert from_settings.connection_string == "node1:7001" and from_settings.redis_type == RedisType.redis_cluster
    # an unexpanded ${VAR} (variable not set) means the setting
    assert _config(clean_env, url="${TOPICFS_REDIS__URL}").connection_string == "node1:7001"
    clean_env.delenv("TOPICFS_REDIS__URL")
    clean_env.delenv("TOPICFS_REDIS__CLUSTER")
    assert _config(clean_env, url="${TOPICFS_REDIS__URL}").connection_string == "127.0.0.1:6379,db=0"


def test_agreeing_sources_keep_feasts_string(clean_env):
    config = _config(
        clean_env,
        url="redis://127.0.0.1:7001/0",
        connection_string="127.0.0.1:7001,127.0.0.1:7002,skip_full_coverage_check=true",
        redis_type="redis_cluster",
        env={"TOPICFS_REDIS__CLUSTER": "true"},
    )
    assert config.connection_string == "127.0.0.1:7001,127.0.0.1:7002,skip_full_coverage_check=true"


@pytest.mark.parametrize(
    "fields, env, named",
    [
        (
            {"url": "redis://other:6379/0", "connection_string": "cache:6379"},
            {},
            ["online_store.connection_string (cache:6379)", "online_store.url"],
        ),
        (
            {"url": "redis://cache:6379/1", "connection_string": "cache:6379,db=0"},
            {},
            ["online_store.connection_string", "online_store.url"],
        ),
        (
            {"connection_string": "cache:6379"},
            {"TOPICFS_REDIS__URL": "redis://elsewhere:6379/0"},
            ["online_store.connection_string", "redis.url"],
        ),
        (
            {"connection_string": "cache:6379", "redis_type": "redis"},
            {"TOPICFS_REDIS__CLUSTER": "true"},
            ["online_store.redis_type", "redis.cluster"],
        ),
    ],
)
def test_conflicting_sources_name_both(clean_env, fields, env, named):
    with pytest.raises(ValueError) as caught:
        _config(clean_env, env=env, **fields)
    message = str(caught.value)
    assert all(part in message for part in named), message


def test_a_conflict_in_feature_store_yaml_is_one_line_with_masked_passwords(tmp_path, clean_env):
    from topicfs.feature_registry import RegistrationError, load_store

    (tmp_path / "feature_store.yaml").write_text(
        "project: p\nregistry: data/registry.db\nprovider: local\nonline_store:\n"
        f"    type: {PLUGIN}\n    url: redis://:topsecret@a:1/0\n    connection_string: b:1,password=alsosecret\n"
        "entity_key_serialization_version: 3\n"
    )
    clean_env.setenv("TOPICFS_FEAST__REPO_PATH", str(tmp_path))
    get_settings.cache_clear()
    with pytest.raises(RegistrationError) as caught:
        load_store(get_settings())
    message = str(caught.value)
    assert "\n" not in message and "online_store.connection_string (b:1,password=***)" in message
    assert "online_store.url (redis://:***@a:1/0)" in message
    assert "topsecret" not in message and "alsosecret" not in message


def test_feast_only_yaml_on_the_cluster(tmp_path, clean_env, redis_cluster):
    """A feature_store.yaml with only Feast's keys (no url, no TOPICFS_REDIS__URL) reaches the cluster."""
    from feast_tables import make_tables, point_env

    from topicfs.feature_registry import load_store, register_and_materialize

    for node in redis_cluster.nodes:
        redis.Redis.from_url(node.url).flushall()
    repo = point_env(clean_env, tmp_path, redis_cluster.url)
    clean_env.delenv("TOPICFS_REDIS__URL")
    get_settings.cache_clear()
    yaml_path = repo / "feature_store.yaml"
    text = yaml_path.read_text()
    assert "    url: ${TOPICFS_REDIS__URL}\n" in text
    port = redis_cluster.ports[1]
    yaml_path.write_text(
        text.replace("    url: ${TOPICFS_REDIS__URL}\n", f'    redis_type: redis_cluster\n    connection_string: "127.0.0.1:{port}"\n')
    )
    make_tables(tmp_path / "artifacts" / "tables")
    register_and_materialize(get_settings())
    store = load_store(get_settings())
    assert store.config.online_store.connection_string == f"127.0.0.1:{port}"
    ids = [1, 2, 999]
    sdk = store.get_online_features(store.get_feature_service(names.RANKER_V1), [{"video_id": i} for i in ids]).to_dict()
    assert sdk["topic_ids"][0] is not None
    assert PackedFeatureClient(store, names.RANKER_V1).read(ids, repair=False).to_dict() == sdk


def test_one_round_trip_per_node(registered, feast_env, monkeypatch):
    store, _ = registered
    client = PackedFeatureClient(store, names.RANKER_V1)
    ids = np.arange(1, 31)
    client.read(ids)  # warm: layout known, connections open
    sends: dict[tuple[str, int], int] = {}
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sends[(self.host, self.port)] = sends.get((self.host, self.port), 0) + 1
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    batch = client.read(ids)
    monkeypatch.undo()
    assert batch.found[names.VIDEO_TOPICS_VIEW].all()
    assert sends and all(count == 1 for count in sends.values()), sends
    assert len(sends) == (3 if feast_env["cluster"] else 1)
