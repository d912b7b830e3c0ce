"""Prometheus metrics of a worker: events/s, consumer lag, dead letters, push latency (text format on /metrics)."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server


class StreamMetrics:
    """One registry per worker (so several apps in one process, as in tests, do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter("topicfs_stream_events", "valid events counted, by type", ["type"], registry=self.registry)
        self.messages = Counter("topicfs_stream_messages", "Kafka messages applied to the state", registry=self.registry)
        self.dead_letters = Counter("topicfs_stream_dead_letters", "messages (or parts) sent to the dead-letter topic", registry=self.registry)
        self.batch_retries = Counter("topicfs_stream_batch_retries", "batches retried because another worker applied some of their partitions first (offset check)", registry=self.registry)
        self.events_per_second = Gauge("topicfs_stream_events_per_second", "valid events per second over the last 10 s", registry=self.registry)
        self.consumer_lag = Gauge("topicfs_stream_consumer_lag", "messages behind the partition's high watermark", ["partition"], registry=self.registry)
        self.push_latency = Histogram("topicfs_stream_push_latency_seconds", "duration of one Feast push of all changed statistics", registry=self.registry)
        self.pushed_rows = Counter("topicfs_stream_pushed_rows", "rows pushed to Feast's online store (video, topic and user statistics)", registry=self.registry)
        self.batch_latency = Histogram("topicfs_stream_batch_seconds", "duration of one batch transaction", registry=self.registry)
        self.queue_rebuilds = Counter("topicfs_stream_queue_rebuilds", "topic queues rebuilt", registry=self.registry)
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

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)

    def text(self) -> str:
        return generate_latest(self.registry).decode()
