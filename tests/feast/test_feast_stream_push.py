"""The stream's pushes land in the project's own feature_repo/ under the default push-source names."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest

from topicfs import feast_names as names
from topicfs.feature_client import PackedFeatureClient
from topicfs.settings import StreamConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def deployment():
    """A single Redis only: the stream's state module builds its own plain client here."""
    return "single"


def test_default_push_source_names_are_those_of_the_feature_repo(registered):
    store, _ = registered
    config = StreamConfig()
    declared = {source.name for source in store.list_data_sources()}
    assert {config.push_source_video_stats, config.push_source_topic_stats, config.push_source_user_recent_topics} <= declared


def test_stream_push_reaches_the_ranker_service(registered, feast_env):
    import redis.asyncio as aioredis

    from stream.pusher import push_changed_statistics
    from stream.sinks import FeastPushSink
    from stream.state import RawMessage, StreamStore
    from topicfs.keys import KeyLayout

    store, _ = registered
    config = StreamConfig()
    ts = datetime.now(timezone.utc).timestamp()
    events = [
        {"type": "exposure", "event_id": "e1", "user_id": 5, "video_ids": [901, 902], "ts": ts},
        {"type": "click", "event_id": "e2", "user_id": 5, "video_id": 902, "ts": ts + 1},
    ]
    messages = [RawMessage("ev", 0, i, json.dumps(e).encode()) for i, e in enumerate(events)]

    async def go() -> int:
        client = aioredis.Redis.from_url(feast_env["redis_url"])
        stream_store = StreamStore(client, KeyLayout("push-test"), config, push_enabled=True)
        await stream_store.register_videos({901: [3], 902: [3, 4]})
        await stream_store.apply_batch(messages, lambda letters: asyncio.sleep(0))
        pushed = await push_changed_statistics(stream_store, FeastPushSink(feast_env["repo"]), config)
        await client.aclose()
        return pushed

    assert asyncio.run(go()) > 0
    store.refresh_registry()
    online = store.get_online_features(
        features=[f"{names.VIDEO_STATS_VIEW}:exposures", f"{names.VIDEO_STATS_VIEW}:clicks"],
        entity_rows=[{"video_id": 901}, {"video_id": 902}],
    ).to_dict()
    assert online["exposures"] == [1, 1] and online["clicks"] == [0, 1]
    packed = PackedFeatureClient(store, names.RANKER_V1).read([901, 902]).to_dict()
    assert packed["exposures"] == [1, 1] and packed["clicks"] == [0, 1]
