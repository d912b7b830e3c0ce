"""Push then read, TTL behaviour (view ttl, Redis key expiry) and point-in-time training rows."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from topicfs import feast_names as names
from topicfs.feature_client import PackedFeatureClient, point_in_time_rows, push_stats

from feast_tables import T_NEW

pytestmark = pytest.mark.integration


def _stats(video_ids: list[int], exposures: list[int], clicks: list[int], at: datetime) -> pd.DataFrame:
    exposures_array = np.asarray(exposures, dtype=np.int64)
    clicks_array = np.asarray(clicks, dtype=np.int64)
    return pd.DataFrame(
        {
            "video_id": np.asarray(video_ids, dtype=np.int64),
            "exposures": exposures_array,
            "clicks": clicks_array,
            "ctr": (clicks_array / np.maximum(exposures_array, 1)).astype(np.float32),
            "event_timestamp": [pd.Timestamp(at)] * len(video_ids),
        }
    )


def _both(store, ids):
    service = store.get_feature_service(names.RANKER_V1)
    fast = PackedFeatureClient(store, names.RANKER_V1).read(ids)
    sdk = store.get_online_features(service, [{"video_id": i} for i in ids]).to_dict()
    assert fast.to_dict() == sdk
    return fast, sdk


def test_push_then_read(registered):
    store, _ = registered
    now = datetime.now(timezone.utc)
    assert push_stats(store, names.VIDEO_STATS_PUSH, _stats([1, 2, 3], [10, 20, 7], [1, 5, 0], now)) == 3
    fast, sdk = _both(store, [1, 2, 3, 4])
    assert sdk["exposures"] == [10, 20, 7, None]
    assert sdk["ctr"][1] == float(np.float32(5 / 20))
    assert fast.found[names.VIDEO_STATS_VIEW].tolist() == [True, True, True, False]
    # a newer push replaces the values; an older one is ignored, by both layouts
    push_stats(
        store,
        names.VIDEO_STATS_PUSH,
        _stats(
            [1],
            [
                11,
            ],
            [2],
            now + timedelta(seconds=1),
        ),
    )
    push_stats(store, names.VIDEO_STATS_PUSH, _stats([2], [1], [1], now - timedelta(minutes=5)))
    _, sdk = _both(store, [1, 2])
    assert sdk["exposures"] == [11, 20]


def test_push_of_other_entities(registered):
    store, _ = registered
    now = pd.Timestamp.now(tz="UTC")
    push_stats(
        store,
        names.TOPIC_STATS_PUSH,
        pd.DataFrame({"topic_id": [4], "exposures": [3], "clicks": [1], "ctr": np.float32([1 / 3]), "event_timestamp": [now]}),
    )
    push_stats(
        store,
        names.USER_RECENT_TOPICS_PUSH,
        pd.DataFrame({"user_id": [9], "recent_topic_ids": [[4, 2]], "recent_topic_counts": [[3, 1]], "event_timestamp": [now]}),
    )
    topic = store.get_online_features(["topic_stats:exposures", "topic_stats:ctr"], [{"topic_id": 4}]).to_dict()
    assert topic["exposures"] == [3] and topic["ctr"] == [float(np.float32(1 / 3))]
    user = store.get_online_features(store.get_feature_service(names.USER_CONTEXT_V1), [{"user_id": 9}]).to_dict()
    assert user["recent_topic_ids"] == [[4, 2]] and user["recent_topic_counts"] == [[3, 1]]
    assert push_stats(store, names.VIDEO_STATS_PUSH, _stats([], [], [], datetime.now(timezone.utc))) == 0


def test_rows_older_than_view_ttl_are_served_as_feast_serves_them(registered):
    """A view's ttl bounds point-in-time joins and the materialization window; Feast's Redis online
    reads do not apply it, so a stale row still reads as its value on both paths."""
    store, _ = registered
    stale = datetime.now(timezone.utc) - timedelta(days=3)  # video_stats ttl is 1 day
    store.write_to_online_store(names.VIDEO_STATS_VIEW, _stats([12], [5], [1], stale))
    fast, sdk = _both(store, [12])
    assert sdk["exposures"] == [5]
    assert fast.event_timestamps[names.VIDEO_STATS_VIEW][0] == np.datetime64(pd.Timestamp(stale).tz_convert(None), "ns")


def test_key_ttl_expires_both_layouts(registered):
    store, _ = registered
    store.config.online_store.key_ttl_seconds = 1
    try:
        store.write_to_online_store(names.VIDEO_STATS_VIEW, _stats([13], [9], [3], datetime.now(timezone.utc)))
        _, sdk = _both(store, [13])
        assert sdk["exposures"] == [9]
        time.sleep(2.2)
        fast, sdk = _both(store, [13])
        # the whole entity hash expired in Feast's layout: every view of video 13 reads as missing
        assert sdk["exposures"] == [None] and sdk["topic_ids"] == [None]
        assert not fast.found[names.VIDEO_TOPICS_VIEW][0]
    finally:
        store.config.online_store.key_ttl_seconds = None


def test_historical_features_are_point_in_time(registered, feast_env):
    store, _ = registered
    clicks = feast_env["tables"]["clicks.parquet"].to_pandas().rename(columns={"ts": "event_timestamp"})
    rows = point_in_time_rows(store, clicks, ["video_topics:topic_feature", "video_topics:n_topics"])
    assert rows[["user_id", "video_id", "clicked"]].equals(clicks[["user_id", "video_id", "clicked"]])
    latest_video_1 = feast_env["tables"]["video_topics.parquet"].to_pandas().iloc[1]
    assert latest_video_1["event_timestamp"] == pd.Timestamp(T_NEW)
    # user 1 clicked before video 1 had topics: the row is kept, and no later value leaks into it
    assert rows.iloc[0]["user_id"] == 1 and pd.isna(rows.iloc[0]["n_topics"])
    # user 2 clicked between the two versions of video 1, user 3 after the second
    second, third = (rows[rows.user_id == user].iloc[0] for user in (2, 3))
    np.testing.assert_array_equal(np.asarray(second["topic_feature"], np.float32), np.full(8, 0.25, np.float32))
    assert second["n_topics"] == 1
    np.testing.assert_array_equal(np.asarray(third["topic_feature"], np.float32), latest_video_1["topic_feature"])
    assert third["n_topics"] == latest_video_1["n_topics"]
