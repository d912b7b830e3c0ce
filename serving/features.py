"""Ranker features from Feast: point-in-time correct training rows and online reads for scoring.

The rankers need, per video, the topic features the offline jobs write to ``VIDEO_TOPICS``
(:mod:`topicfs.tables`): ``topic_ids`` (nearest first), ``topic_weights`` and the 8-dim
``topic_feature``. Training joins them to the click log with Feast's ``get_historical_features`` (each
click sees the topics as they were at its time, never later ones); serving reads them from the online
store. Both go through small callables, so a ranker does not care which Feast repo serves it:

* :class:`FeastHistoricalFetcher` (training) and :func:`online_fetcher` (serving: the packed one-``MGET``
  read of :mod:`topicfs.feature_client` when the repo uses the project's online-store plugin, else Feast's
  ``get_online_features``) wrap a Feast repo: the project's ``feature_repo/`` with its ``ranker_v1``
  service, or any repo holding the same features;
* :func:`make_video_topics_repo` writes a minimal private repo over one ``VIDEO_TOPICS`` Parquet file,
  for the Table II command when no repo is given, the benchmarks and tests.

The user's side needs no feature store: :func:`user_history` derives it from the click log for training,
and serving takes the same history from the Redis state candidate generation already read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from serving.padding import PADDING, pad_lists

logger = logging.getLogger(__name__)

ENTITY_COLUMNS = ["user_id", "video_id", "event_timestamp", "label"]
TOPIC_FEATURE_COLUMNS = ["topic_ids", "topic_weights", "topic_feature"]
VIDEO_TOPICS_VIEW = "video_topics"
VIDEO_TOPICS_SERVICE = "ranker_topics"  # the service of make_video_topics_repo
DEFAULT_FEATURES = [f"{VIDEO_TOPICS_VIEW}:{name}" for name in TOPIC_FEATURE_COLUMNS]

# entity_df (user_id, video_id, event_timestamp, label) -> the same rows with feature columns added
HistoricalFetcher = Callable[[pd.DataFrame], pd.DataFrame]
# video ids -> their topic features, in order (VideoTopicFeatures)
OnlineFetcher = Callable[[Sequence[int]], "VideoTopicFeatures"]


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


def user_history(
    frame: pd.DataFrame, recent_clicks: int, history_videos: int, history_topics: int
) -> tuple[list[list[int]], list[list[int]], list[list[float]]]:
    """Each row's user history as serving sees it: from the user's clicks strictly before the row's time.

    ``frame`` holds user_id, video_id, event_timestamp, label and (for the topics) topic_ids. Returns, per row,
    the latest ``history_videos`` clicked video ids (newest first), and the user's top ``history_topics``
    topics voted by their last ``recent_clicks`` (N1) clicks with their vote shares, counted exactly as
    candidate generation counts them (:func:`serving.candidates.vote_topics`: one vote per clicked video and
    topic, ties to the most recent). Rows at the same time (one feed refresh) do not see each other's clicks.
    """
    from collections import deque

    n = len(frame)
    users = frame["user_id"].to_numpy(dtype=np.int64)
    ts = frame["event_timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    labels = frame["label"].to_numpy()
    videos = frame["video_id"].to_numpy(dtype=np.int64)
    topics = frame["topic_ids"].tolist() if "topic_ids" in frame.columns else [()] * n
    order = np.lexsort((ts, users))  # by user, then time
    out_videos: list[list[int]] = [[] for _ in range(n)]
    out_topics: list[list[int]] = [[] for _ in range(n)]
    out_weights: list[list[float]] = [[] for _ in range(n)]
    start = 0
    while start < n:
        user = users[order[start]]
        window: deque[tuple[int, tuple[int, ...]]] = deque()  # the last N1 clicks, oldest left
        votes: dict[int, int] = {}
        newest: dict[int, int] = {}  # topic -> clock of the newest click voting for it
        clock = 0
        while start < n and users[order[start]] == user:
            end = start
            while end < n and users[order[end]] == user and ts[order[end]] == ts[order[start]]:
                end += 1
            if window:
                recent = [video for video, _ in reversed(window)][:history_videos]
                top = sorted(votes, key=lambda t: (-votes[t], -newest[t], t))[:history_topics]
                shares = [votes[t] / len(window) for t in top]
                for row in order[start:end]:
                    out_videos[row], out_topics[row], out_weights[row] = recent, top, shares
            for row in order[start:end]:
                if labels[row] != 1:
                    continue
                clicked_topics = tuple(dict.fromkeys(int(t) for t in (topics[row] if topics[row] is not None else ())))
                window.append((int(videos[row]), clicked_topics))
                clock += 1
                for t in clicked_topics:
                    votes[t] = votes.get(t, 0) + 1
                    newest[t] = clock
                if len(window) > recent_clicks:
                    for t in window.popleft()[1]:
                        votes[t] -= 1
                        if votes[t] == 0:
                            del votes[t], newest[t]
            start = end
    return out_videos, out_topics, out_weights


def exposure_history(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[list[int]], list[list[int]]]:
    """Each row's exposure counts from the user's rows strictly before the row's time (every row is an exposure).

    ``frame`` holds user_id, event_timestamp, label and (for the topics) topic_ids. Returns, per row, the user's
    earlier exposures and clicks, and for each of the row's topic ids (same order) the user's earlier exposures
    and clicks of videos holding that topic. Clicks alone (:func:`user_history`) cannot tell a generous user
    from a picky one or a liked topic from a merely frequent one; the exposures they were drawn from can. Rows of
    one feed refresh do not see each other.
    """
    n = len(frame)
    users = frame["user_id"].to_numpy(dtype=np.int64)
    ts = frame["event_timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    labels = frame["label"].to_numpy()
    topics = frame["topic_ids"].tolist() if "topic_ids" in frame.columns else [()] * n
    order = np.lexsort((ts, users))  # by user, then time
    user_exposures = np.zeros(n, dtype=np.int64)
    user_clicks = np.zeros(n, dtype=np.int64)
    topic_exposures: list[list[int]] = [[] for _ in range(n)]
    topic_clicks: list[list[int]] = [[] for _ in range(n)]
    start = 0
    while start < n:
        user = users[order[start]]
        exposures = clicks = 0
        per_topic: dict[int, list[int]] = {}  # topic -> [exposures, clicks] of this user so far
        while start < n and users[order[start]] == user:
            end = start
            while end < n and users[order[end]] == user and ts[order[end]] == ts[order[start]]:
                end += 1
            group = order[start:end]
            row_topics = [[int(t) for t in (topics[row] if topics[row] is not None else ())] for row in group]
            for row, own in zip(group, row_topics):
                user_exposures[row], user_clicks[row] = exposures, clicks
                counts = [per_topic.get(t, (0, 0)) for t in own]  # aligned with the row's topic_ids
                topic_exposures[row] = [int(e) for e, _ in counts]
                topic_clicks[row] = [int(c) for _, c in counts]
            for row, own in zip(group, row_topics):
                clicked = int(labels[row] == 1)
                exposures += 1
                clicks += clicked
                for t in set(own):
                    seen = per_topic.setdefault(t, [0, 0])
                    seen[0] += 1
                    seen[1] += clicked
            start = end
    return user_exposures, user_clicks, topic_exposures, topic_clicks


@dataclass
class UserExposureHistory:
    """One user's exposure history as the stream keeps it (``stream.user_exposure_counts``; Redis hash
    :meth:`topicfs.keys.KeyLayout.user_exposures`): the counts :func:`exposure_history` derives from the log offline."""

    exposures: int = 0
    clicks: int = 0
    topic_exposures: dict[int, int] = field(default_factory=dict)
    topic_clicks: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: dict, user_id: int | None = None) -> "UserExposureHistory":
        """Parse the hash (bytes or str fields and values). A field that is not ``e``, ``c``, ``e:<topic id>`` or
        ``c:<topic id>`` with an integer value is skipped with a warning naming it: the valid counts still serve."""
        history = cls()
        for name, value in raw.items():
            name = name.decode() if isinstance(name, bytes) else str(name)
            try:
                count = int(value)
                kind, _, topic = name.partition(":")
                if kind not in ("e", "c") or (topic and not topic.lstrip("-").isdigit()):
                    raise ValueError("unknown field")
            except ValueError:
                logger.warning(
                    "user %s: ignoring exposure-history field %r = %r (expected e, c, e:<topic>, c:<topic> with integer counts)",
                    user_id,
                    name,
                    value,
                )
                continue
            if not topic:
                if kind == "e":
                    history.exposures = count
                else:
                    history.clicks = count
            else:
                (history.topic_exposures if kind == "e" else history.topic_clicks)[int(topic)] = count
        return history

    def for_topics(self, topic_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, T) int64 exposures and clicks of the user for each topic id in ``topic_ids`` (0 on :data:`PADDING`)."""
        distinct, where = np.unique(topic_ids, return_inverse=True)
        known = distinct != PADDING
        exposures = np.array([self.topic_exposures.get(int(t), 0) if k else 0 for t, k in zip(distinct, known)], dtype=np.int64)
        clicks = np.array([self.topic_clicks.get(int(t), 0) if k else 0 for t, k in zip(distinct, known)], dtype=np.int64)
        return exposures[where].reshape(topic_ids.shape), clicks[where].reshape(topic_ids.shape)


