"""Typed schemas of the stream messages (JSON on Kafka, keyed by user id; video events keyed by video id).

The producers' shapes (``topicfs.synthetic.SyntheticClickLog.events``):

- exposure = one feed refresh: ``{"type": "exposure", "event_id", "user_id", "request_id", "video_ids": [...], "ts"}``;
  the single-video form ``{"type": "exposure", ..., "video_id": 5}`` is accepted and read as ``video_ids=[5]``;
- click: ``{"type": "click", "event_id", "user_id", "video_id", "ts"}``;
- video published (on the videos topic): ``{"type": "video_published", "event_id", "video_id", "ts"}`` plus either
  ``"topic_ids": [...]`` or the content (``title``, ``tags``, ``cover_image``, optional classes) from which the
  trained topic models assign topics on arrival.

``ts`` is epoch seconds (float). Messages arrive as raw bytes and are validated by
:func:`stream.logic.parse_event`, which builds these records or names what is wrong.

The two events-topic records are plain slotted dataclasses, built once per message on the worker's hot path: a
``faust.Record`` made parsing a batch cost 36% more instructions (docs/BENCH_STREAM.md). The video and
dead-letter records, built rarely and serialised, stay Faust records.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust


@dataclass(slots=True)
class ExposureEvent:
    """One feed refresh: the videos shown to a user by one request."""

    event_id: str
    user_id: int
    video_ids: list[int]
    ts: float
    request_id: str = ""


@dataclass(slots=True)
class ClickEvent:
    """A user's click on one video."""

    event_id: str
    user_id: int
    video_id: int
    ts: float


class VideoPublishedEvent(faust.Record, serializer="json"):
    """A new video: with its topic ids, or with its content so topics are assigned on arrival."""

    event_id: str
    video_id: int
    ts: float
    topic_ids: list[int] | None = None
    title: str | None = None
    tags: list[str] | None = None
    cover_image: str | None = None
    primary_class: str | None = None
    secondary_class: str | None = None


class DeadLetter(faust.Record, serializer="json"):
    """An invalid message (or the invalid part of one) with the reasons, where it came from and its payload."""

    reasons: list[str]
    source_topic: str
    partition: int
    offset: int
    payload: str  # the original bytes, decoded as UTF-8 with replacement (payload_b64 holds them exactly)
    payload_b64: str
    event_id: str | None = None
