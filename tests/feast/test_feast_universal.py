"""The plugin against the cases of Feast's universal online-store tests (write, event-time checks,
list types, delete, async push and read, teardown), each also checked on the packed fast path."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from topicfs import feast_names as names
from topicfs.feature_client import PackedFeatureClient

pytestmark = pytest.mark.integration


def _same_on_both_paths(store, ids, service=names.RANKER_V1):
    sdk = store.get_online_features(store.get_feature_service(service), [{"video_id": i} for i in ids]).to_dict()
    fast = PackedFeatureClient(store, service).read(ids)
    assert fast.to_dict() == sdk
    return sdk


def _topics_row(video_id, topic_ids, weights, feature, at):
    return pd.DataFrame(
        {
            "video_id": [video_id],
            "topic_ids": [topic_ids],
            "topic_weights": [None if weights is None else np.asarray(weights, np.float32)],
            "topic_feature": [None if feature is None else np.asarray(feature, np.float32)],
            "n_topics": [len(topic_ids) if topic_ids is not None else 0],
            "event_timestamp": [pd.Timestamp(at)],
            "created": [pd.Timestamp(at)],
        }
    )


def test_write_to_online_store(registered):
    store, _ = registered
    now = pd.Timestamp.now(tz="UTC").round("ms")
    frame = pd.DataFrame({"video_id": [21], "exposures": [14], "clicks": [3], "ctr": np.float32([0.21]), "event_timestamp": [now]})
    store.write_to_online_store(names.VIDEO_STATS_VIEW, frame)
    sdk = _same_on_both_paths(store, [21])
    assert sdk["exposures"] == [14] and sdk["ctr"] == [float(np.float32(0.21))]


def test_write_to_online_store_event_check(registered):
    store, _ = registered
    now = datetime.now(timezone.utc)
    store.write_to_online_store(names.VIDEO_TOPICS_VIEW, _topics_row(2, [1, 2], [0.5, 0.25], [1.0] * 8, now))
    # one hour older: ignored for video 2, which already holds a newer row
    store.write_to_online_store(names.VIDEO_TOPICS_VIEW, _topics_row(2, [9], [0.1], [2.0] * 8, now - timedelta(hours=1)))
    assert _same_on_both_paths(store, [2])["topic_ids"] == [[1, 2]]
    # newer: replaces
    store.write_to_online_store(names.VIDEO_TOPICS_VIEW, _topics_row(2, [3], [0.75], [3.0] * 8, now + timedelta(seconds=1)))
    assert _same_on_both_paths(store, [2])["topic_ids"] == [[3]]
    # materializing the (older) offline rows again keeps the newest values
    store.materialize(now - timedelta(days=3), now, feature_views=[names.VIDEO_TOPICS_VIEW])
    sdk = _same_on_both_paths(store, [2, 4])
    assert sdk["topic_ids"][0] == [3] and sdk["topic_feature"][0] == [3.0] * 8


def test_online_list_types(registered):
    store, _ = registered
    now = datetime.now(timezone.utc)
    store.write_to_online_store(names.VIDEO_TOPICS_VIEW, _topics_row(40, [], [], None, now))  # empty lists, a null list
    full = list(range(100, 108))  # exactly max_topics_per_video
    store.write_to_online_store(names.VIDEO_TOPICS_VIEW, _topics_row(41, full, [0.125] * 8, [-0.0, 1e-30, 3.4e38, -1.5, 0, 0, 0, 7], now))
    sdk = _same_on_both_paths(store, [40, 41])
    assert sdk["topic_ids"] == [[], full]
    assert sdk["topic_weights"] == [[], [0.125] * 8]
    assert sdk["topic_feature"][0] is None
    assert sdk["topic_feature"][1] == np.asarray([-0.0, 1e-30, 3.4e38, -1.5, 0, 0, 0, 7], np.float32).tolist()


def test_list_longer_than_its_capacity_fails_the_batch_cleanly(registered):
    store, _ = registered
    before = _same_on_both_paths(store, [42])
    with pytest.raises(ValueError, match="topicfs.max_length"):
        store.write_to_online_store(
            names.VIDEO_TOPICS_VIEW, _topics_row(42, list(range(9)), [0.1] * 9, [0.0] * 8, datetime.now(timezone.utc))
        )
    assert _same_on_both_paths(store, [42]) == before


def test_async_push_and_read(registered):
    store, _ = registered
    now = pd.Timestamp.now(tz="UTC")
    frame = pd.DataFrame({"video_id": [22], "exposures": [5], "clicks": [5], "ctr": np.float32([1.0]), "event_timestamp": [now]})

    async def push_and_read():
        await store.push_async(names.VIDEO_STATS_PUSH, frame)
        return await store.get_online_features_async(store.get_feature_service(names.RANKER_V1), [{"video_id": 22}])

    response = asyncio.run(push_and_read())
    assert response.to_dict()["clicks"] == [5]
    assert _same_on_both_paths(store, [22])["clicks"] == [5]


def test_delete_table(registered):
    store, _ = registered
    now = pd.Timestamp.now(tz="UTC")
    frame = pd.DataFrame({"video_id": [23], "exposures": [8], "clicks": [1], "ctr": np.float32([0.125]), "event_timestamp": [now]})
    store.write_to_online_store(names.VIDEO_STATS_VIEW, frame)
    assert _same_on_both_paths(store, [23])["exposures"] == [8]
    view = store.get_feature_view(names.VIDEO_STATS_VIEW)
    online_store = store._get_provider().online_store
    online_store.update(store.config, tables_to_delete=[view], tables_to_keep=[], entities_to_delete=[], entities_to_keep=[], partial=False)
    sdk = _same_on_both_paths(store, [23, 21])
    assert sdk["exposures"] == [None, None]
    assert sdk["topic_ids"][0] is not None  # other views of the same videos are untouched


def test_teardown_removes_every_key(registered, redis_client):
    store, _ = registered
    client = redis_client
    assert any(key.startswith(b"tfs:packed:") for key in client.scan_iter(count=1000))
    store.teardown()
    remaining = [key for key in client.scan_iter(count=1000) if key.endswith(store.project.encode()) or key.startswith(b"tfs:packed:")]
    assert remaining == []
