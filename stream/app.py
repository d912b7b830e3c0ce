"""The Faust app: agents and timers are thin glue between Kafka and :class:`stream.state.StreamStore`.

- agent ``count_events``: events topic → batches (:func:`take_batches`) → one Redis transaction per batch;
- task ``follow_videos``: the whole videos topic (every worker reads all of it, it is small and idempotent) →
  video topics in Redis; the events agent starts once it has caught up, so a rebuild never sees an unknown video;
- timers: rebuild changed topic queues, rotate fresh videos, consumer lag.

The Feast push runs in a pusher process of its own (:mod:`stream.pusher`), which :func:`run_worker` starts and stops.
Run a worker with ``topicfs stream worker`` (see :mod:`stream.cli`), which calls :func:`run_worker`.

Two Faust defaults are replaced because they cost latency or time on every message and buy this worker nothing:
the aiokafka consumer's ``fetch_max_wait_ms`` (Faust hard-codes 1,500 ms; a broker that holds a fetch until then,
as tansu does, adds ~0.6 s to every click on a quiet partition; here ``stream.fetch_max_wait_ms``, 100 ms), and the
per-message bookkeeping of Faust's ``Monitor`` sensor (the worker keeps its own Prometheus metrics).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
import time
from dataclasses import dataclass, field

import faust
import pandas as pd

from stream.broker import align_committed_offsets, create_topics, ensure_broker, partition_ids
from stream.security import aiokafka_params, faust_params
from faust import streams as faust_streams
from faust.sensors.monitor import Monitor
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.utils.futures import notify

from stream.logic import next_rebuild_at, parse_video_event, reason_kind
from stream.metrics import MetricsServer, WorkerMetrics, worker_health
from stream.records import DeadLetter, VideoPublishedEvent
from stream.state import RawMessage, StateLost, StreamStore, dead_letter
from topicfs.keys import KeyLayout
from topicfs.redis_client import REDIS_UNAVAILABLE, async_client
from topicfs.settings import Settings

logger = logging.getLogger(__name__)


class _QuietMonitor(Monitor):
    """Faust's monitor without its per-message bookkeeping (timestamps, counters and deques per event and topic)."""

    def on_message_in(self, tp, offset, message) -> None:
        pass

    def on_stream_event_in(self, tp, offset, stream, event):
        return None

    def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:
        pass

    def on_message_out(self, tp, offset, message) -> None:
        pass


# faust.transport.consumer.Consumer._drain_messages of faust-streaming 0.15.x with one change: while the flow is
# active, a message goes to the conductor by awaiting its callback directly. Faust wraps every message in
# ``Service.wait_first(callback(message), suspend_flow.wait())``: two new tasks and an ``asyncio.wait`` per message,
# ~40% of this worker's per-message hand-off (profiled). The suspended-flow path is Faust's own. The difference when
# the flow is suspended while a callback waits on a full stream buffer: Faust's loop moves on and stops at the next
# record (the callback task still completes after the rebalance); this loop waits in the callback, and afterwards
# the fetch stops at the generation check. Either way a stale message can reach the agent, where the offsets kept
# in Redis skip it (:mod:`stream.state`). tests/stream/test_stream_faust_glue.py pins Faust's original source.
DRAIN_MESSAGES_ORIGINAL_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


async def _drain_messages_direct(self, fetcher) -> None:  # pragma: no cover - runs in every worker test
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspend_flow = self.suspend_flow
    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = getmany(timeout=1.0)
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset:
                            if acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None:
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        if suspend_flow.is_set():
                            await self.wait_first(callback(message), suspend_flow.wait())
                        else:
                            await callback(message)
                        set_read_offset(tp, offset)
                unset_flag(flag_consumer_fetching)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


