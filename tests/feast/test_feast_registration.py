"""Registration against a real Redis: online values equal the Parquet tables, the packed fast path
equals get_online_features, re-running changes nothing, schema changes are reported."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from topicfs import feast_names as names
from topicfs import tables
from topicfs.feature_client import PackedFeatureClient
from topicfs.feature_registry import register_and_materialize
from topicfs.settings import get_settings

pytestmark = pytest.mark.integration

# view -> (table file, join key)
BATCH_VIEWS = {
    names.VIDEO_TOPICS_VIEW: (tables.VIDEO_TOPICS, "video_id"),
    names.VIDEO_TAG_EMBEDDINGS_VIEW: (tables.VIDEO_TAG_EMBEDDINGS, "video_id"),
    names.TAG_EMBEDDINGS_VIEW: (tables.TAG_EMBEDDINGS, "tag"),
    names.TOPIC_CENTROIDS_VIEW: (tables.TOPIC_CENTROIDS, "topic_id"),
    names.MRLM_ITEM_VECTORS_VIEW: (tables.MRLM_ITEM_VECTORS, "video_id"),
    names.MRLM_USER_VECTORS_VIEW: (tables.MRLM_USER_VECTORS, "user_id"),
}


def _latest_rows(table, join_key: str) -> dict:
    frame = table.to_pandas().sort_values("event_timestamp")
    return {row[join_key]: row for _, row in frame.groupby(join_key).tail(1).iterrows()}


def test_report_lists_what_was_done(registered, feast_env):
    _, report = registered
    assert sorted(report.materialized) == sorted(BATCH_VIEWS)
    assert {"ranker_v1", "ranker_v2"} == set(report.packed_layouts)
    assert any("create feature service ranker_v1" in line for line in report.changes)
    # the stream views' empty offline logs exist with their join keys (made when the definitions are imported)
    for log, key in [(names.VIDEO_STATS_LOG, "video_id"), (names.TOPIC_STATS_LOG, "topic_id"), (names.USER_RECENT_TOPICS_LOG, "user_id")]:
        schema = pq.read_schema(feast_env["root"] / "artifacts" / "tables" / log)
        assert key in schema.names and "event_timestamp" in schema.names
    assert "ranker_v1" in report.summary()


@pytest.mark.parametrize("view_name", sorted(BATCH_VIEWS))
def test_every_online_value_equals_parquet(registered, feast_env, view_name):
    store, _ = registered
    file_name, join_key = BATCH_VIEWS[view_name]
    latest = _latest_rows(feast_env["tables"][file_name], join_key)
    view = store.get_feature_view(view_name)
    refs = [f"{view_name}:{feature.name}" for feature in view.features]
    online = store.get_online_features(refs, [{join_key: key} for key in latest]).to_dict()
    for index, (key, row) in enumerate(latest.items()):
        assert online[join_key][index] == key
        for feature in view.features:
            got, expected = online[feature.name][index], row[feature.name]
            if expected is None:
                assert got is None, (view_name, key, feature.name)
            elif isinstance(expected, np.ndarray):
                assert len(got) == len(expected), (view_name, key, feature.name)
                # float32-exact: the online value is the Parquet float32, bit for bit
                np.testing.assert_array_equal(np.asarray(got, dtype=expected.dtype), expected)
            else:
                assert got == expected, (view_name, key, feature.name)


@pytest.mark.parametrize("service_name", [names.RANKER_V1, names.RANKER_V2])
def test_fast_path_equals_get_online_features(registered, service_name):
    store, _ = registered
    # every video, duplicates, and ids with no row at all
    ids = list(range(1, 31)) + [1, 7, 7, 999, 0, -5]
    batch = PackedFeatureClient(store, service_name).read(ids)
    sdk = store.get_online_features(store.get_feature_service(service_name), [{"video_id": i} for i in ids]).to_dict()
    assert batch.to_dict() == sdk
    assert batch.to_matrix().shape[0] == len(ids)
    assert not batch.found[names.VIDEO_TOPICS_VIEW][-3:].any()
    assert batch.found[names.VIDEO_TOPICS_VIEW][:30].all()
    assert batch.null["topic_feature"][6]  # video 7's topic feature is null in Parquet
    assert batch.lengths["topic_ids"][2] == 0 and not batch.null["topic_ids"][2]  # video 3: empty list, not null


def test_rerun_applies_nothing(registered):
    report = register_and_materialize(get_settings())
    assert report.changes == [] and report.schema_changes == []
    store, first = registered
    assert report.packed_layouts == first.packed_layouts


def test_schema_change_is_reported_and_packed_layout_follows(registered, feast_env):
    store, first = registered
    definitions = feast_env["repo"] / "topic_features.py"
    source = definitions.read_text()
    line = '        Field(name="n_topics", dtype=Int64),\n'
    assert line in source
    definitions.write_text(source.replace(line, ""))
    report = register_and_materialize(get_settings())
    assert report.schema_changes == ["video_topics: -n_topics Int64"]
    assert report.packed_layouts["ranker_v1"] != first.packed_layouts["ranker_v1"]
    store.refresh_registry()
    ids = [1, 2, 3, 999]
    batch = PackedFeatureClient(store, names.RANKER_V1).read(ids)
    assert "n_topics" not in batch.values
    assert (
        batch.to_dict() == store.get_online_features(store.get_feature_service(names.RANKER_V1), [{"video_id": i} for i in ids]).to_dict()
    )
