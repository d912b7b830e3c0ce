"""KuaiRec adapter: read KuaiRec's caption/category file into the videos contract.

Usage::

    topicfs topics learn --dataset kuairec --data ../shared/data/kuairec

Mapping (KuaiRec, Gao et al., CIKM 2022, CC BY-SA 4.0 — the project ships none of it)::

    manual_cover_text, caption -> title: "<cover text>。<caption>" (the cover text alone when there is no
                                  caption; with cover_text=False the caption only)
    first_level_category_id    -> primary_class
    second_level_category_id   -> secondary_class
    topic_tag                  -> tags
    (no cover images)          -> cover_image missing
    (no publish time)          -> publish_ts = 1970-01-01

KuaiRec writes unknown values as ``-124`` / ``UNKNOWN``: they become missing values, never a class
of their own. Some captions contain bare carriage returns, which CSV readers take for line breaks;
they are read as spaces so every one of the 10,728 videos keeps its row.

``manual_cover_text`` is the text an uploader wrote on the cover (known for 4,033 videos, 366 of them with no
caption). KuaiRec ships no cover images, so it is the only view of the cover we have; it goes first because it
is short (median 7 characters) and titles are truncated at ``mmoe.max_title_tokens``.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import pandas as pd

from topicfs.contracts import ContractError, OnError, validate_videos

logger = logging.getLogger(__name__)

CAPTION_FILE = "kuairec_caption_category.csv"
UNKNOWN_VALUES = {"-124", "UNKNOWN", ""}
REQUIRED = ["video_id", "caption", "topic_tag", "first_level_category_id", "second_level_category_id"]


def _known(value: str) -> str | None:
    value = value.strip()
    return None if value in UNKNOWN_VALUES else value


def _title(caption: str, cover_text: str | None) -> str:
    caption = caption.strip()
    if not cover_text or cover_text in caption:
        return caption
    return f"{cover_text}。{caption}" if caption else cover_text


def load_kuairec(path: str | Path, on_error: OnError = "raise", cover_text: bool = True) -> pd.DataFrame:
    """Read ``kuairec_caption_category.csv`` (or the folder holding it) as a videos table.

    ``cover_text``: put the known ``manual_cover_text`` in front of the caption (False: the caption only).
    """
    path = Path(path)
    file = path / CAPTION_FILE if path.is_dir() else path
    if not file.exists():
        raise ContractError(f"{file}: no such file (expected KuaiRec's {CAPTION_FILE})")
    text = file.read_bytes().decode("utf-8").replace("\r\n", "\n").replace("\r", " ")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise ContractError(f"{file}: missing column(s) {', '.join(missing)}; is this KuaiRec's {CAPTION_FILE}?")
    rows = [
        {
            "video_id": raw["video_id"],
            "title": _title(raw["caption"] or "", _known(raw.get("manual_cover_text") or "") if cover_text else None),
            "cover_image": None,
            "primary_class": _known(raw["first_level_category_id"] or ""),
            "secondary_class": _known(raw["second_level_category_id"] or ""),
            "tags": raw["topic_tag"] or "[]",
            "publish_ts": "1970-01-01T00:00:00Z",  # KuaiRec has no publish times: known from the epoch on
        }
        for raw in reader
    ]
    videos, errors = validate_videos(pd.DataFrame(rows), str(file), on_error)
    logger.info(
        "KuaiRec: %d videos, %d primary and %d secondary classes, %.0f%% without tags",
        len(videos),
        videos["primary_class"].nunique(),
        videos["secondary_class"].nunique(),
        100 * (videos["tags"].map(len) == 0).mean(),
    )
    return videos
