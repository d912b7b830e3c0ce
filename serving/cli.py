"""``topicfs serve ...``: the candidate API, one-off candidate look-ups and the demo (training and Table II: ``topicfs offline``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer

from topicfs.settings import get_settings

logger = logging.getLogger(__name__)

app = typer.Typer(help="Candidate generation from the topic queues and topic-aware rankers (LR, EMLP, DCN).", no_args_is_help=True)


@app.command("api")
def run_api(
    host: Optional[str] = typer.Option(None, help="listen address (default: serving.api_host)"),
    port: Optional[int] = typer.Option(None, min=1, max=65535, help="listen port (default: serving.api_port)"),
) -> None:
    """Serve GET /users/{user_id}/candidates?n= (OpenAPI at /docs, metrics at /metrics) with uvicorn; logs its address
    when listening, and one line per request unless serving.access_log is off."""
    import uvicorn

    from serving.api import create_app, json_http_protocol

    settings = get_settings()
    host, port = host or settings.serving.api_host, port or settings.serving.api_port
    api = create_app(settings)
    bad_requests = api.state.requests.labels("400").inc
    # log_config=None: uvicorn's lines go through the process's log set-up (text or JSON, topicfs.logs)
    config = uvicorn.Config(
        api,
        host=host,
        port=port,
        log_config=None,
        log_level="warning",
        access_log=settings.serving.access_log,
        http=json_http_protocol(bad_requests),
    )
    if settings.serving.access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    _serve_logging_address(config, "candidate API", "GET /users/{user_id}/candidates, docs /docs, metrics /metrics")


def _serve_logging_address(config, what: str, routes: str) -> None:
    """Run uvicorn with ``config``, logging the address it really listens on once the socket is bound."""
    import uvicorn

    class AddressLoggingServer(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            for server in getattr(self, "servers", []):
                for sock in server.sockets:
                    address = sock.getsockname()
                    logger.info(
                        "%s listening on http://%s:%d (%s; access log %s)",
                        what,
                        address[0],
                        address[1],
                        routes,
                        "on" if config.access_log else "off",
                    )

    AddressLoggingServer(config).run()


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
    typer.echo(
        f"topic browser at http://{host}:{port}/ (tables: {settings.paths.tables_dir}, Redis: {settings.redis.url.split('@')[-1]}); Ctrl-C stops it"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")


@app.command("candidates")
def show_candidates(
    user_id: int = typer.Argument(..., min=0, max=2**63 - 1), n: Optional[int] = typer.Option(None, min=1, max=1_000_000, help="default N3")
) -> None:
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


@app.command("demo")
def run_demo(
    ranker: Path = typer.Option(..., exists=True, file_okay=False, help="a saved ranker folder (topicfs offline train-ranker)"),
    feature_repo: Optional[Path] = typer.Option(None, exists=True, file_okay=False, help="Feast repo with the online topic features"),
    feature_service: Optional[str] = typer.Option(
        None, help="feature service of --feature-repo holding video_topics, e.g. ranker_v1 (packed: one MGET)"
    ),
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
