"""Small helpers every offline job uses to write an artefact with its provenance beside it.

An artefact (a saved model folder or a Parquet table) gets a JSON sidecar holding the config that made
it and a fingerprint of the data it was made from, so a reader can tell whether two artefacts came
from the same inputs without opening them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


def fingerprint_arrays(arrays: Iterable[np.ndarray]) -> str:
    """sha256 over the dtype, shape and bytes of each array, in order (hex, first 16 characters).

    Same values in the same layout give the same fingerprint in every process and on every machine of
    the same byte order.
    """
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def fingerprint_token_lists(token_lists: Iterable[Iterable[str]]) -> str:
    """sha256 over a list of string lists (e.g. the tags of each video), order kept (hex, 16 characters)."""
    digest = hashlib.sha256()
    for tokens in token_lists:
        # \x1f / \x1e (unit / record separators) cannot be confused with text inside a tag
        digest.update("\x1f".join(tokens).encode("utf-8"))
        digest.update(b"\x1e")
    return digest.hexdigest()[:16]


def fingerprint_table(table: pa.Table) -> str:
    """sha256 of a pyarrow table's values and schema, via its Arrow IPC stream (hex, 16 characters)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(memoryview(sink.getvalue())).hexdigest()[:16]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (what every ``created`` column holds)."""
    return datetime.now(timezone.utc)


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented UTF-8 JSON; readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, ensure_ascii=False, indent=2, default=str)
        tmp_name = handle.name
    os.replace(tmp_name, path)
    return path


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON sidecar, with the file name in the error when it is missing or broken."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
