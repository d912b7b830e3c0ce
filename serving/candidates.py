"""Candidate generation (MTL III-B): a user's top topics -> candidates from the live topic queues.

Flow of one request, for user u::

    last N1 clicked videos of u ──► their topics ──► vote_topics ──► top N2 topics with votes
                                                                        │  (no history: the popular topics)
    split_quota: N3 shared by votes (largest remainder) ◄───────────────┘
    draw_candidates: each topic's queue in served rank order, round-robin over topics,
                     skipping videos u already clicked and videos another topic already gave

The pure functions (:func:`vote_topics`, :func:`split_quota`, :func:`draw_candidates`) hold the logic
and are property-tested. Fresh videos need no special case: the stream places them in the queues.

The state is read through :class:`topicfs.keys.KeyLayout`: the user's clicks in the user's shard, each clicked
video's topic list in the video's shard, each topic's queue in the topic's shard, and the popular topics as one
ZSET per shard (merged: the top N2 by clicks, equal clicks in the order one ZSET would give, the larger member
first). Two readers give the same answer:

* the **Python reader** (the reference, :func:`_reader`): three round trips (clicks; their topic lists or the
  popular topics; the queues, read deeper only when the draw uses up what was read). Each round trip is one
  pipeline; on a Redis Cluster redis-py splits it by node and sends to every node before reading any reply, so
  a round trip costs about one node's latency however the keys spread. It serves any deployment;
* the **server-side script** ``serving/lua/candidates.lua`` (default on a single Redis with ``redis.shards = 1``):
  the whole flow inside Redis in ONE round trip (EVALSHA), for latency. With one shard every key shares one hash
  tag; the user's keys arrive in ``KEYS``, the keys that depend on what the user clicked are built from
  templates :class:`~topicfs.keys.KeyLayout` makes. It is tested against the Python reader on random states.

Corrupt entries in any key read (a click or queue member that is not an id in 0..2^63-1, a malformed topic list,
a popular entry whose member is not a topic id or whose score is not a count in [0, 2^53], a key of the wrong
type) are skipped: each request logs one warning per kind and the Prometheus counter
``topicfs_candidates_corrupt_values_total{kind}`` (:data:`CORRUPT_VALUES`) counts them. They never raise.
Both readers skip the same entries, so their answers are equal; the script checks a queue member only when its
draw visits it, the Python reader every member of the chunks it read, so their counts of corrupt queue members
may differ (the Python reader also counts those beyond where the draw stopped).

:class:`CandidateGenerator` runs either reader on a synchronous client, :class:`AsyncCandidateGenerator` on an asyncio
client, for the HTTP API; both let at most ``max_concurrency`` requests use Redis at once (the rest wait their turn).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar, Literal

import redis
from prometheus_client import Counter as PrometheusCounter
from redis.exceptions import RedisClusterException

from topicfs.keys import KeyLayout, is_cluster

logger = logging.getLogger(__name__)

Source = Literal["history", "popular", "none"]

INT64_MAX = 2**63 - 1
MAX_VOTES = 2.0**53  # a popular score above this is not a click count (and would overflow the quota arithmetic)
_ID = re.compile(rb"(?:0|[1-9][0-9]{0,18})\Z")

CORRUPT_KINDS = {
    "click": "click list entries that are not video ids",
    "topic_list": "video topic lists that are not comma-separated topic ids",
    "popular": "popular-topic entries whose member is not a topic id or whose score is not a click count",
    "queue_member": "queue members that are not video ids",
    "wrong_type": "keys holding the wrong Redis type",
}
# Not registered anywhere by default: a process that exports metrics registers it (the HTTP API does, in its own
# registry), so the library adds no global state to a process that does not.
CORRUPT_VALUES = PrometheusCounter(
    "topicfs_candidates_corrupt_values",
    "Corrupt entries candidate generation skipped in the Redis state, by kind (" + ", ".join(CORRUPT_KINDS) + ")",
    ["kind"],
    registry=None,
)
_UNAVAILABLE = (redis.RedisError, RedisClusterException, OSError)


class CandidateStoreUnavailable(RuntimeError):
    """Redis, which holds the queues and the users' clicks, cannot be reached or answered with an error."""


