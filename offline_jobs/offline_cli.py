"""``topicfs offline ...``: training and evaluation on a dataset — rankers, Table II, MRLM.

Every command takes the data interface of :mod:`topicfs.datasets`: ``--dataset`` (a fixed choice) and, for
``--dataset file``, ``--videos`` / ``--interactions`` files meeting the contracts, ``--on-error`` and ``--name``.
"""

from __future__ import annotations

import tempfile
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from topicfs.datasets import InteractionsOption, NameOption, OnErrorChoice, OnErrorOption, VideosOption, data_files, report_dir
from topicfs.errors import UserError
from topicfs.settings import get_settings

app = typer.Typer(help="Offline training and evaluation on a dataset: rankers, Table II, MRLM.", no_args_is_help=True)


class ClickDataset(str, Enum):
    """The datasets with a click log: ranker training and Table II."""

    synthetic = "synthetic"
    movielens = "movielens"
    file = "file"


def _check_topic_sources(video_topics: Path | None, feature_repo: Path | None) -> None:
    """A UserError when --video-topics is no file or --feature-repo no folder."""
    for option, path, want_dir in (("--video-topics", video_topics, False), ("--feature-repo", feature_repo, True)):
        if path is not None and not (path.is_dir() if want_dir else path.is_file()):
            raise UserError(f"{option} {path}: no such {'folder' if want_dir else 'file'}")


@app.command("train-ranker")
def train_ranker_command(
    dataset: ClickDataset = typer.Option(ClickDataset.file, help="file (the click log in --interactions), synthetic or movielens"),
    interactions: Optional[Path] = typer.Option(
        None,
        "--interactions",
        "--clicks",
        help="interactions file (Parquet/CSV): user_id, video_id, clicked 0/1 (or rating), ts; for --dataset file",
    ),
    on_error: OnErrorOption = OnErrorChoice.raise_,
    model: str = typer.Option("dcn", help="lr, emlp or dcn"),
    with_topics: bool = typer.Option(True, "--with-topics/--without-topics", help="use the topic features"),
    video_topics: Optional[Path] = typer.Option(
        None, help="VIDEO_TOPICS Parquet, e.g. <artifacts>/tables/video_topics.parquet (when no --feature-repo)"
    ),
    feature_repo: Optional[Path] = typer.Option(
        None, help="Feast repo serving the topic features (e.g. feature_repo after `topicfs feast register`)"
    ),
    feature_service: Optional[str] = typer.Option(
        None, help="feature service in --feature-repo to read instead of the video_topics features"
    ),
    out: Optional[Path] = typer.Option(None, help="output folder (default: <models_dir>/ranker_<model>_<features>)"),
) -> None:
    """Train a ranker on a click log with point-in-time topic features from Feast and save it."""
    from serving.rankers import MODELS

    if model not in MODELS:
        raise UserError(f"--model {model!r}: choose one of {', '.join(MODELS)}")
    _check_topic_sources(video_topics, feature_repo)
    if with_topics and feature_repo is None and video_topics is None:
        raise UserError(
            "a ranker with topic features needs --feature-repo (a Feast repo, e.g. feature_repo after `topicfs feast register`) "
            "or --video-topics (the VIDEO_TOPICS Parquet of `topicfs topics learn`); or pass --without-topics"
        )
    settings = get_settings()
    if dataset is ClickDataset.file:
        clicks = data_files(None, interactions, on_error=on_error, need_videos=False).load_interactions(settings.rankers.rating_threshold)
    else:
        from offline_jobs.table2 import movielens_dataset, synthetic_dataset

        _, entity = (synthetic_dataset if dataset is ClickDataset.synthetic else movielens_dataset)(settings)
        clicks = entity.rename(columns={"event_timestamp": "ts", "label": "clicked"})

    from serving.features import make_video_topics_repo
    from offline_jobs.ranker_training import train_ranker

    with tempfile.TemporaryDirectory(prefix="ranker-train-") as work:
        if with_topics and feature_repo is None:
            feature_repo = make_video_topics_repo(Path(work) / "feature_repo", video_topics)
        try:
            saved = train_ranker(
                clicks, settings, feature_repo, model=model, with_topics=with_topics, feature_service=feature_service, out_dir=out
            )
        except ValueError as exc:  # the rankers name what is wrong with the log or the features (empty, sizes, missing columns)
            raise UserError(str(exc)) from exc
    typer.echo(f"saved the {model} ranker ({'with' if with_topics else 'without'} topic features) to {saved}")


@app.command("table2")
def table2_command(
    dataset: list[ClickDataset] = typer.Option([ClickDataset.synthetic], help="synthetic, movielens and/or file (repeat the option)"),
    videos: VideosOption = None,
    interactions: InteractionsOption = None,
    on_error: OnErrorOption = OnErrorChoice.raise_,
    name: NameOption = None,
    video_topics: Optional[Path] = typer.Option(
        None, help="VIDEO_TOPICS Parquet of the dataset's videos; default: learn them with the offline jobs"
    ),
    feature_repo: Optional[Path] = typer.Option(None, help="Feast repo serving the topic features instead"),
    feature_service: Optional[str] = typer.Option(None, help="feature service in --feature-repo, e.g. ranker_v1"),
    seeds: int = typer.Option(1, min=1, help="average every AUC over this many seeds"),
    out: Optional[Path] = typer.Option(None, help="report root (default: <reports_dir>); each dataset writes table2_<name>/"),
    unseen_test_videos: bool = typer.Option(
        False, help="cold-video check: every test video gets a fresh id no training row has, as if newly published"
    ),
) -> None:
    """Table II: AUC of LR, EMLP, DCN without / with topic features on a time split; prints Markdown."""
    from offline_jobs.table2 import save_report, to_markdown

    if video_topics is not None and len(dataset) > 1:
        raise UserError("--video-topics belongs to one dataset; run one --dataset at a time with it")
    _check_topic_sources(video_topics, feature_repo)
    settings = get_settings()
    root = out or settings.paths.reports_dir
    jobs = []
    for choice in dict.fromkeys(dataset):  # each dataset once, in the given order
        if choice is ClickDataset.file:
            files = data_files(videos, interactions, name=name, on_error=on_error)
            jobs.append((choice.value, files.name, files.sources(), {"files": files}))
        else:
            jobs.append((choice.value, choice.value, {"dataset": choice.value}, {}))
    # check every report folder before the first (long) run, so a name clash stops at once
    folders = {label: report_dir(root, f"table2_{label}", sources) for _, label, sources, _ in jobs}

    from offline_jobs.table2 import run_table2

    rows = []
    for kind, label, _, options in jobs:
        # the learned topics stay in <root>/table2_<name>/video_topics.parquet, reusable with --video-topics
        found = run_table2(
            kind,
            settings,
            video_topics=video_topics,
            feature_repo=feature_repo,
            feature_service=feature_service,
            seeds=seeds,  # type: ignore[arg-type]
            work_dir=folders[label],
            unseen_test_videos=unseen_test_videos,
            **options,
        )
        save_report(found, folders[label])
        rows += found
    typer.echo(to_markdown(rows))
    typer.echo("\nwritten to " + ", ".join(str(folder / "table2.md") for folder in folders.values()))


def register(mrlm_app: typer.Typer) -> None:
    """Mount the MRLM commands under ``topicfs offline mrlm``."""
    app.add_typer(mrlm_app, name="mrlm")
