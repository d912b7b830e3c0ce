"""The fast push path writes exactly what Feast's own push writes.

``OnlinePusher`` (rows built from the frame's columns, no Arrow round trip) on the project's
``TopicRedisOnlineStore`` (batched key serialisation, dedup read and HSETs) against ``store.push`` on
Feast's stock Redis store: after the same sequence of pushes, both Redis databases hold the same keys
with the same bytes.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import redis
from feast.data_source import PushMode
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from stream.sinks import write_push_repo
from topicfs import feast_names as names
from topicfs.feature_client import OnlinePusher
from topicfs.online_store import redis_keys

pytestmark = pytest.mark.integration


def test_redis_keys_equal_feasts_serialisation():
    ids = [0, 1, -1, 7, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63), *np.random.default_rng(3).integers(-(2**62), 2**62, 200).tolist()]
    keys = [EntityKeyProto(join_keys=["video_id"], entity_values=[ValueProto(int64_val=int(i))]) for i in ids]
    keys += [
        EntityKeyProto(join_keys=["name"], entity_values=[ValueProto(string_val="ab€")]),  # not int64: Feast's serializer
        EntityKeyProto(join_keys=["b", "a"], entity_values=[ValueProto(int64_val=1), ValueProto(int32_val=2)]),  # two keys
    ]
    assert redis_keys("proj", keys, 3) == [_redis_key("proj", key, entity_key_serialization_version=3) for key in keys]


def _video_frame(ids, exposures, clicks, at) -> pd.DataFrame:
    exposures, clicks = np.asarray(exposures, dtype=np.int64), np.asarray(clicks, dtype=np.int64)
    ctr = np.where(exposures > 0, clicks / np.maximum(exposures, 1), np.nan).astype(np.float32)  # NaN -> null value
    frame = pd.DataFrame({"video_id": pd.array(ids, dtype="int64"), "exposures": exposures, "clicks": clicks, "ctr": ctr})
    frame["event_timestamp"] = at if not isinstance(at, list) else pd.to_datetime(at, utc=True)
    frame["created"] = frame["event_timestamp"]
    return frame


def _user_frame(ids, topics, at) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user_id": pd.array(ids, dtype="int64"),
            "recent_topic_ids": [list(t) for t in topics],
            "recent_topic_counts": [[len(t) - i for i in range(len(t))] for t in topics],
        }
    )
    frame["event_timestamp"] = at
    frame["created"] = at
    return frame


def _dump(url: str) -> dict[bytes, dict[bytes, bytes]]:
    client = redis.Redis.from_url(url)
    out = {key: client.hgetall(key) for key in client.keys("*") if client.type(key) == b"hash"}
    client.close()
    return out


def test_online_pusher_writes_what_feast_push_writes(tmp_path, redis_url):
    base = redis_url.rsplit("/", 1)[0]
    stock_url, ours_url = f"{base}/1", f"{base}/2"
    for url in (stock_url, ours_url):
        redis.Redis.from_url(url).flushdb()
    stock = write_push_repo(tmp_path / "stock", stock_url, online_store_type="redis")
    ours = write_push_repo(tmp_path / "ours", ours_url)
    pusher = OnlinePusher(ours)
    t0 = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
    rng = np.random.default_rng(5)
    pushes = [
        (names.VIDEO_STATS_PUSH, _video_frame(range(50), rng.integers(0, 100, 50), rng.integers(0, 10, 50), pd.Timestamp(t0))),
        # newer values for some, an older push for others (skipped by both: the stored row is newer)
        (
            names.VIDEO_STATS_PUSH,
            _video_frame(range(0, 50, 2), rng.integers(100, 200, 25), rng.integers(0, 20, 25), pd.Timestamp(t0 + timedelta(seconds=1))),
        ),
        (
            names.VIDEO_STATS_PUSH,
            _video_frame(range(1, 50, 2), rng.integers(0, 5, 25), rng.integers(0, 2, 25), pd.Timestamp(t0 - timedelta(seconds=5))),
        ),
        # one frame with a timestamp per row, a video twice (the later row wins), zero exposures (null CTR)
        (
            names.VIDEO_STATS_PUSH,
            _video_frame([60, 61, 60, 62], [5, 0, 9, 3], [1, 0, 2, 1], [t0, t0, t0 + timedelta(seconds=2), t0 - timedelta(days=1)]),
        ),
        (
            names.TOPIC_STATS_PUSH,
            _video_frame(range(7), rng.integers(1, 1000, 7), rng.integers(0, 50, 7), pd.Timestamp(t0)).rename(
                columns={"video_id": "topic_id"}
            ),
        ),
        (names.USER_RECENT_TOPICS_PUSH, _user_frame([1, 2, 3], [[4, 9, 1], [], [2]], pd.Timestamp(t0))),
    ]
    for name, frame in pushes:
        stock.push(name, frame.copy(), to=PushMode.ONLINE)
        assert pusher.push(name, frame.copy()) == len(frame)
    expected, got = _dump(stock_url), _dump(ours_url)
    assert len(expected) == 50 + 3 + 7 + 3
    assert got == expected
    # and Feast reads our rows back as it reads its own
    rows = [{"video_id": i} for i in (0, 1, 60, 61, 62)]
    features = ["video_stats:exposures", "video_stats:clicks", "video_stats:ctr"]
    assert (
        ours.get_online_features(features=features, entity_rows=rows).to_dict()
        == stock.get_online_features(features=features, entity_rows=rows).to_dict()
    )


def test_online_pusher_names_what_is_wrong(tmp_path, redis_url):
    store = write_push_repo(tmp_path / "repo", redis_url)
    pusher = OnlinePusher(store)
    now = pd.Timestamp.now(tz="UTC")
    with pytest.raises(ValueError, match="no feature view .* reads the push source 'nope'"):
        pusher.push("nope", _video_frame([1], [1], [0], now))
    with pytest.raises(ValueError, match=r"lacks the columns \['clicks'\]"):
        pusher.push(names.VIDEO_STATS_PUSH, _video_frame([1], [1], [0], now).drop(columns=["clicks"]))
    bad = _video_frame([1, 2], [1, 2], [0, 1], now).astype({"exposures": object})
    bad.loc[1, "exposures"] = "many"
    with pytest.raises(ValueError, match="column 'exposures': value 'many' is not a INT64"):
        pusher.push(names.VIDEO_STATS_PUSH, bad)
    assert pusher.push(names.VIDEO_STATS_PUSH, _video_frame([], [], [], now)) == 0
