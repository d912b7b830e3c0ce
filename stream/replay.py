"""Produce stream messages into Kafka at a given rate: an event file (JSON lines) or a synthetic click stream.

Events are keyed by ``user_id`` (one user's events stay in order), video-published messages by ``video_id``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

from topicfs.settings import KafkaConfig

logger = logging.getLogger(__name__)


def read_event_file(path: str | Path) -> Iterator[bytes]:
    """The lines of a JSON-lines event file, as raw bytes (invalid lines too: the worker dead-letters them)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"event file {path} does not exist")
    with path.open("rb") as handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if line:
                yield line


def _key_of(value: bytes | dict, key_field: str) -> bytes | None:
    if isinstance(value, dict):
        key = value.get(key_field)
    else:
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        key = parsed.get(key_field) if isinstance(parsed, dict) else None
    return str(key).encode() if key is not None and not isinstance(key, (dict, list)) else None


async def produce(
    bootstrap_servers: "str | KafkaConfig",
    topic: str,
    messages: Iterable[bytes | dict],
    key_field: str = "user_id",
    rate_per_s: float | None = None,
    total: int | None = None,
    show_progress: bool = False,
) -> dict[int, int]:
    """Send ``messages`` (dicts are JSON-encoded) keyed by ``key_field``, at most ``rate_per_s`` per second.

    ``bootstrap_servers`` is a bare plain-text ``host:port`` list or the cluster's settings (TLS / SASL included).
    Returns the number of messages delivered per partition.
    """
    from aiokafka import AIOKafkaProducer

    from stream.security import aiokafka_params

    producer = AIOKafkaProducer(**aiokafka_params(bootstrap_servers), linger_ms=5, max_batch_size=262144, acks="all")
    await producer.start()
    per_partition: dict[int, int] = {}
    pending: list[asyncio.Future] = []

    async def drain() -> None:
        for metadata in await asyncio.gather(*pending):
            per_partition[metadata.partition] = per_partition.get(metadata.partition, 0) + 1
        pending.clear()

    started = time.perf_counter()
    try:
        for index, message in enumerate(tqdm(messages, total=total, desc=f"replay → {topic}", disable=not show_progress, unit="msg")):
            value = json.dumps(message, separators=(",", ":")).encode() if isinstance(message, dict) else message
            pending.append(await producer.send(topic, value=value, key=_key_of(message, key_field)))
            if len(pending) >= 5000:
                await drain()
            if rate_per_s:
                ahead_s = (index + 1) / rate_per_s - (time.perf_counter() - started)
                if ahead_s > 0.002:
                    await asyncio.sleep(ahead_s)
        await drain()
    finally:
        await producer.stop()
    elapsed = time.perf_counter() - started
    sent = sum(per_partition.values())
    logger.info("produced %d messages to %s in %.1f s (%.0f/s)", sent, topic, elapsed, sent / max(elapsed, 1e-9))
    return per_partition


def video_published_events(topics_by_video: dict[int, list[int]], ts: float) -> Iterator[dict]:
    """Video-published messages that carry topic ids directly."""
    for video_id, topic_ids in topics_by_video.items():
        yield {
            "type": "video_published",
            "event_id": f"v{video_id}",
            "video_id": int(video_id),
            "topic_ids": [int(t) for t in topic_ids],
            "ts": ts,
        }