def parse_id(raw: bytes | str | int | None) -> int | None:
    """The id a stored entry holds: a canonical decimal integer in 0..2^63-1 (no sign, no leading zero, no space), or
    None for anything else."""
    if isinstance(raw, str):
        raw = raw.encode()
    elif isinstance(raw, int):
        return raw if 0 <= raw <= INT64_MAX else None
    if not isinstance(raw, bytes) or _ID.match(raw) is None:
        return None
    value = int(raw)
    return value if value <= INT64_MAX else None


def _valid_votes(score: float) -> bool:
    return math.isfinite(score) and 0 <= score <= MAX_VOTES


@lru_cache(maxsize=None)
def lua_source(name: str) -> str:
    """The text of a script shipped in the package (``serving/lua/<name>``)."""
    return resources.files("serving").joinpath("lua", name).read_text(encoding="utf-8")


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
    # corrupt entries skipped on the way, by kind (CORRUPT_KINDS); not part of the answer
    skipped: dict[str, int] = field(default_factory=dict, compare=False)


# --------------------------------------------------------------------------- corrupt entries


class Skipped:
    """Corrupt entries one request met: a count and a first example per kind."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.example: dict[str, Any] = {}

    def add(self, kind: str, example: Any, count: int = 1) -> None:
        if kind not in self.count:
            self.count[kind] = 0
            self.example[kind] = example
        self.count[kind] += count

    def report(self, user_id: int) -> dict[str, int]:
        """Log one warning per kind, add to :data:`CORRUPT_VALUES`; returns the counts."""
        for kind, count in self.count.items():
            CORRUPT_VALUES.labels(kind).inc(count)
            logger.warning("user %d: skipped %d corrupt %s (e.g. %r)", user_id, count, CORRUPT_KINDS.get(kind, kind), self.example[kind])
        return dict(self.count)


# --------------------------------------------------------------------------- the Python reader (reference)

# One command of a round trip: (redis-py method, args, kwargs). A round trip is a list of them.
Command = tuple[str, tuple, dict]
Reader = Generator[list[Command], list, CandidateResult]


def _reader(layout: KeyLayout, recent_clicks: int, topics_per_user: int, user_id: int, n: int) -> Reader:
    """The candidate read as a generator: it yields each round trip's commands and receives their replies (a
    :class:`redis.ResponseError` for a key of the wrong type), so one implementation runs on a sync or an asyncio
    client (:func:`_run_sync`, :func:`_run_async`). Returns the :class:`CandidateResult`."""
    skipped = Skipped()
    raw_clicked = _checked(
        (yield [("lrange", (layout.user_clicks(user_id), 0, recent_clicks - 1), {})])[0], [], skipped, layout.user_clicks(user_id)
    )
    clicked: list[int] = []
    for item in raw_clicked:
        video_id = parse_id(item)
        if video_id is None:
            skipped.add("click", item)
        else:
            clicked.append(video_id)
    votes: list[tuple[int, float]] = []
    clicked_topics: list[list[int]] = []
    source: Source = "none"
    if clicked:
        replies = yield [("get", (layout.video_topics(v),), {}) for v in clicked]
        clicked_topics = [_topic_list(_checked(raw, None, skipped, layout.video_topics(v)), skipped) for v, raw in zip(clicked, replies)]
        votes = [(t, float(c)) for t, c in vote_topics(clicked_topics, topics_per_user)]
        source = "history"
    if not votes:
        votes = yield from _popular_reader(layout, topics_per_user, skipped)
        source = "popular" if votes else "none"
    draw = yield from _draw_reader(layout, votes, n, frozenset(clicked), source, skipped)
    counts = Counter(c.topic_id for c in draw.candidates)
    shares = [TopicShare(t, v, counts.get(t, 0)) for t, v in votes]
    return CandidateResult(user_id, source, shares, draw.candidates, clicked, clicked_topics, skipped.report(user_id))


def _checked(reply: Any, empty: Any, skipped: Skipped, key: str) -> Any:
    """A reply, or ``empty`` (counted as corrupt) when the key holds another type."""
    if isinstance(reply, redis.ResponseError):
        skipped.add("wrong_type", key)
        return empty
    return reply


def _topic_list(raw: bytes | None, skipped: Skipped) -> list[int]:
    if not raw:
        return []
    parts = [part for part in raw.split(b",") if part]
    ids = [parse_id(part) for part in parts]
    if None in ids:
        skipped.add("topic_list", raw)
        return []
    return ids  # type: ignore[return-value]


def _popular_reader(layout: KeyLayout, topics_per_user: int, skipped: Skipped) -> Generator[list[Command], list, list[tuple[int, float]]]:
    """The top N2 popular topics with clicks, over every shard's ZSET: each shard read in chunks of N2 (all shards in
    one round trip) until it gave N2 valid topics, a zero score ended them or the ZSET did, so corrupt entries never
    hide valid ones. Merged by clicks, equal clicks in the order one ZSET would give (the larger member first)."""
    found: dict[int, list] = {s: [] for s in layout.all_shards()}
    start = dict.fromkeys(found, 0)
    pending = list(found)
    while pending:
        replies = yield [
            ("zrevrange", (layout.popular(s), start[s], start[s] + topics_per_user - 1), {"withscores": True}) for s in pending
        ]
        still = []
        for shard, reply in zip(pending, replies):
            reply = _checked(reply, [], skipped, layout.popular(shard))
            done = len(reply) < topics_per_user
            for member, score in reply:
                topic_id = parse_id(member)
                if topic_id is None or not _valid_votes(score):
                    skipped.add("popular", (member, score))
                elif score > 0:
                    if len(found[shard]) < topics_per_user:
                        found[shard].append((score, member, topic_id))
                else:
                    done = True
            if not done and len(found[shard]) < topics_per_user:
                start[shard] += topics_per_user
                still.append(shard)
        pending = still
    votes: dict[int, float] = {}
    for score, _, topic_id in sorted((entry for entries in found.values() for entry in entries), reverse=True):
        votes.setdefault(topic_id, float(score))
    return list(votes.items())[:topics_per_user]


def _draw_reader(
    layout: KeyLayout, votes: list[tuple[int, float]], n: int, exclude: frozenset[int], source: Source, skipped: Skipped
) -> Generator[list[Command], list, Draw]:
    if not votes or n == 0:
        return Draw([], {t: 0 for t, _ in votes})
    quota = split_quota(votes, n)
    # Read each queue only as deep as its quota plus what may be skipped there (of the clicked videos only those
    # of the topic, its votes, can stand in its queue), plus 16; read deeper only when draw_candidates used up a
    # prefix that is shorter than the whole queue. The script reads the same chunks.
    depth = {t: quota[t] + (min(len(exclude), int(w)) if source == "history" else len(exclude)) + 16 for t, w in votes}
    queues: dict[int, list[int]] = {t: [] for t, _ in votes}
    read: dict[int, int] = {}  # members read from each queue (corrupt ones are read but not kept)
    complete: set[int] = set()
    while True:
        wanted = [t for t, _ in votes if t not in complete and read.get(t, 0) < depth[t]]
        if wanted:
            replies = yield [("zrevrange", (layout.queue(t), read.get(t, 0), depth[t] - 1), {}) for t in wanted]
            for t, members in zip(wanted, replies):
                start = read.get(t, 0)
                members = _checked(members, [], skipped, layout.queue(t))
                read[t] = start + len(members)
                queue = queues[t]
                for member in members:
                    video_id = parse_id(member)
                    if video_id is None:
                        skipped.add("queue_member", member)
                    else:
                        queue.append(video_id)
                if len(members) < depth[t] - start:
                    complete.add(t)
        draw = draw_candidates(votes, queues, n, exclude)
        short = [t for t, _ in votes if t not in complete and draw.consumed.get(t, 0) >= len(queues[t])]
        if not short:
            return draw
        for t in short:
            depth[t] = 2 * depth[t] + n


def _run_sync(client, reader: Reader) -> CandidateResult:
    """Drive :func:`_reader` on a sync client: a round trip of one command is a plain call, more is one pipeline."""
    try:
        batch = next(reader)
        while True:
            if len(batch) == 1:
                name, args, kwargs = batch[0]
                try:
                    replies = [getattr(client, name)(*args, **kwargs)]
                except redis.ResponseError as exc:
                    replies = [_wrong_type(exc)]
            else:
                pipe = client.pipeline(transaction=False)
                for name, args, kwargs in batch:
                    getattr(pipe, name)(*args, **kwargs)
                replies = [_wrong_type(r) if isinstance(r, Exception) else r for r in pipe.execute(raise_on_error=False)]
            batch = reader.send(replies)
    except StopIteration as done:
        return done.value


async def _run_async(client, reader: Reader) -> CandidateResult:
    """:func:`_run_sync` on an asyncio client."""
    try:
        batch = next(reader)
        while True:
            try:
                if len(batch) == 1:
                    name, args, kwargs = batch[0]
                    try:
                        replies = [await getattr(client, name)(*args, **kwargs)]
                    except redis.ResponseError as exc:
                        replies = [_wrong_type(exc)]
                else:
                    pipe = client.pipeline(transaction=False)
                    for name, args, kwargs in batch:
                        getattr(pipe, name)(*args, **kwargs)
                    replies = [_wrong_type(r) if isinstance(r, Exception) else r for r in await pipe.execute(raise_on_error=False)]
            except RuntimeError as exc:
                # redis-py's asyncio cluster client closes the connections of requests in flight when it re-learns the
                # topology after a node failed; their writes then fail on a closed transport: Redis is unavailable
                raise redis.ConnectionError(f"connection closed while the cluster topology was refreshed: {exc}") from exc
            batch = reader.send(replies)
    except StopIteration as done:
        return done.value


def _wrong_type(exc: Exception) -> redis.ResponseError:
    """A WRONGTYPE reply is a corrupt key (the reader skips it); any other error is raised."""
    if isinstance(exc, redis.ResponseError) and str(exc).startswith("WRONGTYPE"):
        return exc
    raise exc


# --------------------------------------------------------------------------- the server-side script


class _ScriptSetup:
    """KEYS and ARGV of ``candidates.lua`` for one layout with one shard."""

    PROBE = 8_675_309_123_456_789  # an id whose digits appear nowhere else in a key

    def __init__(self, layout: KeyLayout) -> None:
        if layout.shards != 1:
            raise ValueError(f"the server-side candidate script needs one shard (redis.shards = 1), not {layout.shards}")
        self.layout = layout
        self.templates = [*self._split(layout.video_topics), *self._split(layout.queue)]

    def _split(self, key_of: Callable[[int], str]) -> list[str]:
        parts = key_of(self.PROBE).split(str(self.PROBE))
        if len(parts) != 2:
            raise ValueError(f"cannot make a key template of {key_of(self.PROBE)!r}")
        return parts

    def keys(self, user_id: int) -> list[str]:
        return [self.layout.user_clicks(user_id), self.layout.popular(0)]

    def args(self, recent_clicks: int, topics_per_user: int, n: int) -> list:
        return [*self.templates, recent_clicks, topics_per_user, n]


def _skipped_of_reply(user_id: int, flat: list) -> dict[str, int]:
    skipped = Skipped()
    for i in range(0, len(flat), 3):
        skipped.add(flat[i].decode(), flat[i + 2], int(flat[i + 1]))
    return skipped.report(user_id)


def _result_from_reply(user_id: int, reply: list) -> CandidateResult:
    """A ``candidates.lua`` reply as a :class:`CandidateResult`."""
    source, topic_ids, vote_text, taken, videos, video_topics, clicked_text, topics_text, skipped = reply
    candidates = list(map(Candidate, map(int, videos.split(b",")), map(int, video_topics.split(b",")))) if videos else []
    shares = [TopicShare(int(t), float(v), c) for t, v, c in zip(topic_ids, vote_text, taken)]
    if clicked_text:
        clicked = list(map(int, clicked_text.split(b",")))
        clicked_topics = [list(map(int, raw.split(b","))) if raw else [] for raw in topics_text.split(b";")]
    else:
        clicked, clicked_topics = [], []
    return CandidateResult(
        user_id, source.decode(), shares, candidates, clicked, clicked_topics, _skipped_of_reply(user_id, skipped) if skipped else {}
    )


def result_json(result: CandidateResult) -> bytes:
    """The HTTP API's body for ``result`` (the layout ``serving.api.CandidatesOut`` documents), compact JSON."""
    body = {
        "user_id": result.user_id,
        "source": result.source,
        "topics": [{"topic_id": t.topic_id, "votes": t.votes, "n_candidates": t.n_candidates} for t in result.topics],
        "candidates": [{"video_id": c.video_id, "topic_id": c.topic_id} for c in result.candidates],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _json_from_reply(user_id: int, reply: list) -> bytes:
    """:func:`result_json` of a ``candidates.lua`` reply, formatted from the reply's text without building the
    result's objects (the script only returns canonical integer ids, which are JSON numbers as they are)."""
    source, topic_ids, vote_text, taken, videos, video_topics = reply[:6]
    if reply[8]:
        _skipped_of_reply(user_id, reply[8])
    topics = b",".join(
        b'{"topic_id":%s,"votes":%s,"n_candidates":%d}' % (t, json.dumps(float(v)).encode(), c)
        for t, v, c in zip(topic_ids, vote_text, taken)
    )
    candidates = (
        b",".join(b'{"video_id":%s,"topic_id":%s}' % pair for pair in zip(videos.split(b","), video_topics.split(b","))) if videos else b""
    )
    return b'{"user_id":%d,"source":"%s","topics":[%s],"candidates":[%s]}' % (user_id, source, topics, candidates)


# --------------------------------------------------------------------------- generators


def _check_request(user_id: int, n: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0 <= user_id <= INT64_MAX:
        raise ValueError(f"user_id must be in 0..2^63-1, got {user_id}")


def _unavailable(exc: BaseException, what: str = "candidates") -> CandidateStoreUnavailable:
    return CandidateStoreUnavailable(f"Redis error while reading {what}: {type(exc).__name__}: {exc}")


class _Generator:
    """What both generators share: the settings, checked, and the parts of a request.

    ``client`` is a ``redis.Redis`` / ``redis.RedisCluster`` (:func:`topicfs.redis_client.sync_client`) or its
    ``redis.asyncio`` twin (:func:`topicfs.redis_client.async_client`), ``layout`` the :class:`~topicfs.keys.KeyLayout`
    the stream writes. ``server_side`` (default: on a single Redis with one shard) runs ``candidates.lua``, one round
    trip; off, the Python reader (three pipelined round trips, any deployment). Both give the same
    :class:`CandidateResult`.

    At most ``max_concurrency`` requests use Redis at once; the others wait for their turn. Keep it at most the
    client's ``max_connections`` (``from_settings`` does): each request holds at most one connection per node, so the
    pool is never exhausted (redis-py's cluster clients fail instead of waiting when it is).
    """

    _semaphore: ClassVar[Callable[[int], Any]]  # the turns: threading's for a synchronous client, asyncio's for an asyncio one

    def __init__(
        self,
        client,
        layout: KeyLayout,
        recent_clicks: int = 128,
        topics_per_user: int = 4,
        n_candidates: int = 600,
        server_side: bool | None = None,
        max_concurrency: int = 64,
    ) -> None:
        if recent_clicks < 1 or topics_per_user < 1 or n_candidates < 0:
            raise ValueError(
                f"need recent_clicks >= 1, topics_per_user >= 1, n_candidates >= 0; got {recent_clicks}, {topics_per_user}, {n_candidates}"
            )
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if not isinstance(layout, KeyLayout):
            raise TypeError(f"layout must be a topicfs.keys.KeyLayout, got {type(layout).__name__}")
        self.client = client
        self.layout = layout
        self.recent_clicks = recent_clicks
        self.topics_per_user = topics_per_user
        self.n_candidates = n_candidates
        if server_side is None:
            server_side = layout.shards == 1 and not is_cluster(client)
        if server_side and is_cluster(client):
            raise ValueError("the server-side candidate script needs a single Redis; on a Redis Cluster use server_side=False")
        self.server_side = server_side
        self.max_concurrency = max_concurrency
        self._turns = self._semaphore(max_concurrency)
        self._setup = _ScriptSetup(layout) if server_side else None
        self._script = client.register_script(lua_source("candidates.lua")) if server_side else None

    @classmethod
    def _from_settings(cls, settings, client):
        """Built for ``client`` from :class:`topicfs.settings.Settings` (key layout, N1, N2, N3, the pool's bound)."""
        serving = settings.serving
        return cls(
            client,
            KeyLayout.from_config(settings.redis),
            settings.stream.recent_clicks,
            serving.topics_per_user,
            serving.n_candidates,
            max_concurrency=settings.redis.max_connections,
        )

    def _request(self, user_id: int, n: int | None) -> tuple[int, int]:
        """(user id, n) of a request, n defaulting to N3; a ValueError for a bad one."""
        n = self.n_candidates if n is None else n
        user_id = int(user_id)
        _check_request(user_id, n)
        return user_id, n

    def script_reply(self, user_id: int, n: int):
        """The raw reply of ``candidates.lua`` (awaitable on an asyncio client; tests and benchmarks)."""
        return self._script(keys=self._setup.keys(user_id), args=self._setup.args(self.recent_clicks, self.topics_per_user, n))

    def reader(self, user_id: int, n: int) -> Reader:
        """The Python reader of one request (see :func:`_reader`)."""
        return _reader(self.layout, self.recent_clicks, self.topics_per_user, user_id, n)


class CandidateGenerator(_Generator):
    """Reads a user's clicks and the topic queues from Redis and draws candidates (see :class:`_Generator` for the
    parameters)."""

    _semaphore = staticmethod(threading.BoundedSemaphore)

    @classmethod
    def from_settings(cls, settings, client=None) -> "CandidateGenerator":
        """Build from :class:`topicfs.settings.Settings` (the Redis deployment, key layout, N1, N2, N3); ``client``
        defaults to :func:`topicfs.redis_client.sync_client` of ``settings.redis``."""
        from topicfs.redis_client import sync_client

        if client is None:
            try:
                client = sync_client(settings.redis, timeout_s=settings.serving.redis_timeout_s)
            except _UNAVAILABLE as exc:  # a cluster client asks a node for the topology when built
                raise _unavailable(exc, "the cluster topology") from exc
        return cls._from_settings(settings, client)

    def candidates(self, user_id: int, n: int | None = None) -> CandidateResult:
        """Up to ``n`` (default N3) candidates for ``user_id``; raises :class:`CandidateStoreUnavailable`."""
        user_id, n = self._request(user_id, n)
        try:
            with self._turns:
                if self._script is not None:
                    return _result_from_reply(user_id, self.script_reply(user_id, n))
                return _run_sync(self.client, self.reader(user_id, n))
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    def python_candidates(self, user_id: int, n: int | None = None) -> CandidateResult:
        """:meth:`candidates` by the Python reader whatever ``server_side`` says (the reference the script is tested
        against)."""
        user_id, n = self._request(user_id, n)
        try:
            with self._turns:
                return _run_sync(self.client, self.reader(user_id, n))
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    def exposure_history(self, user_id: int) -> dict:
        """The raw hash of the user's exposure history (:meth:`topicfs.keys.KeyLayout.user_exposures`, written by a
        stream with ``stream.user_exposure_counts``); empty for a user never shown anything. Raises
        :class:`CandidateStoreUnavailable`."""
        key = self.layout.user_exposures(int(user_id))
        try:
            with self._turns:
                return self.client.hgetall(key)
        except redis.ResponseError as exc:
            _wrong_type(exc)
            skipped = Skipped()
            skipped.add("wrong_type", key)
            skipped.report(int(user_id))
            return {}
        except _UNAVAILABLE as exc:
            raise _unavailable(exc, "the exposure history") from exc


class AsyncCandidateGenerator(_Generator):
    """:class:`CandidateGenerator` on a ``redis.asyncio`` client (:func:`topicfs.redis_client.async_client`): the
    script (one EVALSHA) when ``server_side``, else the Python reader with awaited pipelines (on a Redis Cluster
    each round trip is sent to every node concurrently). Parameters as :class:`_Generator`.
    """

    _semaphore = staticmethod(asyncio.Semaphore)

    @classmethod
    def from_settings(cls, settings) -> "AsyncCandidateGenerator":
        """Build from :class:`topicfs.settings.Settings`; call inside the event loop that will use it."""
        from topicfs.redis_client import async_client

        return cls._from_settings(settings, async_client(settings.redis, timeout_s=settings.serving.redis_timeout_s))

    async def candidates(self, user_id: int, n: int | None = None) -> CandidateResult:
        """Same answer and errors as :meth:`CandidateGenerator.candidates`."""
        return await self._run(user_id, n, _result_from_reply, lambda result: result)

    async def candidates_json(self, user_id: int, n: int | None = None) -> bytes:
        """:func:`result_json` of :meth:`candidates` (from the script's reply without per-candidate objects)."""
        return await self._run(user_id, n, _json_from_reply, result_json)

    async def _run(
        self, user_id: int, n: int | None, from_reply: Callable[[int, list], Any], from_result: Callable[[CandidateResult], Any]
    ) -> Any:
        user_id, n = self._request(user_id, n)
        try:
            async with self._turns:
                if self._script is not None:
                    return from_reply(user_id, await self.script_reply(user_id, n))
                result = await _run_async(self.client, self.reader(user_id, n))
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        return from_result(result)

    async def connect(self) -> bool:
        """Learn the cluster's topology (a cluster client does it on first use otherwise, which under a burst of first
        requests races with their connections) and open a connection; False, with a warning, when Redis does not
        answer yet (requests then get :class:`CandidateStoreUnavailable` until it does)."""
        try:
            if is_cluster(self.client):
                await self.client.initialize()
            await self.client.ping()
        except _UNAVAILABLE as exc:
            logger.warning("Redis does not answer yet (%s: %s); candidate requests get 503 until it does", type(exc).__name__, exc)
            return False
        return True

    async def ping(self) -> None:
        """Raises :class:`CandidateStoreUnavailable` unless Redis (every cluster node) answers."""
        try:
            async with self._turns:
                await self.client.ping()
        except _UNAVAILABLE as exc:
            raise _unavailable(exc, "PING") from exc

    async def aclose(self) -> None:
        await self.client.aclose()
