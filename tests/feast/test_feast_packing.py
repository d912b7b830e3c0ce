"""Packed layouts without Redis: layout rules, segment encoding round trips, URL parsing."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.protos.feast.types.Value_pb2 import FloatList, Int64List
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Array, Bool, Float32, Int64, String
from hypothesis import given, settings
from hypothesis import strategies as st

from topicfs.feast_names import MAX_LENGTH_TAG, PACKED_TAG
from topicfs.online_store import PackedLayoutError, build_layout, encode_segment, redis_url_to_connection_string

SOURCE = FileSource(name="s", path="unused.parquet", timestamp_field="event_timestamp")
VIDEO = Entity(name="video", join_keys=["video_id"], value_type=ValueType.INT64)
USER = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
CAPACITY = 5


def _view(name, schema, entity=VIDEO, key_type=Int64):
    key = entity.join_key
    return FeatureView(
        name=name, entities=[entity], ttl=timedelta(days=1), schema=[Field(name=key, dtype=key_type), *schema], source=SOURCE
    )


TOPICS = _view(
    "topics",
    [
        Field(name="ids", dtype=Array(Int64), tags={MAX_LENGTH_TAG: str(CAPACITY)}),
        Field(name="feature", dtype=Array(Float32), tags={MAX_LENGTH_TAG: "3"}),
        Field(name="count", dtype=Int64),
    ],
)
STATS = _view("stats", [Field(name="ctr", dtype=Float32), Field(name="flag", dtype=Bool)])


def _layout(*views, name="svc"):
    service = FeatureService(name=name, features=list(views), tags={PACKED_TAG: "true"})
    return build_layout(service, {view.name: view for view in views}, "proj", "tfs:packed")


def test_layout_offsets_are_contiguous_and_keys_vectorised():
    layout = _layout(TOPICS, STATS)
    assert [segment.view for segment in layout.segments] == ["topics", "stats"]
    assert layout.segments[1].offset == layout.segments[0].offset + layout.segments[0].size
    assert layout.segments[0].offset == 1  # byte 0: the record's complete mark
    assert layout.record_size == 1 + sum(segment.size for segment in layout.segments)
    assert layout.numpy_dtype().itemsize == layout.record_size
    keys = layout.keys(np.array([1, -2], dtype=np.int64))
    assert keys == [layout.key_prefix + layout.entity_bytes(1), layout.key_prefix + layout.entity_bytes(-2)]
    assert layout.fingerprint == _layout(TOPICS, STATS).fingerprint != _layout(STATS, TOPICS).fingerprint


@pytest.mark.parametrize(
    "views, message",
    [
        ([_view("v", [Field(name="l", dtype=Array(Float32))])], "needs a tag"),
        ([_view("v", [Field(name="s", dtype=String)])], "cannot be packed"),
        ([STATS, _view("u", [Field(name="x", dtype=Int64)], entity=USER)], "share one join key"),
        ([STATS, _view("stats2", [Field(name="ctr", dtype=Float32)])], "appears in two views"),
    ],
)
def test_unpackable_services_are_named(views, message):
    with pytest.raises(PackedLayoutError, match=message):
        _layout(*views)


def _decode(layout, record: bytes):
    return np.frombuffer(record, dtype=layout.numpy_dtype())[0]


@settings(max_examples=60, deadline=None)
@given(
    ids=st.one_of(st.none(), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=CAPACITY)),
    feature=st.one_of(st.none(), st.lists(st.floats(width=32, allow_nan=False, allow_subnormal=False), min_size=0, max_size=3)),
    count=st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    ts_nanos=st.integers(0, 2**63 - 1),
)
def test_segment_round_trip(ids, feature, count, ts_nanos):
    layout = _layout(TOPICS)
    segment = layout.segments[0]
    values = {
        "ids": ValueProto() if ids is None else ValueProto(int64_list_val=Int64List(val=ids)),
        "feature": ValueProto() if feature is None else ValueProto(float_list_val=FloatList(val=feature)),
        "count": ValueProto() if count is None else ValueProto(int64_val=count),
    }
    record = encode_segment(segment, values, ts_nanos)
    assert len(record) == segment.size
    row = _decode(layout, b"\x01" + record)  # after the record's complete mark
    assert row["__complete"] == 1
    assert row["topics.__written"] == 1 and int(row["topics.__ts"]) == ts_nanos
    assert bool(row["ids.__null"]) == (ids is None)
    if ids is not None:
        assert row["ids"][: row["ids.__len"]].tolist() == ids
    if feature is not None:
        np.testing.assert_array_equal(row["feature"][: row["feature.__len"]], np.asarray(feature, np.float32))
    assert bool(row["count.__null"]) == (count is None)
    if count is not None:
        assert int(row["count"]) == count


def test_segment_rejects_overlong_list_and_wrong_type():
    segment = _layout(TOPICS).segments[0]
    with pytest.raises(ValueError, match=MAX_LENGTH_TAG):
        encode_segment(segment, {"ids": ValueProto(int64_list_val=Int64List(val=list(range(CAPACITY + 1))))}, 1)
    with pytest.raises(ValueError, match="expects int64_val"):
        encode_segment(segment, {"count": ValueProto(float_val=1.0)}, 1)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis://127.0.0.1:6380/2", "127.0.0.1:6380,db=2"),
        ("redis://:s3cret@cache:6379", "cache:6379,db=0,password=s3cret"),
        ("rediss://user:12345@cache:6390/0", 'cache:6390,db=0,username=user,password="12345",ssl=true'),
    ],
)
def test_redis_url_to_connection_string(url, expected):
    assert redis_url_to_connection_string(url) == expected


@pytest.mark.parametrize("url", ["http://x:1", "redis://h:1/zero", "redis://:a,b@h:1/0"])
def test_bad_redis_urls(url):
    with pytest.raises(ValueError):
        redis_url_to_connection_string(url)