def build_training_frame(
    entity_df: pd.DataFrame,
    fetch_features: HistoricalFetcher | None,
    topic_feature_dim: int = 8,
    recent_clicks: int = 128,
    history_videos: int = 20,
    history_topics: int = 8,
) -> pd.DataFrame:
    """Training rows: the entity frame (user_id, video_id, event_timestamp, label) with topic features as of
    each row's time and the user's history before it (:func:`user_history`, :func:`exposure_history`).

    ``fetch_features`` is None for a ranker without topic features. Rows come back sorted by time.
    """
    frame = check_entity_frame(entity_df)
    if fetch_features is not None:
        fetched = fetch_features(frame)
        if len(fetched) != len(frame):
            raise ValueError(f"feature fetcher returned {len(fetched)} rows for {len(frame)} entity rows")
        frame = fill_missing_features(fetched, topic_feature_dim)
    frame["history_video_ids"], frame["history_topic_ids"], frame["history_topic_weights"] = user_history(
        frame, recent_clicks, history_videos, history_topics
    )
    frame["user_exposures"], frame["user_clicks"], frame["topic_exposures"], frame["topic_clicks"] = exposure_history(frame)
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


@dataclass
class VideoTopicFeatures:
    """Online topic features of N candidate videos, in request order, as the ranker's arrays."""

    topic_ids: np.ndarray  # (N, T) int64, PADDING past a video's topics
    topic_weights: np.ndarray  # (N, T) float32, 0 past a video's topics
    topic_feature: np.ndarray  # (N, D) float32, zeros for a video without features online


