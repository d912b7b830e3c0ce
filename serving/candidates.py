"""Candidate generation (MTL III-B): a user's top topics -> candidates from the live topic queues.

Flow of one request, for user u::

    last N1 clicked videos of u ──► their topics ──► vote_topics ──► top N2 topics with votes
                                                                        │  (no history: the popular topics)
    split_quota: N3 shared by votes (largest remainder) ◄───────────────┘
    draw_candidates: each topic's queue in served rank order, round-robin over topics,
                     skipping videos u already clicked and videos another topic already gave

The pure functions (:func:`vote_topics`, :func:`split_quota`, :func:`draw_candidates`) hold the logic
and are property-tested; :class:`CandidateGenerator` only reads Redis (layout in :mod:`topicfs.keys`)
and calls them. Fresh videos need no special case: the stream places them in the queues.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import redis

from topicfs import keys

logger = logging.getLogger(__name__)

Source = Literal["history", "popular", "none"]


class CandidateStoreUnavailable(RuntimeError):
    """Redis, which holds the queues and the users' clicks, cannot be reached or answered with an error."""


def vote_topics(clicked_video_topics: Sequence[Sequence[int]], topics_per_user: int) -> list[tuple[int, int]]:
    """Top ``topics_per_user`` (N2) topics of a user as ``(topic_id, votes)``, most votes first.

    ``clicked_video_topics`` holds the topic ids of each of the user's recent clicked videos, newest
    video first. Every clicked video gives one vote to each of its topics (a topic listed twice for one
    video still counts once). Ties go to the topic voted for most recently, then to the smaller id, so
    the answer is deterministic.
    """
    if topics_per_user < 1:
        raise ValueError(f"topics_per_user must be >= 1, got {topics_per_user}")
    votes: Counter[int] = Counter()
    newest_position: dict[int, int] = {}
    for position, topic_ids in enumerate(clicked_video_topics):
        for topic_id in dict.fromkeys(topic_ids):
            votes[topic_id] += 1
            newest_position.setdefault(topic_id, position)
    ranked = sorted(votes, key=lambda t: (-votes[t], newest_position[t], t))
    return [(t, votes[t]) for t in ranked[:topics_per_user]]


def split_quota(votes: Sequence[tuple[int, float]], n: int) -> dict[int, int]:
    """Share ``n`` candidate slots among topics in proportion to their votes (largest remainder method).

    Quotas sum to ``n`` exactly (when any topic has a positive vote) and each differs from its exact share
    ``n * votes / total`` by less than one. Remainder ties go to the earlier topic in ``votes``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if any(v < 0 for _, v in votes):
        raise ValueError(f"votes must be >= 0, got {list(votes)}")
    total = float(sum(v for _, v in votes))
    if total <= 0 or n == 0:
        return {t: 0 for t, _ in votes}
    exact = [(t, n * v / total) for t, v in votes]
    quota = {t: int(share) for t, share in exact}
    left = n - sum(quota.values())
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i][1] - int(exact[i][1])), i))
    for i in by_remainder[:left]:
        quota[exact[i][0]] += 1
    return quota


@dataclass(frozen=True)
class Candidate:
    video_id: int
    topic_id: int  # the queue it was drawn from


@dataclass
class Draw:
    """Result of :func:`draw_candidates`."""

    candidates: list[Candidate]
    quota: dict[int, int]  # final slots per topic, after exhausted queues passed theirs on
    consumed: dict[int, int] = field(default_factory=dict)  # queue entries read per topic (accepted + skipped)


def draw_candidates(
    votes: Sequence[tuple[int, float]],
    queues: Mapping[int, Sequence[int]],
    n: int,
    exclude: set[int] | frozenset[int] = frozenset(),
) -> Draw:
    """Draw up to ``n`` candidates from the topics' queues in served rank order.

    Every topic gets :func:`split_quota` slots by its votes. Topics take turns (in ``votes`` order), each
    turn taking the next video of its queue that is neither in ``exclude`` (already clicked) nor already
    drawn; a topic stops at its quota. When a queue runs dry its unfilled slots are shared again, by
    votes, among the topics whose queues still have videos, so the answer is short of ``n`` only when
    all queues together hold fewer eligible videos.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    order = [t for t, _ in votes]
    weight = dict(votes)
    position = {t: 0 for t in order}
    taken = {t: 0 for t in order}
    quota = split_quota(votes, n)
    seen: set[int] = set()
    result: list[Candidate] = []
    live = [t for t in order if weight[t] > 0]
    while len(result) < n and live:
        progressed = False
        for topic_id in live:
            if taken[topic_id] >= quota[topic_id]:
                continue
            queue = queues.get(topic_id, ())
            while position[topic_id] < len(queue):
                video_id = int(queue[position[topic_id]])
                position[topic_id] += 1
                if video_id in exclude or video_id in seen:
                    continue
                seen.add(video_id)
                result.append(Candidate(video_id, topic_id))
                taken[topic_id] += 1
                progressed = True
                break
        exhausted = [t for t in live if position[t] >= len(queues.get(t, ())) and taken[t] < quota[t]]
        if exhausted:
            # pass a dry queue's unfilled slots on to the topics that can still fill them
            for t in exhausted:
                quota[t] = taken[t]
            live = [t for t in live if t not in exhausted]
            missing = n - sum(quota[t] for t in order)
            extra = split_quota([(t, weight[t]) for t in live], missing)
            for t, slots in extra.items():
                quota[t] += slots
        elif not progressed:
            break
    return Draw(result, {t: quota[t] for t in order}, dict(position))


@dataclass
class TopicShare:
    topic_id: int
    votes: float  # clicks among the user's last N1 (source "history") or total clicks (source "popular")
    n_candidates: int


