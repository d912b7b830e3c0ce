"""Names and layouts of the tables the offline jobs write and the Feast repo reads.

Every table is Parquet under ``Settings.paths.tables_dir`` and carries ``event_timestamp`` (when the
value became true, UTC) and ``created`` (when the job wrote it), as Feast's file offline store expects.
List columns are ``list<float32>`` / ``list<int64>`` so Feast maps them to ``Array(Float32)`` / ``Array(Int64)``.
"""

from __future__ import annotations

# video_id int64 | topic_ids list<int64> (nearest first) | topic_weights list<float32> (cosine, same order)
# | topic_feature list<float32>[8] | n_topics int64 | event_timestamp | created
VIDEO_TOPICS = "video_topics.parquet"
# tag str | tag_embedding list<float32>[tag_graph.embedding_dim] | event_timestamp | created
TAG_EMBEDDINGS = "tag_embeddings.parquet"
# video_id int64 | video_tag_embedding list<float32>[tag_graph.embedding_dim] (ē, Eq. 4; zeros when has_tags is false)
# | has_tags bool | event_timestamp | created
VIDEO_TAG_EMBEDDINGS = "video_tag_embeddings.parquet"
# topic_id int64 | centroid list<float32>[dim of a] | topic_embedding list<float32>[8] | n_videos int64 | event_timestamp | created
TOPIC_CENTROIDS = "topic_centroids.parquet"
# video_id int64 | x float32 | y float32 (2-D map position) | topic_id int64 (nearest, -1 = none) | title str
# | tags list<str> | cover_image str (absolute path, or null) | created: what the topic browser draws (not a Feast table)
VIDEO_MAP = "video_map.parquet"
# user_id int64 | user_vector list<float32>[d4] | event_timestamp | created
MRLM_USER_VECTORS = "mrlm_user_vectors.parquet"
# video_id int64 | item_vector list<float32>[d4] | event_timestamp | created
MRLM_ITEM_VECTORS = "mrlm_item_vectors.parquet"
# user_id int64 | video_id int64 | clicked int8 | ts timestamp: the click log rankers train on (event_timestamp = ts)
CLICKS = "clicks.parquet"
