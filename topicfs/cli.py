"""The one command-line entry point: ``topicfs <stage> <command>``; ``topicfs --help`` lists them."""

from __future__ import annotations

import json

import typer

from topicfs.settings import get_settings

app = typer.Typer(
    help="Topic Feature Store: learn multimodal video topics offline, serve them through Feast, keep topic queues live from Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _configure(verbose: bool = typer.Option(False, "--verbose", "-v", help="log debug messages")) -> None:
    from pydantic import ValidationError

    from topicfs.logs import configure_logging

    try:
        settings = get_settings()
    except ValidationError as exc:  # one line per bad TOPICFS_* variable, no traceback
        for error in exc.errors():
            typer.echo(f"error: TOPICFS_{'__'.join(str(part).upper() for part in error['loc'])}: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    # text or JSON lines (TOPICFS_LOGGING__FORMAT); gensim, Feast and httpx's per-step INFO lines only with -v
    configure_logging(settings.logging, verbose)


@app.command("settings")
def show_settings() -> None:
    """Print every setting with its current value (set them with TOPICFS_<SECTION>__<FIELD> variables)."""
    typer.echo(json.dumps(get_settings().model_dump(mode="json"), indent=2))


@app.command("demo")
def demo(
    users: int = typer.Option(3, min=1, help="users whose candidates are printed at the end"),
    stream_messages: int = typer.Option(20000, min=1, help="messages of the synthetic click stream the worker consumes"),
) -> None:
    """Run every stage end to end on a synthetic catalogue: topics, MRLM, Feast, the stream, candidates, a ranker (stops what it starts)."""
    from topicfs.demo import run_demo

    run_demo(get_settings(), typer.echo, n_users_shown=users, stream_messages=stream_messages)


def _register_stages() -> None:
    # Each stage owns its sub-app; importing them is cheap (heavy libraries load inside the commands).
    from offline_jobs.mrlm_cli import app as mrlm_app
    from offline_jobs.topic_cli import app as topics_app
    from serving.cli import app as serving_app
    from stream.cli import app as stream_app
    from topicfs.feast_cli import app as feast_app

    app.add_typer(topics_app, name="topics")
    app.add_typer(mrlm_app, name="mrlm")
    app.add_typer(feast_app, name="feast")
    app.add_typer(stream_app, name="stream")
    app.add_typer(serving_app, name="serve")


_register_stages()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
