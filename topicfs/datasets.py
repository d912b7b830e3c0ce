"""One data interface for every job: ``--dataset file --videos V --interactions I`` (or a built-in dataset).

Every offline command takes the same options (``topicfs topics learn``, ``topicfs offline train-ranker``,
``topicfs offline table2``, ``topicfs offline mrlm ...``)::

    --dataset file               a fixed choice: synthetic | kuairec | movielens | file (each command lists its own)
    --videos PATH (or --data)    the videos table of topicfs.contracts (Parquet or CSV)
    --interactions PATH          the interactions table (the click log; ``--clicks`` for ranker training)
    --on-error raise|skip        raise: stop listing the first ten problems; skip: drop bad rows, print a count per reason
    --name NAME                  the dataset's name in report paths (default: the folder of the videos file)

Reports go to ``<reports_dir>/<what>_<name>/``. The folder remembers which files it was made from
(``dataset.json``); a second dataset with the same name (two ``data/videos.parquet`` in different
places) is refused with a message asking for ``--name`` instead of overwriting the first one's reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer

from topicfs.contracts import OnError, read_interactions, read_videos
from topicfs.errors import UserError


DATASET_MARKER = "dataset.json"


class OnErrorChoice(str, Enum):
    """What a loader does with rows that break the contract."""

    raise_ = "raise"
    skip = "skip"


# The shared options above as command parameter types, one wording for every command:
# ``videos: VideosOption = None``, ``on_error: OnErrorOption = OnErrorChoice.raise_``.
VideosOption = Annotated[
    Optional[Path], typer.Option("--videos", "--data", help="videos file (Parquet/CSV) meeting the videos contract, for --dataset file")
]
InteractionsOption = Annotated[
    Optional[Path],
    typer.Option(help="interactions file (Parquet/CSV): user_id, video_id, clicked 0/1 (or rating), ts; for --dataset file"),
]
OnErrorOption = Annotated[
    OnErrorChoice, typer.Option(help="raise: stop at bad rows, listing the first ten; skip: drop them and print a count per reason")
]
NameOption = Annotated[
    Optional[str], typer.Option(help="name of the dataset in report paths (default: the folder holding the videos file)")
]


@dataclass(frozen=True)
class DataFiles:
    """A user's dataset: the two contract files, how bad rows are handled, and the name reports carry."""

    videos: Path | None
    interactions: Path | None
    name: str
    on_error: OnError = "raise"

    def sources(self) -> dict[str, str | None]:
        return {
            "videos": str(self.videos.absolute()) if self.videos else None,
            "interactions": str(self.interactions.absolute()) if self.interactions else None,
        }

    def load_videos(self) -> pd.DataFrame:
        if self.videos is None:
            raise UserError("this step needs the videos table: give --videos PATH (Parquet or CSV meeting the videos contract)")
        return read_videos(self.videos, self.on_error)[0]  # skipped rows: one warning with a count per reason

    def load_interactions(self, rating_threshold: float | None = None) -> pd.DataFrame:
        if self.interactions is None:
            raise UserError("this step needs the click log: give --interactions PATH (Parquet or CSV meeting the interactions contract)")
        return read_interactions(self.interactions, self.on_error, rating_threshold)[0]


def dataset_name(videos: Path | None, interactions: Path | None = None, name: str | None = None) -> str:
    """``name``, else the folder holding the videos (or the interactions) file."""
    if name:
        if "/" in name or name in {".", ".."}:
            raise UserError(f"--name {name!r}: give a plain name without '/', it becomes part of a folder name")
        return name
    anchor = videos or interactions
    if anchor is None:
        raise UserError("--dataset file needs --videos PATH (and --interactions PATH where the step reads clicks)")
    return anchor.absolute().parent.name or "dataset"


def data_files(
    videos: Path | None,
    interactions: Path | None,
    *,
    name: str | None = None,
    on_error: OnErrorChoice | str = "raise",
    need_videos: bool = True,
    need_interactions: bool = True,
) -> DataFiles:
    """Check the options of ``--dataset file`` (each missing one is a one-line error naming the option)."""
    missing = [
        option
        for option, needed, value in (("--videos", need_videos, videos), ("--interactions", need_interactions, interactions))
        if needed and value is None
    ]
    if missing:
        raise UserError(
            f"--dataset file needs {' and '.join(missing)}: the videos table and/or the click log meeting the contracts "
            "(README, 'Data contracts'); e.g. --videos data/videos.parquet --interactions data/interactions.parquet"
        )
    return DataFiles(videos, interactions, dataset_name(videos, interactions, name), OnErrorChoice(on_error).value)  # type: ignore[arg-type]


def report_dir(base: Path, name: str, sources: dict[str, str | None]) -> Path:
    """``base/name``, created, after checking it holds no other dataset's reports (then a UserError asks for --name)."""
    folder = Path(base) / name
    marker = folder / DATASET_MARKER
    if marker.is_file():
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        if recorded != sources:
            shown = ", ".join(f"{key} {value}" for key, value in recorded.items() if value)
            raise UserError(
                f"{folder} holds the reports of another dataset ({shown}); pass --name to give this one its own folder, "
                "or delete that folder to replace them"
            )
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(sources, indent=2) + "\n", encoding="utf-8")
    return folder


def check_topic_count(n_videos: int, n_topics: int) -> None:
    """K topics need at least K videos (k-means puts one centre on a video at least)."""
    if n_topics > n_videos:
        raise UserError(
            f"topics.n_topics (K = {n_topics}) is larger than the catalogue ({n_videos} videos): "
            f"set TOPICFS_TOPICS__N_TOPICS to at most {n_videos} (several videos per topic work better)"
        )
