"""Ranker features from Feast: point-in-time correct training rows and online reads for scoring.

The rankers need, per video, the topic features the offline jobs write to ``VIDEO_TOPICS``
(:mod:`topicfs.tables`): ``topic_ids`` (nearest first), ``topic_weights`` and the 8-dim
``topic_feature``. Training joins them to the click log with Feast's ``get_historical_features`` (each
click sees the topics as they were at its time, never later ones); serving reads them from the online
store. Both go through small callables, so a ranker does not care which Feast repo serves it:

* :class:`FeastHistoricalFetcher` / :class:`FeastOnlineFetcher` wrap a Feast repo (the project's
  ``feature_repo/`` with its ``ranker_v1`` service, or any repo holding the same features);
* :func:`make_video_topics_repo` writes a minimal private repo over one ``VIDEO_TOPICS`` Parquet file,
  for the Table II command when no repo is given, and for tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

ENTITY_COLUMNS = ["user_id", "video_id", "event_timestamp", "label"]
TOPIC_FEATURE_COLUMNS = ["topic_ids", "topic_weights", "topic_feature"]
VIDEO_TOPICS_VIEW = "video_topics"
DEFAULT_FEATURES = [f"{VIDEO_TOPICS_VIEW}:{name}" for name in TOPIC_FEATURE_COLUMNS]

# entity_df (user_id, video_id, event_timestamp, label) -> the same rows with feature columns added
HistoricalFetcher = Callable[[pd.DataFrame], pd.DataFrame]
# video ids -> one row per id, in order: video_id + feature columns
OnlineFetcher = Callable[[Sequence[int]], pd.DataFrame]


def check_entity_frame(entity_df: pd.DataFrame) -> pd.DataFrame:
    """Validate the training entity frame; timestamps become UTC."""
    missing = [c for c in ENTITY_COLUMNS if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity frame: missing column(s) {missing}; need {ENTITY_COLUMNS}, found {list(entity_df.columns)}")
    frame = entity_df[ENTITY_COLUMNS].copy()
    for name in ("user_id", "video_id"):
        if frame[name].isna().any() or not pd.api.types.is_integer_dtype(frame[name]):
            raise ValueError(f"entity frame: column '{name}' must be integer ids without gaps, got dtype {frame[name].dtype}")
    if not frame["label"].isin([0, 1]).all():
        bad = frame.loc[~frame["label"].isin([0, 1]), "label"].iloc[0]
        raise ValueError(f"entity frame: column 'label' must be 0/1, found {bad!r}")
    ts = pd.to_datetime(frame["event_timestamp"], utc=True, errors="coerce")
    if ts.isna().any():
        row = int(np.flatnonzero(ts.isna().to_numpy())[0])
        raise ValueError(f"entity frame: row {row}: event_timestamp {frame['event_timestamp'].iloc[row]!r} is not a timestamp")
    frame["event_timestamp"] = ts
    return frame


def fill_missing_features(frame: pd.DataFrame, topic_feature_dim: int) -> pd.DataFrame:
    """Videos without topics (not in the table yet, or outside the feature view's TTL) get empty lists and a zero vector."""
    frame = frame.copy()
    for name in ("topic_ids", "topic_weights"):
        if name not in frame.columns:
            frame[name] = [[] for _ in range(len(frame))]
        frame[name] = [list(v) if v is not None and not (isinstance(v, float) and np.isnan(v)) else [] for v in frame[name]]
    if "topic_feature" not in frame.columns:
        frame["topic_feature"] = [None] * len(frame)
    zeros = [0.0] * topic_feature_dim
    features = []
    for value in frame["topic_feature"]:
        if value is None or (isinstance(value, float) and np.isnan(value)) or len(value) == 0:
            features.append(zeros)
        elif len(value) != topic_feature_dim:
            raise ValueError(f"topic_feature has {len(value)} values, expected {topic_feature_dim}")
        else:
            features.append(list(value))
    frame["topic_feature"] = features
    return frame


def build_training_frame(
    entity_df: pd.DataFrame, fetch_features: HistoricalFetcher | None, topic_feature_dim: int = 8
) -> pd.DataFrame:
    """Training rows: the entity frame (user_id, video_id, event_timestamp, label) with topic features as of each row's time.

    ``fetch_features`` is None for a ranker without topic features. Rows come back sorted by time.
    """
    frame = check_entity_frame(entity_df)
    if fetch_features is not None:
        fetched = fetch_features(frame)
        if len(fetched) != len(frame):
            raise ValueError(f"feature fetcher returned {len(fetched)} rows for {len(frame)} entity rows")
        frame = fetched
    frame = fill_missing_features(frame, topic_feature_dim)
    return frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


class FeastHistoricalFetcher:
    """Point-in-time join of video features to training rows with ``FeatureStore.get_historical_features``.

    ``features`` is a feature service name (e.g. ``ranker_v1``) or a list of ``view:feature`` references.
    """

    def __init__(self, repo_path: str | Path, features: str | list[str] = DEFAULT_FEATURES) -> None:
        from feast import FeatureStore

        self.store = FeatureStore(repo_path=str(repo_path))
        self.features = features

    def _references(self):
        return self.store.get_feature_service(self.features) if isinstance(self.features, str) else self.features

    def __call__(self, entity_df: pd.DataFrame) -> pd.DataFrame:
        entity_df = entity_df.reset_index(drop=True).assign(_entity_row=np.arange(len(entity_df)))
        fetched = self.store.get_historical_features(entity_df=entity_df, features=self._references()).to_df()
        # Feast's file offline store drops an entity row whose video has feature rows, all later than the
        # row's time (instead of returning nulls): put every entity row back, with no features if dropped.
        feature_columns = [c for c in fetched.columns if c not in entity_df.columns]
        joined = entity_df.merge(fetched[["_entity_row", *feature_columns]], on="_entity_row", how="left", validate="one_to_one")
        if len(fetched) < len(entity_df):
            logger.debug("feast returned %d of %d entity rows; the rest have no features yet", len(fetched), len(entity_df))
        return joined.drop(columns="_entity_row")


class FeastOnlineFetcher:
    """Latest video features from Feast's online store, one row per requested id, in request order."""

    def __init__(self, repo_path: str | Path, features: str | list[str] = DEFAULT_FEATURES) -> None:
        from feast import FeatureStore

        self.store = FeatureStore(repo_path=str(repo_path))
        self.features = self.store.get_feature_service(features) if isinstance(features, str) else features

    def __call__(self, video_ids: Sequence[int]) -> pd.DataFrame:
        rows = [{"video_id": int(v)} for v in video_ids]
        values = self.store.get_online_features(features=self.features, entity_rows=rows).to_dict()
        return pd.DataFrame(values)


def make_video_topics_repo(
    repo_dir: str | Path,
    video_topics_path: str | Path,
    redis_url: str | None = None,
    topic_feature_dim: int = 8,
    project: str = "topicfs_rankers",
) -> Path:
    """Write and apply a minimal Feast repo serving ``VIDEO_TOPICS`` (file offline store; Redis or SQLite online store).

    The view has no TTL: a video's topics stay valid until the offline jobs write new ones.
    """
    from urllib.parse import urlparse

    repo_dir = Path(repo_dir)
    repo_dir.mkdir(parents=True, exist_ok=True)
    if redis_url:
        parsed = urlparse(redis_url)
        connection = f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"
        if parsed.password:
            connection += f",password={parsed.password}"
        online = f"online_store:\n    type: redis\n    connection_string: \"{connection}\"\n"
    else:
        online = f"online_store:\n    type: sqlite\n    path: {repo_dir / 'online.db'}\n"
    (repo_dir / "feature_store.yaml").write_text(
        f"project: {project}\nregistry: {repo_dir / 'registry.db'}\nprovider: local\n{online}"
        "offline_store:\n    type: file\nentity_key_serialization_version: 3\n"
    )
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Array, Float32, Int64

    # a video of the catalogue
    video = Entity(name="video", join_keys=["video_id"])
    # VIDEO_TOPICS as the offline jobs wrote it
    source = FileSource(
        name="video_topics_source",
        path=str(Path(video_topics_path).resolve()),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    # topic ids (nearest first), their similarities and the topic feature vector
    view = FeatureView(
        name=VIDEO_TOPICS_VIEW,
        entities=[video],
        schema=[
            Field(name="topic_ids", dtype=Array(Int64)),
            Field(name="topic_weights", dtype=Array(Float32)),
            Field(name="topic_feature", dtype=Array(Float32)),
        ],
        source=source,
        online=True,
    )
    # what the rankers read
    service = FeatureService(name="ranker_topics", features=[view])
    FeatureStore(repo_path=str(repo_dir)).apply([video, view, service])
    return repo_dir
