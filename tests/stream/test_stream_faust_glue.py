"""The worker's changes to Faust's consumer: applied to the app it builds, and pinned to the Faust code they replace."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import time

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


def test_take_events_copy_matches_the_installed_faust():
    """A Faust upgrade that changes Stream.take_events must fail here: stream.app.take_batches copies it."""
    from faust.streams import Stream

    source = inspect.getsource(Stream.take_events)
    assert hashlib.sha256(source.encode()).hexdigest() == stream_app.TAKE_EVENTS_ORIGINAL_SHA256


def _batches(puts: list[list[int]], pause_s: float, max_: int, within: float, idle_s: float, expect: int) -> list[tuple[float, list]]:
    """Feed a Faust agent running take_batches: each group of values put back to back, ``pause_s`` between groups;
    returns (seconds after the first put, values) per batch once ``expect`` values came out."""
    import faust

    app = faust.App(f"take-batches-{time.monotonic_ns()}", broker="kafka://127.0.0.1:1", store="memory://")
    seen: list[tuple[float, list]] = []
    started = [0.0]

    @app.agent()
    async def count(stream):
        async for batch in stream_app.take_batches(stream, max_, within, idle_s):
            seen.append((time.monotonic() - started[0], [event.value for event in batch]))

    async def run():
        async with count.test_context() as agent:
            started[0] = time.monotonic()
            for group in puts:
                for value in group:
                    await agent.put(value)
                await asyncio.sleep(pause_s)
            deadline = time.monotonic() + 10
            while sum(len(values) for _, values in seen) < expect and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

    asyncio.run(run())
    return seen


def test_a_batch_closes_once_the_stream_is_idle_not_after_within():
    # within = 5 s: Faust's rule would hold the five values 5 s; idle 0.05 s hands them over at once
    seen = _batches([[0, 1, 2, 3, 4]], pause_s=0.0, max_=100, within=5.0, idle_s=0.05, expect=5)
    assert [values for _, values in seen] == [[0, 1, 2, 3, 4]]
    assert seen[0][0] < 1.0
    # groups 0.3 s apart are separate batches; max_ still splits a group, never more than max_ values in one
    seen = _batches([[0, 1, 2, 3, 4], [5, 6]], pause_s=0.3, max_=3, within=5.0, idle_s=0.05, expect=7)
    assert [values for _, values in seen] == [[0, 1, 2], [3, 4], [5, 6]]


def test_within_still_bounds_a_batch_of_a_stream_that_never_pauses():
    # values 0.02 s apart never leave the 0.05 s idle gap: the batch closes `within` after its first value
    seen = _batches([[i] for i in range(40)], pause_s=0.02, max_=1000, within=0.3, idle_s=0.05, expect=40)
    assert len(seen) >= 2 and all(len(values) <= 20 for _, values in seen)  # ~0.3 / 0.02 values per batch
    assert seen[0][0] >= 0.25  # the first batch was held until `within`, not closed by an idle gap
    assert [v for _, values in seen for v in values] == list(range(40))


def test_idle_zero_keeps_faust_rule():
    seen = _batches([[0, 1, 2]], pause_s=0.0, max_=100, within=0.6, idle_s=0.0, expect=3)
    assert [values for _, values in seen] == [[0, 1, 2]]
    assert seen[0][0] >= 0.4  # held until `within` (0.6 s from the agent's start) passed, as Faust's take_events does
