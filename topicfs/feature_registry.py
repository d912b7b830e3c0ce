"""Registration step: check the offline tables, ``feast apply`` the repo, materialize to Redis.

Run it after the offline jobs (``topicfs feast register``), or call :func:`register_and_materialize`.
It is what a Feast user would type in ``feature_repo/``::

    feast apply
    feast materialize-incremental $(date -u +%Y-%m-%dT%H:%M:%S)

plus the checks that make a bad set-up fail fast with one line naming the cause (unreachable Redis,
a missing Parquet table, a table whose columns do not match its view) and a report of what changed
in the registry, schema changes first. Re-running is safe: an unchanged repo applies nothing and
materialization continues from where the last run ended. A view materialized for the first time, whose
schema changed, or whose table the jobs rewrote since, is materialized over its whole table, so old rows,
new values with old event times and new columns are online at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import Entity, FeatureStore, FeatureView, Project, ValueType
from feast.diff.property_diff import TransitionType
from feast.infra.registry.registry import FeastObjectType
from feast.repo_contents import RepoContents
from feast.repo_operations import extract_objects_for_apply_delete, get_repo_files, parse_repo
from feast.types import Array, Bool, Float32, Float64, Int32, Int64, String

from topicfs.feast_names import STREAM_FED_TAG, VIDEO_TOPICS_VIEW
from topicfs.settings import Settings

logger = logging.getLogger(__name__)


class RegistrationError(RuntimeError):
    """A set-up problem, in one line naming its cause."""


@dataclass
class RegistrationReport:
    """What one registration run did."""

    project: str
    repo_path: Path
    changes: list[str] = field(default_factory=list)  # registry changes, one line each
    schema_changes: list[str] = field(default_factory=list)  # feature views whose schema changed
    materialized: list[str] = field(default_factory=list)  # views written to the online store
    skipped: list[str] = field(default_factory=list)  # "view: reason" of views not materialized
    created_logs: list[str] = field(default_factory=list)  # empty stream logs created for push sources
    packed_layouts: dict[str, str] = field(default_factory=dict)  # packed service -> layout fingerprint
    end_date: datetime | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"Feast project {self.project} ({self.repo_path}) registered in {self.seconds:.1f} s"]
        lines += [f"  schema changed: {line}" for line in self.schema_changes]
        lines += [f"  {line}" for line in self.changes] or ["  registry unchanged"]
        lines += [f"  created empty stream log {name}" for name in self.created_logs]
        if self.materialized:
            lines.append(f"  materialized up to {self.end_date:%Y-%m-%d %H:%M:%S} UTC: {', '.join(self.materialized)}")
        lines += [f"  skipped {line}" for line in self.skipped]
        lines += [f"  packed layout {service}: {fingerprint}" for service, fingerprint in sorted(self.packed_layouts.items())]
        return "\n".join(lines)


# --- loading ------------------------------------------------------------------------------------


def load_store(settings: Settings) -> FeatureStore:
    """The FeatureStore of ``settings.feast.repo_path``; a bad repo or config raises one line."""
    repo_path = settings.feast.repo_path.resolve()
    yaml_path = repo_path / "feature_store.yaml"
    if not yaml_path.is_file():
        raise RegistrationError(f"no feature_store.yaml in {repo_path} (set TOPICFS_FEAST__REPO_PATH to the feature repo)")
    try:
        return FeatureStore(repo_path=str(repo_path))
    except Exception as error:  # Feast raises many types here
        raise RegistrationError(f"bad Feast configuration in {yaml_path}: {_config_error_line(error)}") from error


def _config_error_line(error: Exception) -> str:
    """The informative part of a Feast config error in one line (pydantic's messages span several)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    useful = [
        line.split(" [type=")[0]
        for line in lines
        if not line.endswith("validation error for RepoConfig") and "errors.pydantic.dev" not in line and not line.startswith("at ")
    ]
    return "; ".join(useful) or (lines[0] if lines else type(error).__name__)


def check_online_store(store: FeatureStore) -> None:
    """Raise :class:`RegistrationError` when the online store's Redis does not answer."""
    online_store = store._get_provider().online_store
    try:
        online_store.ping(store.config)
    except ConnectionError as error:
        raise RegistrationError(f"{error} (set TOPICFS_REDIS__URL)") from error


