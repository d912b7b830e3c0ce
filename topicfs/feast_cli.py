"""``topicfs feast ...``: register the feature repo in Feast and read ranker features."""

from __future__ import annotations

import logging
from typing import Optional

import typer

from topicfs.settings import get_settings

logger = logging.getLogger(__name__)

app = typer.Typer(help="Feast feature repo: register + materialize to Redis, fast ranker reads.", no_args_is_help=True)


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=1)


@app.command("register")
def register(
    read: int = typer.Option(3, help="videos to print one ranker read for afterwards (0: none)"),
) -> None:
    """Check the offline tables, apply feature_repo/ and materialize it to Redis (safe to re-run)."""
    from topicfs.feature_client import PackedFeatureClient
    from topicfs.feature_registry import RegistrationError, format_ranker_read, load_store, register_and_materialize, sample_video_ids

    settings = get_settings()
    try:
        report = register_and_materialize(settings)
        typer.echo(report.summary())
        if read > 0:
            store = load_store(settings)
            batch = PackedFeatureClient(store, settings.feast.ranker_service).read(sample_video_ids(settings, store, read))
            typer.echo(format_ranker_read(batch))
    except (RegistrationError, ConnectionError) as error:
        _fail(error)


@app.command("read")
def read(
    video_id: Optional[list[int]] = typer.Option(None, "--video-id", help="video ids to read (default: the first --count videos)"),
    count: int = typer.Option(3, help="videos to read when no --video-id is given"),
    service: Optional[str] = typer.Option(None, help="packed feature service (default: setting feast.ranker_service)"),
) -> None:
    """Print one ranker read through the packed fast path."""
    from topicfs.feature_client import PackedFeatureClient
    from topicfs.feature_registry import RegistrationError, format_ranker_read, load_store, sample_video_ids

    settings = get_settings()
    try:
        store = load_store(settings)
        ids = video_id or sample_video_ids(settings, store, count)
        batch = PackedFeatureClient(store, service or settings.feast.ranker_service).read(ids)
        typer.echo(format_ranker_read(batch))
    except (RegistrationError, ConnectionError, RuntimeError) as error:
        _fail(error)


@app.command("verify")
def verify(
    sample: int = typer.Option(200, min=1, help="ids to compare: up to this many from Feast's hashes plus up to this many packed records"),
    service: Optional[str] = typer.Option(None, help="packed feature service (default: setting feast.ranker_service)"),
    repair: bool = typer.Option(False, "--repair", help="rewrite the differing records from Feast's hashes"),
) -> None:
    """Compare packed records with Feast's get_online_features; exit 1 when some still differ."""
    from topicfs.feature_client import verify_packed
    from topicfs.feature_registry import RegistrationError, load_store

    settings = get_settings()
    try:
        report = verify_packed(load_store(settings), service or settings.feast.ranker_service, sample, repair=repair)
    except (RegistrationError, ConnectionError, RuntimeError, ValueError) as error:
        _fail(error)
    typer.echo(report.summary())
    if (report.remaining if repair else len(report.differing_ids)) > 0:
        raise typer.Exit(code=1)
