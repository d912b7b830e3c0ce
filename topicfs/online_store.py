"""Feast online-store plugin: Feast's Redis store plus a ranker-ready packed layout per feature service.

Set it in ``feature_store.yaml``::

    online_store:
      type: topicfs.online_store.TopicRedisOnlineStore
      url: ${TOPICFS_REDIS__URL}        # redis://[:password@]host:port/db, rediss:// for TLS

Every Feast path keeps working unchanged (``feast materialize``, push, ``feast serve``, every SDK
read), because all of Feast's Redis hashes are written and read exactly as
:class:`~feast.infra.online_stores.redis.RedisOnlineStore` does. In the same Redis pipeline, every
written row also updates the *packed record* of each feature service tagged
``topicfs.packed: "true"`` that reads the row's view: one Redis string per (service, entity) whose
bytes hold every feature of the service at fixed offsets, so a ranker reads N candidates with one
``MGET`` and decodes them with one ``numpy.frombuffer`` (:mod:`topicfs.feature_client`).

Packed record of one entity = one *segment* per feature view of the service, at a fixed offset::

    segment = event_ts (uint64 big-endian, ns) | written (uint8, 1) | null flag per feature (uint8)
              | per feature: scalar value, or list length (uint32) + ``max_length`` values
    numbers are little-endian; a list Field declares its capacity with the tag ``topicfs.max_length``.

A segment is written with ``SETRANGE`` by a server-side script that keeps it only when its event
timestamp is newer than the stored one: the same rule Feast's Redis store applies to its hashes, so
concurrent writers (materialisation, the stream's pushes, a backfill) converge on the same values in
both layouts. Key expiry (``key_ttl_seconds``) is mirrored: whenever Feast refreshes an entity's
hash expiry, the entity's packed records get the same expiry.

Layouts are derived from the registry; when a packed service is new or changed, the plugin rebuilds
its records from Feast's hashes (backfill) and deletes the records of the old layout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Literal, Optional, Sequence
from urllib.parse import unquote, urlparse

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import StrictStr, model_validator

from feast import Entity, FeatureService, FeatureView, RepoConfig, utils
from feast.infra.key_encoding_utils import deserialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key, _redis_key_prefix
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig, _versioned_fv_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from feast.types import Array, Bool, Float32, Float64, Int32, Int64, PrimitiveFeastType

from topicfs.feast_names import MAX_LENGTH_TAG, PACKED_TAG
from topicfs.keys import unlink_matching

logger = logging.getLogger(__name__)

PLUGIN_TYPE = "topicfs.online_store.TopicRedisOnlineStore"
_SEGMENT_HEADER_BYTES = 9  # event_ts uint64 BE (8) + written flag (1)
_BACKFILL_BATCH_KEYS = 500

_SCRIPT_KEYS_PER_CALL = 256  # segments one script call writes (bounds the time Redis is busy with one call)

# One hash field of many keys: ARGV[1] = the field; the reply has one entry per key (false where absent).
_READ_FIELD_LUA = """
local out = {}
for k = 1, #KEYS do out[k] = redis.call('HGET', KEYS[k], ARGV[1]) end
return out
"""

# HSET the same fields on many keys: ARGV = n fields, ttl seconds (0: none), the n field names, then n
# values per key in KEYS order.
_HSET_MANY_LUA = """
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local args = {}
for k = 1, #KEYS do
  local base = 2 + n + (k - 1) * n
  for i = 1, n do
    args[2 * i - 1] = ARGV[2 + i]
    args[2 * i] = ARGV[base + i]
  end
  redis.call('HSET', KEYS[k], unpack(args))
  if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
end
return #KEYS
"""

# Write many segments. ARGV[1] = "1" to write unconditionally; then per key: offset, record size,
# segment. A segment is kept only if its header (big-endian ts + written flag) is greater, byte by
# byte (= later in time), than the one stored; a record is padded to its full size so readers
# always get whole records.
_WRITE_SEGMENTS_LUA = """
local unconditional = ARGV[1] == '1'
local written = 0
for k = 1, #KEYS do
  local off = tonumber(ARGV[3 * k - 1])
  local size = tonumber(ARGV[3 * k])
  local seg = ARGV[3 * k + 1]
  local keep = true
  if not unconditional then
    local cur = redis.call('GETRANGE', KEYS[k], off, off + 8)
    if string.len(cur) == 9 then
      for i = 1, 9 do
        local a, b = string.byte(seg, i), string.byte(cur, i)
        if a > b then break end
        if a < b or i == 9 then keep = false break end
      end
    end
  end
  if keep then
    redis.call('SETRANGE', KEYS[k], off, seg)
    if redis.call('STRLEN', KEYS[k]) < size then redis.call('SETRANGE', KEYS[k], size - 1, '\\0') end
    written = written + 1
  end