def parse_feature_repo(repo_path: Path, project: str) -> RepoContents:
    """Import the repo's definitions afresh (as ``feast apply`` does) and return its objects."""
    repo_path = repo_path.resolve()
    # Feast imports the files as top-level modules named after their paths: drop copies imported
    # earlier in this process so edited definitions (and current settings) are read again.
    with contextlib.chdir(repo_path):
        for repo_file in get_repo_files(repo_path):
            sys.modules.pop(str(repo_file.relative_to(repo_path))[: -len(".py")].replace(os.sep, "."), None)
        saved_path = list(sys.path)
        sys.path.insert(0, str(repo_path))  # this repo's files first, whatever else is importable
        try:
            contents = parse_repo(repo_path)
        except Exception as error:
            raise RegistrationError(f"feature repo {repo_path} failed to import: {type(error).__name__}: {error}") from error
        finally:
            sys.path[:] = saved_path
    if not contents.projects:
        contents.projects.append(Project(name=project, description=""))
    return contents


# --- offline tables -----------------------------------------------------------------------------

_ARROW_TYPES = {
    Int64: (pa.int64(),),
    Int32: (pa.int32(),),
    Float32: (pa.float32(),),
    Float64: (pa.float64(),),
    Bool: (pa.bool_(),),
    String: (pa.string(), pa.large_string()),
}


def _arrow_types_for(dtype: Any) -> tuple[pa.DataType, ...]:
    if isinstance(dtype, Array):
        return tuple(list_type(base) for base in _ARROW_TYPES.get(dtype.base_type, ()) for list_type in (pa.list_, pa.large_list))
    return _ARROW_TYPES.get(dtype, ())


def _expected_columns(view: FeatureView) -> dict[str, Any]:
    """Column -> Feast dtype a view's batch table must hold (join keys and features)."""
    columns = {column.name: column.dtype for column in view.entity_columns}
    columns.update({feature.name: feature.dtype for feature in view.features})
    return columns


def check_table_schema(view: FeatureView, path: Path) -> None:
    """Raise :class:`RegistrationError` when ``path`` lacks a column of ``view`` or holds another type."""
    schema = pq.read_schema(path)
    source = view.batch_source
    timestamp_columns = [source.timestamp_field] + ([source.created_timestamp_column] if source.created_timestamp_column else [])
    for name in timestamp_columns:
        index = schema.get_field_index(name)
        if index < 0:
            raise RegistrationError(f"schema mismatch: {path.name} has no column {name!r} needed by view {view.name}")
        if not pa.types.is_timestamp(schema.field(index).type):
            raise RegistrationError(
                f"schema mismatch: {path.name} column {name!r} is {schema.field(index).type}, view {view.name} needs a timestamp"
            )
    for name, dtype in _expected_columns(view).items():
        index = schema.get_field_index(name)
        if index < 0:
            raise RegistrationError(f"schema mismatch: {path.name} has no column {name!r} declared by view {view.name}")
        actual = schema.field(index).type
        if actual not in _arrow_types_for(dtype):
            raise RegistrationError(f"schema mismatch: {path.name} column {name!r} is {actual}, view {view.name} declares {dtype}")


_JOIN_KEY_ARROW = {ValueType.INT64: pa.int64(), ValueType.INT32: pa.int32(), ValueType.STRING: pa.string()}


def _empty_log_table(view: FeatureView, entities: Sequence[Entity]) -> pa.Table:
    """An empty table with the view's join keys (from ``entities``: before ``feast apply`` infers them a view
    has no entity columns), features and event timestamp."""
    by_name = {entity.name: entity for entity in entities}
    fields = []
    for entity_name in view.entities:
        entity = by_name.get(entity_name)
        if entity is None or entity.value_type not in _JOIN_KEY_ARROW:
            raise RegistrationError(f"view {view.name}: entity {entity_name!r} is not defined with an int or string join key")
        fields.append(pa.field(entity.join_key, _JOIN_KEY_ARROW[entity.value_type]))
    for feature in view.features:
        fields.append(pa.field(feature.name, _arrow_types_for(feature.dtype)[0]))
    fields.append(pa.field(view.batch_source.timestamp_field, pa.timestamp("us", tz="UTC")))
    return pa.schema(fields).empty_table()


def ensure_stream_logs(views: Sequence[FeatureView], entities: Sequence[Entity]) -> list[str]:
    """Create the offline log (the push source's batch source) of each stream-fed view when it is missing, or
    empty and lacking a column (an older empty log), so ``feast materialize-incremental`` of every view reads it;
    returns the file names written. Called by the repo definitions, so a stock ``feast apply`` creates them."""
    created = []
    for view in views:
        path = Path(getattr(view.batch_source, "path", "") or "")
        if not path.name:
            continue
        table = _empty_log_table(view, entities)
        if path.exists():
            existing = pq.read_metadata(path)
            if existing.num_rows > 0 or set(table.schema.names) <= set(existing.schema.names):
                continue
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        created.append(path.name)
    return created


def is_stream_fed(view: FeatureView) -> bool:
    return str(view.tags.get(STREAM_FED_TAG, "")).lower() == "true"


