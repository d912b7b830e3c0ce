"""Redis key layout shared by the stream (writer) and candidate generation (reader).

Every key starts with ``Settings.redis.key_prefix``. Keys are per entity, so a Redis Cluster spreads
them by slot with no code change; a reader that needs many keys pipelines them.

==========================================  ======  ====================================================
key                                         type    content
==========================================  ======  ====================================================
``{prefix}:queue:{topic_id}``               ZSET    the topic queue: member = video_id, ``ZREVRANGE``
                                                    0..n-1 is the served rank order (established videos
                                                    by CTR, fresh videos placed by the stream)
``{prefix}:video:{video_id}:topics``        STRING  the video's topic ids, comma-separated, nearest first
``{prefix}:user:{user_id}:clicks``          LIST    the user's last N1 clicked video ids, newest first
``{prefix}:user:{user_id}:exposures``       HASH    the user's exposure history, written only with
                                                    ``stream.user_exposure_counts``: ``e`` / ``c`` their
                                                    exposures / clicks, ``e:{topic_id}`` / ``c:{topic_id}``
                                                    those of videos holding the topic (the counts of
                                                    ``serving.features.exposure_history``)
``{prefix}:popular``                        ZSET    topic_id by clicks: the fallback for users with no history
==========================================  ======  ====================================================
"""

from __future__ import annotations


def queue_key(prefix: str, topic_id: int) -> str:
    return f"{prefix}:queue:{topic_id}"


def video_topics_key(prefix: str, video_id: int) -> str:
    return f"{prefix}:video:{video_id}:topics"


def user_clicks_key(prefix: str, user_id: int) -> str:
    return f"{prefix}:user:{user_id}:clicks"


def user_exposures_key(prefix: str, user_id: int) -> str:
    return f"{prefix}:user:{user_id}:exposures"


def popular_topics_key(prefix: str) -> str:
    return f"{prefix}:popular"


def encode_ids(ids) -> str:
    return ",".join(str(int(i)) for i in ids)


def decode_ids(raw: bytes | str | None) -> list[int]:
    if not raw:
        return []
    text = raw.decode() if isinstance(raw, bytes) else raw
    return [int(part) for part in text.split(",") if part]


def unlink_matching(client, pattern: str | bytes, batch_size: int = 1000) -> int:
    """Remove every key matching the glob ``pattern`` (SCAN, then UNLINK in batches, so neither blocks Redis on a
    large keyspace); returns how many went."""
    removed = 0
    batch: list = []
    for key in client.scan_iter(match=pattern, count=batch_size):
        batch.append(key)
        if len(batch) >= batch_size:
            removed += client.unlink(*batch)
            batch = []
    if batch:
        removed += client.unlink(*batch)
    return removed