end
return written
"""


class TopicRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis online-store config plus the address as one URL and the packed-layout knobs."""

    type: Literal["topicfs.online_store.TopicRedisOnlineStore"] = PLUGIN_TYPE  # type: ignore[assignment]
    """Online store type selector (this plugin)."""

    url: Optional[StrictStr] = None
    """redis://[user:password@]host:port/db or rediss:// (TLS); usually ``${TOPICFS_REDIS__URL}``.
    Unset, or a ``${VAR}`` left unexpanded because the variable is not set, means the project's
    setting ``redis.url``. When given it replaces ``connection_string``."""

    packed_key_prefix: StrictStr = "tfs:packed"
    """Prefix of the packed records' keys: ``<prefix>:<project>:<service>:<layout>:<entity>``."""

    layout_refresh_seconds: float = 5.0
    """How long layouts read from the registry are trusted before it is read again."""

    @model_validator(mode="after")
    def _url_to_connection_string(self) -> "TopicRedisOnlineStoreConfig":
        url = self.url
        if url is None or "${" in url:
            from topicfs.settings import get_settings

            url = get_settings().redis.url
        self.connection_string = redis_url_to_connection_string(url)
        self.url = url
        return self


def redis_url_to_connection_string(url: str) -> str:
    """Feast's ``host:port,db=0,password=...,ssl=true`` form of a redis:// or rediss:// URL."""
    parsed = urlparse(url)
    if parsed.scheme not in {"redis", "rediss"}:
        raise ValueError(f"Redis URL must start with redis:// or rediss://, got {url!r}")
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 6379
    parts = [f"{host}:{port}"]
    database = (parsed.path or "/0").lstrip("/") or "0"
    if not database.isdigit():
        raise ValueError(f"Redis URL database must be a number, got {database!r} in {url!r}")
    parts.append(f"db={database}")
    for name, value in (("username", parsed.username), ("password", parsed.password)):
        if value:
            value = unquote(value)
            if "," in value:
                raise ValueError(f"Redis {name} may not contain ',' (Feast's connection string splits on it)")
            # Feast json-decodes connection-string values: quote a numeric password so it stays a string.
            parts.append(f"{name}={json.dumps(value) if value.isdigit() else value}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


# --- packed layouts ------------------------------------------------------------------------------

# Feast type -> (ValueProto field, numpy little-endian dtype) for the types a ranker layout can hold.
_SCALARS: dict[PrimitiveFeastType, tuple[str, str]] = {
    Int32: ("int32_val", "<i4"),
    Int64: ("int64_val", "<i8"),
    Float32: ("float_val", "<f4"),
    Float64: ("double_val", "<f8"),
    Bool: ("bool_val", "u1"),
}
_LISTS: dict[PrimitiveFeastType, tuple[str, str]] = {
    Int32: ("int32_list_val", "<i4"),
    Int64: ("int64_list_val", "<i8"),
    Float32: ("float_list_val", "<f4"),
    Float64: ("double_list_val", "<f8"),
    Bool: ("bool_list_val", "u1"),
}
_STRUCT_CODES = {"<i4": "i", "<i8": "q", "<f4": "f", "<f8": "d", "u1": "B"}


class PackedLayoutError(ValueError):
    """A feature service tagged for packing cannot be packed (names the service and the reason)."""


@dataclass(frozen=True)
class PackedFeature:
    """One feature's place in a packed record."""

    name: str
    proto_field: str  # ValueProto oneof field holding it
    dtype: str  # numpy dtype of one value
    max_length: Optional[int]  # None for a scalar, else the list capacity
    null_offset: int  # offset of its null flag inside the record
    value_offset: int  # offset of its value (or of the list length) inside the record

    @property
    def is_list(self) -> bool:
        return self.max_length is not None

    @property
    def value_bytes(self) -> int:
        size = np.dtype(self.dtype).itemsize
        return 4 + size * self.max_length if self.is_list else size  # type: ignore[operator]


@dataclass(frozen=True)
class PackedSegment:
    """The bytes one feature view owns inside a packed record."""

    view: str
    offset: int
    size: int
    features: tuple[PackedFeature, ...]


@dataclass(frozen=True)
class PackedLayout:
    """Where every feature of a packed feature service sits in its per-entity record."""

    service: str
    join_key: str
    join_key_dtype: str  # "<i8", "<i4" or "str"
    segments: tuple[PackedSegment, ...]
    record_size: int
    fingerprint: str
    key_prefix: bytes = field(repr=False)  # <prefix>:<project>:<service>:<fingerprint>:

    @property
    def features(self) -> list[PackedFeature]:
        return [feature for segment in self.segments for feature in segment.features]

    def numpy_dtype(self) -> np.dtype:
        """Structured dtype of one record: ``<view>.__ts``, ``<view>.__written``, ``<feature>``,
        ``<feature>.__null`` and, for lists, ``<feature>.__len``."""
        names: list[str] = []
        formats: list[Any] = []
        offsets: list[int] = []
        for segment in self.segments:
            names += [f"{segment.view}.__ts", f"{segment.view}.__written"]
            formats += [">u8", "u1"]
            offsets += [segment.offset, segment.offset + 8]
            for feature in segment.features:
                names.append(f"{feature.name}.__null")
                formats.append("u1")
                offsets.append(feature.null_offset)
                if feature.is_list:
                    names += [f"{feature.name}.__len", feature.name]
                    formats += ["<u4", (feature.dtype, (feature.max_length,))]
                    offsets += [feature.value_offset, feature.value_offset + 4]
                else:
                    names.append(feature.name)
                    formats.append(feature.dtype)
                    offsets.append(feature.value_offset)
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": self.record_size})

    def entity_bytes(self, value: Any) -> bytes:
        """The entity part of a packed key for one join-key value."""
        if self.join_key_dtype == "str":
            return str(value).encode("utf8")
        return struct.pack("<q" if self.join_key_dtype == "<i8" else "<i", int(value))

    def keys(self, entity_values: Sequence[Any] | np.ndarray) -> list[bytes]:
        """Packed keys of many entities; int64 ids go through one vectorised byte conversion."""
        prefix = self.key_prefix
        if self.join_key_dtype == "str":
            return [prefix + str(value).encode("utf8") for value in entity_values]
        width = 8 if self.join_key_dtype == "<i8" else 4
        raw = np.ascontiguousarray(entity_values, dtype=self.join_key_dtype).tobytes()
        return [prefix + raw[start : start + width] for start in range(0, len(raw), width)]


def is_packed(service: FeatureService) -> bool:
    return str(service.tags.get(PACKED_TAG, "")).lower() == "true"


def build_layout(service: FeatureService, views: dict[str, FeatureView], project: str, key_prefix: str) -> PackedLayout:
    """Lay out a packed feature service; raises :class:`PackedLayoutError` naming what cannot be packed."""
    join_keys: set[tuple[str, str]] = set()
    segments: list[PackedSegment] = []
    seen_features: set[str] = set()
    offset = 0
    for projection in service.feature_view_projections:
        view = views.get(projection.name)
        if view is None:
            raise PackedLayoutError(f"feature service {service.name}: {projection.name} is not a (batch or push) feature view")
        if projection.name_alias:
            raise PackedLayoutError(f"feature service {service.name}: aliased view {projection.name} cannot be packed")
        if len(view.entity_columns) != 1:
            raise PackedLayoutError(f"feature service {service.name}: view {view.name} must have exactly one join key to be packed")
        key_field = view.entity_columns[0]
        key_dtype = {Int64: "<i8", Int32: "<i4"}.get(key_field.dtype, "str" if str(key_field.dtype) == "String" else None)
        if key_dtype is None:
            raise PackedLayoutError(f"feature service {service.name}: join key {key_field.name} of type {key_field.dtype} cannot be packed")
        join_keys.add((key_field.name, key_dtype))
        fields_by_name = {f.name: f for f in view.features}
        names = [f.name for f in projection.features] or list(fields_by_name)
        n_features = len(names)
        cursor = offset + _SEGMENT_HEADER_BYTES + n_features
        packed: list[PackedFeature] = []
        for index, name in enumerate(names):
            if name in seen_features:
                raise PackedLayoutError(f"feature service {service.name}: feature name {name} appears in two views")
            seen_features.add(name)
            feast_field = fields_by_name[name]
            dtype = feast_field.dtype
            if isinstance(dtype, Array):
                if dtype.base_type not in _LISTS:
                    raise PackedLayoutError(f"feature service {service.name}: {view.name}.{name} is {dtype}, not a numeric list")
                proto_field, np_dtype = _LISTS[dtype.base_type]
                capacity = feast_field.tags.get(MAX_LENGTH_TAG)
                if capacity is None or not str(capacity).isdigit() or int(capacity) < 1:
                    raise PackedLayoutError(
                        f"feature service {service.name}: list feature {view.name}.{name} needs a tag {MAX_LENGTH_TAG!r} with its capacity"
                    )
                feature = PackedFeature(name, proto_field, np_dtype, int(capacity), offset + _SEGMENT_HEADER_BYTES + index, cursor)
            elif dtype in _SCALARS:
                proto_field, np_dtype = _SCALARS[dtype]
                feature = PackedFeature(name, proto_field, np_dtype, None, offset + _SEGMENT_HEADER_BYTES + index, cursor)
            else:
                raise PackedLayoutError(f"feature service {service.name}: {view.name}.{name} has type {dtype}, which cannot be packed")
            packed.append(feature)
            cursor += feature.value_bytes
        segments.append(PackedSegment(view.name, offset, cursor - offset, tuple(packed)))
        offset = cursor
    if len(join_keys) != 1:
        raise PackedLayoutError(f"feature service {service.name}: its views must share one join key, got {sorted(join_keys)}")
    (join_key, join_key_dtype) = join_keys.pop()
    description = [
        join_key,
        join_key_dtype,
        [[s.view, [[f.name, f.proto_field, f.max_length] for f in s.features]] for s in segments],
    ]
    fingerprint = hashlib.sha1(json.dumps(description).encode()).hexdigest()[:12]
    prefix = f"{key_prefix}:{project}:{service.name}:{fingerprint}:".encode()
    return PackedLayout(service.name, join_key, join_key_dtype, tuple(segments), offset, fingerprint, prefix)


def encode_segment(segment: PackedSegment, values: dict[str, ValueProto], event_ts_nanos: int) -> bytes:
    """Bytes of one view's segment for one row; raises ValueError when a list exceeds its capacity."""
    nulls = bytearray(len(segment.features))
    body: list[bytes] = []
    for index, feature in enumerate(segment.features):
        value = values.get(feature.name)
        kind = value.WhichOneof("val") if value is not None else None
        code = _STRUCT_CODES[feature.dtype]
        if kind is None:
            nulls[index] = 1
            body.append(bytes(feature.value_bytes))
            continue
        if kind != feature.proto_field:
            raise ValueError(f"feature {feature.name} holds {kind}, the packed layout expects {feature.proto_field}")
        if feature.is_list:
            items = getattr(value, kind).val
            length = len(items)
            if length > feature.max_length:  # type: ignore[operator]
                raise ValueError(
                    f"feature {feature.name} has {length} values, more than its {MAX_LENGTH_TAG}={feature.max_length}; raise the tag in feature_repo"
                )
            padding = feature.max_length - length  # type: ignore[operator]
            body.append(struct.pack(f"<I{length}{code}", length, *items) + bytes(padding * np.dtype(feature.dtype).itemsize))
        else:
            body.append(struct.pack(f"<{code}", getattr(value, kind)))
    return struct.pack(">QB", event_ts_nanos, 1) + bytes(nulls) + b"".join(body)


def _timestamp_nanos(timestamp: datetime) -> tuple[bytes, int]:
    """Feast's serialized Timestamp of a datetime and the same instant in ns (Feast's dedup unit)."""
    proto = Timestamp()
    proto.FromDatetime(utils.make_tzaware(timestamp))
    return proto.SerializeToString(), proto.seconds * 1_000_000_000 + proto.nanos


# --- the store ------------------------------------------------------------------------------------


class TopicRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis online store that also keeps packed per-entity records of packed feature services."""

    def __init__(self) -> None:
        super().__init__()
        self._layouts: Optional[dict[str, PackedLayout]] = None
        self._layouts_loaded_at = 0.0
        self._registry: Any = None
        self._write_script: Any = None
        self._read_ts_script: Any = None
        self._hset_script: Any = None

    # layouts ------------------------------------------------------------------

    @staticmethod
    def _marker_prefix(config: RepoConfig) -> str:
        return f"{config.online_store.packed_key_prefix}:{config.project}:__layout__:"

    def _marker_key(self, config: RepoConfig, service: str) -> bytes:
        """String key holding the fingerprint of the service's built layout (read with the records)."""
        return f"{self._marker_prefix(config)}{service}".encode()

    def invalidate_layouts(self) -> None:
        """Forget the cached layouts: the next write or read derives them from the registry again."""
        self._layouts = None

    def packed_layouts(self, config: RepoConfig) -> dict[str, PackedLayout]:
        """Layouts of the project's packed services (service name -> layout), synced with Redis.

        A layout whose records are not built yet is backfilled from Feast's hashes first, and the
        records of layouts that no longer exist are deleted.
        """
        refresh_s = config.online_store.layout_refresh_seconds
        if self._layouts is not None and time.monotonic() - self._layouts_loaded_at < refresh_s:
            return self._layouts
        layouts = self._layouts_from_registry(config)
        self._sync_layouts(config, layouts)
        self._layouts, self._layouts_loaded_at = layouts, time.monotonic()
        return layouts

    def _layouts_from_registry(self, config: RepoConfig) -> dict[str, PackedLayout]:
        from feast.infra.registry.registry import Registry

        if self._registry is None:
            self._registry = Registry(config.project, config.registry, repo_path=config.repo_path)
        registry = self._registry
        try:
            registry.refresh(config.project)
            services = registry.list_feature_services(config.project, allow_cache=True)
        except FileNotFoundError:
            return {}  # nothing applied yet: no packed services
        packed = [service for service in services if is_packed(service)]
        if not packed:
            return {}
        views = {view.name: view for view in registry.list_feature_views(config.project, allow_cache=True)}
        views.update({view.name: view for view in registry.list_stream_feature_views(config.project, allow_cache=True)})
        prefix = config.online_store.packed_key_prefix
        return {service.name: build_layout(service, views, config.project, prefix) for service in packed}

    def _sync_layouts(self, config: RepoConfig, layouts: dict[str, PackedLayout]) -> None:
        client = self._get_client(config.online_store)
        marker_prefix = self._marker_prefix(config).encode()
        stored = {}
        for key in client.scan_iter(match=marker_prefix + b"*", count=1000):
            fingerprint = client.get(key)
            if fingerprint is not None:
                stored[key[len(marker_prefix) :].decode()] = fingerprint.decode()
        for name, fingerprint in stored.items():
            if layouts.get(name) is None or layouts[name].fingerprint != fingerprint:
                pattern = f"{config.online_store.packed_key_prefix}:{config.project}:{name}:{fingerprint}:*".encode()
                removed = unlink_matching(client, pattern)
                client.delete(self._marker_key(config, name))
                logger.info("removed %d packed records of the old layout %s of %s", removed, fingerprint, name)
        for name, layout in layouts.items():
            if stored.get(name) != layout.fingerprint:
                self._backfill(config, layout)
                client.set(self._marker_key(config, name), layout.fingerprint)

    def _backfill(self, config: RepoConfig, layout: PackedLayout) -> None:
        """Build a new layout's records from the values Feast's hashes already hold."""
        client = self._get_client(config.online_store)
        project_bytes = config.project.encode("utf8")
        pattern = _redis_key_prefix([layout.join_key]) + b"*" + project_bytes
        hash_fields = [
            [_mmh3(f"{segment.view}:{feature.name}") for feature in segment.features] + [f"_ts:{segment.view}".encode()]
            for segment in layout.segments
        ]
        written = 0
        batch: list[bytes] = []

        def flush() -> None:
            nonlocal written
            with client.pipeline(transaction=False) as pipe:
                for key in batch:
                    for fields in hash_fields:
                        pipe.hmget(key, fields)
                replies = pipe.execute()
            ttls = client.pipeline(transaction=False)
            for key in batch:
                ttls.pttl(key)
            key_ttls_ms = ttls.execute()
            items: list[tuple[bytes, int, int, bytes]] = []
            expiries: list[tuple[bytes, int]] = []
            with client.pipeline(transaction=False) as pipe:
                for key_index, key in enumerate(batch):
                    entity_key = deserialize_entity_key(key[: -len(project_bytes)], config.entity_key_serialization_version)
                    packed_key = layout.key_prefix + layout.entity_bytes(_entity_value(entity_key.entity_values[0]))
                    for segment_index, segment in enumerate(layout.segments):
                        reply = replies[key_index * len(layout.segments) + segment_index]
                        if reply[-1] is None:
                            continue  # this entity has no row of this view
                        ts = Timestamp()
                        ts.ParseFromString(reply[-1])
                        values = {}
                        for feature, raw in zip(segment.features, reply[:-1]):
                            value = ValueProto()
                            if raw:
                                value.ParseFromString(raw)
                            values[feature.name] = value
                        segment_bytes = encode_segment(segment, values, ts.seconds * 1_000_000_000 + ts.nanos)
                        items.append((packed_key, segment.offset, layout.record_size, segment_bytes))
                        written += 1
                    if key_ttls_ms[key_index] and key_ttls_ms[key_index] > 0:
                        expiries.append((packed_key, key_ttls_ms[key_index]))
                self._queue_segments(pipe, config, items, unconditional=False)
                for packed_key, ttl_ms in expiries:
                    pipe.pexpire(packed_key, ttl_ms)
                pipe.execute()

        for key in client.scan_iter(match=pattern, count=1000):
            if not key.endswith(project_bytes):
                continue
            batch.append(key)
            if len(batch) >= _BACKFILL_BATCH_KEYS:
                flush()
                batch = []
        if batch:
            flush()
        logger.info("packed layout %s of %s built: %d segments backfilled", layout.fingerprint, layout.service, written)

    def _queue_segments(self, pipe: Any, config: RepoConfig, items: list[tuple[bytes, int, int, bytes]], unconditional: bool) -> None:
        """Queue writes of (packed key, segment offset, record size, segment bytes) on ``pipe``.

        Many keys go in one script call on a single Redis; on a Redis Cluster each key gets its own
        call, since one call may only touch keys of one slot.
        """
        if not items:
            return
        client = self._get_client(config.online_store)
        if self._write_script is None:
            self._write_script = client.register_script(_WRITE_SEGMENTS_LUA)
        per_call = 1 if _is_cluster(client) else _SCRIPT_KEYS_PER_CALL
        flag = 1 if unconditional else 0
        for start in range(0, len(items), per_call):
            chunk = items[start : start + per_call]
            args: list[Any] = [flag]
            for _, offset, size, segment in chunk:
                args += [offset, size, segment]
            self._write_script(keys=[key for key, _, _, _ in chunk], args=args, client=pipe)

    # Feast interface -----------------------------------------------------------

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        super().update(config, tables_to_delete, tables_to_keep, entities_to_delete, entities_to_keep, partial)
        deleted = {table.name for table in tables_to_delete}
        if deleted:
            # Records of a layout holding a deleted view would keep its values: drop them, so the
            # next access rebuilds them from the hashes, which no longer hold that view.
            client = self._get_client(config.online_store)
            for layout in self.packed_layouts(config).values():
                if deleted & {segment.view for segment in layout.segments}:
                    unlink_matching(client, layout.key_prefix + b"*")
                    client.delete(self._marker_key(config, layout.service))
        # The registry is committed after this call: derive layouts again on the next write or read.
        self.invalidate_layouts()

    def teardown(self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]) -> None:
        super().teardown(config, tables, entities)
        client = self._get_client(config.online_store)
        unlink_matching(client, f"{config.online_store.packed_key_prefix}:{config.project}:*".encode())
        self.invalidate_layouts()

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, Optional[datetime]]],
        progress: Optional[Callable[[int], Any]],
    ) -> None:
        """Feast's Redis write (same keys, fields, dedup and expiry) plus the packed segments, in one pipeline."""
        online_config = config.online_store
        client = self._get_client(online_config)
        project = config.project
        fv_name = _versioned_fv_name(table, config)
        ts_key = f"_ts:{fv_name}"
        layouts = list(self.packed_layouts(config).values())
        join_keys = table.join_keys
        # Segments this view owns, and every layout of the same entity (their expiry follows the hash's).
        targets = [
            (layout, segment)
            for layout in layouts
            for segment in layout.segments
            if segment.view == table.name
        ]
        same_entity = [layout for layout in layouts if join_keys == [layout.join_key]]

        keys = redis_keys(project, [entity_key for entity_key, _, _, _ in data], config.entity_key_serialization_version)
        # Encode every packed segment before anything is written, so a bad row fails the whole batch
        # and leaves the hashes and packed records consistent.
        encoded: list[list[bytes]] = []
        row_timestamps: list[tuple[bytes, int]] = []
        last_timestamp: Any = None
        for (_, values, timestamp, _) in data:
            if timestamp is not last_timestamp:  # a push gives every row the same datetime: converted once
                last_timestamp, converted = timestamp, _timestamp_nanos(timestamp)
            row_timestamps.append(converted)
            ts_nanos = converted[1]
            encoded.append([encode_segment(segment, values, ts_nanos) for _, segment in targets])

        if online_config.skip_dedup:
            prev_nanos = [0] * len(data)
        else:
            previous = self._stored_timestamps(client, keys, ts_key)
            prev_nanos = []
            for raw in previous:
                if raw:
                    prev_ts = Timestamp()
                    prev_ts.ParseFromString(raw)
                    prev_nanos.append(prev_ts.seconds * 1_000_000_000 + prev_ts.nanos)
                else:
                    prev_nanos.append(0)

        batch_latest_nanos: dict[bytes, int] = {}
        items: list[tuple[bytes, int, int, bytes]] = []
        hashes: list[tuple[bytes, tuple[Any, ...], list[bytes]]] = []  # (key, fields, values) of the HSETs
        fields_of: dict[str, Any] = {}  # feature -> its hash field (murmur3 of "<view>:<feature>"), hashed once
        with client.pipeline(transaction=False) as pipe:
            for row, (entity_key, values, _, _) in enumerate(data):
                key = keys[row]
                ts_bytes, ts_nanos = row_timestamps[row]
                if not online_config.skip_dedup:
                    # Same rule as Feast's Redis store: skip a row not newer than what is stored or queued.
                    latest_seen = max(prev_nanos[row], batch_latest_nanos.get(key, 0))
                    if latest_seen and ts_nanos <= latest_seen:
                        continue
                    batch_latest_nanos[key] = ts_nanos
                fields = [ts_key]
                serialized = [ts_bytes]
                for feature_name, value in values.items():
                    hashed = fields_of.get(feature_name)
                    if hashed is None:
                        hashed = fields_of[feature_name] = _mmh3(f"{fv_name}:{feature_name}")
                    fields.append(hashed)
                    serialized.append(value.SerializeToString())
                hashes.append((key, tuple(fields), serialized))
                entity_value = _entity_value(entity_key.entity_values[0]) if same_entity else None
                for (layout, segment), segment_bytes in zip(targets, encoded[row]):
                    items.append((layout.key_prefix + layout.entity_bytes(entity_value), segment.offset, layout.record_size, segment_bytes))
                if online_config.key_ttl_seconds:
                    for layout in same_entity:
                        pipe.expire(name=layout.key_prefix + layout.entity_bytes(entity_value), time=online_config.key_ttl_seconds)
            self._queue_hashes(pipe, client, hashes, online_config.key_ttl_seconds or 0)
            # The segments are queued after the loop's EXPIREs: expire the records they may create.
            self._queue_segments(pipe, config, items, online_config.skip_dedup)
            if online_config.key_ttl_seconds:
                for packed_key in {key for key, _, _, _ in items}:
                    pipe.expire(name=packed_key, time=online_config.key_ttl_seconds)
            pipe.execute()
        if progress:
            progress(len(data))

    def _queue_hashes(self, pipe: Any, client: Any, hashes: list[tuple[bytes, tuple[Any, ...], list[bytes]]], ttl_seconds: int) -> None:
        """Queue Feast's HSET (and EXPIRE when ``ttl_seconds``) of every (key, fields, values) on ``pipe``.

        On a single Redis, rows with the same fields (every row of a push) go in one script call per
        ``_SCRIPT_KEYS_PER_CALL * 4`` keys, so the reply is one integer instead of one per key; on a
        Redis Cluster each key gets its own HSET.
        """
        if _is_cluster(client):
            for key, fields, values in hashes:
                pipe.hset(key, mapping=dict(zip(fields, values)))
                if ttl_seconds:
                    pipe.expire(name=key, time=ttl_seconds)
            return
        if self._hset_script is None:
            self._hset_script = client.register_script(_HSET_MANY_LUA)
        per_call = _SCRIPT_KEYS_PER_CALL * 4
        start = 0
        while start < len(hashes):
            fields = hashes[start][1]
            end = start + 1
            while end < len(hashes) and end - start < per_call and hashes[end][1] == fields:
                end += 1
            args: list[Any] = [len(fields), ttl_seconds, *fields]
            for _, _, values in hashes[start:end]:
                args += values
            self._hset_script(keys=[key for key, _, _ in hashes[start:end]], args=args, client=pipe)
            start = end

    def _stored_timestamps(self, client: Any, keys: list[bytes], ts_key: str) -> list[Optional[bytes]]:
        """The ``_ts:<view>`` field of every hash in ``keys`` (None where absent): one script call per
        ``_SCRIPT_KEYS_PER_CALL`` keys on a single Redis (one reply to parse, not one per key), a pipeline of
        HGETs on a Redis Cluster (keys of many slots)."""
        if _is_cluster(client):
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(key, ts_key)
                return pipe.execute()
        if self._read_ts_script is None:
            self._read_ts_script = client.register_script(_READ_FIELD_LUA)
        out: list[Optional[bytes]] = []
        for start in range(0, len(keys), _SCRIPT_KEYS_PER_CALL * 8):
            out += [value or None for value in self._read_ts_script(keys=keys[start : start + _SCRIPT_KEYS_PER_CALL * 8], args=[ts_key])]
        return out

    async def online_write_batch_async(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, Optional[datetime]]],
        progress: Optional[Callable[[int], Any]],
    ) -> None:
        """The synchronous write in a worker thread, so async pushes update the packed records too."""
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.online_write_batch, config, table, data, progress)

    # packed reads ---------------------------------------------------------------

    def read_packed(self, config: RepoConfig, layout: PackedLayout, keys: list[bytes]) -> tuple[Optional[bytes], list[Optional[bytes]]]:
        """(fingerprint of the service's built layout, raw records of ``keys``): one MGET."""
        client = self._get_client(config.online_store)
        all_keys = [self._marker_key(config, layout.service), *keys]
        if _is_cluster(client):  # Redis Cluster: keys live in many slots
            values = client.mget_nonatomic(all_keys)
        else:
            values = client.mget(all_keys)
        return values[0], values[1:]

    def ping(self, config: RepoConfig) -> None:
        """Raise ConnectionError naming the address when Redis does not answer."""
        import redis

        try:
            self._get_client(config.online_store).ping()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as error:
            address = config.online_store.connection_string.split(",")[0]
            raise ConnectionError(f"Redis at {address} is unreachable ({error.__class__.__name__}: {error})") from error