def check_offline_tables(
    views: Sequence[FeatureView], optional_tables: Sequence[str], entities: Sequence[Entity] = ()
) -> tuple[list[FeatureView], list[str], list[str]]:
    """(views to materialize, skipped "view: reason" lines, stream logs created).

    A missing table fails fast with one line, unless it is optional (skipped with a warning) or the
    offline log of a stream-fed view (created empty with the join keys of ``entities``, so ``feast
    materialize`` can read it).
    """
    to_materialize: list[FeatureView] = []
    skipped: list[str] = []
    created: list[str] = []
    for view in sorted(views, key=lambda v: v.name):
        source = view.batch_source
        path = Path(getattr(source, "path", "") or "")
        if not path.name:
            skipped.append(f"{view.name}: its batch source is not a file")
            continue
        if is_stream_fed(view):
            created += ensure_stream_logs([view], entities)
            skipped.append(f"{view.name}: written by the stream through push")
            continue
        if not path.exists():
            if path.name in optional_tables:
                logger.warning("offline table %s is missing: view %s is not materialized", path, view.name)
                skipped.append(f"{view.name}: missing optional table {path}")
                continue
            raise RegistrationError(f"missing offline table {path} (feature view {view.name}); run the offline jobs first")
        check_table_schema(view, path)
        to_materialize.append(view)
    return to_materialize, skipped, created


# --- registry diff ------------------------------------------------------------------------------


def _schema_change(view_name: str, current: FeatureView, declared: FeatureView) -> str | None:
    old = {f.name: str(f.dtype) for f in current.features}
    new = {f.name: str(f.dtype) for f in declared.features}
    parts = [f"+{name} {new[name]}" for name in new if name not in old]
    parts += [f"-{name} {old[name]}" for name in old if name not in new]
    parts += [f"{name} {old[name]} -> {new[name]}" for name in new if name in old and old[name] != new[name]]
    if current.entities != declared.entities:
        parts.append(f"entities {current.entities} -> {declared.entities}")
    return f"{view_name}: {', '.join(parts)}" if parts else None


def _only_meta_differs(property_diff: Any) -> bool:
    """True when a property differs only in registry bookkeeping (a data source's meta timestamps)."""
    existing, declared = property_diff.val_existing, property_diff.val_declared
    if not (hasattr(existing, "DESCRIPTOR") and hasattr(declared, "DESCRIPTOR")):
        return False
    existing, declared = type(existing).FromString(existing.SerializeToString()), type(declared).FromString(declared.SerializeToString())
    for proto in (existing, declared):
        if "meta" in proto.DESCRIPTOR.fields_by_name:
            proto.ClearField("meta")
    return existing == declared


def describe_diff(store: FeatureStore, contents: RepoContents) -> tuple[list[str], list[str], set[str]]:
    """(change lines, schema-change lines, names of views whose schema changed) of applying ``contents``."""
    diff, _, _ = store.plan(contents)  # runs Feast's inference first, as `feast plan` does
    changes: list[str] = []
    schema_changes: list[str] = []
    changed_views: set[str] = set()
    for object_diff in diff.feast_object_diffs:
        kind = object_diff.feast_object_type
        if object_diff.transition_type == TransitionType.UNCHANGED or kind in (FeastObjectType.DATA_SOURCE, FeastObjectType.PROJECT):
            continue
        if object_diff.name == "__dummy":
            continue
        action = object_diff.transition_type.name.lower()
        if object_diff.transition_type == TransitionType.UPDATE:
            properties = sorted({d.property_name for d in object_diff.feast_object_property_diffs if not _only_meta_differs(d)})
            if not properties:
                continue
            changes.append(f"{action} {kind.value} {object_diff.name} ({', '.join(properties)})")
            if kind == FeastObjectType.FEATURE_VIEW:
                line = _schema_change(object_diff.name, object_diff.current_feast_object, object_diff.new_feast_object)  # type: ignore[arg-type]
                if line:
                    schema_changes.append(line)
                    changed_views.add(object_diff.name)
        else:
            changes.append(f"{action} {kind.value} {object_diff.name}")
    return changes, schema_changes, changed_views


# --- the step -----------------------------------------------------------------------------------


def _table_timestamp(view: FeatureView, column: str, aggregate: Any) -> datetime | None:
    """``aggregate`` (pc.min / pc.max) of a timestamp column of the view's Parquet table, in UTC; None if it has no value."""
    values = pq.read_table(view.batch_source.path, columns=[column]).column(0)
    found = aggregate(values).as_py() if len(values) else None
    if found is None:
        return None
    return found if found.tzinfo else found.replace(tzinfo=timezone.utc)


