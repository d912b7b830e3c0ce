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
    publish_ts       timestamp (UTC), required

Interactions (one row per exposure or rating)::

    user_id   int64 >= 0
    video_id  int64 >= 0
    clicked   0/1   (or ``rating``: a number, turned into clicked by the caller's threshold)
    ts        timestamp (UTC), required

Timestamps: an ISO 8601 text (a zone-less one is UTC), a Parquet timestamp, or a number of seconds since
1970-01-01 UTC (negative before it). Every instant Arrow's ``timestamp[us]`` holds is valid, 1920 as well
as 2200; a missing timestamp is an error, in both tables and in every loader (no silent fill): fill it
yourself, or drop the row with ``on_error="skip"``. A column holds ``datetime64[ns, UTC]``, or
``datetime64[us, UTC]`` when a value lies outside nanoseconds' 1677-2262.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from topicfs.errors import UserError

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

    @property
    def reason(self) -> str:
        """The kind of problem without the row's value, e.g. ``publish_ts: not a timestamp`` (what skip counts)."""
        kind = re.split(r",? got |: | of row | \(|; ", self.message, maxsplit=1)[0]
        return f"{self.field}: {kind}"


class ContractError(UserError, ValueError):
    """A table does not meet its contract. The message names file, row and field of the first problems."""

    def __init__(self, errors: list[RowError] | str):
        if isinstance(errors, str):
            self.errors: list[RowError] = []
            super().__init__(errors)
            return
        self.errors = errors
        if len(errors) == 1:
            super().__init__(f"{errors[0]}; fix it, or pass --on-error skip to drop the row")
            return
        files = sorted({e.file for e in errors})
        shown = "; ".join(f"row {e.row}: field '{e.field}': {e.message}" for e in errors[:MAX_REPORTED_ERRORS])
        first = f"the first {MAX_REPORTED_ERRORS}" if len(errors) > MAX_REPORTED_ERRORS else "they are"
        super().__init__(
            f"{', '.join(files)}: {len(errors)} invalid value(s), {first}: {shown}. Fix them, or pass --on-error skip to drop those rows"
        )


def skipped_summary(errors: list[RowError]) -> str:
    """What ``on_error="skip"`` dropped: rows per file and a count per reason, one line."""
    if not errors:
        return ""
    rows = {(e.file, e.row) for e in errors}
    reasons = Counter(e.reason for e in errors)
    files = ", ".join(sorted({e.file for e in errors}))
    detail = ", ".join(f"{n} x {reason}" for reason, n in reasons.most_common())
    return f"skipped {len(rows)} invalid row(s) of {files}: {detail}"


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a Parquet or CSV file as it is, with a clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.exists():
        raise ContractError(f"{path}: no such file (check the path; relative paths start at {Path.cwd()})")
    if path.is_dir():
        raise ContractError(f"{path}: is a folder, not a file; give the Parquet or CSV file inside it")
    suffix = path.suffix.lower()
    if suffix not in {".parquet", ".pq", ".csv", ".tsv"}:
        raise ContractError(f"{path}: unsupported file type '{suffix}' (expected .parquet, .csv or .tsv)")
    if path.stat().st_size == 0:
        raise ContractError(f"{path}: the file is empty (0 bytes); write the table with its header row into it")
    if suffix in {".parquet", ".pq"}:
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic != b"PAR1":
            raise ContractError(f"{path}: not a Parquet file (it does not start with PAR1); if it holds CSV text, name it .csv")
    try:
        if suffix in {".parquet", ".pq"}:
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise ContractError(f"{path}: the file is empty; write the table with its header row into it") from exc
    except Exception as exc:  # pyarrow and pandas raise many types; the user needs the file name
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ContractError(f"{path}: cannot be read as {suffix[1:]}: {first_line}") from exc
    if table.empty:
        raise ContractError(f"{path}: no rows (only a header); the table needs at least one row")
    return table


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


MISSING_TIMESTAMP = "missing timestamp (it is required: fill it in, or drop the row with --on-error skip)"
# 1e11 s is the year 5138: a larger epoch is milliseconds (1.7e12 today) or microseconds, never seconds
EPOCH_SECONDS_LIMIT = 1e11
NS_RANGE = (pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC"))


def _parse_ts(value: object) -> pd.Timestamp:
    """A UTC timestamp from text, a timestamp or epoch seconds; any instant Arrow's timestamp[us] holds."""
    if _is_missing(value):
        raise ValueError(MISSING_TIMESTAMP)
    epoch = isinstance(value, (int, np.integer, float, np.floating)) or (
        isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit()
    )
    if epoch and abs(float(value)) >= EPOCH_SECONDS_LIMIT:
        raise ValueError(
            f"epoch timestamp {value!r} would be after the year 5138 in seconds: epoch timestamps are seconds, "
            "and this looks like milliseconds or microseconds (divide by 1,000 or 1,000,000)"
        )
    try:
        if epoch:
            seconds = float(value)
            if not math.isfinite(seconds):
                raise ValueError(value)
            # microseconds, not pd.Timestamp(unit="s"): nanoseconds stop at 1677 and 2262
            ts = pd.Timestamp(np.datetime64(round(seconds * 1_000_000), "us")).tz_localize("UTC")
        else:
            ts = pd.Timestamp(value)
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime) as exc:
        raise ValueError(f"not a timestamp: {value!r}") from exc
    if ts is pd.NaT:
        raise ValueError(MISSING_TIMESTAMP)
    return ts


def _timestamp_column(values: list) -> pd.Series:
    """UTC timestamps as nanoseconds when they fit (what pandas and Feast mostly use), else microseconds."""
    series = pd.Series(values, dtype="datetime64[us, UTC]")
    if series.empty or (series.min() >= NS_RANGE[0] and series.max() <= NS_RANGE[1]):
        return series.astype("datetime64[ns, UTC]")
    return series


def _check_columns(df: pd.DataFrame, required: Iterable[str], file: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ContractError(
            f"{file}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))} "
            "(the columns are listed in the README's data contracts)"
        )


def _finish(rows: list[dict], errors: list[RowError], on_error: OnError, file: str, kind: str):
    if errors and on_error == "raise":
        raise ContractError(errors)
    if errors:
        logger.warning("%s", skipped_summary(errors))
    return rows


def validate_videos(df: pd.DataFrame, file: str = "<videos>", on_error: OnError = "raise") -> tuple[pd.DataFrame, list[RowError]]:
    """Check a raw videos table against the contract; return the clean table and the problems found."""
    _check_columns(df, ["video_id", "title", "tags", "publish_ts"], file)
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
        out["publish_ts"] = field("publish_ts", _parse_ts)
        if row_errors:
            errors.extend(row_errors)
            continue
        seen[out["video_id"]] = i
        rows.append(out)
    rows = _finish(rows, errors, on_error, file, "video")
    table = pd.DataFrame(rows, columns=VIDEO_COLUMNS)
    table["video_id"] = table["video_id"].astype("int64")
    table["publish_ts"] = _timestamp_column(table["publish_ts"].tolist())
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
            row_errors.append(
                RowError(file, i, label, str(exc) if "expected" in str(exc) or "missing" in str(exc) else f"not a number: {raw[label]!r}")
            )
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
    table["ts"] = _timestamp_column(table["ts"].tolist())
    return table, errors


def read_videos(path: str | Path, on_error: OnError = "raise") -> tuple[pd.DataFrame, list[RowError]]:
    """Read and validate a videos table (Parquet or CSV): the clean table and the problems of the rows dropped
    (``on_error="skip"``). Relative cover paths resolve against the file's folder."""
    path = Path(path)
    table, errors = validate_videos(read_table(path), str(path), on_error)
    covers = table["cover_image"]
    table["cover_image"] = [None if c is None else str(c if Path(c).is_absolute() else (path.parent / c)) for c in covers]
    return table, errors


def load_videos(path: str | Path, on_error: OnError = "raise") -> pd.DataFrame:
    """Read and validate a videos table (Parquet or CSV). Relative cover paths resolve against the file's folder."""
    return read_videos(path, on_error)[0]


def read_interactions(
    path: str | Path, on_error: OnError = "raise", rating_threshold: float | None = None
) -> tuple[pd.DataFrame, list[RowError]]:
    """Read and validate an interactions table (Parquet or CSV): the clean table and the problems of the rows dropped."""
    path = Path(path)
    return validate_interactions(read_table(path), str(path), on_error, rating_threshold)


def load_interactions(path: str | Path, on_error: OnError = "raise", rating_threshold: float | None = None) -> pd.DataFrame:
    """Read and validate an interactions table (Parquet or CSV)."""
    return read_interactions(path, on_error, rating_threshold)[0]


def write_videos(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a videos table that meets the contract as Parquet (the format every stage prefers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table[VIDEO_COLUMNS].to_parquet(path, index=False)
    return path
