"""Prometheus metrics and the health endpoint of the stream's processes.

Each process exports only its own metrics: a worker :class:`WorkerMetrics` (events/s, consumer lag, dead letters,
batches, queue rebuilds), a Feast pusher :class:`PusherMetrics` (push latency, pushed rows). Both serve them with
:class:`MetricsServer` on ``stream.metrics_host`` (default 127.0.0.1): ``GET /metrics`` (Prometheus text format) and
``GET /health`` (JSON: alive, and for a worker its assigned partitions and consumer lag). The server runs on the
process's event loop, so a loop that no longer answers is also a failed health check.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class WorkerMetrics:
    """The metrics of one stream worker, in a registry of their own (several apps in one process, as in tests, do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter("topicfs_stream_events", "valid events counted, by type", ["type"], registry=self.registry)
        self.messages = Counter("topicfs_stream_messages", "Kafka messages applied to the state", registry=self.registry)
        self.dead_letters = Counter(
            "topicfs_stream_dead_letters",
            "messages (or parts) sent to the dead-letter topic, by the kind of their first reason",
            ["reason"],
            registry=self.registry,
        )
        self.batch_retries = Counter(
            "topicfs_stream_batch_retries",
            "batches retried because another worker applied some of their partitions first (offset check)",
            registry=self.registry,
        )
        self.events_per_second = Gauge(
            "topicfs_stream_events_per_second", "valid events per second over the last 10 s", registry=self.registry
        )
        self.consumer_lag = Gauge(
            "topicfs_stream_consumer_lag", "messages behind the partition's high watermark", ["partition"], registry=self.registry
        )
        self.batch_latency = Histogram("topicfs_stream_batch_seconds", "duration of one batch transaction", registry=self.registry)
        self.queue_rebuilds = Counter("topicfs_stream_queue_rebuilds", "topic queues rebuilt", registry=self.registry)
        self.state_losses = Counter(
            "topicfs_stream_state_losses",
            "times a Redis shard's state was found lost (epoch gone or changed, offsets gone back) and rebuilt from the Kafka log",
            registry=self.registry,
        )
        self.state_rebuilding = Gauge(
            "topicfs_stream_state_rebuilding",
            "1 while the worker replays the Kafka log to rebuild lost Redis state",
            registry=self.registry,
        )
        self.lag: dict[int, int] = {}  # the last measured lag of each assigned events partition
        self.lag_measured_at: float | None = None  # time.monotonic() of that measurement
        self._window: deque[tuple[float, int]] = deque()
        self._total = 0

    def record_events(self, exposures: int, clicks: int) -> None:
        self.events.labels("exposure").inc(exposures)
        self.events.labels("click").inc(clicks)
        now = time.monotonic()
        self._total += exposures + clicks
        self._window.append((now, self._total))
        while self._window and now - self._window[0][0] > 10.0:
            self._window.popleft()
        if len(self._window) > 1:
            (t0, n0), (t1, n1) = self._window[0], self._window[-1]
            self.events_per_second.set((n1 - n0) / max(t1 - t0, 1e-6))

    def observe_lag(self, lag: Mapping[int, int]) -> None:
        """The lag of every partition this worker holds now; partitions it no longer holds leave the gauge."""
        for partition in set(self.lag) - set(lag):
            self.consumer_lag.remove(str(partition))
        for partition, value in lag.items():
            self.consumer_lag.labels(str(partition)).set(value)
        self.lag = dict(lag)
        self.lag_measured_at = time.monotonic()

    def text(self) -> str:
        return generate_latest(self.registry).decode()


class PusherMetrics:
    """The metrics of one Feast pusher process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.push_latency = Histogram(
            "topicfs_stream_push_latency_seconds", "duration of one Feast push of all changed statistics", registry=self.registry
        )
        self.pushed_rows = Counter(
            "topicfs_stream_pushed_rows", "rows pushed to Feast's online store (video, topic and user statistics)", registry=self.registry
        )
        self.last_push_at: float | None = None  # time.monotonic() of the last successful push

    def record_push(self, seconds: float, rows: int) -> None:
        self.push_latency.observe(seconds)
        self.pushed_rows.inc(rows)
        self.last_push_at = time.monotonic()

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def worker_health(runtime: Any, started_at: float) -> dict:
    """What ``/health`` of a worker reports: alive (it answers), ready (the videos topic is caught up and the events
    partitions are counted), the events partitions assigned to it and their last measured lag."""
    app, metrics = runtime.app, runtime.metrics
    events_topic = runtime.settings.stream.events_topic
    assigned: list[int] = []
    consumer = app._consumer  # None until Faust has built its consumer (reading app.consumer would build one)
    if consumer is not None:
        try:
            assigned = sorted(tp.partition for tp in consumer.assignment() if tp.topic == events_topic)
        except Exception:  # the consumer thread is not running yet (starting, rebalancing or stopping)
            assigned = []
    lag = {str(p): metrics.lag[p] for p in assigned if p in metrics.lag}
    measured = metrics.lag_measured_at
    return {
        "alive": True,
        "ready": runtime.videos_ready.is_set(),
        "uptime_s": round(time.monotonic() - started_at, 3),
        "assigned_partitions": assigned,
        "lag": lag,
        "lag_total": sum(lag.values()),
        "lag_age_s": None if measured is None else round(time.monotonic() - measured, 3),
    }


def pusher_health(metrics: PusherMetrics, started_at: float) -> dict:
    """What ``/health`` of a pusher reports: alive, and how long ago it last pushed (None: not yet)."""
    last = metrics.last_push_at
    return {
        "alive": True,
        "uptime_s": round(time.monotonic() - started_at, 3),
        "last_push_age_s": None if last is None else round(time.monotonic() - last, 3),
    }


class MetricsServer:
    """``GET /metrics`` and ``GET /health`` of one process, on its asyncio event loop (aiohttp)."""

    def __init__(self, registry: CollectorRegistry, health: Callable[[], dict | Awaitable[dict]]) -> None:
        self.registry = registry
        self.health = health
        self._runner = None

    async def _metrics(self, request):
        from aiohttp import web

        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request):
        from aiohttp import web

        report = self.health()
        if isinstance(report, Awaitable):
            report = await report
        return web.Response(text=json.dumps(report), content_type="application/json")

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (raises OSError when the port is taken)."""
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