def _is_cluster(client: Any) -> bool:
    """A ``redis.RedisCluster`` (keys spread over slots: no multi-key script calls or MGETs across them)."""
    return hasattr(client, "mget_nonatomic")


def redis_keys(project: str, entity_keys: Sequence[EntityKeyProto], serialization_version: int) -> list[bytes]:
    """Feast's Redis hash keys (``_redis_key``) of ``entity_keys``.

    Single int64 join keys (every entity of this project) are packed here, as Feast's version-3 key
    serialization lays them out (tested equal to ``_redis_key``), which is ~10x cheaper than Feast's
    generic per-row serializer; other keys go through ``_redis_key``.
    """
    project_bytes = project.encode("utf-8")
    prefixes: dict[str, bytes] = {}
    out: list[bytes] = []
    pack_int64 = _INT64_KEY_VALUE.pack
    for entity_key in entity_keys:
        if serialization_version >= 3 and len(entity_key.join_keys) == 1 and entity_key.entity_values[0].WhichOneof("val") == "int64_val":
            name = entity_key.join_keys[0]
            prefix = prefixes.get(name)
            if prefix is None:
                encoded = name.encode("utf8")
                prefix = prefixes[name] = struct.pack("<III", 1, ValueType.STRING.value, len(encoded)) + encoded
            out.append(prefix + pack_int64(ValueType.INT64.value, 8, entity_key.entity_values[0].int64_val) + project_bytes)
        else:
            out.append(_redis_key(project, entity_key, entity_key_serialization_version=serialization_version))
    return out


_INT64_KEY_VALUE = struct.Struct("<IIq")  # value type, length, value


def _entity_value(value: ValueProto) -> Any:
    return getattr(value, value.WhichOneof("val"))
