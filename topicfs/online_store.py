"""Feast online-store plugin: Feast's Redis store plus a ranker-ready packed layout per feature service.

Set it in ``feature_store.yaml``::

    online_store:
      type: topicfs.online_store.TopicRedisOnlineStore
      url: ${TOPICFS_REDIS__URL}        # redis://[:password@]host:port/db, rediss:// for TLS

or with Feast's own keys (``connection_string: "host:port,..."``, ``redis_type: redis_cluster``), which mean
what they mean for Feast's Redis store (see :class:`TopicRedisOnlineStoreConfig` for how the sources combine).

Every Feast path keeps working unchanged (``feast materialize``, push, ``feast serve``, every SDK
read), because all of Feast's Redis hashes are written and read exactly as
:class:`~feast.infra.online_stores.redis.RedisOnlineStore` does. In the same Redis pipeline, every
written row also updates the *packed record* of each feature service tagged
``topicfs.packed: "true"`` that reads the row's view: one Redis string per (service, entity) whose
bytes hold every feature of the service at fixed offsets, so a ranker reads N candidates with one
``MGET`` and decodes them with one ``numpy.frombuffer`` (:mod:`topicfs.feature_client`).

Packed record of one entity = a complete mark (uint8) then one *segment* per feature view of the service,
at a fixed offset::

    complete = 1 when the record holds every view Feast's hash holds for the entity (a write to an entity
               whose hash has no other view of the layout, a backfill, a repair); 0 when a segment write
               created it next to other views: readers then rebuild it from the hashes
    segment = event_ts (uint64 big-endian, ns) | written (uint8, 1) | null flag per feature (uint8)
              | per feature: scalar value, or list length (uint32) + ``max_length`` values
    numbers are little-endian; a list Field declares its capacity with the tag ``topicfs.max_length``.

A segment is written with ``SETRANGE`` by a server-side script that keeps it only when its event
timestamp is newer than the stored one: the same rule Feast's Redis store applies to its hashes, so
concurrent writers (materialisation, the stream's pushes, a backfill) converge on the same values in
both layouts. Key expiry (``key_ttl_seconds``) is mirrored: whenever Feast refreshes an entity's
hash expiry, the entity's packed records get the same expiry.

Layouts are derived from the registry; when a packed service is new or changed, the plugin rebuilds
its records from Feast's hashes (backfill) and deletes the records of the old layout. A read finding a
record missing, partial or undecodable reads those ids from the hashes in the same call and repairs
them (:meth:`TopicRedisOnlineStore.records_from_hashes`). Feast-side deletion (a deleted view, teardown)
deletes the packed records too. On a Redis Cluster every multi-key step goes key by key (or node by node
for the packed read: one pipeline per node).
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
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig, RedisType, _versioned_fv_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from feast.types import Array, Bool, Float32, Float64, Int32, Int64, PrimitiveFeastType

from topicfs.feast_names import MAX_LENGTH_TAG, PACKED_TAG
from topicfs.keys import unlink_matching

logger = logging.getLogger(__name__)

PLUGIN_TYPE = "topicfs.online_store.TopicRedisOnlineStore"
_SEGMENT_HEADER_BYTES = 9  # event_ts uint64 BE (8) + written flag (1)
# Record header: one byte, 1 when the record was built from every view of Feast's hash (backfill, repair) and
# kept by segment writes since; 0 when a segment write created it (the other views' segments are unknown).
_RECORD_HEADER_BYTES = 1
_BACKFILL_BATCH_KEYS = 500

_SCRIPT_KEYS_PER_CALL = 256  # segments one script call writes (bounds the time Redis is busy with one call)

# Hash fields of many keys: ARGV = the fields; the reply has, key after key, one entry per field (false where
# absent).
_READ_FIELDS_LUA = """
local out = {}
local n = #ARGV
for k = 1, #KEYS do
  local values = redis.call('HMGET', KEYS[k], unpack(ARGV))
  for i = 1, n do out[(k - 1) * n + i] = values[i] end
end
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

