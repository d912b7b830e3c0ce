"""The one command-line entry point: ``topicfs <stage> <command>``; ``topicfs --help`` lists them.

A problem the user can fix (:class:`topicfs.errors.UserError`: bad input files, a bad ``TOPICFS_*`` value, a
missing step; and every usage error: an unknown option or choice, a missing option) is printed as one line
``error: …`` on stderr with exit code 2 and no traceback; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import typer

from topicfs.errors import UserError, mask_secrets
from topicfs.settings import get_settings

app = typer.Typer(
    help="Topic Feature Store: learn multimodal video topics offline, serve them through Feast, keep topic queues live from Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

VERBOSE_FLAGS = ("--verbose", "-v")


@app.callback()
def _configure(verbose: bool = typer.Option(False, "--verbose", "-v", help="log debug messages; show the traceback of an error")) -> None:
    from topicfs.logs import configure_logging

    # text or JSON lines (TOPICFS_LOGGING__FORMAT); gensim, Feast, httpx and faiss INFO lines only with -v.
    # A bad TOPICFS_* value raises topicfs.settings.SettingsError here: one line from main().
    settings = get_settings()
    configure_logging(settings.logging, verbose)
    # relative paths in settings mean this folder, for this process and every child it starts
    settings.resolve_paths(Path.cwd())


@app.command("settings")
def show_settings() -> None:
    """Print every setting with its current value, passwords masked (set them with TOPICFS_<SECTION>__<FIELD> variables)."""
    from topicfs.settings import settings_for_display

    typer.echo(json.dumps(settings_for_display(get_settings()), indent=2))


@app.command("demo")
def demo(
    users: int = typer.Option(3, min=1, help="users whose candidates are printed at the end"),
    stream_messages: int = typer.Option(20000, min=1, help="messages of the synthetic click stream the worker consumes"),
    serve: bool = typer.Option(False, "--serve", help="at the end, serve the topic browser on the demo's state until Ctrl-C"),
) -> None:
    """Run every stage end to end on a synthetic catalogue: topics, MRLM, Feast, the stream, candidates, a ranker (stops what it starts)."""
    from topicfs_app.demo import run_demo

    run_demo(get_settings(), typer.echo, n_users_shown=users, stream_messages=stream_messages, serve=serve)


def deprecated(command: Callable, new_name: str) -> Callable:
    """``command`` under its old name: same options, plus one line on stderr naming the new one."""

    @functools.wraps(command)
    def alias(*args, **kwargs):
        typer.echo(f"deprecated: use `{new_name}` (this name goes away in the next release)", err=True)
        return command(*args, **kwargs)

    alias.__doc__ = f"Deprecated: use `{new_name}`. {command.__doc__ or ''}"
    return alias


def _register_stages() -> None:
    # Each stage owns its sub-app; importing them is cheap (heavy libraries load inside the commands).
    from offline_jobs import mrlm_cli, offline_cli
    from offline_jobs.topic_cli import app as topics_app
    from serving.cli import app as serving_app
    from stream.cli import app as stream_app
    from topicfs.feast_cli import app as feast_app

    offline_cli.register(mrlm_cli.app)
    app.add_typer(topics_app, name="topics")
    app.add_typer(offline_cli.app, name="offline")
    app.add_typer(feast_app, name="feast")
    app.add_typer(stream_app, name="stream")
    app.add_typer(serving_app, name="serve")

    # the names of the previous release, hidden from --help
    serving_app.command("train", hidden=True)(deprecated(offline_cli.train_ranker_command, "topicfs offline train-ranker"))
    serving_app.command("table2", hidden=True)(deprecated(offline_cli.table2_command, "topicfs offline table2"))
    old_mrlm = typer.Typer(help="Deprecated: `topicfs offline mrlm`.", no_args_is_help=True)
    for name, command in (("train", mrlm_cli.train), ("evaluate", mrlm_cli.evaluate), ("refresh", mrlm_cli.refresh)):
        old_mrlm.command(name)(deprecated(command, f"topicfs offline mrlm {name}"))
    app.add_typer(old_mrlm, name="mrlm", hidden=True)


_register_stages()


def _one_line(text: str) -> str:
    return " ".join(mask_secrets(text).split())


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI; a user error is one ``error: …`` line with exit code 2 (``--verbose``: and its traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args or (bool(args) and args[0] == "-v")
    if "--verbose" in args and args[0] != "--verbose":  # accepted anywhere, as users type it after the command
        args = ["--verbose"] + [a for a in args if a != "--verbose"]
    try:
        code = app(args=args, prog_name="topicfs", standalone_mode=False)
    except typer.TyperException as exc:  # unknown option / choice, missing option: typer would print a usage box
        message = _one_line(exc.format_message()).replace("Value error, ", "")
        if not message:  # a group called without a command: its help is printed already
            sys.exit(getattr(exc, "exit_code", 2))
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        typer.echo(f"error: {message}{where}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except UserError as exc:
        if verbose:
            traceback.print_exc()
        typer.echo(f"error: {_one_line(str(exc))}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
