"""``topicfs serve ...``: the candidate API, one-off candidate look-ups, ranker training, Table II and the demo."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Optional

import typer

from topicfs.settings import get_settings

logger = logging.getLogger(__name__)

app = typer.Typer(help="Candidate generation from the topic queues and topic-aware rankers (LR, EMLP, DCN).", no_args_is_help=True)


@app.command("api")
def run_api(
    host: Optional[str] = typer.Option(None, help="listen address (default: serving.api_host)"),
    port: Optional[int] = typer.Option(None, help="listen port (default: serving.api_port)"),
) -> None:
    """Serve GET /users/{user_id}/candidates?n= (OpenAPI at /docs) with uvicorn."""
    import uvicorn

    from serving.api import create_app

    settings = get_settings()
    uvicorn.run(create_app(settings), host=host or settings.serving.api_host, port=port or settings.serving.api_port, log_level="warning")


@app.command("ui")
def run_ui(
    host: Optional[str] = typer.Option(None, help="listen address (default: serving.ui_host)"),
    port: Optional[int] = typer.Option(None, min=1, max=65535, help="listen port (default: serving.ui_port)"),
) -> None:
    """Serve the topic browser: topics, queues, videos, users, stream health and plots (reads Redis, the tables, Feast)."""
    import socket

    import uvicorn

    from serving.ui import create_ui_app

    settings = get_settings()
    host, port = host or settings.serving.ui_host, port or settings.serving.ui_port
    with socket.socket() as probe:  # a clear error before the app is built, rather than uvicorn's exit 1
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            typer.echo(f"error: the topic browser cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
            raise typer.Exit(2) from exc
    app = create_ui_app(settings)
    typer.echo(f"topic browser at http://{host}:{port}/ (tables: {settings.paths.tables_dir}, Redis: {settings.redis.url.split('@')[-1]}); Ctrl-C stops it")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@app.command("candidates")
def show_candidates(user_id: int = typer.Argument(..., min=0), n: Optional[int] = typer.Option(None, min=1, help="default N3")) -> None:
    """Print one user's candidates as JSON (reads the Redis in TOPICFS_REDIS__URL)."""
    from serving.candidates import CandidateGenerator, CandidateStoreUnavailable

    try:
        result = CandidateGenerator.from_settings(get_settings()).candidates(user_id, n)
    except CandidateStoreUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        json.dumps(
            {
                "user_id": result.user_id,
                "source": result.source,
                "topics": [t.__dict__ for t in result.topics],
                "candidates": [[c.video_id, c.topic_id] for c in result.candidates],
            }
        )
    )


@app.command("train")
def train(
    clicks: Path = typer.Option(..., exists=True, dir_okay=False, help="click log (Parquet/CSV): user_id, video_id, clicked, ts"),
    model: str = typer.Option("dcn", help="lr, emlp or dcn"),
    with_topics: bool = typer.Option(True, "--with-topics/--without-topics", help="use the topic features"),
    video_topics: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="VIDEO_TOPICS Parquet (when no --feature-repo)"),
    feature_repo: Optional[Path] = typer.Option(None, exists=True, file_okay=False, help="Feast repo serving the topic features"),
    feature_service: Optional[str] = typer.Option(None, help="feature service in --feature-repo to read instead of the video_topics features"),
    out: Optional[Path] = typer.Option(None, help="output folder (default: <models_dir>/ranker_<model>_<features>)"),
) -> None:
    """Train a ranker on a click log with point-in-time topic features from Feast and save it."""
    from serving.features import make_video_topics_repo
    from serving.training import train_ranker
    from topicfs.contracts import read_table

    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="ranker-train-") as work:
        if with_topics and feature_repo is None:
            if video_topics is None:
                raise typer.BadParameter("give --feature-repo (a Feast repo) or --video-topics (a VIDEO_TOPICS Parquet file) for topic features")
            feature_repo = make_video_topics_repo(Path(work) / "feature_repo", video_topics)
        try:
            saved = train_ranker(
                read_table(clicks), settings, feature_repo, model=model, with_topics=with_topics, feature_service=feature_service, out_dir=out
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"saved the {model} ranker ({'with' if with_topics else 'without'} topic features) to {saved}")


@app.command("table2")
def table2(
    dataset: list[str] = typer.Option(["synthetic"], help="synthetic and/or movielens (repeat the option)"),
    video_topics: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False, help="VIDEO_TOPICS Parquet of the dataset's videos; default: learn them with the offline jobs"
    ),
    feature_repo: Optional[Path] = typer.Option(None, exists=True, file_okay=False, help="Feast repo serving the topic features instead"),
    feature_service: Optional[str] = typer.Option(None, help="feature service in --feature-repo, e.g. ranker_v1"),
    seeds: int = typer.Option(1, min=1, help="average every AUC over this many seeds"),
    out: Optional[Path] = typer.Option(None, help="report folder (default: <reports_dir>)"),
    unseen_test_videos: bool = typer.Option(
        False, help="cold-video check: every test video gets a fresh id no training row has, as if newly published"
    ),
) -> None:
    """Table II: AUC of LR, EMLP, DCN without / with topic features on a time split; prints Markdown."""
    from serving.table2 import run_table2, save_report, to_markdown

    if video_topics is not None and len(dataset) > 1:
        raise typer.BadParameter("--video-topics belongs to one dataset; run one --dataset at a time with it")
    settings = get_settings()
    out = out or settings.paths.reports_dir
    rows = []
    for name in dataset:
        # the learned topics stay in <out>/table2_<dataset>/video_topics.parquet, reusable with --video-topics
        rows += run_table2(
            name, settings, video_topics=video_topics, feature_repo=feature_repo, feature_service=feature_service, seeds=seeds,
            work_dir=out / f"table2_{name}", unseen_test_videos=unseen_test_videos,
        )
    path = save_report(rows, out)
    typer.echo(to_markdown(rows))
    typer.echo(f"\nwritten to {path}")


@app.command("demo")
def run_demo(
    ranker: Path = typer.Option(..., exists=True, file_okay=False, help="a saved ranker folder (topicfs serve train)"),
    feature_repo: Optional[Path] = typer.Option(None, exists=True, file_okay=False, help="Feast repo with the online topic features"),
    feature_service: Optional[str] = typer.Option(None, help="feature service of --feature-repo holding video_topics, e.g. ranker_v1 (packed: one MGET)"),
    users: list[int] = typer.Option([0, 1, 2], "--user", help="users to show (repeat the option)"),
    k: int = typer.Option(5, min=1, help="ranked results per user"),
) -> None:
    """Print candidates and ranked results for a few users (queues in TOPICFS_REDIS__URL, filled by the stream)."""
    from serving.candidates import CandidateStoreUnavailable
    from serving.ranking import demo_text

    try:
        typer.echo(demo_text(get_settings(), feature_repo, ranker, users, k=k, feature_service=feature_service))
    except CandidateStoreUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
