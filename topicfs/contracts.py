"""Data contracts: the videos and interactions tables every stage reads, validated at the boundary.

A dataset enters the project only through :func:`load_videos` and :func:`load_interactions`, from
Parquet or CSV. Each row is checked field by field; a problem is reported as
``<file>: row <n>: field '<name>': <what is wrong>`` (rows count from 1 after the header, as a
spreadsheet shows them). With ``on_error="raise"`` (the default) the first problems are raised together
as one :class:`ContractError`; with ``on_error="skip"`` bad rows are dropped, every valid row is kept,
and the problems are returned so the caller can report them.

Videos (one row per video)::

    video_id         int64, unique, >= 0
    title            str (may be empty)
    cover_image      str path to an image file, or missing
    primary_class    str, or missing
    secondary_class  str, or missing
    tags             list of str (may be empty); in CSV a JSON list or '|'-separated
    publish_ts       timestamp (UTC)

Interactions (one row per exposure or rating)::

    user_id   int64 >= 0
    video_id  int64 >= 0
    clicked   0/1   (or ``rating``: a number, turned into clicked by the caller's threshold)
    ts        timestamp (UTC)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

VIDEO_COLUMNS = ["video_id", "title", "cover_image", "primary_class", "secondary_class", "tags", "publish_ts"]
INTERACTION_COLUMNS = ["user_id", "video_id", "clicked", "ts"]
MAX_REPORTED_ERRORS = 10
OnError = Literal["raise", "skip"]


@dataclass(frozen=True)
class RowError:
    """One problem in one field of one row of one file."""

    file: str
    row: int  # 1-based data row, header excluded
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: row {self.row}: field '{self.field}': {self.message}"


class ContractError(ValueError):
    """A table does not meet its contract. The message names file, row and field of each problem."""

    def __init__(self, errors: list[RowError] | str):
        if isinstance(errors, str):
            self.errors: list[RowError] = []
            super().__init__(errors)
            return
        self.errors = errors
        shown = "\n".join(f"  {e}" for e in errors[:MAX_REPORTED_ERRORS])
        more = f"\n  ... and {len(errors) - MAX_REPORTED_ERRORS} more" if len(errors) > MAX_REPORTED_ERRORS else ""
        super().__init__(f"{len(errors)} invalid value(s):\n{shown}{more}")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a Parquet or CSV file as it is, with a clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.exists():
        raise ContractError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        if suffix in {".csv", ".tsv"}:
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    except Exception as exc:  # pyarrow and pandas raise many types; the user needs the file name
        raise ContractError(f"{path}: cannot be read as {suffix[1:]}: {exc}") from exc
    raise ContractError(f"{path}: unsupported file type '{suffix}' (expected .parquet, .csv or .tsv)")


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if value is pd.NaT:
        return True
    return isinstance(value, str) and value.strip() == ""


def _parse_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
    raise ValueError(f"expected an integer, got {value!r}")


def _parse_optional_str(value: object) -> str | None:
    if _is_missing(value):
        return None
    if isinstance(value, (str, int, np.integer)):
        return str(value).strip()
    raise ValueError(f"expected text, got {value!r}")


def _parse_tags(value: object) -> list[str]:
    if _is_missing(value):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                # KuaiRec writes unquoted lists: [tag a,tag b]
                items = [t for t in text[1:-1].split(",")] if text.endswith("]") else None
            if items is None or not isinstance(items, list):
                raise ValueError(f"expected a list of tags, got {value!r}")
        else:
            items = text.split("|")
    else:
        raise ValueError(f"expected a list of tags, got {value!r}")
    tags = []
    for item in items:
        if not isinstance(item, (str, int, np.integer)):
            raise ValueError(f"tag {item!r} is not text")
        tag = str(item).strip()
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def _parse_ts(value: object) -> pd.Timestamp:
    if _is_missing(value):
        raise ValueError("missing timestamp")
    try:
        if isinstance(value, (int, np.integer, float, np.floating)) or (
            isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit()
        ):
            ts = pd.Timestamp(float(value), unit="s", tz="UTC")
        else:
            ts = pd.Timestamp(value)
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"not a timestamp: {value!r}") from exc
    if not (pd.Timestamp("1970-01-01", tz="UTC") <= ts <= pd.Timestamp("2200-01-01", tz="UTC")):
        raise ValueError(f"timestamp out of range: {value!r}")
    return ts


def _check_columns(df: pd.DataFrame, required: Iterable[str], file: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ContractError(f"{file}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))}")


def _finish(rows: list[dict], errors: list[RowError], on_error: OnError, file: str, kind: str):
    if errors and on_error == "raise":
        raise ContractError(errors)
    if errors:
        logger.warning("%s: skipped %d invalid %s row(s); first: %s", file, len({e.row for e in errors}), kind, errors[0])
    return rows


def validate_videos(df: pd.DataFrame, file: str = "<videos>", on_error: OnError = "raise") -> tuple[pd.DataFrame, list[RowError]]:
    """Check a raw videos table against the contract; return the clean table and the problems found."""
    _check_columns(df, ["video_id", "title", "tags"], file)
    errors: list[RowError] = []
    rows: list[dict] = []
    seen: dict[int, int] = {}
    records = df.to_dict("records")
    for i, raw in enumerate(records, start=1):
        row_errors: list[RowError] = []
        out: dict = {}

        def field(name: str, parse, default=None):
            if name not in raw:
                return default
            try:
                return parse(raw[name])
            except ValueError as exc:
                row_errors.append(RowError(file, i, name, str(exc)))
                return default

        out["video_id"] = field("video_id", _parse_int)
        if out["video_id"] is not None:
            if out["video_id"] < 0:
                row_errors.append(RowError(file, i, "video_id", f"must be >= 0, got {out['video_id']}"))
            elif out["video_id"] in seen:
                row_errors.append(RowError(file, i, "video_id", f"duplicate of row {seen[out['video_id']]}"))
        title = raw.get("title")
        if _is_missing(title):
            out["title"] = ""
        elif isinstance(title, str):
            out["title"] = title.strip()
        else:
            row_errors.append(RowError(file, i, "title", f"expected text, got {title!r}"))
        out["cover_image"] = field("cover_image", _parse_optional_str)
        out["primary_class"] = field("primary_class", _parse_optional_str)
        out["secondary_class"] = field("secondary_class", _parse_optional_str)
        out["tags"] = field("tags", _parse_tags, [])
        out["publish_ts"] = (
            field("publish_ts", _parse_ts) if not _is_missing(raw.get("publish_ts")) else pd.Timestamp(0, unit="s", tz="UTC")
        )
        if row_errors:
            errors.extend(row_errors)
            continue
        seen[out["video_id"]] = i
        rows.append(out)
    rows = _finish(rows, errors, on_error, file, "video")
    table = pd.DataFrame(rows, columns=VIDEO_COLUMNS)
    table["video_id"] = table["video_id"].astype("int64")
    table["publish_ts"] = pd.to_datetime(table["publish_ts"], utc=True)
    return table, errors


def validate_interactions(
    df: pd.DataFrame, file: str = "<interactions>", on_error: OnError = "raise", rating_threshold: float | None = None
) -> tuple[pd.DataFrame, list[RowError]]:
    """Check a raw interactions table; ``rating`` becomes ``clicked`` when ``rating_threshold`` is given."""
    label = "clicked" if "clicked" in df.columns or rating_threshold is None else "rating"
    _check_columns(df, ["user_id", "video_id", label, "ts"], file)
    errors: list[RowError] = []
    rows: list[dict] = []
    for i, raw in enumerate(df.to_dict("records"), start=1):
        row_errors: list[RowError] = []
        out: dict = {}
        for name in ("user_id", "video_id"):
            try:
                out[name] = _parse_int(raw[name])
                if out[name] < 0:
                    row_errors.append(RowError(file, i, name, f"must be >= 0, got {out[name]}"))
            except ValueError as exc:
                row_errors.append(RowError(file, i, name, str(exc)))
        try:
            if label == "clicked":
                clicked = _parse_int(raw["clicked"])
                if clicked not in (0, 1):
                    raise ValueError(f"expected 0 or 1, got {raw['clicked']!r}")
            else:
                rating = float(raw["rating"])
                if math.isnan(rating):
                    raise ValueError("missing rating")
                clicked = int(rating >= rating_threshold)
            out["clicked"] = clicked
        except (ValueError, TypeError) as exc:
            row_errors.append(RowError(file, i, label, str(exc) if "expected" in str(exc) or "missing" in str(exc) else f"not a number: {raw[label]!r}"))
        try:
            out["ts"] = _parse_ts(raw["ts"])
        except ValueError as exc:
            row_errors.append(RowError(file, i, "ts", str(exc)))
        if row_errors:
            errors.extend(row_errors)
            continue
        rows.append(out)
    rows = _finish(rows, errors, on_error, file, "interaction")
    table = pd.DataFrame(rows, columns=INTERACTION_COLUMNS)
    table = table.astype({"user_id": "int64", "video_id": "int64", "clicked": "int8"})
    table["ts"] = pd.to_datetime(table["ts"], utc=True)
    return table, errors


def load_videos(path: str | Path, on_error: OnError = "raise") -> pd.DataFrame:
    """Read and validate a videos table (Parquet or CSV). Relative cover paths resolve against the file's folder."""
    path = Path(path)
    table, _ = validate_videos(read_table(path), str(path), on_error)
    covers = table["cover_image"]
    table["cover_image"] = [
        None if c is None else str(c if Path(c).is_absolute() else (path.parent / c)) for c in covers
    ]
    return table


def load_interactions(path: str | Path, on_error: OnError = "raise", rating_threshold: float | None = None) -> pd.DataFrame:
    """Read and validate an interactions table (Parquet or CSV)."""
    path = Path(path)
    table, _ = validate_interactions(read_table(path), str(path), on_error, rating_threshold)
    return table


def write_videos(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a videos table that meets the contract as Parquet (the format every stage prefers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table[VIDEO_COLUMNS].to_parquet(path, index=False)
    return path
