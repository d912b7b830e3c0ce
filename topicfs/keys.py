"""The Redis key layout: every key the stream writes and the serving path reads is built here, and nowhere else.

The live state is split into ``S`` logical **shards** (``redis.shards``, 1 by default). Every key carries its shard
as a Redis Cluster hash tag, ``{prefix}:{s<n>}:...``, so all keys of one shard sit in one cluster slot and one Lua
script can update them atomically on a Redis Cluster as on a single Redis. An entity lives in the shard
``id mod S`` (:meth:`KeyLayout.shard`):

==============================================  ======  ======================  =======================================
key (``{t}`` = the shard's hash tag)            type    shard                   content
==============================================  ======  ======================  =======================================
``{prefix}:{t}:video:{video_id}:topics``        STRING  the video's             topic ids, comma-separated, nearest first
``{prefix}:{t}:stats:video:{video_id}``         HASH    the video's             exposures, clicks, ctr, ts
``{prefix}:{t}:est:{topic_id}``                 ZSET    each shard              video → CTR of the shard's videos of the
                                                                                topic with ≥ τ1 exposures and CTR ≥ τ2
``{prefix}:{t}:fresh:{topic_id}``               ZSET    each shard              video → exposures of the shard's videos
                                                                                of the topic below τ1
``{prefix}:{t}:stats:topic:{topic_id}``         HASH    the topic's             exposures, clicks, ctr, ts
``{prefix}:{t}:queue:{topic_id}``               ZSET    the topic's             the served queue: ``ZREVRANGE 0 n-1`` is
                                                                                the served order
``{prefix}:{t}:popular``                        ZSET    each shard              topic → clicks of the shard's topics
``{prefix}:{t}:user:{user_id}:clicks``          LIST    the user's              last N1 clicked video ids, newest first
``{prefix}:{t}:user:{user_id}:click_topics``    LIST    the user's              topic ids of each of those videos when
                                                                                clicked (same order, comma-separated)
``{prefix}:{t}:user:{user_id}:topic_counts``    HASH    the user's              topic → votes among the last N1 clicks
``{prefix}:{t}:user:{user_id}:exposures``       HASH    the user's              exposure history (``e``, ``c``,
                                                                                ``e:{topic}``, ``c:{topic}``), only with
                                                                                ``stream.user_exposure_counts``
``{prefix}:{t}:epoch``                          STRING  each shard              the shard's epoch: a token written when
                                                                                the shard's state was started; its loss
                                                                                means the shard's state was lost
``{prefix}:{t}:offset:{kafka_topic}:{p}``       STRING  each shard              last offset of partition p applied to
                                                                                this shard
``{prefix}:{t}:topics``                         SET     each shard              topic ids having a video of this shard
``{prefix}:{t}:dirty``                          SET     each shard              topics whose queue must be rebuilt
                                                                                because this shard's indexes changed
``{prefix}:{t}:push:{video|topic|user}``        SET     each shard              ids of this shard changed since the last
                                                                                Feast push
==============================================  ======  ======================  =======================================

Why it is exact, and which reader fans out where, is in ``docs/STATE.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

ENTITIES = ("video", "topic", "user")


@dataclass(frozen=True)
class KeyLayout:
    """Key names of one deployment: a key prefix and a shard count."""

    prefix: str
    shards: int = 1

    def __post_init__(self) -> None:
        if int(self.shards) < 1:
            raise ValueError(f"redis.shards must be >= 1, got {self.shards}")
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError(f"redis.key_prefix must not contain braces (they would become the cluster hash tag): {self.prefix!r}")

    @classmethod
    def from_config(cls, redis_config) -> "KeyLayout":
        """The layout of a :class:`topicfs.settings.RedisConfig`."""
        return cls(redis_config.key_prefix, redis_config.shards)

    # ------------------------------------------------------------ shards

    def shard(self, entity_id: int) -> int:
        """The shard that owns a video, topic or user id."""
        return int(entity_id) % self.shards

    def tag(self, shard: int) -> str:
        """The key head of a shard, hash tag included."""
        return f"{self.prefix}:{{s{shard}}}"

    def all_shards(self) -> range:
        return range(self.shards)

    def pattern(self, rest: str = "*") -> str:
        """A SCAN glob matching the keys of every shard whose part after the shard tag matches ``rest``."""
        return f"{self.prefix}:{{s*}}:{rest}"

    # ------------------------------------------------------------ per entity

    def video_topics(self, video_id: int) -> str:
        return f"{self.tag(self.shard(video_id))}:video:{video_id}:topics"

    def video_stats(self, video_id: int) -> str:
        return f"{self.tag(self.shard(video_id))}:stats:video:{video_id}"

    def topic_stats(self, topic_id: int) -> str:
        return f"{self.tag(self.shard(topic_id))}:stats:topic:{topic_id}"

    def queue(self, topic_id: int) -> str:
        return f"{self.tag(self.shard(topic_id))}:queue:{topic_id}"

    def user_clicks(self, user_id: int) -> str:
        return f"{self.tag(self.shard(user_id))}:user:{user_id}:clicks"

    def user_click_topics(self, user_id: int) -> str:
        return f"{self.tag(self.shard(user_id))}:user:{user_id}:click_topics"

    def user_topic_counts(self, user_id: int) -> str:
        return f"{self.tag(self.shard(user_id))}:user:{user_id}:topic_counts"

    def user_exposures(self, user_id: int) -> str:
        return f"{self.tag(self.shard(user_id))}:user:{user_id}:exposures"

    def user_history(self, user_id: int) -> tuple[str, str, str]:
        """:meth:`user_clicks`, :meth:`user_click_topics` and :meth:`user_topic_counts` of one user (the batch
        script's three keys per clicking user), with the shard's tag built once."""
        head = f"{self.tag(self.shard(user_id))}:user:{user_id}:"
        return head + "clicks", head + "click_topics", head + "topic_counts"

    # ------------------------------------------------------------ per shard

    def established(self, shard: int, topic_id: int) -> str:
        return f"{self.tag(shard)}:est:{topic_id}"

    def fresh(self, shard: int, topic_id: int) -> str:
        return f"{self.tag(shard)}:fresh:{topic_id}"

    def popular(self, shard: int) -> str:
        return f"{self.tag(shard)}:popular"

    def epoch(self, shard: int) -> str:
        return f"{self.tag(shard)}:epoch"

    def offset(self, shard: int, kafka_topic: str, partition: int) -> str:
        return f"{self.tag(shard)}:offset:{kafka_topic}:{partition}"

    def all_topics(self, shard: int) -> str:
        return f"{self.tag(shard)}:topics"

    def dirty(self, shard: int) -> str:
        return f"{self.tag(shard)}:dirty"

    def push_pending(self, shard: int, entity: str) -> str:
        if entity not in ENTITIES:
            raise ValueError(f"unknown push entity {entity!r}; one of {ENTITIES}")
        return f"{self.tag(shard)}:push:{entity}"


def encode_ids(ids) -> str:
    return ",".join(str(int(i)) for i in ids)


def decode_ids(raw: bytes | str | None) -> list[int]:
    if not raw:
        return []
    text = raw.decode() if isinstance(raw, bytes) else raw
    return [int(part) for part in text.split(",") if part]


def unlink_matching(client, pattern: str | bytes, batch_size: int = 1000) -> int:
    """Remove every key matching the glob ``pattern`` (SCAN, then UNLINK in batches, so neither blocks Redis on a
    large keyspace); returns how many went. On a Redis Cluster client the SCAN visits every master and each key is
    unlinked on its own node."""
    removed = 0
    batch: list = []
    cluster = is_cluster(client)
    for key in client.scan_iter(match=pattern, count=batch_size):
        batch.append(key)
        if len(batch) >= batch_size:
            removed += _unlink(client, batch, cluster)
            batch = []
    if batch:
        removed += _unlink(client, batch, cluster)
    return removed


def _unlink(client, batch: list, cluster: bool) -> int:
    if not cluster:
        return client.unlink(*batch)
    with client.pipeline(transaction=False) as pipe:
        for key in batch:
            pipe.unlink(key)
        return sum(pipe.execute())


def is_cluster(client) -> bool:
    """Whether a redis-py client (sync or asyncio) talks to a Redis Cluster."""
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster

    return isinstance(client, (RedisCluster, AsyncRedisCluster))
