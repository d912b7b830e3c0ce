"""The Feast pusher: moves the statistics the workers changed into Feast's online store, in its own process.

Workers only mark what changed (``{prefix}:stream:push:{video|topic|user}`` sets, written in the same Redis
transaction as the counts); the pusher takes those ids, reads their current values and pushes one DataFrame per
push source, writing what ``FeatureStore.push(..., to=PushMode.ONLINE)`` writes (through
:class:`topicfs.feature_client.OnlinePusher`). Why a separate process: every pushed row becomes protobuf in Python,
holding the GIL; inside the worker that conversion stalled the events agent (on
this 2-core machine a backlog ran at 10,200 events/s with the push in the worker, 18,500 without it). Here it runs
on another core and the worker's rate no longer depends on it.

``topicfs stream worker`` starts one pusher per worker when ``stream.feast_repo_path`` is set (and
``stream.start_pusher`` is true) and stops it when it stops; ``topicfs stream pusher`` runs one by hand. Several
pushers (one per worker) are safe: each moves the pending ids aside atomically under its own token, and a failed
push puts them back for the next one. A pusher whose worker died (``kill -9``) notices within one interval and exits.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd

from stream.logic import push_pause_s
from stream.metrics import MetricsServer, PusherMetrics, pusher_health
from stream.sinks import FeastPushSink, StatsSink
from stream.state import StreamStore
from topicfs.keys import KeyLayout
from topicfs.redis_client import REDIS_UNAVAILABLE, async_client
from topicfs.settings import Settings, StreamConfig

logger = logging.getLogger(__name__)


async def push_changed_statistics(store: StreamStore, sink: StatsSink, config: StreamConfig, metrics: PusherMetrics | None = None) -> int:
    """One push per push source of every statistic changed since the last push; returns the rows pushed."""
    taken = await store.take_pending_push()
    if not taken:
        return 0
    started = time.perf_counter()
    names = {
        "video": config.push_source_video_stats,
        "topic": config.push_source_topic_stats,
        "user": config.push_source_user_recent_topics,
    }
    now = pd.Timestamp.now(tz="UTC")
    rows = 0
    try:
        for entity, ids in taken.items():
            frame = await store.stats_frame(entity, ids, now)
            sink.push(names[entity], frame)
            rows += len(frame)
    except Exception:
        logger.exception("Feast push failed; the changed ids are kept for the next push")
        await store.finish_push(taken, succeeded=False)
        return 0
    await store.finish_push(taken, succeeded=True)
    if metrics is not None:
        metrics.record_push(time.perf_counter() - started, rows)
    return rows


async def push_forever(
    settings: Settings, sink: StatsSink, stop: asyncio.Event, parent_pid: int | None = None, metrics: PusherMetrics | None = None
) -> None:
    """Push every ``stream.push_interval_s`` (at most ``push_max_busy_share`` of the time) until ``stop`` is set.

    ``parent_pid``: exit when this process is no longer our parent (the worker that started us died).
    ``metrics``: where push durations and rows are recorded (``run_pusher`` serves them on ``stream.metrics_host``:``stream.pusher_metrics_port``).
    """
    config = settings.stream
    client = async_client(settings.redis)
    store = StreamStore(client, KeyLayout.from_config(settings.redis), config, push_enabled=True)
    metrics = metrics if metrics is not None else PusherMetrics()
    pushes = rows = 0
    busy_total = busy_max = 0.0
    report_at = time.monotonic() + 30.0
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                pushed = await push_changed_statistics(store, sink, config, metrics)
            except REDIS_UNAVAILABLE as exc:
                logger.warning("Feast push skipped, Redis unavailable: %s", exc)
                pushed = 0
            busy = time.monotonic() - started
            if pushed:
                pushes, rows, busy_total, busy_max = pushes + 1, rows + pushed, busy_total + busy, max(busy_max, busy)
            if started > report_at and pushes:
                logger.info(
                    "Feast pushes since the last report: %d, %d rows, %.3f s mean, %.3f s max", pushes, rows, busy_total / pushes, busy_max
                )
                pushes = rows = 0
                busy_total = busy_max = 0.0
                report_at = started + 30.0
            if parent_pid is not None and os.getppid() != parent_pid:
                logger.warning("the worker that started this pusher (pid %d) is gone; stopping", parent_pid)
                return
            wait = max(config.push_interval_s - busy, push_pause_s(busy, config.push_max_busy_share))
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass
        await push_changed_statistics(store, sink, config, metrics)  # what changed before the stop is not left behind
    finally:
        await client.aclose()


def freeze_startup_heap() -> None:
    """Move everything allocated so far (Feast, pandas, protobuf: hundreds of thousands of objects) out of the
    cyclic GC's reach: otherwise every full collection walks them, which made one push in ~50 take 0.3 s instead
    of 0.05 s here (the tail of the Feast freshness)."""
    gc.collect()
    gc.freeze()


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent dies (a no-op elsewhere; the ppid check covers it)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_pusher(settings: Settings, parent_pid: int | None = None) -> None:
    """Run a pusher in this process until SIGINT/SIGTERM (or until ``parent_pid`` is gone)."""
    if settings.stream.feast_repo_path is None:
        raise ValueError("stream.feast_repo_path is not set: the pusher has no Feast repo to push to (TOPICFS_STREAM__FEAST_REPO_PATH)")
    if parent_pid is not None:
        _die_with_parent()
        if os.getppid() != parent_pid:
            return
    sink = FeastPushSink(settings.stream.feast_repo_path)
    metrics = PusherMetrics()
    freeze_startup_heap()
    loop = asyncio.new_event_loop()
    if settings.stream.pusher_metrics_port:
        server = MetricsServer(metrics.registry, health=partial(pusher_health, metrics, time.monotonic()))
        loop.run_until_complete(server.start(settings.stream.metrics_host, settings.stream.pusher_metrics_port))
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        loop.run_until_complete(push_forever(settings, sink, stop, parent_pid, metrics))
    finally:
        loop.close()


def start_pusher_process(settings: Settings) -> subprocess.Popen:
    """Start ``python -m stream.cli pusher`` as a child of this process (same settings, same output)."""
    from stream.process import child_env

    repo = settings.stream.feast_repo_path
    if repo is None or not (Path(repo) / "feature_store.yaml").exists():
        raise FileNotFoundError(f"{repo} is not a Feast repo (no feature_store.yaml); set TOPICFS_STREAM__FEAST_REPO_PATH")
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "pusher", "--parent-pid", str(os.getpid())], env=child_env(settings), cwd=str(root)
    )


def stop_pusher_process(process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM (the pusher pushes what is pending, then exits); SIGKILL after ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
