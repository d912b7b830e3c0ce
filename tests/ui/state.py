"""Live state for the browser tests, written by the stream's own code: the offline VIDEO_TOPICS registered with
:meth:`stream.state.StreamStore.register_videos` (through ``load_video_topics_table``), a synthetic click stream
applied batch by batch with :meth:`StreamStore.apply_batch` (as a worker does, with Kafka-like partitions and
offsets), then every changed queue rebuilt."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path

from stream.state import RawMessage, StreamStore
from topicfs.keys import KeyLayout
from topicfs.redis_client import async_client
from topicfs.settings import Settings


async def _fill(settings: Settings, tables_dir: Path, events: Iterable[dict], partitions: int, batch_size: int) -> dict:
    client = async_client(settings.redis)
    store = StreamStore(client, KeyLayout.from_config(settings.redis), settings.stream)
    dead: list = []

    async def send_dead_letters(letters) -> None:
        dead.extend(letters)

    try:
        videos = await store.load_video_topics_table(tables_dir, show_progress=False)
        next_offset = [0] * partitions
        batch: list[RawMessage] = []
        applied = 0
        for event in events:
            partition = int(event["user_id"]) % partitions
            batch.append(
                RawMessage(
                    settings.stream.events_topic,
                    partition,
                    next_offset[partition],
                    json.dumps(event).encode(),
                    str(event["user_id"]).encode(),
                )
            )
            next_offset[partition] += 1
            if len(batch) >= batch_size:
                await store.apply_batch(batch, send_dead_letters)
                applied += len(batch)
                batch = []
        if batch:
            await store.apply_batch(batch, send_dead_letters)
            applied += len(batch)
        while await store.rebuild_dirty_queues():
            pass
        return {"videos": videos, "messages": applied, "dead_letters": len(dead), "offsets": next_offset}
    finally:
        await client.aclose()


def fill_stream_state(settings: Settings, tables_dir: Path, events: Iterable[dict], partitions: int = 4, batch_size: int = 1000) -> dict:
    """Apply ``events`` (stream messages as dicts) to the Redis of ``settings``; returns what was applied."""
    return asyncio.run(_fill(settings, Path(tables_dir), events, partitions, batch_size))
