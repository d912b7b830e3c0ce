"""Fixtures of the Feast tests: the tables and repo copy of feast_tables.py pointed at the session's
private Redis, and a registered store."""

from __future__ import annotations

import pytest

from feast_tables import make_tables, point_env
from topicfs.settings import get_settings


@pytest.fixture(scope="module")
def feast_env(tmp_path_factory, redis_server):
    """Tables + repo copy + environment for one test module; Redis emptied first."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    root = tmp_path_factory.mktemp("feast")
    with pytest.MonkeyPatch.context() as monkeypatch:
        repo = point_env(monkeypatch, root, redis_server.url)
        written = make_tables(root / "artifacts" / "tables")
        yield {"root": root, "repo": repo, "tables": written, "redis_url": redis_server.url}
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def registered(feast_env):
    """The module's repo registered and materialized; yields (store, report)."""
    from topicfs.feature_registry import load_store, register_and_materialize

    report = register_and_materialize(get_settings())
    store = load_store(get_settings())
    yield store, report