class FeastOnlineFetcher:
    """Latest video topic features through ``FeatureStore.get_online_features`` (any online store)."""

    def __init__(self, store, features: str | list[str] = DEFAULT_FEATURES, max_topics: int = 8, topic_feature_dim: int = 8) -> None:
        self.store = store
        self.features = store.get_feature_service(features) if isinstance(features, str) else features
        self.max_topics = max_topics
        self.topic_feature_dim = topic_feature_dim

    def __call__(self, video_ids: Sequence[int]) -> VideoTopicFeatures:
        values = self.store.get_online_features(features=self.features, entity_rows=[{"video_id": int(v)} for v in video_ids]).to_dict()
        frame = fill_missing_features(pd.DataFrame({name: values[name] for name in TOPIC_FEATURE_COLUMNS}), self.topic_feature_dim)
        return VideoTopicFeatures(
            pad_lists(frame["topic_ids"].tolist(), self.max_topics, np.int64, PADDING),
            pad_lists(frame["topic_weights"].tolist(), self.max_topics, np.float32, 0.0),
            np.asarray(frame["topic_feature"].tolist(), dtype=np.float32).reshape(len(frame), self.topic_feature_dim),
        )


class PackedOnlineFetcher:
    """The same features from the online-store plugin's packed records: one Redis ``MGET`` for all candidates
    (:class:`topicfs.feature_client.PackedFeatureClient`); needs a service tagged ``topicfs.packed``."""

    def __init__(self, store, service: str, max_topics: int = 8) -> None:
        from topicfs.feature_client import PackedFeatureClient

        self.client = PackedFeatureClient(store, service)
        self.max_topics = max_topics

    def __call__(self, video_ids: Sequence[int]) -> VideoTopicFeatures:
        batch = self.client.read(np.asarray(video_ids, dtype=np.int64))
        ids = batch.values["topic_ids"][:, : self.max_topics].astype(np.int64)  # (N, T) padded with 0
        slot = np.arange(ids.shape[1])[None, :]
        valid = (slot < batch.lengths["topic_ids"][:, None]) & ~batch.null["topic_ids"][:, None]
        weights = np.where(valid, batch.values["topic_weights"][:, : self.max_topics], 0.0).astype(np.float32)
        feature = np.where(batch.null["topic_feature"][:, None], 0.0, batch.values["topic_feature"]).astype(np.float32)
        return VideoTopicFeatures(np.where(valid, ids, PADDING), weights, feature)


