"""Synchronous Kafka tools on kafka-python: replay a click log, read the dead letters, check the topics.

- :func:`interactions_to_events` + :func:`produce_events` (``topicfs stream produce --interactions FILE``): a click
  log in the interactions contract (:mod:`topicfs.contracts`) becomes the stream's documented events. Each user's
  rows are grouped into feed refreshes: a refresh starts at a row and takes the user's following rows less than
  ``window_s`` seconds after it (at most ``stream.max_videos_per_exposure``). A refresh is one exposure message
  listing its videos (one entry per row, so exposure counts equal the log's rows) at the refresh's first
  timestamp, and one click message per clicked row at that row's timestamp. Messages are keyed by user id and
  sent in timestamp order (an exposure before the clicks of its refresh).
- :func:`read_dead_letters`, :func:`summarise`, :func:`reinject` (``topicfs stream dead-letters``): counts by
  reason, samples, and sends back what the worker did not count.
- :func:`check_topics` (``topicfs stream topics``): partition count, replication and retention of the stream's
  topics against the settings, creating the missing ones.

Every client gets the cluster's security settings from :mod:`stream.security`.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from stream.logic import Limits, parse_event, parse_video_event
from stream.security import KafkaSecurityError, kafka_python_params, preflight
from topicfs.settings import KafkaConfig, Settings


class KafkaToolError(RuntimeError):
    """A user-facing problem of a Kafka tool (bad input, unreachable cluster); the message is the whole story."""


# ------------------------------------------------------------------ click log -> events


def _epoch_seconds(ts: pd.Series) -> np.ndarray:
    if not isinstance(ts.dtype, pd.DatetimeTZDtype) and not pd.api.types.is_datetime64_any_dtype(ts):
        ts = pd.to_datetime(ts, utc=True)
    if ts.dt.tz is None:
        ts = ts.dt.tz_localize("UTC")
    return ((ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds()).to_numpy(dtype="float64")


def interactions_to_events(
    interactions: pd.DataFrame, window_s: float = 60.0, max_videos: int = 200, id_prefix: str = "log", ts_shift_s: float = 0.0
) -> list[dict]:
    """The stream messages of a click log (columns user_id, video_id, clicked, ts), in timestamp order.

    Event ids are ``{id_prefix}-x{n}`` for the n-th refresh and ``{id_prefix}-c{row}`` for the click of data row
    ``row`` (1-based, the file's order), so the same file gives the same ids. ``ts_shift_s`` is added to every ts.
    """
    if window_s <= 0:
        raise KafkaToolError(f"the refresh window must be > 0 seconds, got {window_s}")
    if interactions.empty:
        return []
    seconds = _epoch_seconds(interactions["ts"]) + ts_shift_s
    users = interactions["user_id"].to_numpy(dtype="int64")
    videos = interactions["video_id"].to_numpy(dtype="int64")
    clicked = interactions["clicked"].to_numpy().astype(bool)
    rows = np.arange(len(interactions))
    order = np.lexsort((rows, seconds, users))  # by user, then time, then file order
    messages: list[tuple[float, int, int, dict]] = []  # (ts, 0 exposure / 1 click, sequence, message)
    refresh = 0
    start = 0
    while start < len(order):
        first = order[start]
        user, first_ts = users[first], seconds[first]
        end = start + 1
        while end < len(order) and end - start < max_videos and users[order[end]] == user and seconds[order[end]] - first_ts < window_s:
            end += 1
        members = order[start:end]
        event_id = f"{id_prefix}-x{refresh}"
        messages.append(
            (
                first_ts,
                0,
                int(first),
                {
                    "type": "exposure",
                    "event_id": event_id,
                    "user_id": int(user),
                    "request_id": event_id,
                    "video_ids": [int(videos[i]) for i in members],
                    "ts": float(first_ts),
                },
            )
        )
        for i in members:
            if clicked[i]:
                messages.append(
                    (
                        seconds[i],
                        1,
                        int(i),
                        {
                            "type": "click",
                            "event_id": f"{id_prefix}-c{i + 1}",
                            "user_id": int(user),
                            "video_id": int(videos[i]),
                            "ts": float(seconds[i]),
                        },
                    )
                )
        refresh += 1
        start = end
    messages.sort(key=lambda item: item[:3])
    return [message for *_, message in messages]


def check_event_times(events: list[dict], settings: Settings, now_s: float | None = None) -> None:
    """Refuse a replay whose events the worker would dead-letter as absurd (before stream.min_event_ts_s, or
    later than now + stream.max_clock_skew_s), naming how many and the way out."""
    if not events:
        return
    now_s = time.time() if now_s is None else now_s
    config = settings.stream
    early = sum(1 for e in events if e["ts"] < config.min_event_ts_s)
    late = sum(1 for e in events if e["ts"] > now_s + config.max_clock_skew_s)
    if early or late:
        first = datetime.fromtimestamp(min(e["ts"] for e in events), timezone.utc).strftime("%Y-%m-%d")
        last = datetime.fromtimestamp(max(e["ts"] for e in events), timezone.utc).strftime("%Y-%m-%d")
        bound = datetime.fromtimestamp(config.min_event_ts_s, timezone.utc).strftime("%Y-%m-%d")
        raise KafkaToolError(
            f"the log runs from {first} to {last}: {early} events before {bound} (stream.min_event_ts_s) and {late} in the future "
            "would be dead-lettered by the worker; --shift-to-now moves the whole log so its last event is now"
        )


def _quiet_kafka_python() -> None:
    """kafka-python logs every connection and metadata refresh at INFO; keep its warnings and errors only."""
    import logging

    library = logging.getLogger("kafka")
    if library.level == logging.NOTSET:
        library.setLevel(logging.WARNING)
    cluster = logging.getLogger("kafka.cluster")  # closing a client cancels its metadata refresh, logged as an ERROR
    if not any(isinstance(f, _CancelledRefresh) for f in cluster.filters):
        cluster.addFilter(_CancelledRefresh())


class _CancelledRefresh:
    def filter(self, record) -> bool:
        return not (record.getMessage().startswith("Metadata refresh: failed") and "Cancelled" in record.getMessage())


def producer(kafka: KafkaConfig, **overrides):
    """A kafka-python producer with the cluster's security settings: every message acknowledged by all replicas,
    retries that keep each partition's order (idempotent producer)."""
    from kafka import KafkaProducer

    _quiet_kafka_python()
    preflight(kafka)
    params = dict(acks="all", linger_ms=5, batch_size=256 * 1024, enable_idempotence=True, request_timeout_ms=30000)
    params.update(overrides)
    return KafkaProducer(**kafka_python_params(kafka), **params)


def produce_events(
    kafka: KafkaConfig,
    topic: str,
    events: Iterable[dict | bytes],
    key_field: str = "user_id",
    rate_per_s: float | None = None,
    speedup: float | None = None,
    total: int | None = None,
    show_progress: bool = False,
) -> dict[int, int]:
    """Send ``events`` keyed by ``key_field``; at most ``rate_per_s`` per second, or at event-time pace divided by
    ``speedup`` (both None: as fast as possible). Returns the messages acknowledged per partition."""
    from tqdm.auto import tqdm

    if rate_per_s is not None and speedup is not None:
        raise KafkaToolError("--rate and --speedup exclude each other: give one")
    sender = producer(kafka)
    per_partition: Counter = Counter()
    pending = []

    def settle() -> None:
        for future in pending:
            per_partition[future.get(timeout=60).partition] += 1
        pending.clear()

    started = time.perf_counter()
    first_ts = None
    try:
        for index, event in enumerate(tqdm(events, total=total, desc=f"produce → {topic}", unit="msg", disable=not show_progress)):
            if isinstance(event, dict):
                value = json.dumps(event, separators=(",", ":")).encode()
                key = event.get(key_field)
            else:
                value, key = event, None
            if rate_per_s:
                wait = (index + 1) / rate_per_s - (time.perf_counter() - started)
            elif speedup and isinstance(event, dict):
                first_ts = event["ts"] if first_ts is None else first_ts
                wait = (event["ts"] - first_ts) / speedup - (time.perf_counter() - started)
            else:
                wait = 0.0
            if wait > 0.002:
                time.sleep(wait)
            pending.append(sender.send(topic, value=value, key=str(key).encode() if key is not None else None))
            if len(pending) >= 5000:
                settle()
        sender.flush()
        settle()
    finally:
        sender.close(timeout=10)
    return dict(sorted(per_partition.items()))


# ------------------------------------------------------------------ dead letters


def consumer(kafka: KafkaConfig, **overrides):
    """A kafka-python consumer with the cluster's security settings (no group unless ``group_id`` is given)."""
    from kafka import KafkaConsumer

    _quiet_kafka_python()
    preflight(kafka)
    params = dict(enable_auto_commit=False, auto_offset_reset="earliest", consumer_timeout_ms=1000)
    params.update(overrides)
    return KafkaConsumer(**kafka_python_params(kafka), **params)


@dataclass
class Letter:
    """One dead letter as read back: where it sits on the dead-letter topic and what it says."""

    partition: int
    offset: int
    body: dict

    @property
    def payload(self) -> bytes:
        return base64.b64decode(self.body.get("payload_b64", "")) if self.body.get("payload_b64") else self.body.get("payload", "").encode()


def read_dead_letters(kafka: KafkaConfig, topic: str, after: dict[int, int] | None = None, idle_s: float = 1.0) -> list[Letter]:
    """Every dead letter on ``topic`` (from offset ``after[p]`` on, where given), read until ``idle_s`` brings nothing new."""
    from kafka import TopicPartition

    reader = consumer(kafka, consumer_timeout_ms=int(idle_s * 1000))
    try:
        parts = reader.partitions_for_topic(topic)
        if not parts:
            raise KafkaToolError(
                f"topic {topic!r} does not exist on {kafka.bootstrap_servers} (stream.dead_letter_topic; `topicfs stream topics --create` makes it)"
            )
        partitions = [TopicPartition(topic, p) for p in sorted(parts)]
        reader.assign(partitions)
        for tp in partitions:
            if after and after.get(tp.partition) is not None:
                reader.seek(tp, after[tp.partition])
            else:
                reader.seek_to_beginning(tp)
        letters = []
        for record in reader:  # ends after idle_s without a record
            try:
                body = json.loads(record.value)
            except (TypeError, ValueError):
                body = {"reasons": ["unreadable dead letter"], "payload": (record.value or b"").decode("utf-8", "replace")}
            letters.append(
                Letter(record.partition, record.offset, body if isinstance(body, dict) else {"reasons": ["unreadable dead letter"]})
            )
        return letters
    finally:
        reader.close()


_GOT = re.compile(r", got .*$")
_NUMBER = re.compile(r"-?\d+(\.\d+)?(e[+-]?\d+)?", re.IGNORECASE)


def reason_class(reason: str) -> str:
    """A reason without its particular values, so letters group by cause: 'unknown video_id 17' -> 'unknown video_id N'."""
    if reason.startswith("bad JSON"):
        return "bad JSON"
    return _NUMBER.sub("N", _GOT.sub(", got …", reason))


@dataclass
class Summary:
    total: int = 0
    by_reason: Counter = field(default_factory=Counter)
    by_source: Counter = field(default_factory=Counter)
    samples: dict[str, list[Letter]] = field(default_factory=dict)

    def text(self, width: int = 160) -> str:
        lines = [
            f"{self.total} dead letters"
            + (f" from {', '.join(f'{t} ({n})' for t, n in self.by_source.most_common())}" if self.total else "")
        ]
        for reason, count in self.by_reason.most_common():
            lines.append(f"{count:>8}  {reason}")
            for letter in self.samples.get(reason, []):
                payload = letter.body.get("payload", "")
                payload = payload if len(payload) <= width else payload[: width - 1] + "…"
                lines.append(
                    f"          e.g. {letter.body.get('source_topic')}[{letter.body.get('partition')}]@{letter.body.get('offset')}: {payload}"
                )
        return "\n".join(lines)


def summarise(letters: Iterable[Letter], samples_per_reason: int = 2) -> Summary:
    """Letters counted by reason class (a letter with two kinds of problem counts under both) and by source topic."""
    summary = Summary()
    for letter in letters:
        summary.total += 1
        summary.by_source[letter.body.get("source_topic", "?")] += 1
        for reason in sorted({reason_class(r) for r in letter.body.get("reasons", []) or ["(no reason given)"]}):
            summary.by_reason[reason] += 1
            kept = summary.samples.setdefault(reason, [])
            if len(kept) < samples_per_reason:
                kept.append(letter)
    return summary


def _as_int(value):
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _as_epoch_s(value):
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            return (
                pd.Timestamp(text).tz_localize("UTC").timestamp() if pd.Timestamp(text).tzinfo is None else pd.Timestamp(text).timestamp()
            )
        except (ValueError, TypeError):
            return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 1e11:
        return value / 1000.0  # epoch milliseconds
    return value


def correct(message: dict, source_kind: str) -> dict:
    """The corrections ``--reinject corrected`` applies: a missing ``type`` inferred (events: ``video_ids`` ->
    exposure, a lone ``video_id`` -> click; videos: video_published), ids given as numeric strings -> integers,
    ``ts`` as a numeric string, ISO-8601 text or epoch milliseconds -> epoch seconds, a numeric ``event_id`` -> text."""
    fixed = dict(message)
    if "type" not in fixed:
        if source_kind == "videos":
            fixed["type"] = "video_published"
        elif "video_ids" in fixed:
            fixed["type"] = "exposure"
        elif "video_id" in fixed:
            fixed["type"] = "click"
    for name in ("user_id", "video_id"):
        if name in fixed:
            fixed[name] = _as_int(fixed[name])
    for name in ("video_ids", "topic_ids"):
        if isinstance(fixed.get(name), list):
            fixed[name] = [_as_int(v) for v in fixed[name]]
    if "ts" in fixed:
        fixed["ts"] = _as_epoch_s(fixed["ts"])
    if isinstance(fixed.get("event_id"), (int, float)) and not isinstance(fixed.get("event_id"), bool):
        fixed["event_id"] = str(fixed["event_id"])
    return fixed


@dataclass
class Reinjection:
    """What a re-injection would send or sent: (topic, key, value) triples, and letters left out with the reason."""

    messages: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def _uncounted(letter: Letter, limits: Limits) -> tuple[dict | bytes | None, str]:
    """The part of a dead letter's message the worker did not count: the whole message, or for an exposure that was
    partly counted, an exposure of only the dropped videos. Returns (message, '') or (None, why not)."""
    raw = letter.payload
    event, errors = parse_event(raw, limits)
    if event is None or not hasattr(event, "video_ids"):
        try:
            parsed = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            return raw, ""
        return (parsed if isinstance(parsed, dict) else raw), ""
    # a partly valid exposure: its valid, known videos were counted; keep the others
    message = json.loads(raw)
    unknown = Counter(int(m.group(1)) for r in letter.body.get("reasons", []) for m in [re.fullmatch(r"unknown video_id (\d+)", r)] if m)
    counted = Counter(event.video_ids) - unknown
    rest = []
    for video_id in message.get("video_ids", []):
        if isinstance(video_id, int) and not isinstance(video_id, bool) and counted[video_id] > 0:
            counted[video_id] -= 1
        else:
            rest.append(video_id)
    if not rest:
        return None, "every video of it was counted"
    return {**message, "event_id": f"{message['event_id']}:rest", "video_ids": rest}, ""


def plan_reinjection(letters: Iterable[Letter], settings: Settings, mode: str, now_s: float | None = None) -> Reinjection:
    """The messages ``mode`` ('all' or 'corrected') sends back to the letters' source topics.

    'all': the uncounted part of every letter, unchanged (for causes that have gone: videos published since, a topic
    model fixed). 'corrected': the uncounted part after :func:`correct`, only when it then passes validation.
    """
    if mode not in {"all", "corrected"}:
        raise KafkaToolError(f"--reinject must be 'all' or 'corrected', got {mode!r}")
    config = settings.stream
    now_s = time.time() if now_s is None else now_s
    limits = Limits(config.max_payload_bytes, config.max_videos_per_exposure, config.min_event_ts_s, now_s + config.max_clock_skew_s)
    plan = Reinjection()
    # in the source's order: one user's events sit in one source partition, so their order is kept
    ordered = sorted(
        letters,
        key=lambda x: (str(x.body.get("source_topic")), x.body.get("partition", -1), x.body.get("offset", -1), x.partition, x.offset),
    )
    for letter in ordered:
        source = letter.body.get("source_topic")
        if source not in {config.events_topic, config.videos_topic}:
            plan.skipped[f"source topic {source!r} is not the events or videos topic"] += 1
            continue
        kind = "videos" if source == config.videos_topic else "events"
        if kind == "videos":
            try:
                message = json.loads(letter.payload)
            except (UnicodeDecodeError, ValueError):
                message = letter.payload
        else:
            message, why = _uncounted(letter, limits)
            if message is None:
                plan.skipped[why] += 1
                continue
        if mode == "corrected":
            if not isinstance(message, dict):
                plan.skipped["not a JSON object: nothing to correct"] += 1
                continue
            fixed = correct(message, kind)
            value = json.dumps(fixed, separators=(",", ":")).encode()
            _, errors = parse_video_event(value, limits) if kind == "videos" else parse_event(value, limits)
            if errors:
                plan.skipped["still invalid after correction: " + reason_class(errors[0])] += 1
                continue
            message = fixed
        if isinstance(message, dict):
            value = json.dumps(message, separators=(",", ":")).encode()
            key = message.get("video_id" if kind == "videos" else "user_id")
        else:
            value, key = message, None
        plan.messages.append((source, str(key).encode() if key is not None and not isinstance(key, (dict, list)) else None, value))
    return plan


def reinjection_group(settings: Settings) -> str:
    """The consumer group whose committed offsets remember how far the dead letters were re-injected."""
    return f"{settings.stream.app_id}.dead-letters"


def reinjected_upto(settings: Settings) -> dict[int, int]:
    """Per dead-letter partition: the offset after the last letter already re-injected (absent: none yet)."""
    from kafka import TopicPartition

    topic = settings.stream.dead_letter_topic
    reader = consumer(settings.kafka, group_id=reinjection_group(settings))
    try:
        parts = reader.partitions_for_topic(topic) or set()
        committed = {p: reader.committed(TopicPartition(topic, p)) for p in sorted(parts)}
        return {p: offset for p, offset in committed.items() if offset is not None}
    finally:
        reader.close()


def reinject(settings: Settings, letters: list[Letter], mode: str) -> tuple[Reinjection, dict[int, int]]:
    """Send the planned messages, then remember the letters as re-injected (commit past them in
    :func:`reinjection_group`), so a second run does not send them twice. Returns the plan and the sends per topic."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    plan = plan_reinjection(letters, settings, mode)
    sent: Counter = Counter()
    if plan.messages:
        sender = producer(settings.kafka)
        try:
            futures = [(topic, sender.send(topic, key=key, value=value)) for topic, key, value in plan.messages]
            sender.flush()
            for topic, future in futures:
                future.get(timeout=60)
                sent[topic] += 1
        finally:
            sender.close(timeout=10)
    if letters:
        last: dict[int, int] = {}
        for letter in letters:
            last[letter.partition] = max(last.get(letter.partition, -1), letter.offset)
        committer = consumer(settings.kafka, group_id=reinjection_group(settings))
        try:
            topic = settings.stream.dead_letter_topic
            committer.commit({TopicPartition(topic, p): OffsetAndMetadata(offset + 1, "", -1) for p, offset in last.items()})
        finally:
            committer.close()
    return plan, dict(sent)


# ------------------------------------------------------------------ topics


@dataclass
class TopicCheck:
    """One topic of the stream against the settings."""

    name: str
    role: str
    want_partitions: int
    partitions: int | None = None  # None: the topic does not exist
    replication: int | None = None
    retention_ms: str | None = None  # None: the broker does not report it
    created: bool = False
    differences: list[str] = field(default_factory=list)

    def line(self, want_replication: int, want_retention_ms: int) -> str:
        if self.partitions is None:
            return f"{self.name} ({self.role}): missing (`topicfs stream topics --create` creates it)"
        head = f"{self.name} ({self.role}): {'created, ' if self.created else ''}{self.partitions} partitions, replication {self.replication}, "
        head += f"retention.ms {self.retention_ms}" if self.retention_ms is not None else "retention.ms not reported by the broker"
        return head + (": ok" if not self.differences else ": DIFFERS: " + "; ".join(self.differences))


def stream_topics(settings: Settings) -> dict[str, tuple[str, int]]:
    """The stream's topics: name -> (role, partition count wanted)."""
    config = settings.stream
    return {
        config.events_topic: ("events", config.partitions),
        config.videos_topic: ("videos", config.partitions),
        config.dead_letter_topic: ("dead letters", config.partitions),
    }


def _admin(kafka: KafkaConfig):
    from kafka import KafkaAdminClient

    _quiet_kafka_python()
    preflight(kafka)
    return KafkaAdminClient(**kafka_python_params(kafka), request_timeout_ms=int(kafka.connect_timeout_s * 1000) + 20000)


def _retention(admin, topic: str) -> str | None:
    from kafka.admin import ConfigResource, ConfigResourceType

    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    except Exception:  # a broker without DescribeConfigs (tansu answers it, with nothing in it)
        return None
    entry = (described.get("topic") or {}).get(topic, {}).get("retention.ms") if isinstance(described, dict) else None
    if isinstance(entry, dict):
        entry = entry.get("value")
    return None if entry is None else str(entry)


def check_topics(settings: Settings, create: bool = False, wait_s: float = 20.0) -> list[TopicCheck]:
    """Each stream topic's partitions, replication and retention.ms against the settings; with ``create`` the
    missing ones are created (with ``stream.partitions``, ``kafka.replication_factor``, ``kafka.topic_retention_ms``)."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    kafka = settings.kafka
    wanted = stream_topics(settings)
    admin = _admin(kafka)
    try:
        existing = set(admin.list_topics())
        created = set()
        if create:
            missing = [name for name in wanted if name not in existing]
            if missing:
                new = [
                    NewTopic(name, wanted[name][1], kafka.replication_factor, topic_configs={"retention.ms": str(kafka.topic_retention_ms)})
                    for name in missing
                ]
                try:
                    admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass
                created = set(missing)
                deadline = time.monotonic() + wait_s
                while not set(missing) <= set(admin.list_topics()):
                    if time.monotonic() > deadline:
                        raise KafkaToolError(f"created topics {missing} are not visible after {wait_s:.0f} s")
                    time.sleep(0.1)
                existing |= created
        present = [name for name in wanted if name in existing]
        described = {t["name"]: t for t in admin.describe_topics(present)} if present else {}
        checks = []
        for name, (role, partitions) in wanted.items():
            check = TopicCheck(name, role, partitions, created=name in created)
            if name in described:
                parts = described[name]["partitions"]
                check.partitions = len(parts)
                check.replication = min((len(p["replica_nodes"]) for p in parts), default=0)
                check.retention_ms = _retention(admin, name)
                if check.partitions != partitions:
                    check.differences.append(
                        f"{check.partitions} partitions, the settings say {partitions} (stream.partitions: at most that many workers share the topic)"
                    )
                if check.replication != kafka.replication_factor:
                    check.differences.append(
                        f"replication {check.replication}, the settings say {kafka.replication_factor} (kafka.replication_factor)"
                    )
                if check.retention_ms is not None and int(check.retention_ms) != kafka.topic_retention_ms:
                    check.differences.append(
                        f"retention.ms {check.retention_ms}, the settings say {kafka.topic_retention_ms} (kafka.topic_retention_ms; -1 keeps the log a worker rebuilds Redis from)"
                    )
            checks.append(check)
        return checks
    finally:
        admin.close()


def read_interactions_file(path: Path, settings: Settings, on_error: str = "raise") -> pd.DataFrame:
    """The click log, validated by the interactions contract (``rating`` becomes ``clicked`` at rankers.rating_threshold)."""
    from topicfs.contracts import load_interactions

    return load_interactions(path, on_error=on_error, rating_threshold=settings.rankers.rating_threshold)


__all__ = [
    "KafkaSecurityError",
    "KafkaToolError",
    "check_event_times",
    "check_topics",
    "interactions_to_events",
    "plan_reinjection",
    "produce_events",
    "read_dead_letters",
    "reinject",
    "summarise",
]
