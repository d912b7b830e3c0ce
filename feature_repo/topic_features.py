# Feature definitions of the Topic Feature Store: multimodal video topics (MTL), tag embeddings,
# MRLM vectors and the stream's live statistics, served to rankers through versioned feature services.
#
# Offline tables are Parquet files written by offline_jobs/ under the tables folder of the project's
# settings (TOPICFS_PATHS__ARTIFACTS_DIR, default artifacts/ -> artifacts/tables); their layouts are
# documented in topicfs/tables.py. Feast resolves these paths when the repo is applied.

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bool, Float32, Int64

from topicfs import feast_names as names
from topicfs import tables
from topicfs.settings import get_settings

_settings = get_settings()
# A relative artefacts folder is relative to the project root (this repo's parent), wherever feast runs.
_tables_dir = _settings.paths.tables_dir
if not _tables_dir.is_absolute():
    _tables_dir = Path(__file__).resolve().parent.parent / _tables_dir

# Capacities of list features in the packed ranker layout (topicfs.max_length tags).
_MAX_TOPICS = str(_settings.topics.max_topics_per_video)
_TOPIC_FEATURE_DIM = str(_settings.topics.topic_feature_dim)
_TAG_EMBEDDING_DIM = str(_settings.tag_graph.embedding_dim)
_MRLM_DIM = str(_settings.feast.mrlm_vector_dim)
# Offline-job features (topics, embeddings, MRLM vectors) stay true until the jobs write new ones: ttl 0 is
# Feast's "never expires", so a click long after a video's publication still joins its topics point-in-time.
_NO_EXPIRY = timedelta(0)


def _table(file_name: str, created_column: str = "created") -> FileSource:
    return FileSource(
        name=file_name.removesuffix(".parquet"),
        path=str(_tables_dir / file_name),
        timestamp_field="event_timestamp",
        created_timestamp_column=created_column,
    )


# A video of the catalogue.
video = Entity(name="video", join_keys=["video_id"], value_type=ValueType.INT64)
# A learned topic (a k-means centre over a = [ē/‖ē‖, z/‖z‖]).
topic = Entity(name="topic", join_keys=["topic_id"], value_type=ValueType.INT64)
# A free-form tag of the tag co-occurrence graph.
tag = Entity(name="tag", join_keys=["tag"], value_type=ValueType.STRING)
# A user of the feed.
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)

# A video's topics (nearest first), their cosine weights and the 8-dim topic feature rankers use (MTL IV-D).
video_topics = FeatureView(
    name=names.VIDEO_TOPICS_VIEW,
    entities=[video],
    ttl=_NO_EXPIRY,
    schema=[
        Field(name="topic_ids", dtype=Array(Int64), tags={names.MAX_LENGTH_TAG: _MAX_TOPICS}),
        Field(name="topic_weights", dtype=Array(Float32), tags={names.MAX_LENGTH_TAG: _MAX_TOPICS}),
        Field(name="topic_feature", dtype=Array(Float32), tags={names.MAX_LENGTH_TAG: _TOPIC_FEATURE_DIM}),
        Field(name="n_topics", dtype=Int64),
    ],
    online=True,
    source=_table(tables.VIDEO_TOPICS),
    tags={"stage": "offline", "paper": "MTL III-A-3"},
)

# A video's tag representation ē, the mean of its tags' skip-gram embeddings (MTL Eq. 4).
video_tag_embeddings = FeatureView(
    name=names.VIDEO_TAG_EMBEDDINGS_VIEW,
    entities=[video],
    ttl=_NO_EXPIRY,
    schema=[
        Field(name="video_tag_embedding", dtype=Array(Float32), tags={names.MAX_LENGTH_TAG: _TAG_EMBEDDING_DIM}),
        Field(name="has_tags", dtype=Bool),
    ],
    online=True,
    source=_table(tables.VIDEO_TAG_EMBEDDINGS),
    tags={"stage": "offline", "paper": "MTL Eq. 4"},
)

# A tag's DeepWalk + skip-gram embedding e_j (MTL Eq. 3).
tag_embeddings = FeatureView(
    name=names.TAG_EMBEDDINGS_VIEW,
    entities=[tag],
    ttl=_NO_EXPIRY,
    schema=[Field(name="tag_embedding", dtype=Array(Float32))],
    online=True,
    source=_table(tables.TAG_EMBEDDINGS),
    tags={"stage": "offline", "paper": "MTL Eq. 3"},
)

# A topic's k-means centre, its own 8-dim embedding and its size.
topic_centroids = FeatureView(
    name=names.TOPIC_CENTROIDS_VIEW,
    entities=[topic],
    ttl=_NO_EXPIRY,
    schema=[
        Field(name="centroid", dtype=Array(Float32)),
        Field(name="topic_embedding", dtype=Array(Float32)),
        Field(name="n_videos", dtype=Int64),
    ],
    online=True,
    source=_table(tables.TOPIC_CENTROIDS),
    tags={"stage": "offline", "paper": "MTL III-A-3"},
)

