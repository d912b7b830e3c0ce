"""The README's first command, stream part: embedded broker + a worker, a synthetic click stream, the live queues."""

from __future__ import annotations

import asyncio
import logging
import time
from itertools import islice
from pathlib import Path

import redis

from stream.broker import EmbeddedBroker
from stream.process import WorkerProcess
from stream.replay import produce
from stream.synthetic_stream import synthetic_stream
from topicfs.keys import KeyLayout, unlink_matching
from topicfs.redis_client import sync_client
from topicfs.services import ensure_redis
from topicfs.settings import Settings
from topicfs.tables import VIDEO_TOPICS

logger = logging.getLogger(__name__)


def clear_stream_state(client: redis.Redis, layout: KeyLayout) -> int:
    """Delete the stream's state of ``layout`` (every shard's counts, queues, user histories, video topics, offsets,
    epochs; not the packed Feast records, "{prefix}:packed:...", that share the prefix); returns how many keys went.
    For a demo that starts a new embedded broker over a Redis that kept an earlier run's state: the stored offsets
    name messages of a log that is gone, so the worker would skip the new replay as applied."""
    return unlink_matching(client, layout.pattern())


def top_popular_topics(client, layout: KeyLayout, n: int) -> list[int]:
    """The ``n`` most clicked topics over every shard's popular set (ties: smaller id first)."""
    scored = [
        (float(score), int(t))
        for shard in layout.all_shards()
        for t, score in client.zrevrange(layout.popular(shard), 0, n - 1, withscores=True)
    ]
    return [t for _, t in sorted(scored, key=lambda item: (-item[0], item[1]))[:n]]


def applied_offset(client, layout: KeyLayout, kafka_topic: str, partition: int) -> int:
    """The offset of ``partition`` every shard has applied (-1 while a shard has none)."""
    raw = [client.get(layout.offset(s, kafka_topic, partition)) for s in layout.all_shards()]
    return -1 if any(v is None for v in raw) else min(int(v) for v in raw)


def run_demo_stream(
    settings: Settings,
    catalogue_tables_dir: str | Path | None = None,
    n_events: int = 20000,
    n_topics_shown: int = 3,
    top_n: int = 8,
    timeout_s: float = 180.0,
) -> dict:
    """Start the embedded broker and one worker, replay ``n_events`` messages of the synthetic click stream, read the
    top of the most clicked topics' queues, stop everything started here. Returns a summary (``summary["text"]`` prints it).

    Video topics come from ``catalogue_tables_dir/video_topics.parquet`` when it exists (the learned topics of the same
    synthetic catalogue, ``settings.synthetic``), else from the catalogue's true topics, published as video events.
    """
    settings = settings.model_copy(deep=True)
    broker = EmbeddedBroker.start()
    local_redis = ensure_redis(settings.redis.url)
    worker = None
    started = time.perf_counter()
    try:
        settings.kafka.bootstrap_servers, settings.kafka.embedded = broker.bootstrap_servers, False
        table = Path(catalogue_tables_dir) / VIDEO_TOPICS if catalogue_tables_dir else None
        settings.stream.load_video_topics_on_start = False  # loaded below from catalogue_tables_dir, once
        videos, events = synthetic_stream(settings)
        client = sync_client(settings.redis)
        layout = KeyLayout.from_config(settings.redis)
        prefix, topic = layout.prefix, settings.stream.events_topic
        cleared = 0
        if any(client.scan_iter(match=layout.pattern(f"offset:{topic}:*"), count=1000)):
            cleared = clear_stream_state(client, layout)
            logger.info("cleared %d keys of an earlier run's stream state under %r", cleared, prefix)
        worker = WorkerProcess.start(settings)

        async def replay() -> dict[int, int]:
            from stream.app import prepare
            from stream.state import StreamStore
            from topicfs.redis_client import async_client

            redis_async = async_client(settings.redis)
            await prepare(settings, redis_async)
            if table is not None and table.exists():
                await StreamStore(redis_async, layout, settings.stream).load_video_topics_table(table.parent, show_progress=False)
            else:
                await produce(settings.kafka.bootstrap_servers, settings.stream.videos_topic, videos, key_field="video_id")
            return await produce(
                settings.kafka.bootstrap_servers, settings.stream.events_topic, islice(events, n_events), show_progress=True
            )

        sent = asyncio.run(replay())
        n_messages = sum(sent.values())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = sum(applied_offset(client, layout, topic, p) + 1 for p in sent)
            if done >= n_messages and not any(client.scard(layout.dirty(s)) for s in layout.all_shards()):
                break
            if not worker.alive():
                raise RuntimeError(f"the stream worker stopped:\n{worker.log()[-3000:]}")
            time.sleep(0.3)
        else:
            raise TimeoutError(f"the worker applied {done} of {n_messages} messages in {timeout_s:.0f} s")
        if settings.stream.feast_repo_path is not None:
            # the last statistics reach Feast with the next push: wait until no changed id is pending or in flight
            while any(client.exists(layout.push_pending(s, e)) for s in layout.all_shards() for e in ("video", "topic", "user")):
                if time.monotonic() > deadline:
                    raise TimeoutError("the worker's Feast pushes did not finish in time")
                time.sleep(0.1)
        topics = top_popular_topics(client, layout, n_topics_shown)
        queues = {}
        lines = [
            f"stream: {n_messages} messages replayed and applied in {time.perf_counter() - started:.1f} s; "
            f"{len(set().union(*(client.smembers(layout.all_topics(s)) for s in layout.all_shards())))} topic queues"
        ]
        if cleared:
            lines.insert(
                0,
                f"cleared the stream state an earlier run left under '{prefix}:' ({cleared} keys): its Kafka offsets "
                "named messages of an embedded broker that is gone, so this replay would have been skipped as applied",
            )
        for topic_id in topics:
            top = [int(v) for v in client.zrevrange(layout.queue(topic_id), 0, top_n - 1)]
            rows = []
            for video_id in top:
                exposures, clicks, ctr = client.hmget(layout.video_stats(video_id), "exposures", "clicks", "ctr")
                exposures, clicks = int(float(exposures or 0)), int(float(clicks or 0))
                fresh = exposures < settings.stream.min_exposures
                rows.append({"video_id": video_id, "exposures": exposures, "clicks": clicks, "ctr": float(ctr or 0), "fresh": fresh})
            queues[topic_id] = rows
            lines.append(f"topic {topic_id} (queue of {client.zcard(layout.queue(topic_id))}):")
            lines += [
                f"  {r['video_id']:>6}  ctr {r['ctr']:.3f}  {r['clicks']:>4}/{r['exposures']:<5}{'  fresh' if r['fresh'] else ''}"
                for r in rows
            ]
        return {"messages": n_messages, "seconds": time.perf_counter() - started, "queues": queues, "text": "\n".join(lines)}
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
        if local_redis is not None:
            local_redis.stop()
