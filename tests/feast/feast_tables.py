"""Helpers of the Feast tests: small offline tables with the layouts of topicfs/tables.py and a copy of
feature_repo/ pointed at them (a module of its own, since every test folder has a conftest.py)."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from topicfs import tables
from topicfs.settings import get_settings

REPO_SOURCE = Path(__file__).resolve().parents[2] / "feature_repo"
TAG_DIM = 16  # TOPICFS_TAG_GRAPH__EMBEDDING_DIM in these tests
MRLM_DIM = 4  # TOPICFS_FEAST__MRLM_VECTOR_DIM in these tests
N_VIDEOS = 30
NOW = datetime.now(timezone.utc).replace(microsecond=0)
T_OLD = NOW - timedelta(days=2)  # first version of video 1's topics
T_NEW = NOW - timedelta(hours=1)  # every other row, and video 1's second version


def _ts(values: list[datetime]) -> pa.Array:
    return pa.array(values, pa.timestamp("us", tz="UTC"))


def _floats(rows: list[list[float] | None]) -> pa.Array:
    return pa.array(rows, pa.list_(pa.float32()))


def make_tables(folder: Path) -> dict[str, pa.Table]:
    """Write every offline table (small, with edge cases) and return them by file name."""
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    ids = list(range(1, N_VIDEOS + 1))
    topic_ids, topic_weights, topic_features, n_topics = [], [], [], []
    for video in ids:
        count = 0 if video == 3 else int(rng.integers(1, 9))  # video 3 has no topic; 8 = max_topics_per_video
        topic_ids.append(rng.choice(60, count, replace=False).astype(np.int64).tolist())
        topic_weights.append(rng.random(count, dtype=np.float32).tolist())
        topic_features.append(None if video == 7 else rng.standard_normal(8).astype(np.float32).tolist())  # 7: null feature
        n_topics.append(count)
    # video 1 also has an older version with other values (point-in-time joins must pick the right one)
    video_topics = pa.table(
        {
            "video_id": pa.array([1] + ids, pa.int64()),
            "topic_ids": pa.array([[59]] + topic_ids, pa.list_(pa.int64())),
            "topic_weights": _floats([[0.5]] + topic_weights),
            "topic_feature": _floats([[0.25] * 8] + topic_features),
            "n_topics": pa.array([1] + n_topics, pa.int64()),
            "event_timestamp": _ts([T_OLD] + [T_NEW] * N_VIDEOS),
            "created": _ts([T_OLD] + [T_NEW] * N_VIDEOS),
        }
    )
    tagged = ids[:25]  # videos 26..30 have no tag-embedding row at all
    has_tags = [video % 5 != 0 for video in tagged]
    video_tag_embeddings = pa.table(
        {
            "video_id": pa.array(tagged, pa.int64()),
            "video_tag_embedding": _floats(
                [rng.standard_normal(TAG_DIM).astype(np.float32).tolist() if flag else [0.0] * TAG_DIM for flag in has_tags]
            ),
            "has_tags": pa.array(has_tags, pa.bool_()),
            "event_timestamp": _ts([T_NEW] * len(tagged)),
            "created": _ts([T_NEW] * len(tagged)),
        }
    )
    tag_names = ["cat", "dog", "猫"]
    tag_embeddings = pa.table(
        {
            "tag": pa.array(tag_names, pa.string()),
            "tag_embedding": _floats([rng.standard_normal(TAG_DIM).astype(np.float32).tolist() for _ in tag_names]),
            "event_timestamp": _ts([T_NEW] * 3),
            "created": _ts([T_NEW] * 3),
        }
    )
    topic_centroids = pa.table(
        {
            "topic_id": pa.array(range(6), pa.int64()),
            "centroid": _floats([rng.standard_normal(12).astype(np.float32).tolist() for _ in range(6)]),
            "topic_embedding": _floats([rng.standard_normal(8).astype(np.float32).tolist() for _ in range(6)]),
            "n_videos": pa.array(rng.integers(1, 50, 6), pa.int64()),
            "event_timestamp": _ts([T_NEW] * 6),
            "created": _ts([T_NEW] * 6),
        }
    )
    item_ids = ids[:20]
    mrlm_item_vectors = pa.table(
        {
            "video_id": pa.array(item_ids, pa.int64()),
            "item_vector": _floats([rng.standard_normal(MRLM_DIM).astype(np.float32).tolist() for _ in item_ids]),
            "event_timestamp": _ts([T_NEW] * len(item_ids)),
            "created": _ts([T_NEW] * len(item_ids)),
        }
    )
    mrlm_user_vectors = pa.table(
        {
            "user_id": pa.array(range(1, 6), pa.int64()),
            "user_vector": _floats([rng.standard_normal(MRLM_DIM).astype(np.float32).tolist() for _ in range(5)]),
            "event_timestamp": _ts([T_NEW] * 5),
            "created": _ts([T_NEW] * 5),
        }
    )
    # clicks on video 1: before any topic row, between its two versions, after the second
    clicks = pa.table(
        {
            "user_id": pa.array([1, 2, 3, 4], pa.int64()),
            "video_id": pa.array([1, 1, 1, 2], pa.int64()),
            "clicked": pa.array([1, 0, 1, 1], pa.int8()),
            "ts": _ts([T_OLD - timedelta(hours=1), T_OLD + timedelta(hours=1), NOW, NOW]),
        }
    )
    written = {
        tables.VIDEO_TOPICS: video_topics,
        tables.VIDEO_TAG_EMBEDDINGS: video_tag_embeddings,
        tables.TAG_EMBEDDINGS: tag_embeddings,
        tables.TOPIC_CENTROIDS: topic_centroids,
        tables.MRLM_ITEM_VECTORS: mrlm_item_vectors,
        tables.MRLM_USER_VECTORS: mrlm_user_vectors,
        tables.CLICKS: clicks,
    }
    for name, table in written.items():
        pq.write_table(table, folder / name)
    return written


def point_env(monkeypatch: pytest.MonkeyPatch, root: Path, redis_url: str) -> Path:
    """Copy feature_repo/ under ``root`` and point the settings at ``root``'s tables and ``redis_url``."""
    repo = root / "feature_repo"
    shutil.copytree(REPO_SOURCE, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    monkeypatch.setenv("TOPICFS_PATHS__ARTIFACTS_DIR", str(root / "artifacts"))
    monkeypatch.setenv("TOPICFS_REDIS__URL", redis_url)
    monkeypatch.setenv("TOPICFS_FEAST__REPO_PATH", str(repo))
    monkeypatch.setenv("TOPICFS_TAG_GRAPH__EMBEDDING_DIM", str(TAG_DIM))
    monkeypatch.setenv("TOPICFS_FEAST__MRLM_VECTOR_DIM", str(MRLM_DIM))
    get_settings.cache_clear()
    return repo
