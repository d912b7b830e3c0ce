"""Fast ranker reads and the stream's pushes, on top of a Feast :class:`~feast.FeatureStore`.

Read "the features of a feature service for N candidate videos" as one array batch::

    from feast import FeatureStore
    from topicfs.feature_client import PackedFeatureClient

    store = FeatureStore(repo_path="feature_repo")
    client = PackedFeatureClient(store, "ranker_v1")
    batch = client.read(candidate_ids)           # one Redis round trip (MGET of layout marker + records; per node on a cluster)
    batch.values["topic_feature"]                # (N, 8) float32 masked array, masked where Feast gives None
    batch.values["ctr"].tolist()                 # [0.25, None, ...]: None for an id Feast does not know
    batch.values["topic_ids"], batch.lengths["topic_ids"]   # (N, max_topics) int64 padded with 0, (N,) lengths
    batch.null["ctr"]                            # (N,) bool: True where get_online_features gives None
    batch.to_matrix()                            # (N, D) float32: every numeric value side by side, nulls 0 (fill=...)
    batch.to_dict()                              # == store.get_online_features(service, rows).to_dict()

The service must be tagged ``topicfs.packed: "true"`` and the store must use
:class:`topicfs.online_store.TopicRedisOnlineStore`, which keeps the packed records. Values are
exactly those :meth:`FeatureStore.get_online_features` returns: a candidate with no row in a view
reads as null (None) for that view's features; a candidate whose packed record is missing,
undecodable or partial is read from Feast's hashes in the same call (one more round trip) and its
record repaired; and rows older than a view's ``ttl`` are returned as Feast's Redis store returns them (online reads do not apply the view ttl; expiry in Redis is
``key_ttl_seconds`` of the online store, after which both paths read the row as missing).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd
from feast import FeatureStore, FeatureView
from feast.data_source import PushSource
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import DoubleList, FloatList, Int32List, Int64List, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from topicfs.online_store import PackedLayout, PackedLayoutError, TopicRedisOnlineStore, build_layout, is_packed

logger = logging.getLogger(__name__)


class PackedLayoutUnavailable(RuntimeError):
    """The packed records of a service are not built in Redis (or the client's layout is outdated)."""


@dataclass
class PackedBatch:
    """Features of one feature service for N entities, as arrays (row i = ``entity_ids[i]``).

    ``values[name]`` is a NumPy masked array, masked where Feast returns None (an id Feast does not know, a view
    with no row for the id, a None value): ``values["ctr"].tolist()`` gives None there, ``values["ctr"][i]`` is
    ``numpy.ma.masked``, and ``.data`` holds 0 there. ``null[name]`` is the same mask, one flag per row.
    """

    service: str
    join_key: str
    entity_ids: np.ndarray  # (N,)
    values: dict[str, np.ma.MaskedArray]  # feature -> (N,) scalars or (N, max_length) lists padded with 0; masked where null
    lengths: dict[str, np.ndarray]  # list feature -> (N,) int number of valid values
    null: dict[str, np.ndarray]  # feature -> (N,) bool, True where Feast returns None
    found: dict[str, np.ndarray]  # view -> (N,) bool, the entity has a row of that view online
    event_timestamps: dict[str, np.ndarray]  # view -> (N,) datetime64[ns], NaT where not found
    feature_order: list[str]

    def __len__(self) -> int:
        return len(self.entity_ids)

    def to_matrix(self, dtype: Any = np.float32, fill: float = 0.0) -> np.ndarray:
        """(N, D) matrix of every feature in service order; a list takes its ``max_length`` columns (0 past its
        length); a null value (an id Feast does not know, a view without a row for it, a None feature) is ``fill``."""
        columns = []
        for name in self.feature_order:
            column = self.values[name].astype(dtype).filled(fill)
            columns.append(column.reshape(len(self), -1))
        return np.concatenate(columns, axis=1) if columns else np.zeros((len(self), 0), dtype=dtype)

    def to_dict(self) -> dict[str, list[Any]]:
        """The same mapping :meth:`feast.online_response.OnlineResponse.to_dict` gives for these rows."""
        result: dict[str, list[Any]] = {self.join_key: self.entity_ids.tolist()}
        for name in self.feature_order:
            column = self.values[name].data
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
            raise PackedLayoutError(f'feature service {self.service} is not tagged topicfs.packed: "true"')
        views = {
            p.name: store.registry.get_any_feature_view(p.name, store.project, allow_cache=allow_cache)
            for p in service.feature_view_projections
        }
        return build_layout(service, views, store.project, store.config.online_store.packed_key_prefix)

    def refresh(self) -> None:
        """Re-read the service's layout from the registry (after ``feast apply`` changed it)."""
        self.store.refresh_registry()
        self._online_store.invalidate_layouts()
        self.layout = self._resolve_layout(allow_cache=False)
        self._dtype = self.layout.numpy_dtype()
        self._empty_record = bytes(self.layout.record_size)

    def read(self, entity_ids: Sequence[Any] | np.ndarray, repair: bool = True) -> PackedBatch:
        """Features of the service for ``entity_ids`` (duplicates allowed), as a :class:`PackedBatch`.

        Ids whose packed record is missing, undecodable or not known to hold every view (a record a segment write
        created) are read from Feast's own hashes in the same call and, with ``repair``, their records are
        rewritten; ``repair=False`` returns the packed records as stored (``topicfs feast verify`` compares those).
        """
        ids = np.asarray(entity_ids)
        if self.layout.join_key_dtype != "str":
            ids = ids.astype(np.int64, copy=False)
        records = self._read_records(ids)
        table, suspect, corrupt = self._table(records)
        if repair and suspect.any():
            table = self._from_hashes(ids, table, suspect, corrupt)
        return self._decode(ids, table)

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

    def _table(self, records: list[bytes | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(the records as one structured array, (N,) bool: rows to read from Feast's hashes instead, (N,) bool:
        the suspect rows whose stored bytes are wrong, not merely missing or partial).

        A row is suspect when its record is missing, has another size, lacks the complete mark, or holds a
        flag other than 0 / 1 or a list length above its capacity (bytes no writer of this layout produces).
        """
        size = self.layout.record_size
        empty = self._empty_record
        buffer = b"".join([empty if raw is None else raw for raw in records])
        wrong_size = None
        if len(buffer) != size * len(records):
            wrong_size = np.array([raw is not None and len(raw) != size for raw in records])
            buffer = b"".join(empty if raw is None or len(raw) != size else raw for raw in records)
        table = np.frombuffer(buffer, dtype=self._dtype)  # (N,) structured
        corrupt = table["__complete"] > 1
        if wrong_size is not None:
            corrupt |= wrong_size
        for segment in self.layout.segments:
            corrupt |= table[f"{segment.view}.__written"] > 1
            for feature in segment.features:
                corrupt |= table[f"{feature.name}.__null"] > 1
                if feature.is_list:
                    corrupt |= table[f"{feature.name}.__len"] > feature.max_length
        return table, corrupt | (table["__complete"] != 1), corrupt

    def _from_hashes(self, ids: np.ndarray, table: np.ndarray, suspect: np.ndarray, corrupt: np.ndarray) -> np.ndarray:
        """``table`` with the suspect rows rebuilt from Feast's hashes (one pipeline), their records repaired."""
        rows = np.flatnonzero(suspect)
        unique, inverse = np.unique(ids[rows], return_inverse=True)
        # A stored record holding wrong bytes is replaced; a missing or partial one is completed (newer wins).
        replace = np.zeros(len(unique), dtype=bool)
        replace[inverse[corrupt[rows]]] = True
        rebuilt = self._online_store.records_from_hashes(
            self.store.config, self.layout, unique.tolist(), repair=True, replace=replace.tolist()
        )
        n_missing = sum(record is None for record in rebuilt)
        logger.debug("%d ids of %s read from Feast's hashes (%d unknown to Feast)", len(unique), self.service, n_missing)
        fixed = np.frombuffer(b"".join(self._empty_record if r is None else r for r in rebuilt), dtype=self._dtype)
        table = table.copy()
        table[rows] = fixed[inverse]
        return table

    def _decode(self, ids: np.ndarray, table: np.ndarray) -> PackedBatch:
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
                is_null = ~written | (table[f"{feature.name}.__null"] == 1)
                null[feature.name] = is_null
                mask = np.repeat(is_null[:, None], feature.max_length, axis=1) if feature.is_list else is_null
                values[feature.name] = np.ma.MaskedArray(np.ascontiguousarray(column), mask=mask)
                if feature.is_list:
                    lengths[feature.name] = table[f"{feature.name}.__len"].astype(np.int64)
        return PackedBatch(self.service, self.layout.join_key, ids, values, lengths, null, found, timestamps, order)


@dataclass
class VerifyReport:
    """What :func:`verify_packed` compared and found."""

    service: str
    compared: int  # distinct ids compared
    from_hashes: int  # of which sampled from Feast's hashes
    from_records: int  # of which sampled from packed records only
    differences: list[tuple[Any, str, Any, Any]]  # (id, feature, packed value, Feast's value)
    repaired: int = 0  # records rewritten from Feast's hashes (or deleted where Feast has no row)
    remaining: int = 0  # ids still differing after the repair

    @property
    def differing_ids(self) -> list[Any]:
        return sorted({entity for entity, _, _, _ in self.differences})

    def summary(self, shown: int = 10) -> str:
        lines = [
            f"{self.service}: {self.compared} ids compared ({self.from_hashes} sampled from Feast's hashes, "
            f"{self.from_records} from packed records only), {len(self.differing_ids)} differ"
        ]
        for entity, feature, packed, feast_value in self.differences[:shown]:
            lines.append(f"  id {entity} {feature}: packed {packed!r}, Feast {feast_value!r}")
        if len(self.differences) > shown:
            lines.append(f"  ... {len(self.differences) - shown} more differences")
        if self.repaired:
            lines.append(f"repaired {self.repaired} records from Feast's hashes; {self.remaining} ids still differ")
        return "\n".join(lines)


def _sample_ids(store: FeatureStore, client: PackedFeatureClient, sample: int) -> tuple[list[Any], int, int]:
    """Up to ``sample`` entity ids of Feast's hashes of the layout's join key and up to ``sample`` ids of stored
    packed records (a record whose hash is gone is found this way): (ids, from hashes, from records only)."""
    from feast.infra.key_encoding_utils import deserialize_entity_key
    from feast.infra.online_stores.helpers import _redis_key_prefix

    online_store = client._online_store
    config = store.config
    redis_client = online_store._get_client(config.online_store)
    layout = client.layout
    project = config.project.encode("utf8")
    from_hashes: list[Any] = []
    for key in redis_client.scan_iter(match=_redis_key_prefix([layout.join_key]) + b"*" + project, count=1000):
        if key.endswith(project):
            entity_key = deserialize_entity_key(key[: -len(project)], config.entity_key_serialization_version)
            value = entity_key.entity_values[0]
            from_hashes.append(getattr(value, value.WhichOneof("val")))
            if len(from_hashes) >= sample:
                break
    known = set(from_hashes)
    from_records: list[Any] = []
    for key in redis_client.scan_iter(match=layout.key_prefix + b"*", count=1000):
        entity = layout.entity_of(key[len(layout.key_prefix) :])
        if entity not in known:
            known.add(entity)
            from_records.append(entity)
            if len(from_records) >= sample:
                break
    return from_hashes + from_records, len(from_hashes), len(from_records)


def _differences(store: FeatureStore, client: PackedFeatureClient, ids: list[Any]) -> list[tuple[Any, str, Any, Any]]:
    packed = client.read(ids, repair=False).to_dict()
    rows = [{client.layout.join_key: entity} for entity in ids]
    feast_values = store.get_online_features(store.get_feature_service(client.service), rows).to_dict()
    out = []
    for name in client.layout.features:
        for entity, got, expected in zip(ids, packed[name.name], feast_values[name.name]):
            if got != expected:
                out.append((entity, name.name, got, expected))
    return out


def verify_packed(store: FeatureStore, service: str, sample: int, repair: bool = False) -> VerifyReport:
    """Compare the stored packed records of ``service`` (read without the read path's own repair) with
    ``get_online_features`` for up to ``sample`` ids of Feast's hashes plus up to ``sample`` ids of packed
    records; with ``repair``, rewrite the differing ids' records from Feast's hashes (deleting those Feast has
    no row for) and compare again."""
    if sample < 1:
        raise ValueError(f"--sample must be at least 1, got {sample}")
    client = PackedFeatureClient(store, service)
    client._read_records(
        np.zeros(0, dtype=np.int64) if client.layout.join_key_dtype != "str" else np.zeros(0, dtype=object)
    )  # layout built
    ids, from_hashes, from_records = _sample_ids(store, client, sample)
    differences = _differences(store, client, ids) if ids else []
    report = VerifyReport(service, len(ids), from_hashes, from_records, differences)
    if repair and differences:
        differing = report.differing_ids
        store._get_provider().online_store.records_from_hashes(store.config, client.layout, differing, repair=True, replace=True)
        report.repaired = len(differing)
        report.remaining = len({entity for entity, _, _, _ in _differences(store, client, differing)})
    return report


# Feast value type -> (ValueProto field, list message or None, Python conversion of one element)
_PUSH_FIELDS: dict[ValueType, tuple[str, Any, Callable[[Any], Any]]] = {
    ValueType.INT64: ("int64_val", None, int),
    ValueType.INT32: ("int32_val", None, int),
    ValueType.FLOAT: ("float_val", None, float),
    ValueType.DOUBLE: ("double_val", None, float),
    ValueType.BOOL: ("bool_val", None, bool),
    ValueType.STRING: ("string_val", None, str),
    ValueType.INT64_LIST: ("int64_list_val", Int64List, int),
    ValueType.INT32_LIST: ("int32_list_val", Int32List, int),
    ValueType.FLOAT_LIST: ("float_list_val", FloatList, float),
    ValueType.DOUBLE_LIST: ("double_list_val", DoubleList, float),
    ValueType.STRING_LIST: ("string_list_val", StringList, str),
}


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _proto_column(values: list[Any], value_type: ValueType, column: str) -> list[ValueProto]:
    """ValueProtos of one column, as Feast's push writes them (None / NaN -> an empty Value)."""
    field_name, list_type, convert = _PUSH_FIELDS[value_type]
    out: list[ValueProto] = []
    try:
        if list_type is None:
            for value in values:
                out.append(ValueProto() if _is_null(value) else ValueProto(**{field_name: convert(value)}))
        else:
            for value in values:
                out.append(ValueProto() if value is None else ValueProto(**{field_name: list_type(val=[convert(v) for v in value])}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"column {column!r}: value {value!r} is not a {value_type.name}: {exc}") from exc
    return out


class OnlinePusher:
    """``FeatureStore.push(name, frame, to=PushMode.ONLINE)`` without the DataFrame -> Arrow -> proto round trip.

    Feast converts a pushed frame row by row through Arrow and its generic type map (~40 µs a row of three
    scalars here, most of a push). This builds the same rows (entity key, feature ValueProtos, event
    timestamp) straight from the frame's columns and hands them to the store's ``online_write_batch``, so the
    online store writes exactly what a Feast push writes (tested byte for byte against ``store.push``,
    packed records included). Views it cannot convert (on-demand views, field mappings, types outside
    ``_PUSH_FIELDS``) go through ``store.push`` unchanged.
    """

    def __init__(self, store: FeatureStore, views_ttl_s: float = 60.0) -> None:
        self.store = store
        self.views_ttl_s = views_ttl_s
        self._views: dict[str, tuple[float, list[FeatureView]]] = {}

    def views(self, push_source_name: str) -> list[FeatureView]:
        """The feature views fed by a push source (as ``store.push`` finds them), cached ``views_ttl_s``."""
        cached = self._views.get(push_source_name)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.views_ttl_s:
            return cached[1]
        views = [
            view
            for view in self.store.list_feature_views(allow_cache=True)
            if isinstance(view.stream_source, PushSource) and view.stream_source.name == push_source_name
        ]
        if not views:
            raise ValueError(f"no feature view of project {self.store.project!r} reads the push source {push_source_name!r}")
        self._views[push_source_name] = (now, views)
        return views

    @staticmethod
    def _convertible(view: FeatureView) -> bool:
        source = view.batch_source
        return (
            source is not None
            and not source.field_mapping
            and all(field.dtype.to_value_type() in _PUSH_FIELDS for field in view.features)
            and all(column.dtype.to_value_type() in _PUSH_FIELDS for column in view.entity_columns)
        )

    def rows(
        self, view: FeatureView, frame: pd.DataFrame
    ) -> list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, Optional[datetime]]]:
        """The rows ``online_write_batch`` takes for ``view``, from ``frame`` (join keys, features, timestamps)."""
        join_keys = [column.name for column in view.entity_columns]
        missing = [c for c in [*join_keys, *(f.name for f in view.features), view.batch_source.timestamp_field] if c not in frame.columns]
        if missing:
            raise ValueError(f"push to view {view.name!r}: the frame lacks the columns {missing}")
        keys = [_proto_column(frame[c].tolist(), column.dtype.to_value_type(), c) for c, column in zip(join_keys, view.entity_columns)]
        features = {f.name: _proto_column(frame[f.name].tolist(), f.dtype.to_value_type(), f.name) for f in view.features}
        event_ts = _datetimes(frame[view.batch_source.timestamp_field])
        created_column = view.batch_source.created_timestamp_column
        created = _datetimes(frame[created_column]) if created_column and created_column in frame.columns else [None] * len(frame)
        names = list(features)
        entity_keys = [EntityKeyProto(join_keys=join_keys, entity_values=list(values)) for values in zip(*keys)]
        return [
            (key, dict(zip(names, values)), ts, made)
            for key, values, ts, made in zip(entity_keys, zip(*features.values()), event_ts, created)
        ]

    def push(self, push_source_name: str, frame: pd.DataFrame) -> int:
        """Write ``frame`` to the online store of every view fed by ``push_source_name``; returns its rows."""
        if frame.empty:
            return 0
        provider = self.store._get_provider()  # Feast's provider: the only handle on the configured online store
        views = self.views(push_source_name)
        for view in views:
            if not self._convertible(view):
                self.store.write_to_online_store(view.name, frame)
                continue
            provider.online_write_batch(self.store.config, view, self.rows(view, frame), progress=None)
        precompute = getattr(self.store, "_precompute_for_push", None)  # as store.push does, in Feast versions that have it
        if precompute is not None:
            precompute(views[0].name, frame)  # feature services with precompute_online
        return len(frame)


def _datetimes(column: pd.Series) -> list[datetime]:
    """Timezone-aware (UTC) datetimes of a timestamp column, converted once per distinct value."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        stamps = column.dt.tz_convert("UTC")
    else:  # naive datetimes are UTC, as Feast reads them; strings and numbers are parsed
        stamps = pd.to_datetime(column, utc=True)
    nanos = stamps.array.asi8
    if len(nanos) and (nanos == nanos[0]).all():  # the stream's pushes: one timestamp for every row
        return [stamps.iloc[0].to_pydatetime()] * len(nanos)
    return [stamp.to_pydatetime() for stamp in stamps]


def push_stats(store: FeatureStore, push_source_name: str, frame: pd.DataFrame, pusher: OnlinePusher | None = None) -> int:
    """Write one batch of live statistics to the online store through a push source; returns rows pushed.

    ``frame`` holds the view's join key, its features and ``event_timestamp`` (UTC). Rows older than
    what is stored for an entity are skipped by the store, as Feast's Redis store does. ``pusher`` (made
    from ``store`` when not given) writes what ``store.push(..., to=PushMode.ONLINE)`` would, faster.
    """
    if frame.empty:
        return 0
    if "event_timestamp" not in frame.columns:
        raise ValueError(f"push to {push_source_name}: the frame needs an event_timestamp column")
    return (pusher or OnlinePusher(store)).push(push_source_name, frame)


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
