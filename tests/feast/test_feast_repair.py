"""A packed read never returns None where Feast has a value (missing, partial and undecodable records are read
from Feast's hashes in the same call and repaired); an id Feast does not know reads as None; Feast-side deletion
removes packed records; `topicfs feast verify` reports and repairs; the plugin's address settings; on a cluster
the packed read is one pipeline per node. Each on a single Redis and on the 3-master cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from topicfs import feast_names as names
from topicfs.feature_client import PackedFeatureClient, verify_packed

pytestmark = pytest.mark.integration
WORKTREE = Path(__file__).resolve().parents[2]
IDS = list(range(1, 31)) + [999]  # every video of the tables and one Feast does not know


def _sdk(store, ids, service=names.RANKER_V1):
    return store.get_online_features(store.get_feature_service(service), [{"video_id": i} for i in ids]).to_dict()


def _packed_keys(client, layout, ids):
    return layout.keys(np.asarray(ids, dtype=np.int64))


def _push_stats(store, video_ids, exposures):
    now = pd.Timestamp.now(tz="UTC")
    frame = pd.DataFrame(
        {
            "video_id": video_ids,
            "exposures": exposures,
            "clicks": [1] * len(video_ids),
            "ctr": np.float32([0.5] * len(video_ids)),
            "event_timestamp": [now] * len(video_ids),
        }
    )
    store.push(names.VIDEO_STATS_PUSH, frame)


def test_read_after_del_of_packed_keys_equals_the_sdk(registered, redis_client):
    store, _ = registered
    client = PackedFeatureClient(store, names.RANKER_V1)
    keys = _packed_keys(redis_client, client.layout, IDS)
    assert sum(redis_client.exists(key) for key in keys) == 30
    for key in keys:
        redis_client.delete(key)
    assert client.read(IDS).to_dict() == _sdk(store, IDS)
    # the same call repaired them: 30 records again, complete, and a plain read (no repair) equals the SDK too
    assert sum(redis_client.exists(key) for key in keys) == 30
    assert all(redis_client.get(key)[:1] == b"\x01" for key in keys[:30])
    assert client.read(IDS, repair=False).to_dict() == _sdk(store, IDS)


def test_partial_record_made_by_a_push_is_completed(registered, redis_client):
    store, _ = registered
    client = PackedFeatureClient(store, names.RANKER_V1)
    key = _packed_keys(redis_client, client.layout, [4])[0]
    redis_client.delete(key)
    _push_stats(store, [4], [77])  # recreates the record with the stats segment only
    assert redis_client.get(key)[:1] == b"\x00"
    batch = client.read([4])
    sdk = _sdk(store, [4])
    assert batch.to_dict() == sdk and sdk["exposures"] == [77] and sdk["topic_ids"][0] is not None
    assert redis_client.get(key)[:1] == b"\x01"


def test_push_of_a_new_video_makes_a_complete_record(registered, redis_client):
    store, _ = registered
    client = PackedFeatureClient(store, names.RANKER_V1)
    _push_stats(store, [5000], [3])
    key = _packed_keys(redis_client, client.layout, [5000])[0]
    assert redis_client.get(key)[:1] == b"\x01"  # Feast's hash holds no other view of the layout
    assert client.read([5000], repair=False).to_dict() == _sdk(store, [5000])


@pytest.mark.parametrize("garbage", [b"\xff" * 7, b"\x01" + b"\x07" * 4000, b"nonsense"])
def test_undecodable_record_is_read_from_the_hashes_and_replaced(registered, redis_client, garbage):
    store, _ = registered
    client = PackedFeatureClient(store, names.RANKER_V1)
    key = _packed_keys(redis_client, client.layout, [6])[0]
    redis_client.set(key, garbage[: client.layout.record_size] if garbage.startswith(b"\x01") else garbage)
    assert client.read([6, 6]).to_dict() == _sdk(store, [6, 6])
    assert len(redis_client.get(key)) == client.layout.record_size
    assert client.read([6], repair=False).to_dict() == _sdk(store, [6])


def test_an_id_feast_does_not_know_reads_as_none(registered):
    store, _ = registered
    batch = PackedFeatureClient(store, names.RANKER_V1).read([1, 999])
    assert batch.values["ctr"].tolist()[1] is None and batch.values["exposures"].tolist()[1] is None
    assert batch.values["ctr"][1] is np.ma.masked
    assert batch.values["topic_feature"][1].tolist() == [None] * 8
    assert batch.values["topic_feature"][0].tolist() == _sdk(store, [1])["topic_feature"][0]
    matrix = batch.to_matrix()
    assert (matrix[1] == 0).all()  # nulls are 0 by default
    assert np.isnan(batch.to_matrix(fill=np.nan)[1]).all()


def test_ttl_expiry_removes_the_packed_record(registered, redis_client):
    store, _ = registered
    client = PackedFeatureClient(store, names.RANKER_V1)
    store.config.online_store.key_ttl_seconds = 30
    try:
        _push_stats(store, [11], [12])
    finally:
        store.config.online_store.key_ttl_seconds = None
    key = _packed_keys(redis_client, client.layout, [11])[0]
    hash_key = store._get_provider().online_store.hash_keys(store.config, client.layout, [11])[0]
    assert 0 < redis_client.ttl(key) <= 30 and abs(redis_client.ttl(key) - redis_client.ttl(hash_key)) <= 1
    # a repaired record takes its hash's expiry too
    redis_client.delete(key)
    client.read([11])
    assert 0 < redis_client.ttl(key) <= 30


def test_verify_reports_and_repairs(registered, redis_client):
    store, _ = registered
    client = PackedFeatureClient(store, names.RANKER_V1)
    assert verify_packed(store, names.RANKER_V1, sample=100).differing_ids == []
    keys = _packed_keys(redis_client, client.layout, [8, 9, 4444])
    redis_client.delete(keys[0])  # missing
    record = bytearray(redis_client.get(keys[1]))
    segment = client.layout.segments[-1]  # video_stats: change a stored value (a stale record)
    feature = next(f for f in segment.features if f.name == "exposures")
    record[feature.value_offset : feature.value_offset + 8] = (123456).to_bytes(8, "little", signed=True)
    record[segment.offset : segment.offset + 9] = (1).to_bytes(8, "big") + b"\x01"
    redis_client.set(keys[1], bytes(record))
    redis_client.set(keys[2], bytes(record))  # a record Feast has no row for
    report = verify_packed(store, names.RANKER_V1, sample=100)
    assert report.differing_ids == [8, 9, 4444]
    assert any(d[:2] == (9, "exposures") and d[2] == 123456 for d in report.differences)
    repaired = verify_packed(store, names.RANKER_V1, sample=100, repair=True)
    assert repaired.repaired == 3 and repaired.remaining == 0
    assert redis_client.get(keys[2]) is None
    assert verify_packed(store, names.RANKER_V1, sample=100).differing_ids == []


def test_verify_cli(registered, redis_client, feast_env):
    store, _ = registered
    client = PackedFeatureClient(store, names.RANKER_V1)
    redis_client.delete(_packed_keys(redis_client, client.layout, [10])[0])
    env = dict(os.environ, PYTHONPATH=str(WORKTREE))
    command = [sys.executable, "-m", "topicfs_app.cli", "feast", "verify", "--sample", "50"]
    found = subprocess.run(command, capture_output=True, text=True, env=env, cwd=WORKTREE, timeout=180)
    assert found.returncode == 1, found.stderr[-2000:]
    assert "1 differ" in found.stdout and "id 10 " in found.stdout
    fixed = subprocess.run(command + ["--repair"], capture_output=True, text=True, env=env, cwd=WORKTREE, timeout=180)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert "0 ids still differ" in fixed.stdout
    bad = subprocess.run(command[:-1] + ["0"], capture_output=True, text=True, env=env, cwd=WORKTREE, timeout=180)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_teardown_removes_packed_records_and_hashes(registered, redis_client):
    store, _ = registered
    # run last in this module: everything of the project goes
    store.teardown()
    left = [key for key in redis_client.scan_iter(count=1000) if key.startswith(b"tfs:packed:") or key.endswith(store.project.encode())]
    assert left == []
