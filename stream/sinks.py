"""Where the changed statistics go, one push per interval: a Feast push source, or nowhere.

The Feast repo defines push sources (names from ``StreamConfig.push_source_*``):
``video_stats`` (video_id: exposures int64, clicks int64, ctr float32), ``topic_stats`` (topic_id: same) and
``user_recent_topics`` (user_id: recent_topic_ids list<int64>, recent_topic_counts list<int64>); each frame also
carries ``event_timestamp`` (push time, UTC, so the online store keeps the newest) and ``created``.
"""

from __future__ import annotations

import logging
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import pandas as pd

from topicfs import feast_names as names

logger = logging.getLogger(__name__)


class StatsSink(Protocol):
    """Receives one DataFrame per push source and push."""

    def push(self, name: str, df: pd.DataFrame) -> None: ...


class FeastPushSink:
    """Pushes to the online store of a Feast repo: what ``FeatureStore.push(..., to=PushMode.ONLINE)`` writes,
    through :class:`topicfs.feature_client.OnlinePusher` (no Arrow round trip)."""

    def __init__(self, repo_path: str | Path) -> None:
        try:
            from feast import FeatureStore
        except ImportError as exc:  # feast is a dependency of the project, but the sink is optional at run time
            raise RuntimeError("the Feast push sink needs the package feast[redis]") from exc
        repo_path = Path(repo_path)
        if not (repo_path / "feature_store.yaml").exists():
            raise FileNotFoundError(f"{repo_path} is not a Feast repo (no feature_store.yaml); set TOPICFS_STREAM__FEAST_REPO_PATH")
        from topicfs.feature_client import OnlinePusher

        self.repo_path = repo_path
        self.store = FeatureStore(repo_path=str(repo_path))
        self.pusher = OnlinePusher(self.store)

    def push(self, name: str, df: pd.DataFrame) -> None:
        self.pusher.push(name, df)


def write_push_repo(
    path: str | Path, redis_url: str, project: str = "topicfs_stream", online_store_type: str = "topicfs.online_store.TopicRedisOnlineStore"
):
    """Write and apply a minimal Feast repo holding only the three push sources (and a feature view over each).

    For running the stream where the project's feature_repo is not at hand (tests, the benchmark); online store =
    the project's :class:`topicfs.online_store.TopicRedisOnlineStore` (as in ``feature_repo/``) on the Redis at ``redis_url``
    (``online_store_type="redis"``: Feast's own Redis store). Returns the applied ``FeatureStore``; push sources and views carry the names of
    :mod:`topicfs.feast_names`, as in ``feature_repo/``.
    """
    path = Path(path)
    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource
    from feast.types import Array, Float32, Int64
    from feast.value_type import ValueType

    from topicfs.online_store import redis_url_to_connection_string

    path.mkdir(parents=True, exist_ok=True)
    ours = online_store_type.startswith("topicfs.")
    address = f'url: "{redis_url}"' if ours else f'connection_string: "{redis_url_to_connection_string(redis_url)}"'
    (path / "feature_store.yaml").write_text(
        textwrap.dedent(
            f"""\
            project: {project}
            registry: {path / "registry.db"}
            provider: local
            online_store:
              type: {online_store_type}
              {address}
            offline_store:
              type: file
            entity_key_serialization_version: 3
            """
        )
    )
    objects = []
    for name, key, schema in [
        (
            names.VIDEO_STATS_PUSH,
            "video_id",
            [Field(name="exposures", dtype=Int64), Field(name="clicks", dtype=Int64), Field(name="ctr", dtype=Float32)],
        ),
        (
            names.TOPIC_STATS_PUSH,
            "topic_id",
            [Field(name="exposures", dtype=Int64), Field(name="clicks", dtype=Int64), Field(name="ctr", dtype=Float32)],
        ),
        (
            names.USER_RECENT_TOPICS_PUSH,
            "user_id",
            [Field(name="recent_topic_ids", dtype=Array(Int64)), Field(name="recent_topic_counts", dtype=Array(Int64))],
        ),
    ]:
        parquet = path / f"{name}.parquet"
        empty = {key: pd.Series([], dtype="int64"), "event_timestamp": pd.Series([], dtype="datetime64[ns, UTC]")}
        pd.DataFrame(empty).to_parquet(parquet)
        entity = Entity(name=key.removesuffix("_id"), join_keys=[key], value_type=ValueType.INT64)
        push = PushSource(name=name, batch_source=FileSource(path=str(parquet), timestamp_field="event_timestamp"))
        objects += [
            entity,
            push,
            FeatureView(name=name.removesuffix("_push"), entities=[entity], ttl=timedelta(days=1), schema=schema, source=push, online=True),
        ]
    store = FeatureStore(repo_path=str(path))
    store.apply(objects)
    return store
