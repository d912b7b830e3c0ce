"""The Feast push sink against a real Feast repo (written here) whose online store is the private test Redis."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_changed_statistics_reach_the_feast_online_store(redis_url, tmp_path):
    from stream.metrics import PusherMetrics
    from stream.pusher import push_changed_statistics
    from stream.sinks import FeastPushSink
    from stream.state import RawMessage, StreamStore
    from topicfs.keys import KeyLayout
    from topicfs.settings import StreamConfig

    from stream.sinks import write_push_repo

    feast_store = write_push_repo(tmp_path / "repo", redis_url)
    config = StreamConfig()
    events = [
        {"type": "exposure", "event_id": "e1", "user_id": 5, "video_ids": [1, 2, 3], "ts": 1.76e9},
        {"type": "click", "event_id": "e2", "user_id": 5, "video_id": 2, "ts": 1.76e9 + 1},
        {"type": "exposure", "event_id": "e3", "user_id": 6, "video_ids": [2], "ts": 1.76e9 + 2},
    ]
    messages = [RawMessage("ev", 0, i, json.dumps(e).encode()) for i, e in enumerate(events)]

    async def go():
        store = StreamStore(aioredis.Redis.from_url(redis_url), KeyLayout("p"), config, push_enabled=True)
        await store.register_videos({1: [10], 2: [10, 11], 3: [12]})
        await store.apply_batch(messages, lambda letters: asyncio.sleep(0))
        sink = FeastPushSink(tmp_path / "repo")
        first = await push_changed_statistics(store, sink, config, metrics)
        second = await push_changed_statistics(store, sink, config, metrics)  # nothing changed since: no push at all
        return first, second

    metrics = PusherMetrics()
    first, second = asyncio.run(go())
    assert (first, second) == (3 + 3 + 1, 0)
    text = metrics.text()
    assert "topicfs_stream_pushed_rows_total 7.0" in text and "topicfs_stream_push_latency_seconds_count 1.0" in text
    videos = feast_store.get_online_features(
        features=["video_stats:exposures", "video_stats:clicks", "video_stats:ctr"], entity_rows=[{"video_id": v} for v in (1, 2, 3)]
    ).to_dict()
    assert videos["exposures"] == [1, 2, 1] and videos["clicks"] == [0, 1, 0]
    assert videos["ctr"][1] == pytest.approx(0.5)
    topics = feast_store.get_online_features(
        features=["topic_stats:exposures", "topic_stats:clicks"], entity_rows=[{"topic_id": 10}]
    ).to_dict()
    assert topics["exposures"] == [3] and topics["clicks"] == [1]
    users = feast_store.get_online_features(
        features=["user_recent_topics:recent_topic_ids", "user_recent_topics:recent_topic_counts"], entity_rows=[{"user_id": 5}]
    ).to_dict()
    assert users["recent_topic_ids"] == [[10, 11]] and users["recent_topic_counts"] == [[1, 1]]


def test_feast_sink_refuses_a_folder_that_is_not_a_repo(tmp_path):
    from stream.sinks import FeastPushSink

    with pytest.raises(FileNotFoundError, match="not a Feast repo"):
        FeastPushSink(tmp_path)


def test_stats_frame_reads_every_shard_in_the_order_asked(redis_deployment):
    """The pusher's read of the changed statistics: one script call per shard and chunk, rows in the order of the ids,
    ids never counted as zeros, on one node and across the cluster's masters (5 shards)."""
    import pandas as pd

    from stream.state import StreamStore
    from topicfs.keys import KeyLayout
    from topicfs.redis_client import async_client
    from topicfs.settings import StreamConfig

    layout = KeyLayout.from_config(redis_deployment)
    counted = {v: (v * 10, v % 7) for v in range(1, 41)}

    async def go():
        # two connections per node: a cluster client raises past its bound, so the read must not send every call at once
        client = async_client(redis_deployment.model_copy(update={"max_connections": 2}))
        for video_id, (exposures, clicks) in counted.items():
            await client.hset(layout.video_stats(video_id), mapping={"exposures": exposures, "clicks": clicks, "ts": 0})
        await client.hset(layout.topic_stats(3), mapping={"exposures": 2.6, "clicks": 1.4, "ts": 0})  # decayed: fractional
        store = StreamStore(client, layout, StreamConfig(), push_enabled=True)
        store.stats_read_chunk = 2  # several calls per shard, more calls than connections
        ids = [40, 3, 999, *range(1, 40, 3)]  # 999 was never counted
        now = pd.Timestamp.now(tz="UTC")
        videos = await store.stats_frame("video", ids, now)
        topics = await store.stats_frame("topic", [3, 4], now)
        await client.aclose()
        return ids, videos, topics

    ids, videos, topics = asyncio.run(go())
    assert videos["video_id"].tolist() == ids
    assert videos["exposures"].tolist() == [counted.get(v, (0, 0))[0] for v in ids]
    assert videos["clicks"].tolist() == [counted.get(v, (0, 0))[1] for v in ids]
    assert topics["exposures"].tolist() == [3, 0] and topics["clicks"].tolist() == [1, 0]
