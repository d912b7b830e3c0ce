"""``topicfs stream ...``: the embedded broker, a worker, replays, video topics, the demo."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

import typer

from topicfs.settings import get_settings

logger = logging.getLogger(__name__)

app = typer.Typer(help="Streaming updater: Faust workers keep topic queues, CTR and exposure counts live from Kafka.", no_args_is_help=True)


@app.command("broker")
def broker_command(port: int = typer.Option(9092, min=1, max=65535, help="port of the embedded tansu broker")) -> None:
    """Run the embedded Kafka-protocol broker (tansu, in memory) in the foreground; Ctrl-C or SIGTERM stops it."""
    import threading

    from stream.broker import EmbeddedBroker
    from topicfs.services import is_listening

    if is_listening("127.0.0.1", port):
        typer.echo(f"error: port {port} is already in use on 127.0.0.1 (choose another with --port)", err=True)
        raise typer.Exit(2)
    # The broker runs in a session of its own (a terminal's Ctrl-C reaches only us), so we stop it on either signal.
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker.start(port)
    try:
        typer.echo(f"embedded broker on {broker.bootstrap_servers} (Ctrl-C stops it)")
        while not stop.wait(1.0):
            if broker.process.poll() is not None:
                typer.echo(f"error: the broker exited on its own with code {broker.process.returncode}", err=True)
                raise typer.Exit(1)
    finally:
        broker.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@app.command("worker")
def worker_command(loglevel: str = typer.Option("info", help="Faust log level")) -> None:
    """Run one worker (starts the embedded broker / a local Redis when settings allow and none answers)."""
    from stream.app import run_worker
    from stream.security import KafkaSecurityError

    try:
        run_worker(get_settings(), loglevel=loglevel)
    except KafkaSecurityError as exc:  # a wrong CA, password or port: one line, not a traceback
        _kafka_user_error(exc)


@app.command("pusher")
def pusher_command(
    parent_pid: int = typer.Option(None, help="exit when this process (the worker that started the pusher) is gone"),
) -> None:
    """Push the statistics the workers changed to the Feast online store every stream.push_interval_s, until Ctrl-C.

    A worker with stream.feast_repo_path starts one itself; run this by hand with stream.start_pusher=false.
    """
    from stream.pusher import run_pusher
    from topicfs.errors import UserError

    settings = get_settings()
    repo = settings.stream.feast_repo_path
    if repo is None or not (repo / "feature_store.yaml").is_file():
        found = "is not set" if repo is None else f"is {repo}, which holds no feature_store.yaml"
        raise UserError(
            f"stream.feast_repo_path {found}: the pusher needs a Feast repo to push to; set TOPICFS_STREAM__FEAST_REPO_PATH=feature_repo (the project's repo) or another Feast repo folder"
        )
    run_pusher(settings, parent_pid=parent_pid)


@app.command("health")
def health_command(
    pusher: bool = typer.Option(
        False, "--pusher", help="ask the pusher (stream.pusher_metrics_port) instead of the worker (stream.metrics_port)"
    ),
    timeout: float = typer.Option(3.0, min=0.1, help="seconds to wait for the answer"),
) -> None:
    """Print the /health report of the worker (or pusher) on this host; exit 1 when it does not answer (the image's HEALTHCHECK)."""
    import urllib.error
    import urllib.request

    config = get_settings().stream
    port = config.pusher_metrics_port if pusher else config.metrics_port
    if not port:
        setting = "PUSHER_METRICS_PORT" if pusher else "METRICS_PORT"
        typer.echo(f"error: TOPICFS_STREAM__{setting} is 0: the {'pusher' if pusher else 'worker'} serves no /health", err=True)
        raise typer.Exit(2)
    host = "127.0.0.1" if config.metrics_host in {"0.0.0.0", "::", ""} else config.metrics_host
    url = f"http://{host}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            report = json.loads(response.read())
    except (OSError, ValueError) as exc:
        typer.echo(f"error: no health report from {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(report))
    if not report.get("alive"):
        raise typer.Exit(1)


@app.command("replay")
def replay_command(
    events_file: Path = typer.Option(None, help="JSON-lines event file; without it a synthetic click stream is replayed"),
    rate: float = typer.Option(None, help="messages per second (default: as fast as possible)"),
    n_users: int = typer.Option(500, help="synthetic: users"),
    n_days: int = typer.Option(7, help="synthetic: days of refreshes"),
    max_messages: int = typer.Option(None, help="stop after this many messages"),
    publish_true_topics: bool = typer.Option(
        False,
        "--publish-true-topics",
        help="synthetic: first publish the catalogue's videos with their TRUE topics on the videos topic; workers then "
        "replace the learned topics in Redis with them (only for a stream without a topic job)",
    ),
) -> None:
    """Produce events into the events topic, keyed by user id, at a given rate.

    Publishes no video topics unless --publish-true-topics: the workers must know the videos already (the learned
    topics they load from paths.tables_dir, or `topicfs stream load-topics`); events naming unknown videos are dead-lettered.
    """
    from itertools import islice

    from stream.replay import produce, read_event_file
    from stream.synthetic_stream import synthetic_stream

    if events_file is not None and publish_true_topics:
        typer.echo("error: --publish-true-topics applies to the synthetic stream only, not to --events-file", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    config = settings.stream
    if events_file is not None:
        messages = read_event_file(events_file)
    else:
        videos, messages = synthetic_stream(settings, n_users=n_users, n_days=n_days)
        if publish_true_topics:
            asyncio.run(produce(settings.kafka, config.videos_topic, videos, key_field="video_id"))
    if max_messages:
        messages = islice(messages, max_messages)
    sent = asyncio.run(produce(settings.kafka, config.events_topic, messages, rate_per_s=rate, show_progress=True))
    typer.echo(json.dumps({"sent": sum(sent.values()), "per_partition": sent}))


@app.command("load-topics")
def load_topics_command(
    tables_dir: Path = typer.Option(None, help="folder holding video_topics.parquet (default: paths.tables_dir)"),
) -> None:
    """Load the offline VIDEO_TOPICS table into Redis ({prefix}:video:{id}:topics and the topic indexes)."""
    from stream.state import StreamStore
    from topicfs.keys import KeyLayout
    from topicfs.redis_client import async_client

    settings = get_settings()

    async def load() -> int:
        client = async_client(settings.redis)
        try:
            store = StreamStore(client, KeyLayout.from_config(settings.redis), settings.stream)
            return await store.load_video_topics_table(tables_dir or settings.paths.tables_dir)
        finally:
            await client.aclose()

    typer.echo(f"loaded topics of {asyncio.run(load())} videos")


@app.command("demo")
def demo_command(
    tables_dir: Path = typer.Option(None, help="folder with video_topics.parquet (learned topics); default: the synthetic true topics"),
    n_messages: int = typer.Option(20000, help="messages of the synthetic click stream to replay"),
) -> None:
    """Start the embedded broker and a worker, replay a synthetic click stream, print the top of a few topic queues, stop."""
    from stream.demo import run_demo_stream

    summary = run_demo_stream(get_settings(), tables_dir, n_messages)
    typer.echo(summary["text"])


def _kafka_user_error(exc: Exception) -> None:
    """One line ``error: ...`` and exit 2 for a setting, file or cluster problem the user can fix."""
    typer.echo(f"error: {' '.join(str(exc).split())}" if not str(exc).count("\n") else f"error: {exc}", err=True)
    raise typer.Exit(2)


@app.command("produce")
def produce_command(
    interactions: Path = typer.Option(
        ..., "--interactions", help="click log in the interactions contract (user_id, video_id, clicked or rating, ts): Parquet or CSV"
    ),
    window: float = typer.Option(
        60.0, min=0.001, help="seconds: a user's rows less than this after a refresh's first row belong to that refresh"
    ),
    rate: float = typer.Option(None, min=0.001, help="messages per second (default: as fast as possible)"),
    speedup: float = typer.Option(
        None, min=0.001, help="replay at the log's own pace divided by this (1 = real time, 60 = an hour per minute)"
    ),
    shift_to_now: bool = typer.Option(
        False,
        "--shift-to-now",
        help="move every timestamp by the same amount so the log's last event is now (for logs older than stream.min_event_ts_s)",
    ),
    on_error: str = typer.Option("raise", help="raise: stop at bad rows, listing the first ten; skip: drop them, with a count per reason"),
    id_prefix: str = typer.Option(None, help="prefix of the event ids (default: the file's name without extension)"),
) -> None:
    """Replay a click log into Kafka as the stream's events: feed refreshes per user and time window, one exposure
    message each plus one click message per click, keyed by user, in timestamp order (kafka-python producer)."""
    import time as _time

    from stream.kafka_tools import (
        KafkaToolError,
        check_event_times,
        check_topics,
        interactions_to_events,
        produce_events,
        read_interactions_file,
    )
    from stream.security import KafkaSecurityError
    from topicfs.contracts import ContractError

    settings = get_settings()
    if rate is not None and speedup is not None:
        _kafka_user_error(ValueError("--rate and --speedup exclude each other: give one"))
    if on_error not in {"raise", "skip"}:
        _kafka_user_error(ValueError(f"--on-error must be raise or skip, got {on_error!r}"))
    try:
        log = read_interactions_file(interactions, settings, on_error)
        events = interactions_to_events(log, window, settings.stream.max_videos_per_exposure, id_prefix or interactions.stem)
        if shift_to_now and events:
            shift = _time.time() - max(e["ts"] for e in events)
            events = interactions_to_events(
                log, window, settings.stream.max_videos_per_exposure, id_prefix or interactions.stem, ts_shift_s=shift
            )
        check_event_times(events, settings)
        for check in check_topics(settings, create=True):  # never let a broker auto-create the events topic with its defaults
            if check.differences:
                typer.echo(f"warning: {check.line(settings.kafka.replication_factor, settings.kafka.topic_retention_ms)}", err=True)
        sent = produce_events(
            settings.kafka, settings.stream.events_topic, events, rate_per_s=rate, speedup=speedup, total=len(events), show_progress=True
        )
    except (ContractError, KafkaSecurityError, KafkaToolError) as exc:
        _kafka_user_error(exc)
    exposures = sum(1 for e in events if e["type"] == "exposure")
    typer.echo(
        json.dumps(
            {
                "rows": len(log),
                "exposure_messages": exposures,
                "click_messages": len(events) - exposures,
                "sent": sum(sent.values()),
                "topic": settings.stream.events_topic,
                "per_partition": sent,
            }
        )
    )


@app.command("dead-letters")
def dead_letters_command(
    samples: int = typer.Option(2, min=0, help="example letters printed per reason"),
    reinject: str = typer.Option(
        None,
        help="send letters back to their source topic: 'all' (what the worker did not count, as it was) or 'corrected' "
        "(after automatic corrections, only those that then validate); each letter is re-injected once",
    ),
    from_start: bool = typer.Option(
        False, "--from-start", help="with --reinject: also the letters an earlier --reinject sent back already"
    ),
) -> None:
    """Summarise the dead-letter topic by reason with samples; optionally re-inject letters into the events topic."""
    from stream.kafka_tools import KafkaToolError, read_dead_letters, reinjected_upto, reinject as reinject_letters, summarise
    from stream.security import KafkaSecurityError

    settings = get_settings()
    if reinject is not None and reinject not in {"all", "corrected"}:
        _kafka_user_error(ValueError(f"--reinject must be 'all' or 'corrected', got {reinject!r}"))
    try:
        letters = read_dead_letters(settings.kafka, settings.stream.dead_letter_topic)
        typer.echo(summarise(letters, samples).text())
        if reinject is None:
            return
        done = {} if from_start else reinjected_upto(settings)
        pending = [letter for letter in letters if letter.offset >= done.get(letter.partition, 0)]
        plan, sent = reinject_letters(settings, pending, reinject)
    except (KafkaSecurityError, KafkaToolError) as exc:
        _kafka_user_error(exc)
    typer.echo(
        f"re-injected {sum(sent.values())} messages from {len(pending)} letters ({reinject})"
        + "".join(f"; {n} to {topic}" for topic, n in sorted(sent.items()))
        + (
            f"; {len(letters) - len(pending)} letters were re-injected before (--from-start sends them again)"
            if len(pending) < len(letters)
            else ""
        )
    )
    for why, n in plan.skipped.most_common():
        typer.echo(f"not re-injected: {n} letters: {why}")


@app.command("topics")
def topics_command(
    create: bool = typer.Option(
        False, "--create", help="create the missing topics with the settings' partitions, replication and retention"
    ),
) -> None:
    """Check the stream's topics (events, videos, dead letters) against the settings: partition count, replication,
    retention.ms; say what differs (exit 1), create the missing ones with --create."""
    from stream.kafka_tools import KafkaToolError, check_topics
    from stream.security import KafkaSecurityError

    settings = get_settings()
    try:
        checks = check_topics(settings, create=create)
    except (KafkaSecurityError, KafkaToolError) as exc:
        _kafka_user_error(exc)
    for check in checks:
        typer.echo(check.line(settings.kafka.replication_factor, settings.kafka.topic_retention_ms))
    if any(check.partitions is None or check.differences for check in checks):
        raise typer.Exit(1)


if __name__ == "__main__":
    from topicfs.logs import configure_logging

    configure_logging(get_settings().logging)
    app()