# A user's MRLM vector (global + multimodal, MRLM section 3).
mrlm_user_vectors = FeatureView(
    name=names.MRLM_USER_VECTORS_VIEW,
    entities=[user],
    ttl=_NO_EXPIRY,
    schema=[Field(name="user_vector", dtype=Array(Float32), tags={names.MAX_LENGTH_TAG: _MRLM_DIM})],
    online=True,
    source=_table(tables.MRLM_USER_VECTORS),
    tags={"stage": "offline", "paper": "MRLM"},
)

# A video's MRLM item vector m (d4).
mrlm_item_vectors = FeatureView(
    name=names.MRLM_ITEM_VECTORS_VIEW,
    entities=[video],
    ttl=_NO_EXPIRY,
    schema=[Field(name="item_vector", dtype=Array(Float32), tags={names.MAX_LENGTH_TAG: _MRLM_DIM})],
    online=True,
    source=_table(tables.MRLM_ITEM_VECTORS),
    tags={"stage": "offline", "paper": "MRLM"},
)

# The stream's offline logs carry only event_timestamp: pushes have no `created` column.
# Live per-video exposures, clicks and CTR, pushed by the stream (topic utilisation, MTL III-B).
video_stats_push = PushSource(name=names.VIDEO_STATS_PUSH, batch_source=_table(names.VIDEO_STATS_LOG, created_column=""))
video_stats = FeatureView(
    name=names.VIDEO_STATS_VIEW,
    entities=[video],
    ttl=timedelta(days=1),
    schema=[Field(name="exposures", dtype=Int64), Field(name="clicks", dtype=Int64), Field(name="ctr", dtype=Float32)],
    online=True,
    source=video_stats_push,
    tags={"stage": "stream", names.STREAM_FED_TAG: "true"},
)

# Live per-topic exposures, clicks and CTR, pushed by the stream.
topic_stats_push = PushSource(name=names.TOPIC_STATS_PUSH, batch_source=_table(names.TOPIC_STATS_LOG, created_column=""))
topic_stats = FeatureView(
    name=names.TOPIC_STATS_VIEW,
    entities=[topic],
    ttl=timedelta(days=1),
    schema=[Field(name="exposures", dtype=Int64), Field(name="clicks", dtype=Int64), Field(name="ctr", dtype=Float32)],
    online=True,
    source=topic_stats_push,
    tags={"stage": "stream", names.STREAM_FED_TAG: "true"},
)

# A user's recent-topic histogram over the last N1 clicks (topic ids and their counts, most frequent first).
user_recent_topics_push = PushSource(
    name=names.USER_RECENT_TOPICS_PUSH, batch_source=_table(names.USER_RECENT_TOPICS_LOG, created_column="")
)
user_recent_topics = FeatureView(
    name=names.USER_RECENT_TOPICS_VIEW,
    entities=[user],
    ttl=timedelta(days=1),
    schema=[Field(name="recent_topic_ids", dtype=Array(Int64)), Field(name="recent_topic_counts", dtype=Array(Int64))],
    online=True,
    source=user_recent_topics_push,
    tags={"stage": "stream", names.STREAM_FED_TAG: "true"},
)

# Ranker v1: topic ids/weights + 8-dim topic feature, video tag embedding, live video stats; packed per video.
ranker_v1 = FeatureService(
    name=names.RANKER_V1,
    features=[video_topics, video_tag_embeddings, video_stats],
    tags={names.PACKED_TAG: "true"},
    description="Per-candidate features of a video ranker (Baseline+Topic of MTL Table II)",
)

# Ranker v2: ranker v1 plus the MRLM item vector; packed per video.
ranker_v2 = FeatureService(
    name=names.RANKER_V2,
    features=[video_topics, video_tag_embeddings, video_stats, mrlm_item_vectors],
    tags={names.PACKED_TAG: "true"},
    description="Ranker v1 features plus the MRLM item vector",
)

# The request-side user features a ranker joins once per request: recent-topic histogram and MRLM user vector.
user_context_v1 = FeatureService(
    name=names.USER_CONTEXT_V1,
    features=[user_recent_topics, mrlm_user_vectors],
    description="Per-request user features",
)

# The push views' offline logs (their batch sources) are created empty when missing, so a stock
# `feast apply && feast materialize-incremental <now>` reads every view right after the offline jobs.
from topicfs.feature_registry import ensure_stream_logs  # noqa: E402

ensure_stream_logs([video_stats, topic_stats, user_recent_topics], [video, topic, user])
