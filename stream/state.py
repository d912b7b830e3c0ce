"""Redis: the stream's state, its source of truth, and the topic queues candidate generation reads.

Why Redis is the source of truth (and not Faust changelogged tables): the queues and user histories must live in
Redis anyway for the candidate service, per-video counts are shared by every partition (users are the Kafka key,
videos are not), and a Faust table would add a changelog write per update.

**Exactly once per shard.** The state is split into ``redis.shards`` logical shards (:class:`topicfs.keys.KeyLayout`:
each shard is one Redis Cluster hash tag, so one slot). A batch of messages is folded once into deltas, the deltas
are grouped by the shard that owns each video, topic and user, and ONE script call per shard
(``stream/lua/apply_batch.lua``) applies that shard's deltas together with that shard's stored offsets of the batch's
partitions. Redis runs a script atomically, so per shard either all of it happens or none of it. Every shard gets a
call for every batch (possibly with no deltas) so its offsets advance with the others. A worker filters the messages
for each shard against that shard's stored offsets, so a message re-delivered after a crash between two shards'
writes, a rebalance or a restart is applied to each shard exactly once. The script compares the stored offsets with
those the worker filtered against and writes nothing when they differ (two workers briefly on one partition): the
worker filters again and retries that shard. The group's committed Kafka offset is only a hint: a starting worker
resets it to the minimum over shards of the stored offsets (:mod:`stream.app`), so nothing is skipped.

**Losing Redis is never silent.** Every shard holds an epoch token (``KeyLayout.epoch``), written when the shard's
state starts. The batch script refuses to write when the epoch is not the one the worker knows (a FLUSHALL, a master
restarted empty, another worker's rebuild); a stored offset behind the one the worker last saw also means loss. The
worker then raises :class:`StateLost`, and :mod:`stream.app` stops applying, logs an error, counts it, re-registers
the video topics and replays its partitions from the start of the Kafka log (see ``docs/STATE.md``).

The key layout is :mod:`topicfs.keys`; the Lua scripts are in ``stream/lua/``, and their Python twins are in
:mod:`stream.logic` (merge_counts, video_status, build_queue) and ``tests/stream/`` (checked against each other).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from stream.logic import (
    BatchDelta,
    Counts,
    Limits,
    build_queue,
    drop_unknown_videos,
    fold_events,
    parse_event,
    video_status,
)
from stream.records import DeadLetter
from topicfs.keys import ENTITIES, KeyLayout, decode_ids, encode_ids
from topicfs.redis_client import SlotScript
from topicfs.settings import StreamConfig

logger = logging.getLogger(__name__)


def lua(name: str) -> str:
    """The source of ``stream/lua/<name>.lua`` (shipped as package data), after the shared files it names in
    ``-- needs: <file>.lua`` lines: a Redis script cannot load another, so they are joined into one script."""
    source = resources.files("stream").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    return "".join(lua(needed) + "\n" for needed in re.findall(r"^-- needs: (\w+)\.lua$", source, re.MULTILINE)) + source


# Arguments of one command in apply_ops.lua at most: Lua's unpack() fails past about 8,000 values. Even, so ZADD
# pairs stay whole.
_MAX_OP_ARGS = 1000


class StateLost(RuntimeError):
    """A shard's state was lost (epoch missing or changed, or offsets behind what this worker applied)."""

    def __init__(self, shards: Iterable[int], detail: str) -> None:
        self.shards = sorted(set(shards))
        super().__init__(f"Redis state of shard(s) {self.shards} was lost: {detail}")


class _Ops:
    """Collects the Redis writes of a registration chunk, per shard, to send as one apply_ops.lua call per shard.

    Sorted-set and set writes are grouped per key (one ZADD / ZREM / SADD per key and chunk instead of one per
    video). Within a key the last write of a member wins, as it would with one command per write; the grouped
    keys (topic indexes, id sets) are written by nothing else in a chunk, so they go after the other writes.
    """

    def __init__(self) -> None:
        self.ops: list[list[str]] = []
        self._zsets: dict[str, dict[str, str | None]] = {}  # key → member → score, or None = remove
        self._sets: dict[str, set[str]] = {}

    def set(self, key: str, value) -> None:
        self.ops.append(["SET", key, str(value)])

    def zadd(self, key: str, mapping: Mapping) -> None:
        members = self._zsets.setdefault(key, {})
        for member, score in mapping.items():
            members[str(member)] = repr(float(score))

    def zrem(self, key: str, *members) -> None:
        grouped = self._zsets.setdefault(key, {})
        for member in members:
            grouped[str(member)] = None

    def sadd(self, key: str, *members) -> None:
        self._sets.setdefault(key, set()).update(str(m) for m in members)

    def commands(self) -> list[list[str]]:
        """Every write, the grouped ones last."""
        out = list(self.ops)
        for key, members in self._zsets.items():
            removed = [member for member, score in members.items() if score is None]
            added = [x for member, score in members.items() if score is not None for x in (score, member)]
            for start in range(0, len(removed), _MAX_OP_ARGS):
                out.append(["ZREM", key, *removed[start : start + _MAX_OP_ARGS]])
            for start in range(0, len(added), _MAX_OP_ARGS):
                out.append(["ZADD", key, *added[start : start + _MAX_OP_ARGS]])
        for key, members in self._sets.items():
            listed = sorted(members)
            for start in range(0, len(listed), _MAX_OP_ARGS):
                out.append(["SADD", key, *listed[start : start + _MAX_OP_ARGS]])
        return out

    def calls(self) -> list[tuple[list[str], str]]:
        """(KEYS, ARGV[1]) of the apply_ops.lua calls of these writes (all keys of one shard), in chunks Lua unpacks."""
        out = []
        commands = self.commands()
        for start in range(0, len(commands), 2000):
            chunk = commands[start : start + 2000]
            index: dict[str, int] = {}
            ops = []
            for name, key, *args in chunk:
                ops.append([name, index.setdefault(key, len(index) + 1), *args])
            out.append((list(index), json.dumps(ops, separators=(",", ":"))))
        return out


