"""Candidate generation (MTL III-B): a user's top topics -> candidates from the live topic queues.

Flow of one request, for user u::

    last N1 clicked videos of u ──► their topics ──► vote_topics ──► top N2 topics with votes
                                                                        │  (no history: the popular topics)
    split_quota: N3 shared by votes (largest remainder) ◄───────────────┘
    draw_candidates: each topic's queue in served rank order, round-robin over topics,
                     skipping videos u already clicked and videos another topic already gave

The pure functions (:func:`vote_topics`, :func:`split_quota`, :func:`draw_candidates`) hold the logic
and are property-tested. Fresh videos need no special case: the stream places them in the queues.

Two readers of the Redis layout (:mod:`topicfs.keys`) give the same answer:

* the server-side path (default on a single Redis): :data:`CANDIDATES_LUA` runs the whole flow above inside
  Redis in ONE round trip (EVALSHA) and answers with a few joined strings. It exists for latency: the
  Python reader below spends most of its ~3 ms building and parsing 130+ pipelined commands and running
  the draw loop in Python, while the same work takes Redis well under a millisecond;
* the Python path (three round trips, pipelines of single-key commands), which works on a Redis Cluster
  too (the script reads keys it cannot declare, so it needs one Redis) and is the reference the script is
  tested against. The script hands a request over to it whenever the state holds anything but canonical
  integer ids (a malformed click entry, topic list or queue member), so odd states keep the reference
  semantics, warnings included.

:class:`AsyncCandidateGenerator` is the server-side path on an asyncio client, for the HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
import redis.asyncio as aioredis

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


# The whole of CandidateGenerator._candidates_python as one Redis script: same votes, ties, quotas, draw order and
# fallback, read atomically. KEYS[1] = the user's click list, KEYS[2] = the popular topics; ARGV = key prefix, N1,
# N2, n. Ids stay strings: the script only compares them, and canonical decimal strings are equal exactly when the
# integers are; topic ids (compared numerically for ties) must also fit a double exactly (<= 15 characters).
# Reply: {"ok", source, {topic_id...}, {votes...}, {candidates per topic...}, "video,video,...", "topic,topic,...",
# "clicked,clicked,...", "topics of clicked 1;topics of clicked 2;..."}, or {"python", why} when an id is not
# canonical: the caller then runs the Python path, which decides what such an entry means.
CANDIDATES_LUA = r"""
local prefix, n1, n2, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local find, floor, huge = string.find, math.floor, math.huge

local function is_id(s) return s == '0' or find(s, '^%-?[1-9]%d*$') ~= nil end
local function is_topic(s) return #s <= 15 and is_id(s) end