def online_fetcher(repo_path: str | Path, service: str | None = None, max_topics: int = 8, topic_feature_dim: int = 8) -> OnlineFetcher:
    """The fastest online read the repo allows: packed records when its online store is the project's plugin
    and ``service`` is packed, else Feast's ``get_online_features`` (of ``service``, or the three topic features)."""
    from feast import FeatureStore

    from topicfs.online_store import TopicRedisOnlineStore, is_packed

    store = FeatureStore(repo_path=str(repo_path))
    if service is not None:
        packed = isinstance(store._get_provider().online_store, TopicRedisOnlineStore) and is_packed(store.get_feature_service(service))
        if packed:
            return PackedOnlineFetcher(store, service, max_topics)
        return FeastOnlineFetcher(store, service, max_topics, topic_feature_dim)
    return FeastOnlineFetcher(store, DEFAULT_FEATURES, max_topics, topic_feature_dim)


def make_video_topics_repo(
    repo_dir: str | Path,
    video_topics_path: str | Path,
    redis_url: str | None = None,
    max_topics: int = 8,
    topic_feature_dim: int = 8,
    project: str = "topicfs_rankers",
) -> Path:
    """Write and apply a minimal Feast repo serving ``VIDEO_TOPICS`` (file offline store).

    Online store: with ``redis_url``, the project's Redis plugin (:mod:`topicfs.online_store`) and a packed
    service, so :func:`online_fetcher` reads with one ``MGET``; without, SQLite (offline use only). The view has
    no TTL: a video's topics stay valid until the offline jobs write new ones. ``repo_dir`` may be relative; the
    repo's file paths are written absolute (Feast reads a relative registry path against the repo folder).
    """
    repo_dir = Path(repo_dir).resolve()
    repo_dir.mkdir(parents=True, exist_ok=True)
    if redis_url:
        online = f'online_store:\n    type: topicfs.online_store.TopicRedisOnlineStore\n    url: "{redis_url}"\n'
    else:
        online = f"online_store:\n    type: sqlite\n    path: {repo_dir / 'online.db'}\n"
    (repo_dir / "feature_store.yaml").write_text(
        f"project: {project}\nregistry: {repo_dir / 'registry.db'}\nprovider: local\n{online}"
        "offline_store:\n    type: file\nentity_key_serialization_version: 3\n"
    )
    from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Float32, Int64

    from topicfs.feast_names import MAX_LENGTH_TAG, PACKED_TAG

    # a video of the catalogue
    video = Entity(name="video", join_keys=["video_id"], value_type=ValueType.INT64)
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
            Field(name="topic_ids", dtype=Array(Int64), tags={MAX_LENGTH_TAG: str(max_topics)}),
            Field(name="topic_weights", dtype=Array(Float32), tags={MAX_LENGTH_TAG: str(max_topics)}),
            Field(name="topic_feature", dtype=Array(Float32), tags={MAX_LENGTH_TAG: str(topic_feature_dim)}),
        ],
        source=source,
        online=True,
    )
    # what the rankers read
    service = FeatureService(name=VIDEO_TOPICS_SERVICE, features=[view], tags={PACKED_TAG: "true"})
    FeatureStore(repo_path=str(repo_dir)).apply([video, view, service])
    return repo_dir
