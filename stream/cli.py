"""``topicfs stream ...``: the embedded broker, a worker, replays, video topics, the demo."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from pathlib import Path

import typer

from topicfs.settings import get_settings

logger = logging.getLogger(__name__)

app = typer.Typer(help="Streaming updater: Faust workers keep topic queues, CTR and exposure counts live from Kafka.", no_args_is_help=True)


@app.command("broker")
def broker_command(port: int = typer.Option(9092, help="port of the embedded tansu broker")) -> None:
    """Run the embedded Kafka-protocol broker (tansu, in memory) in the foreground until Ctrl-C."""
    from stream.broker import EmbeddedBroker

    broker = EmbeddedBroker.start(port)
    typer.echo(f"embedded broker on {broker.bootstrap_servers} (Ctrl-C stops it)")
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        broker.stop()


@app.command("worker")
def worker_command(loglevel: str = typer.Option("info", help="Faust log level")) -> None:
    """Run one worker (starts the embedded broker / a local Redis when settings allow and none answers)."""
    from stream.app import run_worker

    run_worker(get_settings(), loglevel=loglevel)


@app.command("pusher")
def pusher_command(parent_pid: int = typer.Option(None, help="exit when this process (the worker that started the pusher) is gone")) -> None:
    """Push the statistics the workers changed to the Feast online store every stream.push_interval_s, until Ctrl-C.

    A worker with stream.feast_repo_path starts one itself; run this by hand with stream.start_pusher=false.
    """
    from stream.pusher import run_pusher

    run_pusher(get_settings(), parent_pid=parent_pid)


@app.command("replay")
def replay_command(
    events_file: Path = typer.Option(None, help="JSON-lines event file; without it a synthetic click stream is replayed"),
    rate: float = typer.Option(None, help="messages per second (default: as fast as possible)"),
    n_users: int = typer.Option(500, help="synthetic: users"),
    n_days: int = typer.Option(7, help="synthetic: days of refreshes"),
    max_messages: int = typer.Option(None, help="stop after this many messages"),
    publish_videos: bool = typer.Option(True, help="synthetic: publish the catalogue's videos with their true topics first"),
) -> None:
    """Produce events into the events topic, keyed by user id, at a given rate."""
    from itertools import islice

    from stream.replay import produce, read_event_file
    from stream.synthetic_stream import synthetic_stream

    settings = get_settings()
    config = settings.stream
    if events_file is not None:
        messages = read_event_file(events_file)
    else:
        videos, messages = synthetic_stream(settings, n_users=n_users, n_days=n_days)
        if publish_videos:
            asyncio.run(produce(settings.kafka.bootstrap_servers, config.videos_topic, videos, key_field="video_id"))
    if max_messages:
        messages = islice(messages, max_messages)
    sent = asyncio.run(produce(settings.kafka.bootstrap_servers, config.events_topic, messages, rate_per_s=rate, show_progress=True))
    typer.echo(json.dumps({"sent": sum(sent.values()), "per_partition": sent}))


@app.command("load-topics")
def load_topics_command(tables_dir: Path = typer.Option(None, help="folder holding video_topics.parquet (default: paths.tables_dir)")) -> None:
    """Load the offline VIDEO_TOPICS table into Redis ({prefix}:video:{id}:topics and the topic indexes)."""
    import redis.asyncio as aioredis

    from stream.state import StreamStore

    settings = get_settings()

    async def load() -> int:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            return await StreamStore(client, settings.redis.key_prefix, settings.stream).load_video_topics_table(tables_dir or settings.paths.tables_dir)
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


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()