def _consumer_transport(fetch_max_wait_ms: int) -> type:
    """Faust's aiokafka transport whose worker consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport):
            consumer = super()._create_worker_consumer(transport)
            if not hasattr(consumer, "_fetch_max_wait_ms"):  # aiokafka keeps it there until start() builds the Fetcher
                raise RuntimeError("this aiokafka version does not keep _fetch_max_wait_ms: stream.fetch_max_wait_ms cannot apply")
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self):
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        _drain_messages = _drain_messages_direct

    class Transport(faust_aiokafka.Transport):
        pass

    Transport.Consumer = Consumer
    return Transport


# faust.Stream.take_events of faust-streaming 0.15.x with one change: a batch also closes once no message has come for
# ``idle_s`` (the consumer has handed over what it fetched). Faust's batch closes only when full or ``within`` after
# the previous batch ended, so below ``max_`` messages per ``within`` every event waited up to ``within`` (0.1 s) before
# it was counted; now it waits ~``idle_s`` after the last message of its fetch. A backlog still fills batches: while
# the stream's queue holds messages the batch is not idle, whatever the gap. Buffering, the ack after the batch and the strict
# ``max_`` are Faust's code. tests/stream/test_stream_faust_glue.py pins Faust's original source.
TAKE_EVENTS_ORIGINAL_SHA256 = "607d48aead118ba8ea868718a0df87de1c5fcecd10ec542c659b448796728e08"


@faust_streams._tracks_buffer_agen  # as Faust's take_events: Stream.on_stop closes it (acks, processor detached)
async def take_batches(stream, max_: int, within: float, idle_s: float):  # pragma: no cover - runs in every worker test
    """Yield lists of at most ``max_`` events: when full, ``within`` seconds after the first, or ``idle_s`` after the last
    message (0: Faust's rule, full or ``within`` after the previous batch)."""
    buffer: list = []
    events: list = []
    buffer_full = asyncio.Event()  # full, or the first message of an empty buffer (wakes the waiting loop)
    buffer_consumed = asyncio.Event()
    first_at = last_at = 0.0
    monotonic = time.monotonic
    stream_enable_acks = stream.enable_acks
    buffer_consuming: asyncio.Future | None = None
    channel_it = aiter(stream.channel)
    fetched_empty = channel_it.queue.empty  # messages the consumer handed over that the stream has not read yet

    async def add_to_buffer(value):
        nonlocal buffer_consuming, first_at, last_at
        try:
            if buffer_consuming is not None:
                try:
                    await buffer_consuming
                finally:
                    buffer_consuming = None
            last_at = monotonic()
            if not buffer:
                first_at = last_at
                if idle_s:
                    buffer_full.set()  # wake the loop: the idle and within clocks start now
            buffer.append(value)
            event = stream.current_event
            if event is None:
                raise RuntimeError("Take buffer found current_event is None")
            events.append(event)
            if len(buffer) >= max_:
                buffer_full.set()
                buffer_consumed.clear()
                await stream.wait(buffer_consumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    stream._enable_passive(channel_it)
    try:
        while not stream.should_stop:
            if idle_s and buffer and len(buffer) < max_:
                now = monotonic()
                until_idle, until_within = idle_s - (now - last_at), within - (now - first_at)
                if until_idle <= 0 < until_within and not fetched_empty():
                    until_idle = idle_s  # messages wait in the stream's queue (a backlog): not idle, keep filling
                wait = min(until_idle, until_within)
                if wait > 0:
                    buffer_full.clear()
                    await stream.wait_for_stopped(buffer_full, timeout=wait)
                    continue
            elif not buffer or len(buffer) < max_:
                await stream.wait_for_stopped(buffer_full, timeout=within)
                if idle_s:
                    continue  # woken by the first message (or within passed on an empty buffer): the clocks decide
            if buffer:
                buffer_consuming = stream.loop.create_future()
                try:
                    yield list(events)
                finally:
                    buffer.clear()
                    for event in events:
                        await stream.ack(event)
                    events.clear()
                    notify(buffer_consuming)
                    buffer_full.clear()
                    buffer_consumed.set()
    finally:
        stream.enable_acks = stream_enable_acks
        stream._processors.remove(add_to_buffer)


@dataclass
class StreamRuntime:
    """Everything a running worker holds: the Faust app, the Redis store and the metrics."""

    settings: Settings
    app: faust.App
    store: StreamStore
    metrics: WorkerMetrics
    videos_ready: asyncio.Event = field(default_factory=asyncio.Event)
    batch_applied: asyncio.Event = field(default_factory=asyncio.Event)  # wakes the queue rebuild
    recovery_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one rebuild of lost state at a time
    recoveries: int = 0  # rebuilds of lost state done by this worker


def _dead_letter_bytes(letter: DeadLetter) -> bytes:
    return json.dumps({k: v for k, v in letter.asdict().items()}, ensure_ascii=False).encode()


def create_app(settings: Settings, redis_client, epochs: list[str] | None = None) -> StreamRuntime:
    """Build the Faust app of one worker from settings (topics, agents, timers).

    With ``stream.feast_repo_path`` set, every batch also marks its changed ids for the pusher (:mod:`stream.pusher`).
    ``epochs`` are the shards' epochs :func:`prepare` read before the group offsets were aligned (so a loss of state
    after that is detected); None reads them at the first batch.
    """
    config = settings.stream
    app = faust.App(
        config.app_id,
        **faust_params(settings.kafka),  # broker=[kafka://...] and broker_credentials (TLS / SASL, stream.security)
        store="memory://",
        topic_partitions=config.partitions,
        broker_rebalance_timeout=config.rebalance_timeout_s,
        broker_session_timeout=config.session_timeout_s,
        broker_heartbeat_interval=min(1.0, config.session_timeout_s / 4),
        broker_commit_interval=1.0,
        broker_max_poll_records=max(500, config.batch_max_messages),
        stream_buffer_maxsize=max(4096, 2 * config.batch_max_messages),
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
        web_enabled=False,
        monitor=_QuietMonitor(),
    )
    app.transport = _consumer_transport(config.fetch_max_wait_ms)(app.conf.broker_consumer, app)
    store = StreamStore(redis_client, KeyLayout.from_config(settings.redis), config, push_enabled=config.feast_repo_path is not None)
    store.epochs = list(epochs) if epochs is not None else None
    metrics = WorkerMetrics()
    runtime = StreamRuntime(settings, app, store, metrics)

    events_topic = app.topic(
        config.events_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", partitions=config.partitions
    )
    dead_letter_topic = app.topic(
        config.dead_letter_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=config.partitions,
    )

    async def send_dead_letters(letters: list[DeadLetter]) -> None:
        # delivery is awaited before the batch commits, so no dead letter is lost
        pending = [
            await dead_letter_topic.send(
                key=f"{letter.source_topic}:{letter.partition}:{letter.offset}".encode(), value=_dead_letter_bytes(letter)
            )
            for letter in letters
        ]
        await asyncio.gather(*pending)
        for letter in letters:
            metrics.dead_letters.labels(reason_kind(letter.reasons[0]) if letter.reasons else "other").inc()

    @app.agent(events_topic, concurrency=1)
    async def count_events(stream):
        """Count exposures and clicks, batch by batch, exactly once."""
        await runtime.videos_ready.wait()
        async for batch in take_batches(stream, config.batch_max_messages, config.batch_within_s, config.batch_idle_s):
            messages = [RawMessage(e.message.topic, e.message.partition, e.message.offset, e.message.value, e.message.key) for e in batch]
            started = time.perf_counter()
            while True:
                seen_recoveries = runtime.recoveries
                try:
                    # never while a rebuild replays the log: a batch applied to a lost shard before the replay would
                    # move its offsets past the messages the replay must still apply
                    async with runtime.recovery_lock:
                        result = await store.apply_batch(messages, send_dead_letters)
                    break
                except REDIS_UNAVAILABLE as exc:  # the batch is not acked: retry, lose nothing
                    logger.warning("Redis unavailable (%s); retrying the batch in 1 s", exc)
                    await asyncio.sleep(1.0)
                except StateLost as exc:  # stop applying; rebuild from the log, then apply this batch (skipped where replayed)
                    await recover_lost_state(
                        runtime, exc, seen_recoveries, send_dead_letters, extra_partitions={m.partition for m in messages}
                    )
            metrics.batch_latency.observe(time.perf_counter() - started)
            metrics.messages.inc(result.applied_messages)
            metrics.batch_retries.inc(result.retries)
            metrics.record_events(result.exposures, result.clicks)
            runtime.batch_applied.set()

    @app.task
    async def follow_videos() -> None:
        """Read the whole videos topic from its start, then follow it; release the events agent once caught up."""
        await _follow_videos(runtime, send_dead_letters)

    @app.task
    async def rebuild_queues() -> None:
        """Rebuild the changed queues as soon as a batch is applied, at most once per ``queue_refresh_interval_s``
        (and at least that often, for topics made dirty elsewhere: video registrations, the fresh rotation)."""
        earliest = 0.0
        while True:
            try:
                await asyncio.wait_for(runtime.batch_applied.wait(), timeout=config.queue_refresh_interval_s)
            except asyncio.TimeoutError:
                pass
            runtime.batch_applied.clear()
            pause = earliest - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            started = time.monotonic()
            try:
                metrics.queue_rebuilds.inc(await store.rebuild_dirty_queues())
            except REDIS_UNAVAILABLE as exc:
                logger.warning("queue rebuild skipped, Redis unavailable: %s", exc)
            earliest = next_rebuild_at(started, time.monotonic(), config.queue_refresh_interval_s, config.queue_rebuild_max_busy_share)

    @app.timer(config.fresh_rotation_interval_s)
    async def rotate_fresh_videos() -> None:
        await store.mark_all_topics_dirty()

    @app.timer(config.state_check_interval_s)
    async def check_state() -> None:
        """Notice a loss of Redis state even when no batch touches the lost shard (a quiet partition)."""
        if not runtime.videos_ready.is_set() or store.epochs is None:
            return
        seen_recoveries = runtime.recoveries
        try:
            lost = await store.lost_shards()
        except REDIS_UNAVAILABLE:
            return
        if lost:
            await recover_lost_state(runtime, StateLost(lost, "epoch missing or changed"), seen_recoveries, send_dead_letters)

    @app.timer(5.0)
    async def measure_lag() -> None:
        consumer = app.consumer
        assigned = [tp for tp in consumer.assignment() if tp.topic == config.events_topic]
        stored = await store.stored_offsets(config.events_topic, [tp.partition for tp in assigned])  # one read per shard
        lag = {}
        for tp in assigned:
            highwater = consumer.highwater(tp)
            applied = stored[tp.partition]
            if highwater is not None:
                lag[tp.partition] = max(0, highwater - ((applied if applied is not None else -1) + 1))
        metrics.observe_lag(lag)

    runtime.count_events = count_events  # type: ignore[attr-defined]
    return runtime


_assigner = None


def _assign_topics(runtime: StreamRuntime, event: VideoPublishedEvent) -> list[int]:
    """Topics of a video that arrived with its content, from the trained topic models (loaded once)."""
    global _assigner
    if _assigner is None:
        from offline_jobs.inference import load_topic_assigner  # heavy (torch): only when content events arrive

        _assigner = load_topic_assigner(runtime.settings.paths.models_dir)
    frame = pd.DataFrame(
        [
            {
                "video_id": event.video_id,
                "title": event.title,
                "cover_image": event.cover_image,
                "primary_class": event.primary_class,
                "secondary_class": event.secondary_class,
                "tags": event.tags or [],
                "publish_ts": pd.Timestamp(event.ts, unit="s", tz="UTC"),
            }
        ]
    )
    return [int(t) for t in _assigner.assign(frame)[0]]


async def handle_video_messages(runtime: StreamRuntime, messages: list[RawMessage], send_dead_letters) -> int:
    """Register the videos of valid video-published messages; dead-letter the rest. Returns videos registered."""
    limits = runtime.store.limits()
    topics_by_video: dict[int, list[int]] = {}
    letters = []
    for message in messages:
        event, errors = parse_video_event(message.value, limits)
        if event is not None and event.topic_ids is None:
            try:
                event.topic_ids = await asyncio.to_thread(_assign_topics, runtime, event)
            except Exception as exc:  # a model problem must not stop the worker; the video waits in the dead-letter topic
                logger.exception("topic assignment failed for video %s", event.video_id)
                errors, event = [f"topic assignment failed: {type(exc).__name__}: {exc}"], None
        if event is not None:
            topics_by_video[event.video_id] = list(event.topic_ids)
        if errors:
            letters.append(dead_letter(message, errors))
    if letters:
        await send_dead_letters(letters)
    if topics_by_video:
        await runtime.store.register_videos(topics_by_video)
    return len(topics_by_video)


async def _load_table(settings: Settings, store: StreamStore) -> int:
    """Register the offline VIDEO_TOPICS table's videos when ``stream.load_video_topics_on_start`` and it exists."""
    table = settings.paths.tables_dir
    if settings.stream.load_video_topics_on_start and (table / "video_topics.parquet").exists():
        return await store.load_video_topics_table(table, show_progress=False)
    if settings.stream.load_video_topics_on_start:
        logger.warning("no %s: video topics come only from the videos topic", table / "video_topics.parquet")
    return 0


async def recover_lost_state(
    runtime: StreamRuntime, lost: StateLost, seen_recoveries: int, send_dead_letters, extra_partitions: set[int] = frozenset()
) -> None:
    """Rebuild Redis state that was lost under this running worker, exactly.

    Stops applying (the events agent waits here), logs an error and counts it, starts the lost shards' new epochs
    (or adopts those another worker started), registers the video topics again (the offline table and the whole
    videos topic), then replays every events partition this worker holds from the start of the Kafka log up to its
    end through the normal per-shard exactly-once path: shards that kept their state skip what they applied, lost
    shards apply everything again. The Faust consumer's position is untouched; messages it delivers afterwards that
    the replay covered are skipped by the stored offsets. Needs the events topic retained from its first event.
    """
    async with runtime.recovery_lock:
        if runtime.recoveries != seen_recoveries:
            return  # another task rebuilt meanwhile
        settings, store, metrics = runtime.settings, runtime.store, runtime.metrics
        config = settings.stream
        logger.error("%s; stopping and rebuilding it from the Kafka log", lost)
        metrics.state_losses.inc()
        metrics.state_rebuilding.set(1)
        started = time.monotonic()
        try:
            while True:
                try:
                    await store.init_epochs()
                    store.forget_offsets()
                    registered = await _load_table(settings, store) + await _register_videos_topic(runtime, send_dead_letters)
                    assigned = {tp.partition for tp in runtime.app.consumer.assignment() if tp.topic == config.events_topic}
                    replayed = await _replay_partitions(runtime, sorted(assigned | set(extra_partitions)), send_dead_letters)
                    break
                except StateLost as again:
                    logger.error("%s during the rebuild; starting it again", again)
                except REDIS_UNAVAILABLE as exc:
                    logger.warning("Redis unavailable during the rebuild (%s); retrying in 1 s", exc)
                    await asyncio.sleep(1.0)
            runtime.recoveries += 1
            runtime.batch_applied.set()
            logger.error(
                "rebuilt lost Redis state: %d videos registered again, %d messages replayed in %.1f s",
                registered,
                replayed,
                time.monotonic() - started,
            )
        finally:
            metrics.state_rebuilding.set(0)


async def _register_videos_topic(runtime: StreamRuntime, send_dead_letters) -> int:
    """Register every video of the videos topic again (read from its start to its end)."""
    registered = 0
    async for messages in _read_log(runtime.settings, runtime.settings.stream.videos_topic, None):
        registered += await handle_video_messages(runtime, messages, send_dead_letters)
    return registered


async def _replay_partitions(runtime: StreamRuntime, partitions: list[int], send_dead_letters) -> int:
    """Apply events-topic ``partitions`` from the start of the log to its end, batch by batch; returns messages read."""
    if not partitions:
        return 0
    read = 0
    topic = runtime.settings.stream.events_topic
    # at least up to every offset this worker has delivered (the log's end offsets are not trusted alone)
    targets = {p: runtime.store.highest_applied.get((topic, p), -1) + 1 for p in partitions}
    async for messages in _read_log(runtime.settings, topic, partitions, targets):
        await runtime.store.apply_batch(messages, send_dead_letters)
        read += len(messages)
    return read


async def _read_log(settings: Settings, topic: str, partitions: list[int] | None, targets: dict[int, int] | None = None):
    """Batches of a topic's messages from the start of the log to its end when the read began (and at least to
    ``targets[partition]``, exclusive): a partition is done when a fetch returns nothing more and its position has
    reached both (tansu's end offsets alone are not trusted)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**aiokafka_params(settings.kafka), enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        ids = partitions if partitions is not None else await partition_ids(settings.kafka, topic)
        tps = [TopicPartition(topic, p) for p in ids]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        if targets:
            ends = {tp: max(ends[tp], targets.get(tp.partition, 0)) for tp in tps}
        left = set(tps)
        while left:
            fetched = await consumer.getmany(*left, timeout_ms=300, max_records=settings.stream.batch_max_messages)
            messages = [RawMessage(m.topic, m.partition, m.offset, m.value, m.key) for records in fetched.values() for m in records]
            for tp in list(left):
                if not fetched.get(tp) and await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
            if messages:
                yield messages
    finally:
        await consumer.stop()


async def _follow_videos(runtime: StreamRuntime, send_dead_letters) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    settings = runtime.settings
    topic = settings.stream.videos_topic
    consumer = AIOKafkaConsumer(**aiokafka_params(settings.kafka), enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partition_ids(settings.kafka, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        registered = 0
        while True:
            fetched = await consumer.getmany(timeout_ms=200, max_records=5000)
            messages = [RawMessage(m.topic, m.partition, m.offset, m.value, m.key) for records in fetched.values() for m in records]
            if messages:
                while True:
                    try:
                        registered += await handle_video_messages(runtime, messages, send_dead_letters)
                        break
                    except REDIS_UNAVAILABLE as exc:
                        logger.warning("Redis unavailable (%s); retrying video messages in 1 s", exc)
                        await asyncio.sleep(1.0)
            elif not runtime.videos_ready.is_set():
                # caught up: nothing more to read (end offsets alone are not trusted: tansu under-reports them)
                ends = await consumer.end_offsets(partitions)
                positions = [await consumer.position(tp) for tp in partitions]
                if all(position >= ends[tp] for position, tp in zip(positions, partitions)):
                    logger.info("videos topic caught up (%d videos registered); counting events", registered)
                    runtime.videos_ready.set()
    finally:
        await consumer.stop()


async def prepare(settings: Settings, redis_client) -> list[str]:
    """Before a worker joins its group: create the topics, start or learn the shards' epochs, load video topics, and
    align the group's offsets with Redis (per partition the lowest offset over the shards, so no shard misses a
    message). Returns the epochs, for :func:`create_app`."""
    config = settings.stream
    servers = settings.kafka  # the cluster's settings, security included (stream.security)
    await create_topics(
        servers,
        {config.events_topic: config.partitions, config.videos_topic: config.partitions, config.dead_letter_topic: config.partitions},
    )
    store = StreamStore(redis_client, KeyLayout.from_config(settings.redis), config)
    epochs = await store.init_epochs()
    await _load_table(settings, store)
    applied = await store.stored_offsets(config.events_topic, await partition_ids(servers, config.events_topic))
    await align_committed_offsets(
        servers,
        config.app_id,
        config.events_topic,
        applied,
        wait_s=config.session_timeout_s + config.rebalance_timeout_s + 10,
        rebalance_timeout_s=config.rebalance_timeout_s,
    )
    return epochs


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run one worker until SIGINT/SIGTERM: start the embedded broker / Redis if asked and absent, prepare, consume.

    With ``stream.feast_repo_path`` set (and ``stream.start_pusher``), a pusher process runs beside the worker.
    """
    from topicfs.services import ensure_redis

    from stream.pusher import freeze_startup_heap, start_pusher_process, stop_pusher_process

    broker = ensure_broker(settings.kafka.bootstrap_servers, settings.kafka.embedded)
    local_redis = ensure_redis(settings.redis.url)
    pusher = None
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        redis_client = async_client(settings.redis)
        epochs = loop.run_until_complete(prepare(settings, redis_client))
        runtime = create_app(settings, redis_client, epochs)
        if settings.stream.metrics_port:  # /metrics and /health on this loop (see stream.metrics)
            server = MetricsServer(runtime.metrics.registry, health=functools.partial(worker_health, runtime, time.monotonic()))
            loop.run_until_complete(server.start(settings.stream.metrics_host, settings.stream.metrics_port))
        if settings.stream.feast_repo_path is not None and settings.stream.start_pusher:
            pusher = start_pusher_process(settings)
        worker = faust.Worker(runtime.app, loop=loop, loglevel=loglevel, override_logging=False)
        if not sys.stdout.isatty():
            worker.spinner = None  # Faust's spinner writes cursor escape codes and backspaces even into log files
        freeze_startup_heap()  # full GC passes over the imported libraries stalled batches (see stream.pusher)
        worker.execute_from_commandline()
    finally:
        if pusher is not None:
            stop_pusher_process(pusher)
        if local_redis is not None:
            local_redis.stop()
        if broker is not None:
            broker.stop()
