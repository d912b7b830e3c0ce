"""Fixtures shared by every test folder: a private Redis for integration tests."""

from __future__ import annotations

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