-- split_quota: largest remainder; remainder ties go to the earlier entry
local function split_quota(weights, slots)
  local quota, total = {}, 0.0
  for i = 1, #weights do total = total + weights[i] end
  if total <= 0 or slots == 0 then
    for i = 1, #weights do quota[i] = 0 end
    return quota
  end
  local remainder, order, left = {}, {}, slots
  for i = 1, #weights do
    local share = slots * weights[i] / total
    if share ~= share or share == huge then return nil end
    local whole = floor(share)
    quota[i], remainder[i], order[i] = whole, share - whole, i
    left = left - whole
  end
  table.sort(order, function(a, b)
    if remainder[a] ~= remainder[b] then return remainder[a] > remainder[b] end
    return a < b
  end)
  for k = 1, math.min(left, #order) do quota[order[k]] = quota[order[k]] + 1 end
  return quota
end

-- the user's last N1 clicks (newest first) and their topic lists
local clicked = redis.call('LRANGE', KEYS[1], 0, n1 - 1)
local exclude, n_exclude = {}, 0
for i = 1, #clicked do
  local v = clicked[i]
  if not is_id(v) then return {'python', 'click entry ' .. v} end
  if not exclude[v] then exclude[v] = true; n_exclude = n_exclude + 1 end
end

local raw_topics, topics, weights, vote_text = {}, {}, {}, {}
local source = 'none'
if #clicked > 0 then
  source = 'history'
  local count, newest, ids = {}, {}, {}
  for i = 1, #clicked do
    local raw = redis.call('GET', prefix .. ':video:' .. clicked[i] .. ':topics')
    if not raw then raw = '' end
    raw_topics[i] = raw
    if raw ~= '' then
      local once = {}
      for part in string.gmatch(raw .. ',', '([^,]*),') do
        if not is_topic(part) then return {'python', 'topic list ' .. raw} end
        if not once[part] then
          once[part] = true
          local c = count[part]
          if c then count[part] = c + 1 else count[part] = 1; newest[part] = i; ids[#ids + 1] = part end
        end
      end
    end
  end
  -- the top N2 by (votes desc, newest click asc, id asc): a partial selection sort, not a sort of every topic
  for pick = 1, math.min(n2, #ids) do
    local best = pick
    local bc, bn, bi = count[ids[pick]], newest[ids[pick]], tonumber(ids[pick])
    for j = pick + 1, #ids do
      local t = ids[j]
      local c = count[t]
      if c > bc or (c == bc and (newest[t] < bn or (newest[t] == bn and tonumber(t) < bi))) then
        best, bc, bn, bi = j, c, newest[t], tonumber(t)
      end
    end
    ids[pick], ids[best] = ids[best], ids[pick]
  end
  for i = 1, math.min(n2, #ids) do
    topics[i], weights[i], vote_text[i] = ids[i], count[ids[i]], tostring(count[ids[i]])
  end
end
if #topics == 0 then
  local popular = redis.call('ZREVRANGE', KEYS[2], 0, n2 - 1, 'WITHSCORES')
  for i = 1, #popular, 2 do
    local t, score = popular[i], popular[i + 1]
    local x = tonumber(score)
    if not is_topic(t) or x == nil or x ~= x or x == huge or x == -huge then return {'python', 'popular ' .. t .. ' ' .. score} end
    if x > 0 then topics[#topics + 1], weights[#weights + 1], vote_text[#vote_text + 1] = t, x, score end
  end
  if #topics > 0 then source = 'popular' else source = 'none' end
end

-- draw_candidates on the topics' whole queues, each read lazily in growing chunks from its head
local k = #topics
local taken, out_video, out_topic = {}, {}, {}
for i = 1, k do taken[i] = 0 end
if k > 0 and n > 0 then
  local quota = split_quota(weights, n)
  if not quota then return {'python', 'quota'} end
  local queue, loaded, complete, position, depth = {}, {}, {}, {}, {}
  for i = 1, k do
    -- first read: the quota plus what may be skipped there; of the clicked videos only those of topic i (its votes)
    -- can stand in queue i. Only a first guess: a queue the draw uses up is read deeper.
    local skip = n_exclude
    if source == 'history' then skip = math.min(n_exclude, weights[i]) end
    queue[i], loaded[i], complete[i], position[i], depth[i] = {}, 0, false, 0, quota[i] + skip + 16
  end
  -- true: queue i has an entry at position[i]; false: it is exhausted. Members are checked (is_id) when the
  -- draw visits them: one never visited changes neither this answer nor the Python reader's.
  local function available(i)
    while position[i] >= loaded[i] and not complete[i] do
      local start, stop = loaded[i], depth[i] - 1
      local members = redis.call('ZREVRANGE', prefix .. ':queue:' .. topics[i], start, stop)
      local q = queue[i]
      for j = 1, #members do q[start + j] = members[j] end
      loaded[i] = start + #members
      if #members < stop - start + 1 then complete[i] = true end
      depth[i] = 2 * depth[i] + n
    end
    return position[i] < loaded[i]
  end
  local seen, drawn = {}, 0
  local live = {}
  for i = 1, k do if weights[i] > 0 then live[#live + 1] = i end end
  while drawn < n and #live > 0 do
    local progressed = false
    for li = 1, #live do
      local i = live[li]
      if taken[i] < quota[i] then
        local q = queue[i]
        while true do
          if position[i] >= loaded[i] and not available(i) then break end  -- loads more, or the queue is dry
          local p = position[i] + 1
          position[i] = p
          local v = q[p]
          if not is_id(v) then return {'python', 'queue member ' .. v} end
          if not exclude[v] and not seen[v] then
            seen[v] = true
            drawn = drawn + 1
            out_video[drawn], out_topic[drawn] = v, topics[i]
            taken[i] = taken[i] + 1
            progressed = true
            break
          end
        end
      end
    end
    local exhausted, any = {}, false
    for li = 1, #live do
      local i = live[li]
      if taken[i] < quota[i] and position[i] >= loaded[i] and not available(i) then  -- a queue with entries left is not dry
        exhausted[i] = true; any = true
      end
    end
    if any then
      -- pass a dry queue's unfilled slots on to the topics that can still fill them
      local still, still_weights, missing = {}, {}, n
      for i in pairs(exhausted) do quota[i] = taken[i] end
      for _, i in ipairs(live) do
        if not exhausted[i] then still[#still + 1] = i; still_weights[#still_weights + 1] = weights[i] end
      end
      for i = 1, k do missing = missing - quota[i] end
      live = still
      local extra = split_quota(still_weights, missing)
      if not extra then return {'python', 'quota'} end
      for j, i in ipairs(live) do quota[i] = quota[i] + extra[j] end
    elseif not progressed then
      break
    end
  end
end
return {'ok', source, topics, vote_text, taken, table.concat(out_video, ','), table.concat(out_topic, ','),
        table.concat(clicked, ','), table.concat(raw_topics, ';')}
"""


class _NeedsPython(Exception):
    """The script met a non-canonical id and handed the request over to the Python path."""


def _result_from_reply(user_id: int, reply: list) -> CandidateResult:
    """A :data:`CANDIDATES_LUA` reply as a :class:`CandidateResult` (raises :class:`_NeedsPython` for a hand-over)."""
    if reply[0] != b"ok":
        raise _NeedsPython(reply[1].decode(errors="replace"))
    _, source, topic_ids, vote_text, taken, videos, video_topics, clicked_text, topics_text = reply
    candidates = list(map(Candidate, map(int, videos.split(b",")), map(int, video_topics.split(b",")))) if videos else []
    shares = [TopicShare(int(t), float(v), c) for t, v, c in zip(topic_ids, vote_text, taken)]
    if clicked_text:
        clicked = list(map(int, clicked_text.split(b",")))
        clicked_topics = [list(map(int, raw.split(b","))) if raw else [] for raw in topics_text.split(b";")]
    else:
        clicked, clicked_topics = [], []
    return CandidateResult(user_id, source.decode(), shares, candidates, clicked, clicked_topics)


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
    """:func:`result_json` of a :data:`CANDIDATES_LUA` reply, formatted from the reply's text without building the
    result's objects (the script only returns canonical integer ids, which are JSON numbers as they are)."""
    if reply[0] != b"ok":
        raise _NeedsPython(reply[1].decode(errors="replace"))
    _, source, topic_ids, vote_text, taken, videos, video_topics = reply[:7]
    topics = b",".join(
        b'{"topic_id":%s,"votes":%s,"n_candidates":%d}' % (t, json.dumps(float(v)).encode(), c) for t, v, c in zip(topic_ids, vote_text, taken)
    )
    candidates = b",".join(b'{"video_id":%s,"topic_id":%s}' % pair for pair in zip(videos.split(b","), video_topics.split(b","))) if videos else b""
    return b'{"user_id":%d,"source":"%s","topics":[%s],"candidates":[%s]}' % (user_id, source, topics, candidates)


class CandidateGenerator:
    """Reads a user's clicks and the topic queues from Redis and draws candidates.

    ``server_side`` (default: on unless ``client`` is a ``redis.RedisCluster``) runs :data:`CANDIDATES_LUA`,
    one round trip; off, the Python path reads with three round trips of pipelined single-key commands, so
    keys may live on different cluster slots. Both give the same :class:`CandidateResult`.
    """

    def __init__(
        self,
        client: redis.Redis,
        key_prefix: str,
        recent_clicks: int = 128,
        topics_per_user: int = 4,
        n_candidates: int = 600,
        server_side: bool | None = None,
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
        if server_side is None:
            server_side = not isinstance(client, redis.RedisCluster)
        self.server_side = server_side
        self._script = client.register_script(CANDIDATES_LUA) if server_side else None

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
        user_id = int(user_id)
        try:
            if self._script is not None:
                try:
                    return _result_from_reply(user_id, self._script(keys=self.script_keys(user_id), args=self.script_args(n)))
                except _NeedsPython as why:
                    logger.debug("user %d: candidates by the Python path (%s)", user_id, why)
            return self._candidates_python(user_id, n)
        except redis.RedisError as exc:
            raise CandidateStoreUnavailable(f"Redis error while reading candidates: {type(exc).__name__}: {exc}") from exc

    def exposure_history(self, user_id: int) -> dict:
        """The raw hash of the user's exposure history (:func:`topicfs.keys.user_exposures_key`, written by a stream
        with ``stream.user_exposure_counts``); empty for a user never shown anything. Raises
        :class:`CandidateStoreUnavailable`."""
        try:
            return self.client.hgetall(keys.user_exposures_key(self.key_prefix, int(user_id)))
        except redis.RedisError as exc:
            raise CandidateStoreUnavailable(f"Redis error while reading the exposure history: {type(exc).__name__}: {exc}") from exc

    def _candidates_python_checked(self, user_id: int, n: int) -> CandidateResult:
        try:
            return self._candidates_python(user_id, n)
        except redis.RedisError as exc:
            raise CandidateStoreUnavailable(f"Redis error while reading candidates: {type(exc).__name__}: {exc}") from exc

    def script_keys(self, user_id: int) -> list[str]:
        return [keys.user_clicks_key(self.key_prefix, user_id), keys.popular_topics_key(self.key_prefix)]

    def script_args(self, n: int) -> list:
        return [self.key_prefix, self.recent_clicks, self.topics_per_user, n]

    def _candidates_python(self, user_id: int, n: int) -> CandidateResult:
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
        read: dict[int, int] = {}  # members read from each queue (malformed ones are read but not kept)
        complete: set[int] = set()
        while True:
            wanted = [t for t, _ in votes if t not in complete and read.get(t, 0) < depth[t]]
            if wanted:
                pipe = self.client.pipeline(transaction=False)
                for t in wanted:
                    pipe.zrevrange(keys.queue_key(self.key_prefix, t), read.get(t, 0), depth[t] - 1)
                for t, members in zip(wanted, pipe.execute()):
                    start = read.get(t, 0)
                    read[t] = start + len(members)
                    queue = queues.setdefault(t, [])
                    for member in members:
                        try:
                            queue.append(int(member))
                        except ValueError:
                            logger.warning("topic %d: ignoring a queue member that is not a video id: %r", t, member)
                    if len(members) < depth[t] - start:
                        complete.add(t)
            draw = draw_candidates(votes, queues, n, exclude)
            short = [t for t, _ in votes if t not in complete and draw.consumed.get(t, 0) >= len(queues[t])]
            if not short:
                return draw
            for t in short:
                depth[t] = 2 * depth[t] + n


class AsyncCandidateGenerator:
    """The server-side path of ``generator``'s settings on a ``redis.asyncio`` client (one EVALSHA per request).

    A request the script hands over (non-canonical ids in the state) runs ``generator``'s Python path in a
    worker thread, so there is one Python reference implementation.
    """

    def __init__(self, client: "aioredis.Redis", generator: CandidateGenerator) -> None:
        self.client = client
        self.generator = generator
        self._script = client.register_script(CANDIDATES_LUA)

    async def candidates(self, user_id: int, n: int | None = None) -> CandidateResult:
        """Same answer and errors as :meth:`CandidateGenerator.candidates`."""
        return await self._run(user_id, n, _result_from_reply, lambda result: result)

    async def candidates_json(self, user_id: int, n: int | None = None) -> bytes:
        """:func:`result_json` of :meth:`candidates`, straight from the script's reply (no per-candidate objects)."""
        return await self._run(user_id, n, _json_from_reply, result_json)

    async def _run(self, user_id: int, n: int | None, from_reply: Callable[[int, list], Any], from_result: Callable[[CandidateResult], Any]) -> Any:
        """The script's answer through ``from_reply``, or (a hand-over) the Python path's through ``from_result``."""
        generator = self.generator
        n = generator.n_candidates if n is None else n
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        user_id = int(user_id)
        try:
            reply = await self._script(keys=generator.script_keys(user_id), args=generator.script_args(n))
            return from_reply(user_id, reply)
        except redis.RedisError as exc:
            raise CandidateStoreUnavailable(f"Redis error while reading candidates: {type(exc).__name__}: {exc}") from exc
        except _NeedsPython as why:
            logger.debug("user %d: candidates by the Python path (%s)", user_id, why)
        return from_result(await asyncio.to_thread(generator._candidates_python_checked, user_id, n))

    async def aclose(self) -> None:
        await self.client.aclose()