def _counts(raw: Sequence[bytes | str | None | bool]) -> Counts:
    exposures, clicks, ts = raw
    if exposures is None or exposures is False:
        return Counts()
    return Counts(float(exposures), float(clicks or 0), float(ts) if ts and float(ts) else None)


@dataclass(slots=True)
class RawMessage:
    """A Kafka message as the worker received it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None


@dataclass
class BatchResult:
    """What one applied batch did (for metrics and tests)."""

    applied_messages: int = 0
    skipped_messages: int = 0  # at or below the stored offsets of every shard: applied before (redelivery)
    exposures: int = 0
    clicks: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    retries: int = 0


def dead_letter(message: RawMessage, reasons: list[str], event_id: str | None = None) -> DeadLetter:
    payload = message.value or b""
    return DeadLetter(
        reasons=reasons,
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        payload=payload.decode("utf-8", errors="replace"),
        payload_b64=base64.b64encode(payload).decode("ascii"),
        event_id=event_id,
    )


class StreamStore:
    """The stream's Redis state: applies batches exactly once per shard, rebuilds queues, registers videos, collects
    pushes."""

    stats_read_chunk = 2000  # keys per script call of the pusher's statistics read (bounds one call's time in Redis)
    stats_read_parallel = 8  # of those calls in flight at once (below redis.max_connections per node)

    def __init__(self, client, layout: KeyLayout, config: StreamConfig, push_enabled: bool = False) -> None:
        self.client = client
        self.layout = layout
        self.config = config
        self.push_enabled = push_enabled
        self.topics_of: dict[int, tuple[int, ...]] = {}  # cache of the video topics keys; Redis is the truth
        self._rng = random.Random(config.seed)  # seeds each queue rebuild's draw of fresh videos
        # every call's keys share one shard's slot: on a cluster each goes straight to the slot's master
        self._rebuild_script = SlotScript(client, lua("rebuild_queues"))
        self._apply_script = SlotScript(client, lua("apply_batch"))
        self._read_script = SlotScript(client, lua("read_videos"))
        self._ops_script = SlotScript(client, lua("apply_ops"))
        self._take_script = SlotScript(client, lua("take_set"))
        self._write_queue_script = SlotScript(client, lua("write_queue"))
        # last applied offset per shard and (Kafka topic, partition), as last seen in Redis
        self._applied: list[dict[tuple[str, int], int]] = [{} for _ in layout.all_shards()]
        self.epochs: list[str] | None = None  # each shard's epoch as this worker knows it
        self.highest_applied: dict[tuple[str, int], int] = {}  # highest offset this worker ever applied, per partition
        self._video_keys: dict[int, tuple[str, str, list[str], str]] = {}  # video → (stats key, id text, topic id texts, topics joined)
        self._index_keys: dict[tuple[int, str], tuple[str, str]] = {}  # (shard, topic id text) → (established, fresh)
        self._token = uuid.uuid4().hex[:12]

    @property
    def prefix(self) -> str:
        return self.layout.prefix

    def limits(self, now_s: float | None = None) -> Limits:
        now_s = time.time() if now_s is None else now_s
        return Limits(
            max_payload_bytes=self.config.max_payload_bytes,
            max_videos_per_exposure=self.config.max_videos_per_exposure,
            min_event_ts_s=self.config.min_event_ts_s,
            max_event_ts_s=now_s + self.config.max_clock_skew_s,
        )

    # ------------------------------------------------------------ epochs and offsets

    async def init_epochs(self) -> list[str]:
        """Start the epoch of every shard that has none (SET NX) and learn every shard's epoch."""
        layout = self.layout
        token = f"{time.time():.3f}-{uuid.uuid4().hex[:8]}"
        for shard in layout.all_shards():
            await self.client.set(layout.epoch(shard), token, nx=True)
        self.epochs = [_text(await self.client.get(layout.epoch(shard))) for shard in layout.all_shards()]
        return self.epochs

    async def lost_shards(self) -> list[int]:
        """Shards whose stored epoch is not the one this store knows (their state was lost or rebuilt)."""
        if self.epochs is None:
            return []
        layout = self.layout
        stored = [_text(raw) for raw in await asyncio.gather(*(self.client.get(layout.epoch(shard)) for shard in layout.all_shards()))]
        return [shard for shard, (now, known) in enumerate(zip(stored, self.epochs)) if now != known]

    def forget_offsets(self) -> None:
        """Drop the offsets this worker remembers (they are read from Redis again)."""
        self._applied = [{} for _ in self.layout.all_shards()]

    async def stored_offsets(self, kafka_topic: str, partitions: Iterable[int]) -> dict[int, int | None]:
        """Per partition, the lowest stored offset over the shards (None when a shard has none): where the group
        must resume so that no shard misses a message."""
        partitions = list(partitions)
        out: dict[int, int | None] = {p: None for p in partitions}
        lowest: dict[int, int] = {}
        missing: set[int] = set()
        if not partitions:
            return out
        replies = await asyncio.gather(
            *(self.client.mget([self.layout.offset(shard, kafka_topic, p) for p in partitions]) for shard in self.layout.all_shards())
        )
        for raw in replies:
            for p, value in zip(partitions, raw):
                if value is None:
                    missing.add(p)
                else:
                    lowest[p] = min(int(value), lowest.get(p, int(value)))
        for p in partitions:
            out[p] = None if p in missing or p not in lowest else lowest[p]
        return out

    async def applied_offset(self, kafka_topic: str, partition: int) -> int:
        """The offset every shard has applied (the minimum; -1 when a shard has none)."""
        lowest = (await self.stored_offsets(kafka_topic, [partition]))[partition]
        return -1 if lowest is None else lowest

    # ------------------------------------------------------------ video topics

    async def fetch_topics(self, video_ids: Iterable[int]) -> None:
        """Fill the topics cache for ``video_ids`` not in it yet (unknown videos stay absent)."""
        missing = [video_id for video_id in set(video_ids) if video_id not in self.topics_of]
        layout = self.layout
        by_shard: dict[int, list[int]] = {}
        for video_id in missing:
            by_shard.setdefault(layout.shard(video_id), []).append(video_id)
        for ids in by_shard.values():
            for start in range(0, len(ids), 10000):
                chunk = ids[start : start + 10000]
                values = await self.client.mget([layout.video_topics(video_id) for video_id in chunk])
                for video_id, raw in zip(chunk, values):
                    if raw is not None:
                        self._set_topics(video_id, tuple(decode_ids(raw)))

    def _set_topics(self, video_id: int, topics: tuple[int, ...]) -> None:
        self.topics_of[video_id] = topics
        self._video_keys.pop(video_id, None)

    def _video_entry(self, video_id: int) -> tuple[str, str, list[str], str]:
        known = self._video_keys.get(video_id)
        if known is None:
            topics = [str(t) for t in self.topics_of[video_id]]
            known = self._video_keys[video_id] = (self.layout.video_stats(video_id), str(video_id), topics, ",".join(topics))
        return known

    def _topic_index_keys(self, shard: int, topic: str) -> tuple[str, str]:
        known = self._index_keys.get((shard, topic))
        if known is None:
            known = self._index_keys[(shard, topic)] = (self.layout.established(shard, int(topic)), self.layout.fresh(shard, int(topic)))
        return known

    async def register_videos(
        self, topics_by_video: Mapping[int, Sequence[int]], chunk_size: int = 5000, show_progress: bool = False
    ) -> int:
        """Write videos' topic ids and put each video in its topics' indexes according to its current counts.

        Idempotent (a replayed video event changes nothing). A video whose topics changed leaves its old topics'
        indexes. Each shard's part of a chunk is written atomically.
        """
        layout = self.layout
        by_shard: dict[int, list[tuple[int, list[int]]]] = {}
        for video_id, topics in topics_by_video.items():
            by_shard.setdefault(layout.shard(int(video_id)), []).append((int(video_id), [int(t) for t in topics]))
        total = sum(len(items) for items in by_shard.values())
        with tqdm(total=total, desc="video topics → Redis", disable=not show_progress) as bar:
            for shard, items in by_shard.items():
                for start in range(0, len(items), chunk_size):
                    chunk = items[start : start + chunk_size]
                    await self._register_chunk(shard, chunk)
                    bar.update(len(chunk))
        return total

    async def _register_chunk(self, shard: int, chunk: list[tuple[int, list[int]]]) -> None:
        layout = self.layout
        keys = [layout.video_stats(v) for v, _ in chunk] + [layout.video_topics(v) for v, _ in chunk]
        raw = json.loads(await self._read_script(keys=keys, args=[len(chunk)]))
        ops = _Ops()
        for index, (video_id, topics) in enumerate(chunk):
            old_raw = raw[len(chunk) + index]
            old_topics = decode_ids(old_raw) if isinstance(old_raw, str) else []
            counts = _counts(raw[index])
            ops.set(layout.video_topics(video_id), encode_ids(topics))
            for topic_id in set(old_topics) - set(topics):
                ops.zrem(layout.established(shard, topic_id), video_id)
                ops.zrem(layout.fresh(shard, topic_id), video_id)
                ops.sadd(layout.dirty(shard), topic_id)
            if topics:
                ops.sadd(layout.all_topics(shard), *topics)
            self._index_writes(ops, shard, video_id, topics, counts)
        for call_keys, argument in ops.calls():
            await self._ops_script(keys=call_keys, args=[argument])
        for video_id, topics in chunk:
            self._set_topics(video_id, tuple(topics))

    async def load_video_topics_table(self, tables_dir: Path, show_progress: bool = True) -> int:
        """Load the offline VIDEO_TOPICS table (video_id, topic_ids) into Redis; returns the number of videos."""
        from topicfs.tables import VIDEO_TOPICS

        path = Path(tables_dir) / VIDEO_TOPICS
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run the offline topic job first, or publish videos with topic_ids")
        frame = pd.read_parquet(path, columns=["video_id", "topic_ids"])
        bad = frame["video_id"].isna() | frame["topic_ids"].isna()
        if bad.any():
            raise ValueError(f"{path}: {int(bad.sum())} rows lack video_id or topic_ids (first: row {int(bad.idxmax())})")
        mapping = {int(v): [int(t) for t in topics] for v, topics in zip(frame["video_id"], frame["topic_ids"])}
        count = await self.register_videos(mapping, show_progress=show_progress)
        logger.info("loaded topics of %d videos from %s", count, path)
        return count

    def _index_writes(self, ops: _Ops, shard: int, video_id: int, topics: Sequence[int], counts: Counts) -> None:
        """Put a (re)registered video in its topics' established/fresh indexes of its shard per the τ1/τ2 rule, out
        of any other index of those topics, and mark the topics dirty (the batch script applies the same rule)."""
        config, layout = self.config, self.layout
        status = video_status(counts, config.min_exposures, config.min_ctr)
        for topic_id in topics:
            established, fresh = layout.established(shard, topic_id), layout.fresh(shard, topic_id)
            if status == "established":
                ops.zadd(established, {video_id: counts.ctr})
                ops.zrem(fresh, video_id)
            elif status == "fresh":  # the score (exposures) is informative only
                ops.zadd(fresh, {video_id: counts.exposures})
                ops.zrem(established, video_id)
            else:
                ops.zrem(established, video_id)
                ops.zrem(fresh, video_id)
        if topics:
            ops.sadd(layout.dirty(shard), *topics)

    # ------------------------------------------------------------ one batch, one script call per shard

    async def apply_batch(
        self,
        messages: Sequence[RawMessage],
        send_dead_letters: Callable[[list[DeadLetter]], Awaitable[None]],
        now_s: float | None = None,
    ) -> BatchResult:
        """Validate, count and store one batch of events-topic messages exactly once per shard (module docstring).

        Invalid messages and the invalid parts of partly bad ones go to ``send_dead_letters`` (awaited before the
        state commits, so a dead letter is never lost; after a crash in between it may be sent twice, with the same
        source partition and offset). Raises :class:`StateLost` when a shard's state was lost; nothing of the batch
        is then written to that shard.
        """
        if not messages:
            return BatchResult()
        if self.epochs is None:
            await self.init_epochs()
        layout = self.layout
        limits = self.limits(now_s)
        parsed = [parse_event(message.value, limits) for message in messages]
        result = BatchResult()
        sent_dead_letters: set[tuple[int, int]] = set()
        partitions = sorted({(m.topic, m.partition) for m in messages})
        for shard in layout.all_shards():
            applied = self._applied[shard]
            unknown = [tp for tp in partitions if tp not in applied]
            if unknown:
                stored = await self.client.mget([layout.offset(shard, topic, p) for topic, p in unknown])
                for tp, raw in zip(unknown, stored):
                    applied[tp] = int(raw) if raw is not None else -1
        pending = set(layout.all_shards())
        best: tuple[int, BatchDelta, list[DeadLetter]] | None = None
        while pending:
            # shards that filtered against the same offsets share one fold
            groups: dict[tuple[int, ...], list[int]] = {}
            for shard in sorted(pending):
                groups.setdefault(tuple(self._applied[shard][tp] for tp in partitions), []).append(shard)
            calls = []
            for vector, shards in groups.items():
                upto = dict(zip(partitions, vector))
                fresh_items = [(m, pe) for m, pe in zip(messages, parsed) if m.offset > upto[(m.topic, m.partition)]]
                delta, dead = await self._fold(fresh_items)
                new_dead = [d for d in dead if (d.partition, d.offset) not in sent_dead_letters]
                if new_dead:
                    await send_dead_letters(new_dead)
                    sent_dead_letters.update((d.partition, d.offset) for d in new_dead)
                if best is None or len(fresh_items) > best[0]:
                    best = (len(fresh_items), delta, dead)
                last = dict(upto)
                for message, _ in fresh_items:
                    tp = (message.topic, message.partition)
                    if message.offset > last[tp]:
                        last[tp] = message.offset
                offsets = [[upto[tp], last[tp]] for tp in partitions]
                for shard, payload in self._payloads(delta, shards, partitions, offsets).items():
                    calls.append((shard, payload, last))
            replies = await asyncio.gather(
                *(self._apply_script(keys=keys, args=[self.epochs[shard], _dumps(body)]) for shard, (keys, body), _ in calls)
            )
            lost: list[int] = []
            for (shard, _, last), reply in zip(calls, replies):
                text = _text(reply)
                if text == "ok":
                    self._applied[shard].update(last)
                    for tp, offset in last.items():
                        if offset > self.highest_applied.get(tp, -1):
                            self.highest_applied[tp] = offset
                    pending.discard(shard)
                elif text.startswith("lost:"):
                    lost.append(shard)
                else:  # the stored offsets differ from those filtered against
                    applied = self._applied[shard]
                    for tp, now in zip(partitions, json.loads(text)):
                        if int(now) < applied[tp]:
                            lost.append(shard)  # behind what this worker saw stored: the shard lost state
                        applied[tp] = int(now)
                    result.retries += 1
            if lost:
                raise StateLost(
                    lost, "epoch missing or changed" if any(_text(r).startswith("lost:") for r in replies) else "stored offsets went back"
                )
        assert best is not None
        n_fresh, delta, dead = best
        result.skipped_messages = len(messages) - n_fresh
        result.applied_messages = n_fresh
        result.exposures, result.clicks, result.dead_letters = delta.n_exposures, delta.n_clicks, dead
        return result

    async def _fold(self, fresh_items: list) -> tuple[BatchDelta, list[DeadLetter]]:
        """Deltas and dead letters of the messages a shard group has not applied yet."""
        await self.fetch_topics(
            video_id
            for _, (event, _) in fresh_items
            if event is not None
            for video_id in (event.video_ids if hasattr(event, "video_ids") else [event.video_id])
        )
        events, dead = [], []
        for message, (event, errors) in fresh_items:
            if event is not None:
                event, unknown_videos = drop_unknown_videos(event, self.topics_of)
                errors = errors + unknown_videos
            if event is not None:
                events.append(event)
            if errors:
                dead.append(dead_letter(message, errors, getattr(event, "event_id", None) or _event_id(message)))
        delta = fold_events(events, self.topics_of, self.config.half_life_s, self.config.user_exposure_counts)
        return delta, dead

    def _payloads(
        self, delta: BatchDelta, shards: Sequence[int], partitions: Sequence[tuple[str, int]], offsets: list
    ) -> dict[int, tuple[list[str], dict]]:
        """(KEYS, the JSON argument) of apply_batch.lua for each shard in ``shards`` (every one, even with no
        deltas); ``offsets`` = [expected, new] per partition of ``partitions``. The keys go in sections in the order
        of the lists that use them, so an entry needs no key index (the script's header has the layout)."""
        layout, config = self.layout, self.config
        single = layout.shards == 1
        parts = {shard: ([], [], [], [], [], [], [], []) for shard in shards}  # v, vk, t, tk, u, uk, x, xk
        video_entry = self._video_entry
        for video_id, counts in delta.videos.items():
            part = parts.get(0 if single else layout.shard(video_id))
            if part is None:
                continue
            stats_key, id_text, topics, _ = video_entry(video_id)
            part[0].append([counts.exposures, counts.clicks, counts.ts, id_text, topics])
            part[1].append(stats_key)
        touched = [str(t) for t in delta.topics]  # every topic of the batch's videos (a shard's videos use a subset)
        for topic_id, counts in delta.topics.items():
            part = parts.get(0 if single else layout.shard(topic_id))
            if part is not None:
                part[2].append([counts.exposures, counts.clicks, counts.ts, str(topic_id)])
                part[3].append(layout.topic_stats(topic_id))
        topics_of = self.topics_of
        for user_id, clicked in delta.user_clicks.items():
            part = parts.get(0 if single else layout.shard(user_id))
            if part is not None:
                entries = [video_entry(v) for v in clicked]
                part[4].append([str(user_id), [e[1] for e in entries], [e[3] for e in entries]])
                part[5].extend(layout.user_history(user_id))
        if config.user_exposure_counts:
            for user_id, increments in _exposure_increments(delta, topics_of).items():
                part = parts.get(0 if single else layout.shard(user_id))
                if part is not None:
                    part[6].append(increments)
                    part[7].append(layout.user_exposures(user_id))
        out = {}
        for shard, (videos, video_keys, topics, topic_keys, users, user_keys, exposed, exposed_keys) in parts.items():
            keys = [layout.epoch(shard), *(layout.offset(shard, t, p) for t, p in partitions)]
            body = {
                "tau1": config.min_exposures,
                "tau2": config.min_ctr,
                "n1": config.recent_clicks,
                "h": config.half_life_s or 0,
                "o": offsets,
            }
            body["kv"] = len(keys) + 1
            keys += video_keys
            body["kt"] = len(keys) + 1
            keys += topic_keys
            body["ku"] = len(keys) + 1
            keys += user_keys
            body["kx"] = len(keys) + 1
            keys += exposed_keys
            body.update(ko=2, v=videos, t=topics, u=users, x=exposed)
            index = {}
            for topic in touched:
                established, fresh = self._topic_index_keys(shard, topic)
                index[topic] = [len(keys) + 1, len(keys) + 2]
                keys += (established, fresh)
            body["tk"] = index
            if videos:
                keys.append(layout.dirty(shard))
                body["d"] = len(keys)
            if topics:
                keys.append(layout.popular(shard))
                body["pop"] = len(keys)
            if self.push_enabled:
                body["push"] = [len(keys) + 1, len(keys) + 2, len(keys) + 3]
                keys += (layout.push_pending(shard, entity) for entity in ENTITIES)
            out[shard] = (keys, body)
        return out

    # ------------------------------------------------------------ served queues

    async def mark_all_topics_dirty(self) -> None:
        """Ask for every queue to be rebuilt (the fresh-video rotation)."""
        layout = self.layout
        for shard in layout.all_shards():
            await self.client.sunionstore(layout.dirty(shard), [layout.dirty(shard), layout.all_topics(shard)])

    async def rebuild_dirty_queues(self, topics_per_call: int | None = None) -> int:
        """Rebuild the served queue of every dirty topic, ``topics_per_call`` topics per call; returns how many.
        Default on one shard 4: the call is one script, which holds Redis for about 1.7 ms per topic of 1,000 videos
        (benchmarks/bench_rebuild.py) while the pusher's and the API's commands wait, so a few topics per call keep
        that wait short. On a sharded layout 16: a call is one pipelined read per shard, then a write per queue, so
        more topics per call only mean fewer round trips."""
        layout = self.layout
        if topics_per_call is None:
            topics_per_call = 4 if layout.shards == 1 else 16
        if layout.shards == 1:
            topic_ids = sorted(int(t) for t in await self.client.smembers(layout.dirty(0)))
            for start in range(0, len(topic_ids), topics_per_call):
                await self._rebuild_one_shard(topic_ids[start : start + topics_per_call], want_queues=False)
            return len(topic_ids)
        topic_ids = sorted(await self._take_dirty())
        for start in range(0, len(topic_ids), topics_per_call):
            await self._rebuild_sharded(topic_ids[start : start + topics_per_call])
        return len(topic_ids)

    async def rebuild_queue(self, topic_id: int) -> list[int]:
        """Rebuild one topic's served queue (see :meth:`rebuild_queues`)."""
        return (await self.rebuild_queues([topic_id]))[topic_id]

    async def rebuild_queues(self, topic_ids: Sequence[int]) -> dict[int, list[int]]:
        """Write the served queue of each topic and return them: established videos by CTR with a fresh
        ``fresh_share`` spread among them (:func:`stream.logic.build_queue`).

        The fresh videos are a new random draw each time (so they rotate). With one shard, one script call rebuilds
        the group inside Redis atomically. With several, each shard's indexes are read in one round trip, merged in
        Python with :func:`stream.logic.build_queue` (the fresh draw stays uniform over all shards' fresh videos),
        and each queue is written in one transaction; a topic a batch dirties afterwards is rebuilt by the next call.
        """
        if self.layout.shards == 1:
            return dict(zip(topic_ids, await self._rebuild_one_shard(list(topic_ids), want_queues=True)))
        layout = self.layout
        for shard in layout.all_shards():  # taken first: a batch that dirties a topic meanwhile marks it again
            await self.client.srem(layout.dirty(shard), *topic_ids)
        return await self._rebuild_sharded(list(topic_ids))

    def _queue_shape(self) -> tuple[int, int]:
        config = self.config
        keep = config.max_queue_length - math.ceil(config.fresh_share * config.max_queue_length - 1e-9)
        sample_size = max(math.ceil(config.fresh_share * config.max_queue_length), config.cold_start_fresh)
        return max(keep, 0), sample_size

    async def _rebuild_one_shard(self, topic_ids: list[int], want_queues: bool) -> list:
        if not topic_ids:
            return []
        config, layout = self.config, self.layout
        keep, sample_size = self._queue_shape()
        keys = [
            key for topic_id in topic_ids for key in (layout.established(0, topic_id), layout.fresh(0, topic_id), layout.queue(topic_id))
        ]
        args = [
            keep,
            sample_size,
            repr(float(config.fresh_share)),
            config.cold_start_fresh,
            config.max_queue_length,
            self._rng.getrandbits(31),
            int(want_queues),
            *topic_ids,
        ]
        reply = await self._rebuild_script(keys=[*keys, layout.dirty(0)], args=args)
        return [[int(v) for v in queue] for queue in reply] if want_queues else reply

    async def _take_dirty(self) -> set[int]:
        """Take every shard's dirty topics (read and cleared in one transaction per shard). A batch that dirties a
        topic afterwards marks it again, so the rebuild that follows never misses a change."""
        taken: set[int] = set()
        layout = self.layout
        for shard in layout.all_shards():
            taken.update(int(t) for t in await self._take_script(keys=[layout.dirty(shard)]))
        return taken

    async def _rebuild_sharded(self, topic_ids: list[int]) -> dict[int, list[int]]:
        if not topic_ids:
            return {}
        config, layout = self.config, self.layout
        keep, sample_size = self._queue_shape()
        per_shard = await asyncio.gather(*(self._read_indexes(shard, topic_ids, keep, sample_size) for shard in layout.all_shards()))
        queues: dict[int, list[int]] = {}
        for i, topic_id in enumerate(topic_ids):
            established = [pair for shard_reads in per_shard for pair in shard_reads[i][0]]
            counts = [shard_reads[i][1] for shard_reads in per_shard]
            samples = [shard_reads[i][2] for shard_reads in per_shard]
            rng = random.Random(self._rng.getrandbits(31))
            fresh = _uniform_draw(samples, counts, sample_size, rng)
            queues[topic_id] = build_queue(
                established, fresh, sum(counts), config.fresh_share, config.cold_start_fresh, config.max_queue_length, rng
            )
        await asyncio.gather(
            *(self._write_queue_script(keys=[layout.queue(t)], args=[str(v) for v in queue]) for t, queue in queues.items())
        )
        return queues

    async def _read_indexes(
        self, shard: int, topic_ids: list[int], keep: int, sample_size: int
    ) -> list[tuple[list[tuple[int, float]], int, list[int]]]:
        """Per topic, of one shard: its top ``keep`` established (video, CTR; equal CTRs lower id first, also where a
        run of equal CTRs reaches past the cut), its fresh count and a random sample of its fresh videos, in one round
        trip (two when a run of equal CTRs reaches the cut: Redis cuts it by byte order, so that run is read whole)."""
        layout = self.layout
        async with self.client.pipeline(transaction=False) as pipe:
            for topic_id in topic_ids:
                if keep > 0:
                    pipe.zrevrange(layout.established(shard, topic_id), 0, keep - 1, withscores=True)
                pipe.zcard(layout.fresh(shard, topic_id))
                if sample_size > 0:
                    pipe.zrandmember(layout.fresh(shard, topic_id), sample_size)
            raw = await pipe.execute()
        out, i = [], 0
        for _ in topic_ids:
            established = []
            if keep > 0:
                established = [(int(v), float(score)) for v, score in raw[i]]
                i += 1
            count = int(raw[i])
            i += 1
            sample = []
            if sample_size > 0:
                sample = [int(v) for v in raw[i] or []]
                i += 1
            out.append((established, count, sample))
        at_cut = [k for k, (established, _, _) in enumerate(out) if keep > 0 and len(established) == keep]
        if at_cut:
            async with self.client.pipeline(transaction=False) as pipe:
                for k in at_cut:
                    last = out[k][0][-1][1]
                    pipe.zrangebyscore(layout.established(shard, topic_ids[k]), last, last)
                runs = await pipe.execute()
            for k, run in zip(at_cut, runs):
                established, count, sample = out[k]
                last = established[-1][1]
                above = [pair for pair in established if pair[1] != last]
                out[k] = (above + [(v, last) for v in sorted(int(v) for v in run)[: keep - len(above)]], count, sample)
        return out

    # ------------------------------------------------------------ Feast push

    async def take_pending_push(self) -> dict[str, list[int]]:
        """Move the ids changed since the last push aside (atomically, per shard) and return them per entity."""
        taken: dict[str, list[int]] = {}
        layout = self.layout
        for entity in ENTITIES:
            ids: set[int] = set()
            found = False
            for shard in layout.all_shards():
                pending = layout.push_pending(shard, entity)
                inflight = f"{pending}:inflight:{self._token}"
                try:
                    await self.client.rename(pending, inflight)
                except Exception as exc:  # no such key: nothing changed
                    if "no such key" not in str(exc).lower():
                        raise
                    continue
                found = True
                ids.update(int(v) for v in await self.client.smembers(inflight))
            if found:
                taken[entity] = sorted(ids)
        return taken

    async def finish_push(self, entities: Iterable[str], succeeded: bool) -> None:
        """Forget the pushed ids, or put them back for the next push when it failed."""
        layout = self.layout
        for entity in entities:
            for shard in layout.all_shards():
                pending = layout.push_pending(shard, entity)
                inflight = f"{pending}:inflight:{self._token}"
                if not succeeded:
                    await self.client.sunionstore(pending, [pending, inflight])
                await self.client.delete(inflight)

    async def has_pending_push(self) -> bool:
        layout = self.layout
        for shard in layout.all_shards():
            for entity in ENTITIES:
                if await self.client.exists(layout.push_pending(shard, entity)):
                    return True
        return False

    async def _read_stats(self, ids: Sequence[int], key_of) -> list:
        """The stored (exposures, clicks, ts) of each id, in the order of ``ids``: one read_videos script call per
        shard and ``stats_read_chunk`` keys, concurrently (a pipeline of HMGETs cost the pusher ~10 µs of Python per id)."""
        chunk = self.stats_read_chunk
        by_shard: dict[int, list[int]] = {}
        for index, entity_id in enumerate(ids):
            by_shard.setdefault(self.layout.shard(entity_id), []).append(index)
        calls = [indexes[start : start + chunk] for indexes in by_shard.values() for start in range(0, len(indexes), chunk)]
        # a cluster client raises past its connections per node (a single node's pool waits): never more calls in flight
        bound = getattr(self.client, "connection_kwargs", {}).get("max_connections")
        window = max(1, min(self.stats_read_parallel, bound or self.stats_read_parallel))
        replies: list = []
        for start in range(0, len(calls), window):
            replies += await asyncio.gather(
                *(
                    self._read_script(keys=[key_of(ids[i]) for i in indexes], args=[len(indexes)])
                    for indexes in calls[start : start + window]
                )
            )
        raw: list = [None] * len(ids)
        for indexes, reply in zip(calls, replies):
            for index, values in zip(indexes, json.loads(reply)):
                raw[index] = values
        return raw

    async def stats_frame(self, entity: str, ids: Sequence[int], now: pd.Timestamp) -> pd.DataFrame:
        """Current statistics of ``ids`` as the push source ``entity`` expects them (see :mod:`stream.sinks`)."""
        layout = self.layout
        if entity == "user":
            async with self.client.pipeline(transaction=False) as pipe:
                for entity_id in ids:
                    pipe.hgetall(layout.user_topic_counts(entity_id))
                raw = await pipe.execute()
            rows = []
            for user_id, histogram in zip(ids, raw):
                ordered = sorted(((int(t), int(n)) for t, n in histogram.items()), key=lambda item: (-item[1], item[0]))
                rows.append(
                    {"user_id": user_id, "recent_topic_ids": [t for t, _ in ordered], "recent_topic_counts": [n for _, n in ordered]}
                )
            frame = pd.DataFrame(rows, columns=["user_id", "recent_topic_ids", "recent_topic_counts"])
            frame["user_id"] = frame["user_id"].astype("int64")
        else:
            id_column = f"{entity}_id"
            counts = [_counts(r) for r in await self._read_stats(ids, layout.video_stats if entity == "video" else layout.topic_stats)]
            frame = pd.DataFrame(
                {
                    id_column: pd.array(list(ids), dtype="int64"),
                    # decayed counts are fractional: the push sources hold int64 counts, so they are rounded
                    "exposures": pd.array([round(c.exposures) for c in counts], dtype="int64"),
                    "clicks": pd.array([round(c.clicks) for c in counts], dtype="int64"),
                    "ctr": pd.array([c.ctr for c in counts], dtype="float32"),
                }
            )
        frame["event_timestamp"] = now
        frame["created"] = now
        return frame


