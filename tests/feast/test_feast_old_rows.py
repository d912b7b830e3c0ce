"""Registration writes a view's whole table the first time: rows older than Feast's default first window
(now - ttl, or a year for ttl 0) reach the online store, e.g. the topics of videos published long ago."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from feast_tables import make_tables, point_env
from topicfs import feast_names as names
from topicfs import tables
from topicfs.feature_registry import load_store, register_and_materialize
from topicfs.settings import get_settings

pytestmark = pytest.mark.integration


def test_first_registration_materializes_rows_older_than_a_year(tmp_path, redis_url, monkeypatch):
    point_env(monkeypatch, tmp_path, redis_url)
    written = make_tables(tmp_path / "artifacts" / "tables")
    path = get_settings().paths.tables_dir / tables.VIDEO_TOPICS
    old = written[tables.VIDEO_TOPICS]
    shifted = pc.subtract(old.column("event_timestamp"), pa.scalar(timedelta(days=800), pa.duration("us")))
    pq.write_table(old.set_column(old.schema.get_field_index("event_timestamp"), "event_timestamp", shifted), path)

    register_and_materialize(get_settings())
    store = load_store(get_settings())
    frame = pq.read_table(path).to_pandas().sort_values("event_timestamp").groupby("video_id").tail(1).set_index("video_id")
    ids = [int(v) for v in frame.index[:5]]
    online = store.get_online_features(
        features=[f"{names.VIDEO_TOPICS_VIEW}:topic_ids"], entity_rows=[{"video_id": v} for v in ids]
    ).to_dict()
    assert online["topic_ids"] == [list(frame.loc[v, "topic_ids"]) for v in ids]
    get_settings.cache_clear()


def test_rewritten_table_with_old_event_times_is_rematerialized(tmp_path, redis_url, monkeypatch):
    """A re-run of the offline jobs keeps each video's event time (its publication) but writes new values:
    the next registration must put the new values online, although their event times precede the last run."""
    point_env(monkeypatch, tmp_path, redis_url)
    written = make_tables(tmp_path / "artifacts" / "tables")
    register_and_materialize(get_settings())
    path = get_settings().paths.tables_dir / tables.VIDEO_TOPICS
    old = written[tables.VIDEO_TOPICS]
    new_ids = pa.array([[42]] * len(old), pa.list_(pa.int64()))
    rewritten = old.set_column(old.schema.get_field_index("topic_ids"), "topic_ids", new_ids)
    now = pa.array([datetime.now(timezone.utc)] * len(old), pa.timestamp("us", tz="UTC"))
    rewritten = rewritten.set_column(rewritten.schema.get_field_index("created"), "created", now)
    pq.write_table(rewritten, path)

    report = register_and_materialize(get_settings())
    store = load_store(get_settings())
    ids = sorted({int(v) for v in old.column("video_id").to_pylist()})[:5]
    online = store.get_online_features(
        features=[f"{names.VIDEO_TOPICS_VIEW}:topic_ids"], entity_rows=[{"video_id": v} for v in ids]
    ).to_dict()
    assert online["topic_ids"] == [[42]] * len(ids)
    assert names.VIDEO_TOPICS_VIEW in report.materialized
    get_settings.cache_clear()