@dataclass
class CandidateResult:
    user_id: int
    source: Source  # "history": the user's clicks voted; "popular": no history, popular topics; "none": neither
    topics: list[TopicShare]
    candidates: list[Candidate]
    # the state read on the way, which the ranker's user features reuse (no second read)
    clicked: list[int] = field(default_factory=list)  # the user's last N1 clicked videos, newest first
    clicked_topics: list[list[int]] = field(default_factory=list)  # topic ids of each, same order


class CandidateGenerator:
    """Reads a user's clicks and the topic queues from Redis and draws candidates (three round trips).

    ``client`` may be a ``redis.Redis`` or a ``redis.RedisCluster``: every multi-key read is a pipeline
    of single-key commands, so keys may live on different slots.
    """

    def __init__(
        self,
        client: redis.Redis,
        key_prefix: str,
        recent_clicks: int = 128,
        topics_per_user: int = 4,
        n_candidates: int = 600,
    ) -> None:
        if recent_clicks < 1 or topics_per_user < 1 or n_candidates < 0:
            raise ValueError(
                f"need recent_clicks >= 1, topics_per_user >= 1, n_candidates >= 0; got {recent_clicks}, {topics_per_user}, {n_candidates}"
            )
        self.client = client
        self.key_prefix = key_prefix
        self.recent_clicks = recent_clicks
        self.topics_per_user = topics_per_user
        self.n_candidates = n_candidates

    @classmethod
    def from_settings(cls, settings) -> "CandidateGenerator":
        """Build from :class:`topicfs.settings.Settings` (Redis URL, key prefix, N1, N2, N3)."""
        serving = settings.serving
        client = redis.Redis.from_url(
            settings.redis.url, socket_timeout=serving.redis_timeout_s, socket_connect_timeout=serving.redis_timeout_s
        )
        return cls(client, settings.redis.key_prefix, serving.recent_clicks, serving.topics_per_user, serving.n_candidates)

    def candidates(self, user_id: int, n: int | None = None) -> CandidateResult:
        """Up to ``n`` (default N3) candidates for ``user_id``; raises :class:`CandidateStoreUnavailable`."""
        n = self.n_candidates if n is None else n
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        try:
            return self._candidates(int(user_id), n)
        except redis.RedisError as exc:
            raise CandidateStoreUnavailable(f"Redis error while reading candidates: {type(exc).__name__}: {exc}") from exc

    def _candidates(self, user_id: int, n: int) -> CandidateResult:
        prefix = self.key_prefix
        clicked = self._clicked_videos(user_id)
        votes: list[tuple[int, float]] = []
        clicked_topics: list[list[int]] = []
        source: Source = "none"
        if clicked:
            pipe = self.client.pipeline(transaction=False)
            for video_id in clicked:
                pipe.get(keys.video_topics_key(prefix, video_id))
            clicked_topics = self._decode_topics(clicked, pipe.execute())
            votes = [(t, float(c)) for t, c in vote_topics(clicked_topics, self.topics_per_user)]
            source = "history"
        if not votes:
            popular = self.client.zrevrange(keys.popular_topics_key(prefix), 0, self.topics_per_user - 1, withscores=True)
            votes = [(int(t), float(score)) for t, score in popular if score > 0]
            source = "popular" if votes else "none"
        exclude = frozenset(clicked)
        draw = self._draw(votes, n, exclude)
        counts = Counter(c.topic_id for c in draw.candidates)
        shares = [TopicShare(t, v, counts.get(t, 0)) for t, v in votes]
        return CandidateResult(user_id, source, shares, draw.candidates, clicked, clicked_topics)

    def _clicked_videos(self, user_id: int) -> list[int]:
        raw = self.client.lrange(keys.user_clicks_key(self.key_prefix, user_id), 0, self.recent_clicks - 1)
        clicked = []
        for item in raw:
            try:
                clicked.append(int(item))
            except ValueError:
                logger.warning("user %d: ignoring a click list entry that is not a video id: %r", user_id, item)
        return clicked

    def _decode_topics(self, clicked: list[int], raw_topics: list) -> list[list[int]]:
        topics = []
        for video_id, raw in zip(clicked, raw_topics):
            try:
                topics.append(keys.decode_ids(raw))
            except ValueError:
                logger.warning("video %d: ignoring malformed topic list %r", video_id, raw)
                topics.append([])
        return topics

    def _draw(self, votes: list[tuple[int, float]], n: int, exclude: frozenset[int]) -> Draw:
        if not votes or n == 0:
            return Draw([], {t: 0 for t, _ in votes})
        quota = split_quota(votes, n)
        # Read each queue only as deep as its quota plus what may be skipped; read deeper only when
        # draw_candidates used up a prefix that is shorter than the whole queue.
        depth = {t: quota[t] + len(exclude) + 16 for t, _ in votes}
        queues: dict[int, list[int]] = {}
        complete: set[int] = set()
        while True:
            wanted = [t for t, _ in votes if t not in complete and len(queues.get(t, ())) < depth[t]]
            if wanted:
                pipe = self.client.pipeline(transaction=False)
                for t in wanted:
                    pipe.zrevrange(keys.queue_key(self.key_prefix, t), len(queues.get(t, ())), depth[t] - 1)
                for t, members in zip(wanted, pipe.execute()):
                    start = len(queues.get(t, ()))
                    queues.setdefault(t, []).extend(int(m) for m in members)
                    if len(members) < depth[t] - start:
                        complete.add(t)
            draw = draw_candidates(votes, queues, n, exclude)
            short = [t for t, _ in votes if t not in complete and draw.consumed.get(t, 0) >= len(queues[t])]
            if not short:
                return draw
            for t in short:
                depth[t] = 2 * depth[t] + n