# Write many segments. ARGV[1] = "1" to write unconditionally; then per key: offset, record size, complete
# ("1": the record then holds every view Feast's hash holds, so it gets the complete mark), segment. A
# segment is kept only if its header (big-endian ts + written flag) is greater, byte by byte (= later in
# time), than the one stored; a record is padded to its full size so readers always get whole records, and
# one created here without the complete mark starts with header byte 0 (readers then rebuild it from the
# hashes). The mark is never cleared here.
_WRITE_SEGMENTS_LUA = """
local unconditional = ARGV[1] == '1'
local written = 0
for k = 1, #KEYS do
  local off = tonumber(ARGV[4 * k - 2])
  local size = tonumber(ARGV[4 * k - 1])
  local complete = ARGV[4 * k] == '1'
  local seg = ARGV[4 * k + 1]
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
  if complete then redis.call('SETRANGE', KEYS[k], 0, '\\1') end
end
return written
"""


class TopicRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis online-store config (``connection_string``, ``redis_type``, ``key_ttl_seconds``, ...
    with Feast's meaning) plus the address as one URL and the packed-layout knobs.

    Where the address comes from, first match wins:

    1. ``connection_string`` and ``redis_type`` written in ``feature_store.yaml``: used exactly as Feast's
       own Redis store uses them.
    2. ``url`` (a redis:// or rediss:// URL, usually ``${TOPICFS_REDIS__URL}``).
    3. The project's setting ``redis.url`` (``TOPICFS_REDIS__URL``, default ``redis://127.0.0.1:6379/0``).

    A second source naming another server than ``connection_string`` (``url``, or a ``redis.url`` set in the
    environment) is an error naming both. Without ``redis_type`` in the yaml, an address taken from ``url`` /
    ``redis.url`` is a cluster when the setting ``redis.cluster`` is true; a ``redis_type`` contradicting an
    explicitly set ``redis.cluster`` is an error naming both.
    """

    type: Literal["topicfs.online_store.TopicRedisOnlineStore"] = PLUGIN_TYPE  # type: ignore[assignment]
    """Online store type selector (this plugin)."""

    url: Optional[StrictStr] = None
    """redis://[user:password@]host:port/db or rediss:// (TLS); usually ``${TOPICFS_REDIS__URL}``.
    Unset, or a ``${VAR}`` left unexpanded because the variable is not set, means: ``connection_string`` when
    the yaml sets it, else the project's setting ``redis.url``."""

    packed_key_prefix: StrictStr = "tfs:packed"
    """Prefix of the packed records' keys: ``<prefix>:<project>:<service>:<layout>:<entity>``."""

    layout_refresh_seconds: float = 5.0
    """How long layouts read from the registry are trusted before it is read again."""

    @model_validator(mode="after")
    def _resolve_address(self) -> "TopicRedisOnlineStoreConfig":
        from topicfs.settings import get_settings

        redis_settings = get_settings().redis
        explicit = self.model_fields_set
        given_string = "connection_string" in explicit
        source: Optional[tuple[str, str]] = None  # (where the URL comes from, the URL)
        if self.url is not None and "${" not in self.url:
            source = ("online_store.url", self.url)
        elif "url" in redis_settings.model_fields_set or not given_string:
            source = ("the setting redis.url (TOPICFS_REDIS__URL)", redis_settings.url)
        if "redis_type" in explicit or source is None:  # Feast's redis_type (default: redis) rules
            if "cluster" in redis_settings.model_fields_set and redis_settings.cluster != (self.redis_type == RedisType.redis_cluster):
                raise ValueError(
                    f"online_store.redis_type is {self.redis_type.value} but the setting redis.cluster (TOPICFS_REDIS__CLUSTER) "
                    f"is {str(redis_settings.cluster).lower()}: make them agree or remove one"
                )
        else:
            self.redis_type = RedisType.redis_cluster if redis_settings.cluster else RedisType.redis
        if source is None:
            return self
        what, url = source
        derived = redis_url_to_connection_string(url, cluster=self.redis_type == RedisType.redis_cluster)
        if given_string:
            if not same_redis_address(derived, self.connection_string):
                raise ValueError(
                    f"online_store.connection_string ({mask_connection_string(self.connection_string)}) and {what} "
                    f"({mask_url(url)}) name different Redis servers: set only one of them"
                )
        else:
            self.connection_string = derived
        self.url = url
        return self


def redis_url_to_connection_string(url: str, cluster: bool = False) -> str:
    """Feast's ``host:port,db=0,password=...,ssl=true`` form of a redis:// or rediss:// URL (no ``db`` for a
    cluster, which has only database 0)."""
    parsed = urlparse(url)
    if parsed.scheme not in {"redis", "rediss"}:
        raise ValueError(f"Redis URL must start with redis:// or rediss://, got {mask_url(url)!r}")
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 6379
    parts = [f"{host}:{port}"]
    database = (parsed.path or "/0").lstrip("/") or "0"
    if not database.isdigit():
        raise ValueError(f"Redis URL database must be a number, got {database!r} in {mask_url(url)!r}")
    if not cluster:
        parts.append(f"db={database}")
    elif database != "0":
        raise ValueError(f"a Redis Cluster has only database 0, got {database!r} in {mask_url(url)!r}")
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


# Connection parameters that decide which server (and database, account, transport) a client reaches.
_ADDRESS_PARAMS = {"db": 0, "username": None, "password": None, "ssl": False}


def same_redis_address(derived: str, connection_string: str) -> bool:
    """Whether a URL's connection string (``derived``, one node) reaches the same Redis as ``connection_string``:
    its node is one of the string's nodes and database, user, password and TLS agree (Feast's defaults for absent
    ones)."""
    nodes_a, params_a = RedisOnlineStore._parse_connection_string(derived)
    nodes_b, params_b = RedisOnlineStore._parse_connection_string(connection_string)
    node_set = {(node.get("host"), str(node.get("port"))) for node in nodes_b}
    if not all((node.get("host"), str(node.get("port"))) in node_set for node in nodes_a):
        return False
    for name, default in _ADDRESS_PARAMS.items():
        a, b = params_a.get(name, default), params_b.get(name, default)
        if str(a).lower() != str(b).lower():
            return False
    return True


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parsed = urlparse(url)
    if not parsed.password:
        return url
    netloc = parsed.netloc.rsplit("@", 1)
    user = parsed.username or ""
    return parsed._replace(netloc=f"{user}:***@{netloc[-1]}").geturl()


def mask_connection_string(connection_string: str) -> str:
    """A Feast connection string with its password replaced by ``***``."""
    return ",".join("password=***" if part.startswith("password=") else part for part in connection_string.split(","))


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
        """Structured dtype of one record: ``__complete``, ``<view>.__ts``, ``<view>.__written``, ``<feature>``,
        ``<feature>.__null`` and, for lists, ``<feature>.__len``."""
        names: list[str] = ["__complete"]
        formats: list[Any] = ["u1"]
        offsets: list[int] = [0]
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

    def entity_of(self, entity_bytes: bytes) -> Any:
        """The join-key value of the entity part of a packed key (inverse of :meth:`entity_bytes`)."""
        if self.join_key_dtype == "str":
            return entity_bytes.decode("utf8")
        return struct.unpack("<q" if self.join_key_dtype == "<i8" else "<i", entity_bytes)[0]

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
    offset = _RECORD_HEADER_BYTES
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
        "record header 1",
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
    # the header orders writes byte by byte, so it is unsigned: a time before 1970 (a film's 1920 release date) counts as 1970
    return struct.pack(">QB", max(event_ts_nanos, 0), 1) + bytes(nulls) + b"".join(body)


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
        self._read_fields_script: Any = None
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
        written = 0
        batch: list[bytes] = []

        def flush() -> None:
            nonlocal written
            entities = [
                _entity_value(deserialize_entity_key(key[: -len(project_bytes)], config.entity_key_serialization_version).entity_values[0])
                for key in batch
            ]
            written += self._write_from_hashes(config, layout, entities, self._read_hashes(config, layout, batch), replace=False)

        for key in client.scan_iter(match=pattern, count=1000):
            if not key.endswith(project_bytes):
                continue
            batch.append(key)
            if len(batch) >= _BACKFILL_BATCH_KEYS:
                flush()
                batch = []
        if batch:
            flush()
        logger.info("packed layout %s of %s built: %d records backfilled", layout.fingerprint, layout.service, written)

    # records from Feast's hashes ----------------------------------------------------

    def hash_keys(self, config: RepoConfig, layout: PackedLayout, entity_values: Sequence[Any]) -> list[bytes]:
        """Feast's Redis hash keys of ``entity_values`` of the layout's join key."""
        field = {"<i8": "int64_val", "<i4": "int32_val", "str": "string_val"}[layout.join_key_dtype]
        convert = str if layout.join_key_dtype == "str" else int
        entity_keys = [
            EntityKeyProto(join_keys=[layout.join_key], entity_values=[ValueProto(**{field: convert(v)})]) for v in entity_values
        ]
        return redis_keys(config.project, entity_keys, config.entity_key_serialization_version)

    def _read_hashes(
        self, config: RepoConfig, layout: PackedLayout, hash_keys: list[bytes]
    ) -> list[tuple[list[list[Optional[bytes]]], int]]:
        """Per hash key: (per segment, the HMGET of its features' fields then its ``_ts:<view>``; the key's PTTL in
        ms), in one pipeline (one round trip per node on a cluster)."""
        client = self._get_client(config.online_store)
        fields = [
            [_mmh3(f"{segment.view}:{feature.name}") for feature in segment.features] + [f"_ts:{segment.view}".encode()]
            for segment in layout.segments
        ]
        with client.pipeline(transaction=False) as pipe:
            for key in hash_keys:
                for segment_fields in fields:
                    pipe.hmget(key, segment_fields)
                pipe.pttl(key)
            replies = pipe.execute()
        step = len(fields) + 1
        return [(replies[i * step : i * step + len(fields)], replies[i * step + len(fields)]) for i in range(len(hash_keys))]

    @staticmethod
    def _segments_of(layout: PackedLayout, segment_replies: list[list[Optional[bytes]]]) -> list[tuple[PackedSegment, bytes]]:
        """The encoded segments of the views a hash holds (HMGET replies of :meth:`_read_hashes`)."""
        out = []
        for segment, reply in zip(layout.segments, segment_replies):
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
            out.append((segment, encode_segment(segment, values, ts.seconds * 1_000_000_000 + ts.nanos)))
        return out

    @staticmethod
    def record_of(layout: PackedLayout, segments: list[tuple[PackedSegment, bytes]]) -> Optional[bytes]:
        """A whole record (complete mark set) holding ``segments``; None when there is none."""
        if not segments:
            return None
        record = bytearray(layout.record_size)
        record[0] = 1
        for segment, data in segments:
            record[segment.offset : segment.offset + len(data)] = data
        return bytes(record)

    def _write_from_hashes(
        self,
        config: RepoConfig,
        layout: PackedLayout,
        entity_values: Sequence[Any],
        hashes: list[tuple[list[list[Optional[bytes]]], int]],
        replace: bool | Sequence[bool],
    ) -> int:
        """Write the records of ``entity_values`` from their hashes (complete mark set, expiry = the hash's).

        Segments are written with the newer-wins rule, so a concurrent newer write is kept; an entity whose
        ``replace`` is true has its record deleted first (undecodable or wrong records), and one Feast has no
        row for loses its record. Returns the records written.
        """
        client = self._get_client(config.online_store)
        replace_flags = [replace] * len(entity_values) if isinstance(replace, bool) else list(replace)
        items: list[tuple[bytes, int, int, bool, bytes]] = []
        written = 0
        with client.pipeline(transaction=False) as pipe:
            for entity, (segment_replies, ttl_ms), drop in zip(entity_values, hashes, replace_flags):
                packed_key = layout.key_prefix + layout.entity_bytes(entity)
                segments = self._segments_of(layout, segment_replies)
                if drop or not segments:
                    pipe.delete(packed_key)
                if not segments:
                    continue
                items += [(packed_key, segment.offset, layout.record_size, True, data) for segment, data in segments]
                written += 1
            self._queue_segments(pipe, config, items, unconditional=False)
            for (segment_replies, ttl_ms), entity in zip(hashes, entity_values):
                if ttl_ms is not None and ttl_ms > 0 and any(reply[-1] is not None for reply in segment_replies):
                    pipe.pexpire(layout.key_prefix + layout.entity_bytes(entity), ttl_ms)
            pipe.execute()
        return written

    def records_from_hashes(
        self,
        config: RepoConfig,
        layout: PackedLayout,
        entity_values: Sequence[Any],
        repair: bool = True,
        replace: bool | Sequence[bool] = False,
    ) -> list[Optional[bytes]]:
        """The records of ``entity_values`` built from Feast's hashes (None where Feast has no row of any view of
        the layout), read in one pipeline; with ``repair`` they are also written to Redis (see
        :meth:`_write_from_hashes`)."""
        hashes = self._read_hashes(config, layout, self.hash_keys(config, layout, entity_values))
        if repair:
            self._write_from_hashes(config, layout, entity_values, hashes, replace)
        return [self.record_of(layout, self._segments_of(layout, segment_replies)) for segment_replies, _ in hashes]

    def _queue_segments(self, pipe: Any, config: RepoConfig, items: list[tuple[bytes, int, int, bool, bytes]], unconditional: bool) -> None:
        """Queue writes of (packed key, segment offset, record size, complete, segment bytes) on ``pipe``; ``complete``
        marks a record as holding every view Feast's hash holds for its entity.

        Many keys go in one script call on a single Redis; on a Redis Cluster each key gets its own
        call, since one call may only touch keys of one slot.
        """
        if not items:
            return
        per_call = 1 if _is_cluster(config) else _SCRIPT_KEYS_PER_CALL
        if self._write_script is None and per_call > 1:
            self._write_script = self._get_client(config.online_store).register_script(_WRITE_SEGMENTS_LUA)
        for start in range(0, len(items), per_call):
            chunk = items[start : start + per_call]
            args: list[Any] = [1 if unconditional else 0]
            for _, offset, size, complete, segment in chunk:
                args += [offset, size, 1 if complete else 0, segment]
            keys = [item[0] for item in chunk]
            if per_call == 1:  # EVAL: a node that restarted or joined has no script cache for EVALSHA
                pipe.execute_command("EVAL", _WRITE_SEGMENTS_LUA, len(keys), *keys, *args)
            else:
                self._write_script(keys=keys, args=args, client=pipe)

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
        targets = [(layout, segment) for layout in layouts for segment in layout.segments if segment.view == table.name]
        same_entity = [layout for layout in layouts if join_keys == [layout.join_key]]
        # A record this write creates is complete when the entity's hash holds no other view of its layout.
        other_ts = [[f"_ts:{other.view}" for other in layout.segments if other.view != table.name] for layout, _ in targets]
        extra_fields = sorted({name for names in other_ts for name in names})

        keys = redis_keys(project, [entity_key for entity_key, _, _, _ in data], config.entity_key_serialization_version)
        # Encode every packed segment before anything is written, so a bad row fails the whole batch
        # and leaves the hashes and packed records consistent.
        encoded: list[list[bytes]] = []
        row_timestamps: list[tuple[bytes, int]] = []
        last_timestamp: Any = None
        for _, values, timestamp, _ in data:
            if timestamp is not last_timestamp:  # a push gives every row the same datetime: converted once
                last_timestamp, converted = timestamp, _timestamp_nanos(timestamp)
            row_timestamps.append(converted)
            ts_nanos = converted[1]
            encoded.append([encode_segment(segment, values, ts_nanos) for _, segment in targets])

        stored: list[list[Optional[bytes]]] = []
        if not online_config.skip_dedup or extra_fields:
            fields = ([] if online_config.skip_dedup else [ts_key]) + extra_fields
            stored = self._stored_fields(client, keys, fields, _is_cluster(config))
        extra_at = 0 if online_config.skip_dedup else 1
        present = [dict(zip(extra_fields, (value is not None for value in row[extra_at:]))) for row in stored]
        if online_config.skip_dedup:
            prev_nanos = [0] * len(data)
        else:
            prev_nanos = []
            for row_values in stored:
                raw = row_values[0]
                if raw:
                    prev_ts = Timestamp()
                    prev_ts.ParseFromString(raw)
                    prev_nanos.append(prev_ts.seconds * 1_000_000_000 + prev_ts.nanos)
                else:
                    prev_nanos.append(0)

        batch_latest_nanos: dict[bytes, int] = {}
        items: list[tuple[bytes, int, int, bool, bytes]] = []
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
                for (layout, segment), others, segment_bytes in zip(targets, other_ts, encoded[row]):
                    complete = not any(present[row][name] for name in others) if others else True
                    items.append(
                        (layout.key_prefix + layout.entity_bytes(entity_value), segment.offset, layout.record_size, complete, segment_bytes)
                    )
                if online_config.key_ttl_seconds:
                    for layout in same_entity:
                        pipe.expire(name=layout.key_prefix + layout.entity_bytes(entity_value), time=online_config.key_ttl_seconds)
            self._queue_hashes(pipe, client, hashes, online_config.key_ttl_seconds or 0, _is_cluster(config))
            # The segments are queued after the loop's EXPIREs: expire the records they may create.
            self._queue_segments(pipe, config, items, online_config.skip_dedup)
            if online_config.key_ttl_seconds:
                for packed_key in {item[0] for item in items}:
                    pipe.expire(name=packed_key, time=online_config.key_ttl_seconds)
            pipe.execute()
        if progress:
            progress(len(data))

    def _queue_hashes(
        self, pipe: Any, client: Any, hashes: list[tuple[bytes, tuple[Any, ...], list[bytes]]], ttl_seconds: int, cluster: bool
    ) -> None:
        """Queue Feast's HSET (and EXPIRE when ``ttl_seconds``) of every (key, fields, values) on ``pipe``.

        On a single Redis, rows with the same fields (every row of a push) go in one script call per
        ``_SCRIPT_KEYS_PER_CALL * 4`` keys, so the reply is one integer instead of one per key; on a
        Redis Cluster each key gets its own HSET.
        """
        if cluster:
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

    def _stored_fields(self, client: Any, keys: list[bytes], fields: list[str], cluster: bool) -> list[list[Optional[bytes]]]:
        """``fields`` of every hash in ``keys`` (None where absent): one script call per ``_SCRIPT_KEYS_PER_CALL * 8``
        keys on a single Redis (one reply to parse, not one per key), a pipeline of HMGETs on a Redis Cluster (keys of
        many slots, one round trip per node)."""
        if cluster:
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, fields)
                return pipe.execute()
        if self._read_fields_script is None:
            self._read_fields_script = client.register_script(_READ_FIELDS_LUA)
        n = len(fields)
        out: list[list[Optional[bytes]]] = []
        for start in range(0, len(keys), _SCRIPT_KEYS_PER_CALL * 8):
            flat = self._read_fields_script(keys=keys[start : start + _SCRIPT_KEYS_PER_CALL * 8], args=fields)
            out += [[value or None for value in flat[i : i + n]] for i in range(0, len(flat), n)]
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
        """(fingerprint of the service's built layout, raw records of ``keys``) in one round trip: one MGET on a
        single Redis; on a Redis Cluster the keys are grouped by the node owning their slot and each node gets
        one pipeline of GETs (one round trip per node)."""
        client = self._get_client(config.online_store)
        all_keys = [self._marker_key(config, layout.service), *keys]
        if _is_cluster(config):
            values = _get_per_node(client, all_keys)
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


def _is_cluster(config: RepoConfig) -> bool:
    """Whether the online store is a Redis Cluster (Feast's ``redis_type: redis_cluster``): keys spread over
    slots, so no multi-key script calls or MGETs across them."""
    return config.online_store.redis_type == RedisType.redis_cluster


def _get_per_node(client: Any, keys: list[bytes]) -> list[Optional[bytes]]:
    """GET of every key on a ``RedisCluster``, one pipeline per node owning some of them (the nodes are asked one
    after the other). A key that moved (MOVED / ASK after a resharding, a node that went away) makes the whole read
    go through the cluster client's own pipeline, which follows redirections."""
    import redis

    from redis.crc import key_slot

    groups: dict[str, tuple[Any, list[int], list[bytes]]] = {}
    node_of_slot: dict[int, Any] = {}
    for index, key in enumerate(keys):
        slot = key_slot(key)
        node = node_of_slot.get(slot)
        if node is None:
            node = node_of_slot[slot] = client.nodes_manager.get_node_from_slot(slot)
        group = groups.get(node.name)
        if group is None:
            group = groups[node.name] = (node, [], [])
        group[1].append(index)
        group[2].append(key)
    out: list[Optional[bytes]] = [None] * len(keys)
    try:
        for node, indices, node_keys in groups.values():
            with client.get_redis_connection(node).pipeline(transaction=False) as pipe:
                for key in node_keys:
                    pipe.get(key)
                for index, value in zip(indices, pipe.execute()):
                    out[index] = value
    except (redis.exceptions.AskError, redis.exceptions.TryAgainError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        client.nodes_manager.initialize()
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            return pipe.execute()
    return out


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
