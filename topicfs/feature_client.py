"""Fast ranker reads and the stream's pushes, on top of a Feast :class:`~feast.FeatureStore`.

Read "the features of a feature service for N candidate videos" as one array batch::

    from feast import FeatureStore
    from topicfs.feature_client import PackedFeatureClient

    store = FeatureStore(repo_path="feature_repo")
    client = PackedFeatureClient(store, "ranker_v1")
    batch = client.read(candidate_ids)           # one Redis round trip (HGET layout + MGET records)
    batch.values["topic_feature"]                # (N, 8) float32
    batch.values["topic_ids"], batch.lengths["topic_ids"]   # (N, max_topics) int64 padded with 0, (N,) lengths
    batch.null["ctr"]                            # (N,) bool: True where get_online_features gives None
    batch.to_matrix()                            # (N, D) float32: every numeric value side by side
    batch.to_dict()                              # == store.get_online_features(service, rows).to_dict()

The service must be tagged ``topicfs.packed: "true"`` and the store must use
:class:`topicfs.online_store.TopicRedisOnlineStore`, which keeps the packed records. Values are
exactly those :meth:`FeatureStore.get_online_features` returns: a candidate with no row in a view
reads as null (None) for that view's features, and rows older than a view's ``ttl`` are returned as
Feast's Redis store returns them (online reads do not apply the view ttl; expiry in Redis is
``key_ttl_seconds`` of the online store, after which both paths read the row as missing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode

from topicfs.online_store import PackedLayout, PackedLayoutError, TopicRedisOnlineStore, build_layout, is_packed

logger = logging.getLogger(__name__)


class PackedLayoutUnavailable(RuntimeError):
    """The packed records of a service are not built in Redis (or the client's layout is outdated)."""


@dataclass
class PackedBatch:
    """Features of one feature service for N entities, as arrays (row i = ``entity_ids[i]``)."""

    service: str
    join_key: str
    entity_ids: np.ndarray  # (N,)
    values: dict[str, np.ndarray]  # feature -> (N,) scalars or (N, max_length) lists padded with 0
    lengths: dict[str, np.ndarray]  # list feature -> (N,) int number of valid values
    null: dict[str, np.ndarray]  # feature -> (N,) bool, True where Feast returns None
    found: dict[str, np.ndarray]  # view -> (N,) bool, the entity has a row of that view online
    event_timestamps: dict[str, np.ndarray]  # view -> (N,) datetime64[ns], NaT where not found
    feature_order: list[str]

    def __len__(self) -> int:
        return len(self.entity_ids)

    def to_matrix(self, dtype: Any = np.float32) -> np.ndarray:
        """(N, D) matrix of every feature in service order; lists take their max_length columns, nulls are 0."""
        columns = []
        for name in self.feature_order:
            column = np.where(self.null[name][:, None] if self.values[name].ndim == 2 else self.null[name], 0, self.values[name])
            columns.append(column.reshape(len(self), -1).astype(dtype, copy=False))
        return np.concatenate(columns, axis=1) if columns else np.zeros((len(self), 0), dtype=dtype)

    def to_dict(self) -> dict[str, list[Any]]:
        """The same mapping :meth:`feast.online_response.OnlineResponse.to_dict` gives for these rows."""
        result: dict[str, list[Any]] = {self.join_key: self.entity_ids.tolist()}
        for name in self.feature_order:
            column = self.values[name]
            null = self.null[name].tolist()
            if name in self.lengths:
                lengths = self.lengths[name].tolist()
                rows = column.tolist()
                result[name] = [None if is_null else row[:length] for row, length, is_null in zip(rows, lengths, null)]
            else:
                result[name] = [None if is_null else value for value, is_null in zip(column.tolist(), null)]
        return result


class PackedFeatureClient:
    """Reads one packed feature service for many entities with one Redis round trip.

    Args:
        store: a FeatureStore whose online store is :class:`TopicRedisOnlineStore`.
        service: name of a feature service tagged ``topicfs.packed: "true"``.
    """

    def __init__(self, store: FeatureStore, service: str) -> None:
        online_store = store._get_provider().online_store
        if not isinstance(online_store, TopicRedisOnlineStore):
            raise TypeError(
                f"online store is {type(online_store).__name__}; packed reads need "
                "online_store.type: topicfs.online_store.TopicRedisOnlineStore in feature_store.yaml"
            )
        self.store = store
        self.service = service
        self._online_store = online_store
        self.layout = self._resolve_layout(allow_cache=True)
        self._dtype = self.layout.numpy_dtype()
        self._empty_record = bytes(self.layout.record_size)

    def _resolve_layout(self, allow_cache: bool) -> PackedLayout:
        store = self.store
        service = store.registry.get_feature_service(self.service, store.project, allow_cache=allow_cache)
        if not is_packed(service):
            raise PackedLayoutError(f"feature service {self.service} is not tagged topicfs.packed: \"true\"")
        views = {p.name: store.registry.get_any_feature_view(p.name, store.project, allow_cache=allow_cache) for p in service.feature_view_projections}
        return build_layout(service, views, store.project, store.config.online_store.packed_key_prefix)

    def refresh(self) -> None:
        """Re-read the service's layout from the registry (after ``feast apply`` changed it)."""
        self.store.refresh_registry()
        self._online_store.invalidate_layouts()
        self.layout = self._resolve_layout(allow_cache=False)
        self._dtype = self.layout.numpy_dtype()
        self._empty_record = bytes(self.layout.record_size)

    def read(self, entity_ids: Sequence[Any] | np.ndarray) -> PackedBatch:
        """Features of the service for ``entity_ids`` (duplicates allowed), as a :class:`PackedBatch`."""
        ids = np.asarray(entity_ids)
        if self.layout.join_key_dtype != "str":
            ids = ids.astype(np.int64, copy=False)
        records = self._read_records(ids)
        return self._decode(ids, records)

    def _read_records(self, ids: np.ndarray) -> list[bytes | None]:
        config = self.store.config
        for attempt in range(2):
            fingerprint, records = self._online_store.read_packed(config, self.layout, self.layout.keys(ids))
            if fingerprint is not None and fingerprint.decode() == self.layout.fingerprint:
                return records
            if attempt == 0:
                # The layout changed or is not built yet: re-read the registry and let the store
                # build (backfill) the records of the current layout.
                self.refresh()
                self._online_store.packed_layouts(config)
        raise PackedLayoutUnavailable(
            f"packed records of {self.service} (layout {self.layout.fingerprint}) are not in Redis; run `topicfs feast register`"
        )

    def _decode(self, ids: np.ndarray, records: list[bytes | None]) -> PackedBatch:
        size = self.layout.record_size
        empty = self._empty_record
        buffer = b"".join([empty if raw is None else raw for raw in records])
        if len(buffer) != size * len(records):
            # Records are written at full size; one of another size predates that: pad or cut it.
            buffer = b"".join(empty if raw is None else raw[:size].ljust(size, b"\0") for raw in records)
        table = np.frombuffer(buffer, dtype=self._dtype)  # (N,) structured
        values: dict[str, np.ndarray] = {}
        lengths: dict[str, np.ndarray] = {}
        null: dict[str, np.ndarray] = {}
        found: dict[str, np.ndarray] = {}
        timestamps: dict[str, np.ndarray] = {}
        order: list[str] = []
        for segment in self.layout.segments:
            written = table[f"{segment.view}.__written"] == 1
            found[segment.view] = written
            ts = table[f"{segment.view}.__ts"].astype(np.int64).view("datetime64[ns]").copy()
            ts[~written] = np.datetime64("NaT")
            timestamps[segment.view] = ts
            for feature in segment.features:
                order.append(feature.name)
                column = table[feature.name]
                if feature.proto_field.startswith("bool"):
                    column = column.astype(bool)
                values[feature.name] = np.ascontiguousarray(column)
                null[feature.name] = ~written | (table[f"{feature.name}.__null"] == 1)
                if feature.is_list:
                    lengths[feature.name] = table[f"{feature.name}.__len"].astype(np.int64)
        return PackedBatch(self.service, self.layout.join_key, ids, values, lengths, null, found, timestamps, order)


def push_stats(store: FeatureStore, push_source_name: str, frame: pd.DataFrame) -> int:
    """Write one batch of live statistics to the online store through a push source; returns rows pushed.

    ``frame`` holds the view's join key, its features and ``event_timestamp`` (UTC). Rows older than
    what is stored for an entity are skipped by the store, as Feast's Redis store does.
    """
    if frame.empty:
        return 0
    if "event_timestamp" not in frame.columns:
        raise ValueError(f"push to {push_source_name}: the frame needs an event_timestamp column")
    store.push(push_source_name, frame, to=PushMode.ONLINE)
    return len(frame)


def point_in_time_rows(store: FeatureStore, entity_df: pd.DataFrame, features: Sequence[str] | Any) -> pd.DataFrame:
    """Leakage-free training rows: each entity row joined with the feature values as of its
    ``event_timestamp`` (``get_historical_features``), in the order of ``entity_df``.

    Feast's file offline store leaves out an entity row whose only feature rows are newer than it
    (a click before the video had topics); such rows come back here with null features, so no
    click is lost from the training set and none sees a value from its future.
    """
    if "event_timestamp" not in entity_df.columns:
        raise ValueError("entity_df needs an event_timestamp column (the time each row happened)")
    row_column = "__entity_row"
    numbered = entity_df.reset_index(drop=True).assign(**{row_column: np.arange(len(entity_df))})
    joined = store.get_historical_features(entity_df=numbered, features=features).to_df()
    joined = joined.set_index(row_column).reindex(np.arange(len(entity_df)))
    # Rows Feast left out have NaN entity columns after reindexing: take them from the input.
    for column in entity_df.columns:
        joined[column] = numbered[column].to_numpy()
    feature_columns = [c for c in joined.columns if c not in entity_df.columns]
    return joined[list(entity_df.columns) + feature_columns].reset_index(drop=True)
