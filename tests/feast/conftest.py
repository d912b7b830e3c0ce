"""Fixtures of the Feast tests: the tables and repo copy of feast_tables.py pointed at a private Redis, and a
registered store. Every module using them runs twice: on a single Redis and on the session's 3-master Redis
Cluster (a module can pin one by defining its own ``deployment`` fixture)."""

from __future__ import annotations

import pytest

from feast_tables import make_tables, point_env
from topicfs.settings import get_settings


@pytest.fixture(scope="module", params=["single", "cluster"])
def deployment(request):
    return request.param


@pytest.fixture(scope="module")
def feast_env(tmp_path_factory, request, deployment):
    """Tables + repo copy + environment for one test module, on a single Redis or the cluster, emptied first.

    On the cluster the repo's feature_store.yaml names it as a Feast user would (``redis_type: redis_cluster``,
    ``connection_string: host:port``) and ``TOPICFS_REDIS__CLUSTER`` is true for the project's own clients.
    """
    import redis

    if deployment == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        url, node_urls = cluster.url, [node.url for node in cluster.nodes]
    else:
        server = request.getfixturevalue("redis_server")
        url, node_urls = server.url, [server.url]
    for node_url in node_urls:
        client = redis.Redis.from_url(node_url)
        client.flushall()
        client.close()
    root = tmp_path_factory.mktemp("feast")
    with pytest.MonkeyPatch.context() as monkeypatch:
        repo = point_env(monkeypatch, root, url)
        if deployment == "cluster":
            monkeypatch.setenv("TOPICFS_REDIS__CLUSTER", "true")
            get_settings.cache_clear()
            use_cluster(repo, url)
        written = make_tables(root / "artifacts" / "tables")
        yield {"root": root, "repo": repo, "tables": written, "redis_url": url, "cluster": deployment == "cluster"}
    get_settings.cache_clear()


def use_cluster(repo, url: str) -> None:
    """Name the cluster in ``repo``'s feature_store.yaml the way Feast documents it."""
    from urllib.parse import urlparse

    address = urlparse(url)
    yaml_path = repo / "feature_store.yaml"
    text = yaml_path.read_text()
    marker = "    type: topicfs.online_store.TopicRedisOnlineStore\n"
    assert marker in text
    yaml_path.write_text(
        text.replace(marker, marker + f'    redis_type: redis_cluster\n    connection_string: "{address.hostname}:{address.port}"\n')
    )


@pytest.fixture()
def redis_client(feast_env):
    """A client of the module's Redis (cluster-aware)."""
    from topicfs.redis_client import sync_client
    from topicfs.settings import RedisConfig

    client = sync_client(RedisConfig(url=feast_env["redis_url"], cluster=feast_env["cluster"]))
    yield client
    client.close()


@pytest.fixture(scope="module")
def registered(feast_env):
    """The module's repo registered and materialized; yields (store, report)."""
    from topicfs.feature_registry import load_store, register_and_materialize

    report = register_and_materialize(get_settings())
    store = load_store(get_settings())
    yield store, report
