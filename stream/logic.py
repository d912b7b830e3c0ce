"""Pure logic of the streaming updater: validation, counting with optional decay, τ1/τ2 pruning, queue building.

Plain functions over plain types (no Kafka, no Redis), property-tested in tests/stream/test_stream_logic.py.
The Faust agents (:mod:`stream.app`) and the Redis layer (:mod:`stream.state`) only decode, call these and write.

Symbols (DESIGN.md "Topic utilisation"): τ1 = ``min_exposures``, τ2 = ``min_ctr``, N1 = ``recent_clicks``,
``fresh_share`` = 10% of each queue.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from stream.records import ClickEvent, ExposureEvent, VideoPublishedEvent

Status = Literal["fresh", "established", "pruned"]


# ---------------------------------------------------------------- validation


@dataclass(frozen=True)
class Limits:
    """What a valid message looks like beyond its schema (from ``StreamConfig``)."""

    max_payload_bytes: int = 65536
    max_videos_per_exposure: int = 200
    min_event_ts_s: float = 946684800.0  # 2000-01-01
    max_event_ts_s: float = math.inf  # wall clock + allowed skew, set by the caller


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_id(message: Mapping, name: str, errors: list[str]) -> int | None:
    value = message.get(name)
    if not _is_int(value):
        errors.append(f"{name} must be an integer, got {type(value).__name__}" if name in message else f"{name} is missing")
        return None
    if value < 0:
        errors.append(f"{name} must be >= 0, got {value}")
        return None
    return value


def _check_ts(message: Mapping, limits: Limits, errors: list[str]) -> float | None:
    value = message.get("ts")
    if "ts" not in message:
        errors.append("ts is missing")
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        errors.append(f"ts must be a finite number of epoch seconds, got {value!r:.40}")
        return None
    if not limits.min_event_ts_s <= value <= limits.max_event_ts_s:
        errors.append(f"ts {value} is outside the plausible range [{limits.min_event_ts_s}, {limits.max_event_ts_s:.0f}]")
        return None
    return float(value)


def _check_event_id(message: Mapping, errors: list[str]) -> str | None:
    value = message.get("event_id")
    if not isinstance(value, str) or not value:
        errors.append("event_id must be a non-empty string" if "event_id" in message else "event_id is missing")
        return None
    return value


def _decode(raw: bytes, limits: Limits) -> tuple[dict | None, list[str]]:
    if len(raw) > limits.max_payload_bytes:
        return None, [f"payload of {len(raw)} bytes exceeds max_payload_bytes={limits.max_payload_bytes}"]
    try:
        message = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, [f"bad JSON: {exc}"]
    if not isinstance(message, dict):
        return None, [f"message must be a JSON object, got {type(message).__name__}"]
    return message, []


def parse_event(raw: bytes | None, limits: Limits) -> tuple[ExposureEvent | ClickEvent | None, list[str]]:
    """Validate one events-topic message.

    Returns the event (None when nothing in it is usable) and the list of problems found. An exposure whose
    video list is partly bad keeps its valid videos (the problems name the dropped ones).
    """
    if raw is None:
        return None, ["empty message (no value)"]
    message, errors = _decode(raw, limits)
    if message is None:
        return None, errors
    kind = message.get("type")
    event_id = _check_event_id(message, errors)
    user_id = _check_id(message, "user_id", errors)
    ts = _check_ts(message, limits, errors)
    if kind == "click":
        video_id = _check_id(message, "video_id", errors)
        if errors:
            return None, errors
        return ClickEvent(event_id=event_id, user_id=user_id, video_id=video_id, ts=ts), []
    if kind != "exposure":
        return None, [f"type must be 'exposure' or 'click', got {kind!r:.40}"] + errors
    if "video_ids" in message:
        shown = message["video_ids"]
        if not isinstance(shown, list):
            errors.append(f"video_ids must be a list of integers, got {type(shown).__name__}")
            shown = []
        elif len(shown) > limits.max_videos_per_exposure:
            errors.append(f"video_ids lists {len(shown)} videos, more than max_videos_per_exposure={limits.max_videos_per_exposure}")
            shown = []
    elif "video_id" in message:  # the single-video exposure form
        shown = [message["video_id"]]
    else:
        errors.append("exposure needs video_ids (a list) or video_id")
        shown = []
    video_ids = []
    for position, video_id in enumerate(shown):
        if _is_int(video_id) and video_id >= 0:
            video_ids.append(video_id)
        else:
            errors.append(f"video_ids[{position}] must be an integer >= 0, got {video_id!r:.40}")
    if event_id is None or user_id is None or ts is None or not video_ids:
        if not video_ids and not any("video" in error for error in errors):
            errors.append("exposure lists no video")
        return None, errors
    request_id = message.get("request_id", "")
    if not isinstance(request_id, str):
        request_id = str(request_id)
    return ExposureEvent(event_id=event_id, user_id=user_id, video_ids=video_ids, ts=ts, request_id=request_id), errors


def parse_video_event(raw: bytes | None, limits: Limits) -> tuple[VideoPublishedEvent | None, list[str]]:
    """Validate one videos-topic message: a new video with ``topic_ids`` or with its content (``title`` at least)."""
    if raw is None:
        return None, ["empty message (no value)"]
    message, errors = _decode(raw, limits)
    if message is None:
        return None, errors
    if message.get("type", "video_published") != "video_published":
        errors.append(f"type must be 'video_published', got {message.get('type')!r:.40}")
    event_id = _check_event_id(message, errors)
    video_id = _check_id(message, "video_id", errors)
    ts = _check_ts(message, limits, errors)
    topic_ids = message.get("topic_ids")
    if topic_ids is not None and (not isinstance(topic_ids, list) or not all(_is_int(t) and t >= 0 for t in topic_ids)):
        errors.append("topic_ids must be a list of integers >= 0")
    title = message.get("title")
    if topic_ids is None and not isinstance(title, str):
        errors.append("a video_published message needs topic_ids, or its content with a title (str)")
    tags = message.get("tags")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        errors.append("tags must be a list of strings")
    for name in ("cover_image", "primary_class", "secondary_class"):
        if message.get(name) is not None and not isinstance(message[name], str):
            errors.append(f"{name} must be a string")
    if errors:
        return None, errors
    return (
        VideoPublishedEvent(
            event_id=event_id,
            video_id=video_id,
            ts=ts,
            topic_ids=topic_ids,
            title=title,
            tags=tags,
            cover_image=message.get("cover_image"),
            primary_class=message.get("primary_class"),
            secondary_class=message.get("secondary_class"),
        ),
        [],
    )


def drop_unknown_videos(
    event: ExposureEvent | ClickEvent, topics_of: Mapping[int, tuple[int, ...]]
) -> tuple[ExposureEvent | ClickEvent | None, list[str]]:
    """Keep the videos of ``event`` that have a known topic assignment; name the unknown ones."""
    if isinstance(event, ClickEvent):
        if event.video_id in topics_of:
            return event, []
        return None, [f"unknown video_id {event.video_id}"]
    known = [video_id for video_id in event.video_ids if video_id in topics_of]
    errors = [f"unknown video_id {video_id}" for video_id in event.video_ids if video_id not in topics_of]
    if not errors:
        return event, []
    if not known:
        return None, errors
    return ExposureEvent(event_id=event.event_id, user_id=event.user_id, video_ids=known, ts=event.ts, request_id=event.request_id), errors


# ---------------------------------------------------------------- counts, CTR, decay


@dataclass(frozen=True)
class Counts:
    """Exposures and clicks of a video or topic; ``ts`` is the event time the values refer to (decay reference)."""

    exposures: float = 0.0
    clicks: float = 0.0
    ts: float | None = None

    @property
    def ctr(self) -> float:
        return ctr(self.exposures, self.clicks)


def ctr(exposures: float, clicks: float) -> float:
    """Click-through rate; 0 for a video never shown."""
    return clicks / exposures if exposures > 0 else 0.0


def decay_factor(elapsed_s: float, half_life_s: float | None) -> float:
    """2^(-elapsed/half_life) for elapsed ≥ 0; 1 without decay."""
    if half_life_s is None or elapsed_s <= 0:
        return 1.0
    return 0.5 ** (elapsed_s / half_life_s)


def decay_to(counts: Counts, ts: float, half_life_s: float | None) -> Counts:
    """The counts as seen at event time ``ts``; never larger than before."""
    if half_life_s is None or counts.ts is None or ts <= counts.ts:
        return counts
    factor = decay_factor(ts - counts.ts, half_life_s)
    return Counts(counts.exposures * factor, counts.clicks * factor, ts)


def merge_counts(a: Counts, b: Counts, half_life_s: float | None) -> Counts:
    """Sum two counts; with decay both are first brought to the later of their reference times.

    Exponential decay makes this exact and order-independent: the result is Σ δ_i · 2^(-(T - t_i)/h).
    """
    if a.ts is None or b.ts is None:
        return Counts(a.exposures + b.exposures, a.clicks + b.clicks, a.ts if b.ts is None else b.ts)
    ts = max(a.ts, b.ts)
    a, b = decay_to(a, ts, half_life_s), decay_to(b, ts, half_life_s)
    return Counts(a.exposures + b.exposures, a.clicks + b.clicks, ts)


def video_status(counts: Counts, min_exposures: int, min_ctr: float) -> Status:
    """τ1/τ2 rule: fresh below τ1 exposures; established at ≥ τ1 with CTR ≥ τ2; otherwise pruned from the queues."""
    if counts.exposures < min_exposures:
        return "fresh"
    return "established" if counts.ctr >= min_ctr else "pruned"


# ---------------------------------------------------------------- a batch of events


@dataclass
class BatchDelta:
    """What one batch of valid events adds, per entity (counts at the batch's own reference times)."""

    videos: dict[int, Counts] = field(default_factory=dict)
    topics: dict[int, Counts] = field(default_factory=dict)
    user_clicks: dict[int, list[int]] = field(default_factory=dict)  # user → clicked video ids, oldest first
    user_exposed: dict[int, list[int]] = field(default_factory=dict)  # user → exposed video ids (only with count_user_exposures)
    n_exposures: int = 0
    n_clicks: int = 0


def fold_events(
    events: Iterable[ExposureEvent | ClickEvent],
    topics_of: Mapping[int, Sequence[int]],
    half_life_s: float | None,
    count_user_exposures: bool = False,
) -> BatchDelta:
    """Add up a batch of validated events (in each user's order) into per-video, per-topic and per-user deltas.

    An exposure of a video counts once for the video and once for each of its topics; so does a click. With
    ``count_user_exposures`` the delta also lists, per user, the videos they were shown (``user_exposed``).
    """
    if half_life_s is None:
        return _fold_events_plain(events, topics_of, count_user_exposures)
    delta = BatchDelta()
    exposed = delta.user_exposed
    videos, topics = delta.videos, delta.topics
    empty = Counts()
    for event in events:
        if isinstance(event, ExposureEvent):
            one = Counts(1.0, 0.0, event.ts)
            if count_user_exposures:
                exposed.setdefault(event.user_id, []).extend(event.video_ids)
            for video_id in event.video_ids:
                videos[video_id] = merge_counts(videos.get(video_id, empty), one, half_life_s)
                for topic_id in topics_of[video_id]:
                    topics[topic_id] = merge_counts(topics.get(topic_id, empty), one, half_life_s)
            delta.n_exposures += len(event.video_ids)
        else:
            one = Counts(0.0, 1.0, event.ts)
            videos[event.video_id] = merge_counts(videos.get(event.video_id, empty), one, half_life_s)
            for topic_id in topics_of[event.video_id]:
                topics[topic_id] = merge_counts(topics.get(topic_id, empty), one, half_life_s)
            delta.user_clicks.setdefault(event.user_id, []).append(event.video_id)
            delta.n_clicks += 1
    return delta


def _fold_events_plain(
    events: Iterable[ExposureEvent | ClickEvent], topics_of: Mapping[int, Sequence[int]], count_user_exposures: bool = False
) -> BatchDelta:
    """:func:`fold_events` without decay: plain sums, per video first, then each video's sums added to its topics
    (the hot path: one dict update per exposure, topic work per distinct video rather than per exposure)."""
    delta = BatchDelta()
    videos: dict[int, list[float]] = {}  # id → [exposures, clicks, latest ts]
    get = videos.get
    user_clicks = delta.user_clicks
    exposed = delta.user_exposed if count_user_exposures else None
    n_exposures = n_clicks = 0
    for event in events:
        ts = event.ts
        if isinstance(event, ExposureEvent):
            video_ids = event.video_ids
            if exposed is not None:
                exposed.setdefault(event.user_id, []).extend(video_ids)
            for video_id in video_ids:
                row = get(video_id)
                if row is None:
                    videos[video_id] = [1.0, 0.0, ts]
                else:
                    row[0] += 1.0
                    if ts > row[2]:
                        row[2] = ts
            n_exposures += len(video_ids)
        else:
            video_id = event.video_id
            row = get(video_id)
            if row is None:
                videos[video_id] = [0.0, 1.0, ts]
            else:
                row[1] += 1.0
                if ts > row[2]:
                    row[2] = ts
            user_clicks.setdefault(event.user_id, []).append(video_id)
            n_clicks += 1
    topics: dict[int, list[float]] = {}
    for video_id, (exposures, clicks, ts) in videos.items():
        for topic_id in topics_of[video_id]:
            row = topics.get(topic_id)
            if row is None:
                topics[topic_id] = [exposures, clicks, ts]
            else:
                row[0] += exposures
                row[1] += clicks
                if ts > row[2]:
                    row[2] = ts
    delta.videos = {key: Counts(*row) for key, row in videos.items()}
    delta.topics = {key: Counts(*row) for key, row in topics.items()}
    delta.n_exposures, delta.n_clicks = n_exposures, n_clicks
    return delta


# ---------------------------------------------------------------- topic queues


def fresh_count(n_established: int, n_fresh_available: int, fresh_share: float, cold_start_fresh: int) -> int:
    """How many fresh videos a queue with ``n_established`` established videos serves.

    ceil(s·E/(1-s)) makes fresh videos s of the queue to within one video (F - s(E+F) = (1-s)(F - sE/(1-s)) < 1)
    and gives every queue with established videos at least one fresh slot. A queue with nothing established yet
    has no share to take: it serves up to ``cold_start_fresh`` fresh videos so new topics get their first exposures.
    """
    if n_established == 0:
        wanted = cold_start_fresh
    else:
        wanted = math.ceil(fresh_share * n_established / (1.0 - fresh_share) - 1e-9)
    return max(0, min(wanted, n_fresh_available))


def rank_established(established: Iterable[tuple[int, float]]) -> list[int]:
    """Established videos by CTR, highest first (ties: lower video id first, so the order is deterministic)."""
    return [video_id for video_id, _ in sorted(established, key=lambda item: (-item[1], item[0]))]


def build_queue(
    established: Sequence[tuple[int, float]],
    fresh_candidates: Sequence[int],
    n_fresh_available: int,
    fresh_share: float,
    cold_start_fresh: int,
    max_queue_length: int,
    rng: random.Random,
) -> list[int]:
    """A topic queue in served order: established videos by CTR with fresh videos spread evenly among them.

    ``established`` are (video_id, ctr) of videos with ≥ τ1 exposures and CTR ≥ τ2; ``fresh_candidates`` a random
    sample of the topic's fresh videos (at least as many as it will serve) and ``n_fresh_available`` how many fresh
    videos the topic has in all. The fresh videos drawn here are placed at ranks floor((k + 1/2)·L/F) so they sit
    spread through the queue (one in every ~1/s places), not all at its end where nobody reads.
    """
    ranked = rank_established(established)
    keep = max_queue_length - math.ceil(fresh_share * max_queue_length - 1e-9)
    ranked = ranked[: max(keep, 0)] if len(ranked) > keep else ranked
    n_fresh = fresh_count(len(ranked), min(n_fresh_available, len(set(fresh_candidates))), fresh_share, cold_start_fresh)
    n_fresh = min(n_fresh, max_queue_length - len(ranked))
    in_ranked = set(ranked)
    unique = list(dict.fromkeys(video_id for video_id in fresh_candidates if video_id not in in_ranked))
    fresh = rng.sample(unique, min(n_fresh, len(unique)))
    total = len(ranked) + len(fresh)
    queue: list[int] = []
    fresh_ranks = {math.floor((k + 0.5) * total / len(fresh)) for k in range(len(fresh))} if fresh else set()
    established_iter, fresh_iter = iter(ranked), iter(fresh)
    for rank in range(total):
        queue.append(next(fresh_iter) if rank in fresh_ranks else next(established_iter))
    return queue


def push_pause_s(push_s: float, max_busy_share: float) -> float:
    """Seconds to wait after a push of ``push_s`` seconds so pushes take at most ``max_busy_share`` of the time.

    A Feast push converts every row in Python (holding the GIL), so under a backlog back-to-back pushes would
    starve the events agent; at light load pushes are short and the pause is negligible.
    """
    return push_s * (1.0 / max_busy_share - 1.0)


def next_rebuild_at(last_start: float, last_end: float, min_interval_s: float, max_busy_share: float) -> float:
    """Earliest (monotonic) time of the next queue rebuild after one that ran from ``last_start`` to ``last_end``.

    At least ``min_interval_s`` between starts, and rebuilds take at most ``max_busy_share`` of the time (1: no cap,
    the default since a rebuild is one script call inside Redis; a share below 1 spaces out rebuilds that cost the
    worker real time, at the price of queue latency under a backlog).
    """
    return max(last_start + min_interval_s, last_end + push_pause_s(last_end - last_start, max_busy_share))


_REASON_KINDS = (
    ("payload of ", "oversize"),
    ("bad JSON", "bad JSON"),
    ("message must be a JSON object", "not a JSON object"),
    ("empty message", "empty message"),
    ("type must be", "bad type"),
    ("unknown video_id", "unknown video"),
    ("topic assignment failed", "topic assignment failed"),
    ("ts ", "bad ts"),
    ("exposure lists no video", "no video"),
    ("exposure needs video_ids", "no video"),
)


def reason_kind(reason: str) -> str:
    """A dead letter's reason without its values: a bounded label for metrics ("unknown video", "bad JSON",
    "video_ids invalid", ...), where the reason itself names ids and values."""
    for prefix, kind in _REASON_KINDS:
        if reason.startswith(prefix):
            return kind
    field_name = re.match(r"[A-Za-z_]+", reason)
    return f"{field_name.group(0)} invalid" if field_name else "other"