def table_rewritten_since(view: FeatureView, materialized_until: datetime | None) -> bool:
    """Whether the view's table holds rows written (``created``) after its last materialization, or it has none."""
    if materialized_until is None:
        return True
    created_column = view.batch_source.created_timestamp_column
    newest = _table_timestamp(view, created_column, pc.max) if created_column else None
    until = materialized_until if materialized_until.tzinfo else materialized_until.replace(tzinfo=timezone.utc)
    return newest is not None and newest > until


def earliest_event_time(view: FeatureView, end: datetime) -> datetime:
    """The oldest event timestamp in the view's Parquet table (a second earlier: Feast's window is half-open)."""
    oldest = _table_timestamp(view, view.batch_source.timestamp_field, pc.min)
    return min(oldest or end, end) - timedelta(seconds=1)


def register_and_materialize(settings: Settings, end_date: datetime | None = None) -> RegistrationReport:
    """Check, apply and materialize the feature repo; returns what was done.

    Raises :class:`RegistrationError` (one line) on an unreachable Redis, a missing or mismatching
    offline table, or a repo that does not import.
    """
    started = time.monotonic()
    store = load_store(settings)
    check_online_store(store)
    repo_path = Path(store.repo_path)
    contents = parse_feature_repo(repo_path, store.project)
    views, skipped, created_logs = check_offline_tables(contents.feature_views, settings.feast.optional_tables, contents.entities)
    changes, schema_changes, changed_views = describe_diff(store, contents)
    for line in schema_changes:
        logger.warning("schema changed: %s", line)

    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(store.project, store.registry, contents)
    with contextlib.chdir(repo_path):  # relative paths in the definitions resolve as under `feast apply`
        store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    store.refresh_registry()

    end = end_date or datetime.now(timezone.utc)
    report = RegistrationReport(store.project, repo_path, changes, schema_changes, skipped=skipped, created_logs=created_logs, end_date=end)
    # A view is written over its whole table when it was never materialized, when its schema changed (rows online
    # lack the new columns), or when its table was rewritten since the last run: the offline jobs date a video's
    # values by its publication (event_timestamp), so a re-run's new values carry old event times that Feast's
    # incremental window (from the last end, or now - ttl the first time) would silently leave out.
    full = [
        view
        for view in views
        if view.name in changed_views or table_rewritten_since(view, store.get_feature_view(view.name).most_recent_end_time)
    ]
    full_names = {view.name for view in full}
    incremental = [view.name for view in views if view.name not in full_names]
    if incremental:
        store.materialize_incremental(end_date=end, feature_views=incremental)
    online_config = store.config.online_store
    dedup_setting = online_config.skip_dedup
    try:
        # The table is the truth for these views (nothing pushes to them): write its latest rows even where the
        # online store holds a row with the same event time, which Feast's dedup would keep.
        online_config.skip_dedup = True
        for view in full:
            store.materialize(start_date=earliest_event_time(view, end), end_date=end, feature_views=[view.name])
    finally:
        online_config.skip_dedup = dedup_setting
    report.materialized = [view.name for view in views]

    online_store = store._get_provider().online_store
    online_store.invalidate_layouts()
    report.packed_layouts = {name: layout.fingerprint for name, layout in online_store.packed_layouts(store.config).items()}
    report.seconds = time.monotonic() - started
    return report


def sample_video_ids(settings: Settings, store: FeatureStore, count: int) -> np.ndarray:
    """The first ``count`` video ids of the video-topics table (for a demo read)."""
    view = store.get_feature_view(VIDEO_TOPICS_VIEW)
    path = Path(view.batch_source.path)
    if not path.exists():
        raise RegistrationError(f"missing offline table {path} (feature view {view.name})")
    column = pq.read_table(path, columns=["video_id"]).column("video_id").to_numpy()
    return column[:count]


def format_ranker_read(batch: Any, max_list_values: int = 4) -> str:
    """A readable rendering of a :class:`topicfs.feature_client.PackedBatch` (one block per video)."""
    lines = [f"{batch.service}: {len(batch)} videos, matrix {batch.to_matrix().shape}"]
    for row, entity in enumerate(batch.entity_ids.tolist()):
        lines.append(f"  {batch.join_key}={entity}")
        for name in batch.feature_order:
            if batch.null[name][row]:
                shown = "None"
            elif name in batch.lengths:
                length = int(batch.lengths[name][row])
                items = batch.values[name][row][: min(length, max_list_values)].tolist()
                items = [round(x, 4) if isinstance(x, float) else x for x in items]
                shown = f"{items}{' ...' if length > max_list_values else ''} (len {length})"
            else:
                value = batch.values[name][row].item()
                shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"    {name:<22} {shown}")
    return "\n".join(lines)
