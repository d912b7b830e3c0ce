"""The worker's changes to Faust's consumer: applied to the app it builds, and pinned to the Faust code they replace."""

from __future__ import annotations

import asyncio
import hashlib
import inspect

import redis.asyncio as aioredis

from stream import app as stream_app
from topicfs.settings import Settings


def test_drain_messages_override_matches_the_installed_faust():
    """A Faust upgrade that changes Consumer._drain_messages must fail here: the copy in stream.app needs review."""
    from faust.transport.consumer import Consumer

    source = inspect.getsource(Consumer._drain_messages)
    assert hashlib.sha256(source.encode()).hexdigest() == stream_app.DRAIN_MESSAGES_ORIGINAL_SHA256


def test_the_worker_app_uses_the_direct_drain_the_fetch_wait_and_the_quiet_monitor():
    settings = Settings()
    settings.stream.fetch_max_wait_ms = 37

    async def build():
        runtime = stream_app.create_app(settings, aioredis.Redis.from_url("redis://127.0.0.1:1/0"))
        consumer = runtime.app.consumer
        thread = consumer._new_consumer_thread()
        kafka_consumer = thread._create_worker_consumer(runtime.app.transport)
        return consumer, kafka_consumer, runtime.app.monitor

    consumer, kafka_consumer, monitor = asyncio.run(build())
    assert consumer._drain_messages.__func__ is stream_app._drain_messages_direct
    assert kafka_consumer._fetch_max_wait_ms == 37
    assert isinstance(monitor, stream_app._QuietMonitor)
