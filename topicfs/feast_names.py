"""Names the Feast repo defines and other stages import (push sources, views, services, tags).

The stream imports the push-source names from here, so renaming one is a change in one place.
"""

from __future__ import annotations

# Push sources the stream writes its live statistics to (FeatureStore.push, PushMode.ONLINE).
VIDEO_STATS_PUSH = "video_stats_push"  # video_id | exposures int64 | clicks int64 | ctr float32 | event_timestamp
TOPIC_STATS_PUSH = "topic_stats_push"  # topic_id | exposures int64 | clicks int64 | ctr float32 | event_timestamp
USER_RECENT_TOPICS_PUSH = (
    "user_recent_topics_push"  # user_id | recent_topic_ids list<int64> | recent_topic_counts list<int64> | event_timestamp
)

# Feature views.
VIDEO_TOPICS_VIEW = "video_topics"
VIDEO_TAG_EMBEDDINGS_VIEW = "video_tag_embeddings"
TAG_EMBEDDINGS_VIEW = "tag_embeddings"
TOPIC_CENTROIDS_VIEW = "topic_centroids"
MRLM_USER_VECTORS_VIEW = "mrlm_user_vectors"
MRLM_ITEM_VECTORS_VIEW = "mrlm_item_vectors"
VIDEO_STATS_VIEW = "video_stats"
TOPIC_STATS_VIEW = "topic_stats"
USER_RECENT_TOPICS_VIEW = "user_recent_topics"

# Feature services (versioned by name: a changed feature list is a new version).
RANKER_V1 = "ranker_v1"
RANKER_V2 = "ranker_v2"
USER_CONTEXT_V1 = "user_context_v1"

# Tags the online-store plugin reads.
PACKED_TAG = "topicfs.packed"  # on a FeatureService: "true" = keep a packed per-entity layout of its values
MAX_LENGTH_TAG = "topicfs.max_length"  # on a list Field: capacity reserved for it in packed layouts
STREAM_FED_TAG = "topicfs.stream_fed"  # on a FeatureView: "true" = written by push; its batch file is the stream's offline log

# Stream-fed views' offline logs (batch sources of the push sources), Parquet under the tables folder.
VIDEO_STATS_LOG = "video_stats_log.parquet"
TOPIC_STATS_LOG = "topic_stats_log.parquet"
USER_RECENT_TOPICS_LOG = "user_recent_topics_log.parquet"