def _exposure_increments(delta: BatchDelta, topics_of: Mapping[int, Sequence[int]]) -> dict[int, list]:
    """Per user, the exposure-history increments of a batch as [field, n, field, n, ...]: ``e`` / ``c`` the user's
    exposures / clicks, ``e:{topic}`` / ``c:{topic}`` those of videos holding the topic (plain counts; the offline
    twin is :func:`serving.features.exposure_history`)."""
    per_user: dict[int, dict[str, int]] = {}
    for kind, lists in (("e", delta.user_exposed), ("c", delta.user_clicks)):
        for user_id, videos in lists.items():
            counts = per_user.setdefault(user_id, {})
            counts[kind] = counts.get(kind, 0) + len(videos)
            for video_id in videos:
                for topic_id in topics_of.get(video_id, ()):
                    field_name = f"{kind}:{topic_id}"
                    counts[field_name] = counts.get(field_name, 0) + 1
    return {user_id: [x for name, n in counts.items() for x in (name, n)] for user_id, counts in per_user.items()}


def _uniform_draw(samples: Sequence[Sequence[int]], counts: Sequence[int], size: int, rng: random.Random) -> list[int]:
    """Up to ``size`` distinct videos drawn uniformly from the union of the shards' fresh sets, given a uniform
    random sample of each (ZRANDMEMBER, at least ``min(size, count)`` members) and each set's size: every draw picks
    a shard in proportion to its members not drawn yet, then that shard's next sampled member."""
    pools = [list(dict.fromkeys(sample)) for sample in samples]
    for pool in pools:
        rng.shuffle(pool)
    remaining = list(counts)
    out: list[int] = []
    while len(out) < size:
        total = sum(r for r, pool in zip(remaining, pools) if pool)
        if total <= 0:
            break
        pick = rng.randrange(total)
        for shard, pool in enumerate(pools):
            if not pool:
                continue
            if pick < remaining[shard]:
                out.append(pool.pop())
                remaining[shard] -= 1
                break
            pick -= remaining[shard]
    return out


def _dumps(body: dict) -> str:
    return json.dumps(body, separators=(",", ":"))


def _text(raw) -> str:
    if raw is None:
        return ""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _event_id(message: RawMessage) -> str | None:
    """Best-effort event_id of an invalid message, for the dead letter."""
    try:
        value = json.loads(message.value or b"")
        return value.get("event_id") if isinstance(value, dict) and isinstance(value.get("event_id"), str) else None
    except ValueError:
        return None
