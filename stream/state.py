"""Redis: the stream's state, its source of truth, and the topic queues candidate generation reads.

Why Redis is the source of truth (and not Faust changelogged tables): the queues and user histories must live in
Redis anyway for the candidate service, per-video counts are shared by every partition (users are the Kafka key,
videos are not), and a Faust table would add a changelog write per update, which is the cost that makes the naive
agent slow. So every batch of messages is applied by ONE Redis script call (:data:`_APPLY_BATCH`) that adds the
batch's counts, moves videos between the queue indexes, updates the user histories AND stores the last applied Kafka
offset of every partition in the batch: Redis runs a script atomically, so either all of it happens or none of it.
A worker skips messages at or below the stored offset, so a message re-delivered after a crash, a rebalance or a
restart is never counted twice; the script compares the stored offsets with those the worker filtered against and
writes nothing when they differ (two workers briefly processing the same partition, a rebalance in flight): that
worker filters again and retries. Workers adding to the same video at once (different users, different partitions)
need no retry: each script reads and writes the counts where they live, one after the other. Kafka's committed
offsets are only a hint kept behind Redis's: a starting worker resets the group's committed offsets to Redis's
(:func:`stream.broker.align_committed_offsets`), so an emptied Redis makes the worker re-read the Kafka log from its
start and rebuild every count and queue exactly.

Keys this module owns, besides those of :mod:`topicfs.keys` that it writes (queue, video topics, user clicks and exposures, popular):

=============================================  ======  ===================================================
key                                            type    content
=============================================  ======  ===================================================
``{prefix}:stats:video:{video_id}``            HASH    exposures, clicks, ctr, ts (event time of the values)
``{prefix}:stats:topic:{topic_id}``            HASH    exposures, clicks, ctr, ts
``{prefix}:user:{user_id}:topic_counts``       HASH    topic_id → votes among the user's last N1 clicks
``{prefix}:stream:established:{topic_id}``     ZSET    video_id → CTR of the topic's videos with ≥ τ1 exposures, CTR ≥ τ2
``{prefix}:stream:fresh:{topic_id}``           ZSET    video_id → exposures of the topic's videos below τ1
``{prefix}:stream:topics``                     SET     every topic id that has a video
``{prefix}:stream:dirty``                      SET     topic ids whose served queue must be rebuilt
``{prefix}:stream:offset:{kafka_topic}:{p}``   STRING  last Kafka offset of partition p applied to this state
``{prefix}:stream:push:{video|topic|user}``    SET     ids whose statistics changed since the last Feast push
=============================================  ======  ===================================================
"""

from __future__ import annotations

import base64
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import redis.asyncio as aioredis
from tqdm.auto import tqdm

from stream.logic import (
    BatchDelta,
    Counts,
    Limits,
    drop_unknown_videos,
    fold_events,
    parse_event,
    video_status,
)
from stream.records import DeadLetter
from topicfs.keys import decode_ids, encode_ids, queue_key, video_topics_key
from topicfs.settings import StreamConfig

logger = logging.getLogger(__name__)


def video_stats_key(prefix: str, video_id: int) -> str:
    return f"{prefix}:stats:video:{video_id}"


def topic_stats_key(prefix: str, topic_id: int) -> str:
    return f"{prefix}:stats:topic:{topic_id}"


def user_topic_counts_key(prefix: str, user_id: int) -> str:
    return f"{prefix}:user:{user_id}:topic_counts"


def established_key(prefix: str, topic_id: int) -> str:
    return f"{prefix}:stream:established:{topic_id}"


def fresh_key(prefix: str, topic_id: int) -> str:
    return f"{prefix}:stream:fresh:{topic_id}"


def all_topics_key(prefix: str) -> str:
    return f"{prefix}:stream:topics"


def dirty_topics_key(prefix: str) -> str:
    return f"{prefix}:stream:dirty"


def offset_key(prefix: str, kafka_topic: str, partition: int) -> str:
    return f"{prefix}:stream:offset:{kafka_topic}:{partition}"


def push_pending_key(prefix: str, entity: str) -> str:
    return f"{prefix}:stream:push:{entity}"


_STATS_FIELDS = ("exposures", "clicks", "ts")

# One round trip for all reads of a registration chunk (StreamStore.register_videos); the answer is one JSON string
# because decoding thousands of RESP replies in Python costs more than the chunk's logic.
# KEYS: stats keys, then video topic keys; ARGV = [number of stats keys].
_READ_BATCH = """
local out = {}
local n_stats = tonumber(ARGV[1])
for i = 1, #KEYS do
  if i <= n_stats then
    out[i] = redis.call('HMGET', KEYS[i], 'exposures', 'clicks', 'ts')
  else
    out[i] = redis.call('GET', KEYS[i])
  end
end
return cjson.encode(out)
"""

# Every write of a registration chunk in one command: ARGV[1] = JSON list of commands ([name, arg, ...], all
# strings), computed in Python by StreamStore.register_videos. Run inside MULTI/EXEC, so the chunk is all-or-nothing.
_APPLY_OPS = """
for _, op in ipairs(cjson.decode(ARGV[1])) do redis.call(unpack(op)) end
return 1
"""

# One batch, applied inside Redis in one atomic script call: the Lua twin of stream.logic's merge_counts,
# video_status, push_recent_clicks and topic_histogram, and of the τ1/τ2 index rule (StreamStore._index_writes
# applies the same rule at registration). Its key names are built here by concatenation, twins of the *_key
# functions above. tests/stream/test_stream_state.py checks it: decayed counts against merge_counts batch by batch,
# and counts, queues and user histograms against the ground truth of stream_truth. Being one script, it needs no WATCH: no other
# command runs while it does, so workers adding to the same video's counts at once both count, and the
# read-modify-write of the counts happens where the counts live (no round trip, no retry).
# Exactly once: ARGV's "offsets" carry, per Kafka partition of the batch, the stored offset the caller filtered
# its messages against and the new last applied offset. If any stored offset differs (another worker applied
# that partition meanwhile: a rebalance in flight), nothing is written and the reply lists the stored offsets,
# so the caller filters again and retries.
# ARGV[1] = JSON {"p": key prefix, "tau1", "tau2", "n1", "h": half-life s or 0, "push": 0/1,
#   "offsets": [[key, expected or -1, new]], "videos": [[id, d_exposures, d_clicks, ts or null, [topic ids]]],
#   "topics": [[id, d_exposures, d_clicks, ts or null]], "users": [[id, [clicked video ids, oldest first]]],
#   "ue": 0/1 count the users' exposure history, "exposed": [[user id, [exposed video ids]]] (empty unless ue)};
# ids are strings. Reply: "ok", or a JSON list of the stored offsets (-1 = none) when they did not match.
_APPLY_BATCH = """
local b = cjson.decode(ARGV[1])
local p = b.p
local conflict, stored = false, {}
for i, o in ipairs(b.offsets) do
  local now = tonumber(redis.call('GET', o[1]) or '-1')
  stored[i] = now
  if now ~= o[2] then conflict = true end
end
if conflict then return cjson.encode(stored) end
for _, o in ipairs(b.offsets) do redis.call('SET', o[1], string.format('%.0f', o[3])) end

local tau1, tau2, n1, h = b.tau1, b.tau2, b.n1, b.h
local function num(x)
  if x == math.floor(x) and math.abs(x) < 9007199254740992 then return string.format('%.0f', x) end
  return string.format('%.17g', x)
end
local function ctr(e, c) if e > 0 then return c / e end return 0.0 end
local function status(e, c)
  if e < tau1 then return 'fresh' end
  if ctr(e, c) >= tau2 then return 'established' end
  return 'pruned'
end
-- merge_counts: the stored counts (e, c, t; t nil = no reference time) plus a delta (de, dc, dt)
local function merge(e, c, t, de, dc, dt)
  if t == nil or dt == nil then
    if dt == nil then return e + de, c + dc, t end
    return e + de, c + dc, dt
  end
  local ts = math.max(t, dt)
  if h > 0 and ts > t then local f = 0.5 ^ ((ts - t) / h); e, c = e * f, c * f end
  if h > 0 and ts > dt then local f = 0.5 ^ ((ts - dt) / h); de, dc = de * f, dc * f end
  return e + de, c + dc, ts
end
local function read(key)
  local r = redis.call('HMGET', key, 'exposures', 'clicks', 'ts')
  if not r[1] then return 0, 0, nil end
  local t = tonumber(r[3] or '0')
  if t == 0 then t = nil end
  return tonumber(r[1]), tonumber(r[2] or '0'), t
end
local function write(key, e, c, t)
  redis.call('HSET', key, 'exposures', num(e), 'clicks', num(c), 'ctr', string.format('%.17g', ctr(e, c)), 'ts', string.format('%.17g', t or 0))
end

-- grouped writes: key -> list of arguments (one command per key, in chunks Lua's unpack takes)
local zadds, zrems, sadds = {}, {}, {}
local order = {}
local function group(tbl, key, ...)
  local list = tbl[key]
  if list == nil then list = {}; tbl[key] = list; order[#order + 1] = {tbl, key} end
  for i = 1, select('#', ...) do list[#list + 1] = select(i, ...) end
end
local function flush(cmd, key, list)
  for s = 1, #list, 1000 do redis.call(cmd, key, unpack(list, s, math.min(s + 999, #list))) end
end

local dirty_key, popular_key = p .. ':stream:dirty', p .. ':popular'
for _, v in ipairs(b.videos) do
  local id, topics = v[1], v[5]
  local key = p .. ':stats:video:' .. id
  local e0, c0, t0 = read(key)
  local e, c, t = merge(e0, c0, t0, v[2], v[3], v[4])
  write(key, e, c, t)
  local st, old = status(e, c), status(e0, c0)
  local changed = st ~= old or (st == 'established' and ctr(e, c) ~= ctr(e0, c0))
  for _, topic in ipairs(topics) do
    local est, fresh = p .. ':stream:established:' .. topic, p .. ':stream:fresh:' .. topic
    if st == 'established' then
      if changed then group(zadds, est, string.format('%.17g', ctr(e, c)), id) end
      if old ~= 'established' then group(zrems, fresh, id) end
    elseif st == 'fresh' then
      if old ~= 'fresh' then group(zadds, fresh, num(e), id); group(zrems, est, id) end
    elseif old ~= 'pruned' then
      group(zrems, est, id); group(zrems, fresh, id)
    end
    if changed then group(sadds, dirty_key, topic) end
  end
end
local popular = {}
for _, v in ipairs(b.topics) do
  local key = p .. ':stats:topic:' .. v[1]
  local e0, c0, t0 = read(key)
  local e, c, t = merge(e0, c0, t0, v[2], v[3], v[4])
  write(key, e, c, t)
  popular[#popular + 1] = num(c)
  popular[#popular + 1] = v[1]
end
flush('ZADD', popular_key, popular)

-- users: the last N1 clicks (newest first) and the topic histogram over them, with the videos' current topics
local topics_of = {}
local function topics_of_video(video)
  local known = topics_of[video]
  if known == nil then
    known = {}
    local raw = redis.call('GET', p .. ':video:' .. video .. ':topics')
    if raw then for t in string.gmatch(raw, '[^,]+') do known[#known + 1] = t end end
    topics_of[video] = known
  end
  return known
end
for _, u in ipairs(b.users) do
  local key = p .. ':user:' .. u[1] .. ':clicks'
  local clicks = u[2]
  for s = 1, #clicks, 1000 do redis.call('LPUSH', key, unpack(clicks, s, math.min(s + 999, #clicks))) end
  redis.call('LTRIM', key, 0, n1 - 1)
  local votes, voted = {}, {}
  for _, video in ipairs(redis.call('LRANGE', key, 0, n1 - 1)) do
    for _, t in ipairs(topics_of_video(video)) do
      local n = votes[t]
      if n == nil then voted[#voted + 1] = t; votes[t] = 1 else votes[t] = n + 1 end
    end
  end
  local hkey = p .. ':user:' .. u[1] .. ':topic_counts'
  redis.call('DEL', hkey)
  local args = {}
  for _, t in ipairs(voted) do args[#args + 1] = t; args[#args + 1] = votes[t] end
  flush('HSET', hkey, args)
end

-- users' exposure history (b.ue = 1, stream.user_exposure_counts): exposures and clicks, overall ('e', 'c') and per
-- topic of the videos ('e:<topic>', 'c:<topic>'), plain counts; serving.features.exposure_history is the offline twin
if b.ue == 1 then
  local per_user, users = {}, {}
  local function bump(user, field, n)
    local counts = per_user[user]
    if counts == nil then counts = {fields = {}, n = {}}; per_user[user] = counts; users[#users + 1] = user end
    local now = counts.n[field]
    if now == nil then counts.fields[#counts.fields + 1] = field; counts.n[field] = n else counts.n[field] = now + n end
  end
  local function add(list, kind)
    for _, u in ipairs(list) do
      bump(u[1], kind, #u[2])
      for _, video in ipairs(u[2]) do
        for _, t in ipairs(topics_of_video(video)) do bump(u[1], kind .. ':' .. t, 1) end
      end
    end
  end
  add(b.exposed, 'e')
  add(b.users, 'c')
  for _, user in ipairs(users) do
    local key, counts = p .. ':user:' .. user .. ':exposures', per_user[user]
    for _, f in ipairs(counts.fields) do redis.call('HINCRBY', key, f, counts.n[f]) end
  end
end

for _, entry in ipairs(order) do
  local tbl, key = entry[1], entry[2]
  if tbl == zrems then flush('ZREM', key, tbl[key]) end
end
for _, entry in ipairs(order) do
  local tbl, key = entry[1], entry[2]
  if tbl == zadds then flush('ZADD', key, tbl[key]) elseif tbl == sadds then flush('SADD', key, tbl[key]) end
end
if b.push == 1 then
  local ids = {}
  for _, v in ipairs(b.videos) do ids[#ids + 1] = v[1] end
  flush('SADD', p .. ':stream:push:video', ids)
  ids = {}
  for _, v in ipairs(b.topics) do ids[#ids + 1] = v[1] end
  flush('SADD', p .. ':stream:push:topic', ids)
  ids = {}
  for _, u in ipairs(b.users) do ids[#ids + 1] = u[1] end
  flush('SADD', p .. ':stream:push:user', ids)
end
return 'ok'
"""


# Arguments of one command in _APPLY_OPS at most: Lua's unpack() fails past about 8,000 values, which one SADD of a
# big chunk's topic ids reaches. Even, so ZADD pairs stay whole.
_MAX_OP_ARGS = 1000


class _Ops:
    """Collects the Redis writes of a registration chunk (same call shapes as a redis-py pipeline) to send as one
    :data:`_APPLY_OPS` call.

    Sorted-set and set writes are grouped per key (one ZADD / ZREM / SADD per key and chunk instead of one per
    video: Redis runs each command of the script separately, and a chunk touches thousands of videos of a few
    topics). Within a key the last write of a member wins, as it would with one command per write; the grouped
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

    def send(self, pipe) -> None:
        """Queue the collected writes on ``pipe`` (in MULTI mode or a plain pipeline), in chunks Lua can unpack."""
        commands = self.commands()
        for start in range(0, len(commands), 2000):
            pipe.eval(_APPLY_OPS, 0, json.dumps(commands[start : start + 2000], separators=(",", ":")))


# Rebuild the served queues of a group of topics, atomically (so no batch can interleave and no WATCH is needed):
# the Lua twin of stream.logic.build_queue (tests/stream/test_stream_state.py checks them against each other).
# KEYS: per topic (established index, fresh index, served queue), then the dirty-topics set.
# ARGV: keep, sample size, fresh share, cold-start fresh, max queue length, PRNG seed, return queues (0/1), topic ids.
# Per topic: the top `keep` established videos by CTR (ties: lower id first), fresh videos drawn uniformly from a
# ZRANDMEMBER sample (shuffled with the seeded PRNG: ZRANDMEMBER's reply order is not random) and placed at ranks
# floor((k + 1/2)·L/F); the queue is rewritten with scores L - rank and the topic leaves the dirty set.
_REBUILD_QUEUES = """
local keep, sample_size = tonumber(ARGV[1]), tonumber(ARGV[2])
local share, cold_start, max_length = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
math.randomseed(tonumber(ARGV[6]))
local want_queues = ARGV[7] == '1'
local n_topics = (#KEYS - 1) / 3
local out = {}
for t = 1, n_topics do
  local est_key, fresh_key, queue_key = KEYS[3 * t - 2], KEYS[3 * t - 1], KEYS[3 * t]
  local ranked = {}
  if keep > 0 then
    local flat = redis.call('ZREVRANGE', est_key, 0, keep - 1, 'WITHSCORES')
    for i = 1, #flat, 2 do ranked[#ranked + 1] = {flat[i], tonumber(flat[i + 1]), tonumber(flat[i])} end
    table.sort(ranked, function(a, b) if a[2] ~= b[2] then return a[2] > b[2] end return a[3] < b[3] end)
  end
  local n_available = redis.call('ZCARD', fresh_key)
  local sample = {}
  if sample_size > 0 and n_available > 0 then sample = redis.call('ZRANDMEMBER', fresh_key, sample_size) end
  local in_ranked = {}
  for i = 1, #ranked do in_ranked[ranked[i][1]] = true end
  local unique, seen = {}, {}
  for i = 1, #sample do
    local v = sample[i]
    if not seen[v] then
      seen[v] = true
      if not in_ranked[v] then unique[#unique + 1] = v end
    end
  end
  local n_distinct = 0
  for _ in pairs(seen) do n_distinct = n_distinct + 1 end
  -- fresh_count(len(ranked), min(n_available, distinct sample), share, cold_start), capped by the free places
  local wanted
  if #ranked == 0 then wanted = cold_start else wanted = math.ceil(share * #ranked / (1.0 - share) - 1e-9) end
  local n_fresh = math.max(0, math.min(wanted, math.min(n_available, n_distinct)))
  n_fresh = math.min(n_fresh, max_length - #ranked, #unique)
  for i = 1, n_fresh do  -- partial Fisher-Yates: unique[1..n_fresh] is a uniform random draw in random order
    local j = math.random(i, #unique)
    unique[i], unique[j] = unique[j], unique[i]
  end
  local total = #ranked + n_fresh
  local fresh_at = {}
  for k = 0, n_fresh - 1 do fresh_at[math.floor((k + 0.5) * total / n_fresh)] = true end
  local queue, e, f = {}, 1, 1
  for rank = 0, total - 1 do
    if fresh_at[rank] then queue[#queue + 1] = unique[f]; f = f + 1 else queue[#queue + 1] = ranked[e][1]; e = e + 1 end
  end
  redis.call('DEL', queue_key)
  for start = 1, total, 500 do
    local args = {}
    for rank = start, math.min(start + 499, total) do
      args[#args + 1] = total - rank + 1
      args[#args + 1] = queue[rank]
    end
    redis.call('ZADD', queue_key, unpack(args))
  end
  redis.call('SREM', KEYS[#KEYS], ARGV[7 + t])
  if want_queues then out[#out + 1] = queue else out[#out + 1] = total end
end
return out
"""


def _counts(raw: Sequence[bytes | str | None | bool]) -> Counts:
    exposures, clicks, ts = raw
    if exposures is None or exposures is False:
        return Counts()
    return Counts(float(exposures), float(clicks or 0), float(ts) if ts and float(ts) else None)


@dataclass
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
    skipped_messages: int = 0  # at or below the stored offset: applied before (redelivery)
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
    """The stream's Redis state: applies batches exactly once, rebuilds queues, registers videos, collects pushes."""

    def __init__(self, client: aioredis.Redis, prefix: str, config: StreamConfig, push_enabled: bool = False) -> None:
        self.client = client
        self.prefix = prefix
        self.config = config
        self.push_enabled = push_enabled
        self.topics_of: dict[int, tuple[int, ...]] = {}  # cache of {prefix}:video:{id}:topics; Redis is the truth
        self._rng = random.Random(config.seed)  # seeds each queue rebuild's draw of fresh videos
        self._rebuild_script = client.register_script(_REBUILD_QUEUES)
        self._apply_script = client.register_script(_APPLY_BATCH)
        self._applied: dict[tuple[str, int], int] = {}  # last applied offset per (Kafka topic, partition), as last seen in Redis
        self._topic_strings: dict[int, list[str]] = {}  # topics_of as strings, for the batch payload
        self._token = uuid.uuid4().hex[:12]

    def limits(self, now_s: float | None = None) -> Limits:
        now_s = time.time() if now_s is None else now_s
        return Limits(
            max_payload_bytes=self.config.max_payload_bytes,
            max_videos_per_exposure=self.config.max_videos_per_exposure,
            min_event_ts_s=self.config.min_event_ts_s,
            max_event_ts_s=now_s + self.config.max_clock_skew_s,
        )

    # ------------------------------------------------------------ video topics

    async def fetch_topics(self, video_ids: Iterable[int]) -> None:
        """Fill the topics cache for ``video_ids`` not in it yet (unknown videos stay absent)."""
        missing = [video_id for video_id in set(video_ids) if video_id not in self.topics_of]
        for start in range(0, len(missing), 10000):
            chunk = missing[start : start + 10000]
            values = await self.client.mget([video_topics_key(self.prefix, video_id) for video_id in chunk])
            for video_id, raw in zip(chunk, values):
                if raw is not None:
                    self.topics_of[video_id] = tuple(decode_ids(raw))
                    self._topic_strings.pop(video_id, None)

    async def register_videos(self, topics_by_video: Mapping[int, Sequence[int]], chunk_size: int = 5000, show_progress: bool = False) -> int:
        """Write videos' topic ids and put each video in its topics' indexes according to its current counts.

        Idempotent (a replayed video event changes nothing). A video whose topics changed leaves its old topics' indexes.
        """
        items = [(int(video_id), [int(t) for t in topics]) for video_id, topics in topics_by_video.items()]
        for start in tqdm(range(0, len(items), chunk_size), desc="video topics → Redis", disable=not show_progress):
            chunk = items[start : start + chunk_size]
            keys = [video_stats_key(self.prefix, v) for v, _ in chunk] + [video_topics_key(self.prefix, v) for v, _ in chunk]
            raw = json.loads(await self.client.eval(_READ_BATCH, len(keys), *keys, len(chunk)))
            ops = _Ops()
            for index, (video_id, topics) in enumerate(chunk):
                old_raw = raw[len(chunk) + index]
                old_topics = decode_ids(old_raw) if isinstance(old_raw, str) else []
                counts = _counts(raw[index])
                ops.set(video_topics_key(self.prefix, video_id), encode_ids(topics))
                for topic_id in set(old_topics) - set(topics):
                    ops.zrem(established_key(self.prefix, topic_id), video_id)
                    ops.zrem(fresh_key(self.prefix, topic_id), video_id)
                    ops.sadd(dirty_topics_key(self.prefix), topic_id)
                if topics:
                    ops.sadd(all_topics_key(self.prefix), *topics)
                self._index_writes(ops, video_id, topics, counts)
                self.topics_of[video_id] = tuple(topics)
                self._topic_strings.pop(video_id, None)
            async with self.client.pipeline(transaction=True) as pipe:
                ops.send(pipe)
                await pipe.execute()
        return len(items)

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

    def _index_writes(self, ops: _Ops, video_id: int, topics: Sequence[int], counts: Counts) -> None:
        """Put a (re)registered video in its topics' established/fresh indexes per the τ1/τ2 rule, out of any
        other index of those topics, and mark the topics dirty (the batch script applies the same rule to changes)."""
        config = self.config
        status = video_status(counts, config.min_exposures, config.min_ctr)
        for topic_id in topics:
            if status == "established":
                ops.zadd(established_key(self.prefix, topic_id), {video_id: counts.ctr})
                ops.zrem(fresh_key(self.prefix, topic_id), video_id)
            elif status == "fresh":  # the score (exposures) is informative only
                ops.zadd(fresh_key(self.prefix, topic_id), {video_id: counts.exposures})
                ops.zrem(established_key(self.prefix, topic_id), video_id)
            else:
                ops.zrem(established_key(self.prefix, topic_id), video_id)
                ops.zrem(fresh_key(self.prefix, topic_id), video_id)
        if topics:
            ops.sadd(dirty_topics_key(self.prefix), *topics)

    # ------------------------------------------------------------ one batch, one script call

    async def apply_batch(
        self,
        messages: Sequence[RawMessage],
        send_dead_letters: Callable[[list[DeadLetter]], Awaitable[None]],
        now_s: float | None = None,
    ) -> BatchResult:
        """Validate, count and store one batch of events-topic messages exactly once (see the module docstring).

        Invalid messages and the invalid parts of partly bad ones go to ``send_dead_letters`` (awaited before the
        state commits, so a dead letter is never lost; after a crash in between it may be sent twice, with the same
        source partition and offset).
        """
        if not messages:
            return BatchResult()
        limits = self.limits(now_s)
        parsed = [parse_event(message.value, limits) for message in messages]
        result = BatchResult()
        sent_dead_letters: set[tuple[int, int]] = set()
        partitions = sorted({(m.topic, m.partition) for m in messages})
        offset_keys = [offset_key(self.prefix, topic, partition) for topic, partition in partitions]
        unknown = [i for i, tp in enumerate(partitions) if tp not in self._applied]
        if unknown:
            stored = await self.client.mget([offset_keys[i] for i in unknown])
            for i, raw in zip(unknown, stored):
                self._applied[partitions[i]] = int(raw) if raw is not None else -1
        while True:
            applied_upto = self._applied
            fresh_items = [
                (message, event_errors)
                for message, event_errors in zip(messages, parsed)
                if message.offset > applied_upto[(message.topic, message.partition)]
            ]
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
            new_dead = [d for d in dead if (d.partition, d.offset) not in sent_dead_letters]
            if new_dead:
                await send_dead_letters(new_dead)
                sent_dead_letters.update((d.partition, d.offset) for d in new_dead)
            last = {tp: applied_upto[tp] for tp in partitions}
            for message, _ in fresh_items:
                tp = (message.topic, message.partition)
                if message.offset > last[tp]:
                    last[tp] = message.offset
            offsets = [[key, applied_upto[tp], last[tp]] for key, tp in zip(offset_keys, partitions)]
            reply = await self._apply_script(args=[self._batch_payload(delta, offsets)])
            if reply != b"ok" and reply != "ok":  # another worker applied some of these partitions meanwhile
                for tp, now in zip(partitions, json.loads(reply)):
                    applied_upto[tp] = int(now)
                result.retries += 1
                continue
            applied_upto.update(last)
            result.skipped_messages = len(messages) - len(fresh_items)
            result.applied_messages = len(fresh_items)
            result.exposures, result.clicks, result.dead_letters = delta.n_exposures, delta.n_clicks, dead
            return result

    def _batch_payload(self, delta: BatchDelta, offsets: list[list]) -> str:
        """ARGV of :data:`_APPLY_BATCH` for one batch."""
        config, topic_strings = self.config, self._topic_strings
        videos = []
        for video_id, counts in delta.videos.items():
            topics = topic_strings.get(video_id)
            if topics is None:
                topics = topic_strings[video_id] = [str(t) for t in self.topics_of[video_id]]
            videos.append([str(video_id), counts.exposures, counts.clicks, counts.ts, topics])
        payload = {
            "p": self.prefix,
            "tau1": config.min_exposures,
            "tau2": config.min_ctr,
            "n1": config.recent_clicks,
            "h": config.half_life_s or 0,
            "push": int(self.push_enabled),
            "offsets": offsets,
            "videos": videos,
            "topics": [[str(topic_id), c.exposures, c.clicks, c.ts] for topic_id, c in delta.topics.items()],
            "users": [[str(user_id), [str(v) for v in clicked]] for user_id, clicked in delta.user_clicks.items()],
            "ue": int(config.user_exposure_counts),
            "exposed": [[str(user_id), [str(v) for v in shown]] for user_id, shown in delta.user_exposed.items()],
        }
        return json.dumps(payload, separators=(",", ":"))

    # ------------------------------------------------------------ served queues

    async def mark_all_topics_dirty(self) -> None:
        """Ask for every queue to be rebuilt (the fresh-video rotation)."""
        await self.client.sunionstore(dirty_topics_key(self.prefix), [dirty_topics_key(self.prefix), all_topics_key(self.prefix)])

    async def rebuild_dirty_queues(self, topics_per_call: int = 16) -> int:
        """Rebuild the served queue of every dirty topic, ``topics_per_call`` topics per script call; returns how many."""
        topic_ids = sorted(int(t) for t in await self.client.smembers(dirty_topics_key(self.prefix)))
        for start in range(0, len(topic_ids), topics_per_call):
            await self._rebuild(topic_ids[start : start + topics_per_call], want_queues=False)
        return len(topic_ids)

    async def rebuild_queue(self, topic_id: int) -> list[int]:
        """Rebuild one topic's served queue (see :meth:`rebuild_queues`)."""
        return (await self.rebuild_queues([topic_id]))[topic_id]

    async def rebuild_queues(self, topic_ids: Sequence[int]) -> dict[int, list[int]]:
        """Write ``{prefix}:queue:{topic_id}`` of each topic and return them: established videos by CTR with a fresh
        ``fresh_share`` spread among them (:func:`stream.logic.build_queue`).

        The fresh videos are a new random draw each time (so they rotate). One script call rebuilds the group inside
        Redis: it runs atomically, so a batch can never interleave with it (no WATCH, no retry however busy the
        worker is), and no queue crosses the network to Python and back. A topic a batch dirties afterwards is
        rebuilt by the next call, so the last queue written always reflects the last counts.
        """
        return dict(zip(topic_ids, await self._rebuild(list(topic_ids), want_queues=True)))

    async def _rebuild(self, topic_ids: list[int], want_queues: bool) -> list:
        if not topic_ids:
            return []
        config, prefix = self.config, self.prefix
        keep = config.max_queue_length - math.ceil(config.fresh_share * config.max_queue_length - 1e-9)
        sample_size = max(math.ceil(config.fresh_share * config.max_queue_length), config.cold_start_fresh)
        keys = [key for topic_id in topic_ids for key in (established_key(prefix, topic_id), fresh_key(prefix, topic_id), queue_key(prefix, topic_id))]
        args = [max(keep, 0), sample_size, repr(float(config.fresh_share)), config.cold_start_fresh, config.max_queue_length, self._rng.getrandbits(31), int(want_queues), *topic_ids]
        reply = await self._rebuild_script(keys=[*keys, dirty_topics_key(prefix)], args=args)
        return [[int(v) for v in queue] for queue in reply] if want_queues else reply

    # ------------------------------------------------------------ Feast push

    async def take_pending_push(self) -> dict[str, list[int]]:
        """Move the ids changed since the last push aside (atomically) and return them per entity."""
        taken: dict[str, list[int]] = {}
        for entity in ("video", "topic", "user"):
            pending = push_pending_key(self.prefix, entity)
            inflight = f"{pending}:inflight:{self._token}"
            try:
                await self.client.rename(pending, inflight)
            except Exception as exc:  # no such key: nothing changed
                if "no such key" not in str(exc).lower():
                    raise
                continue
            taken[entity] = sorted(int(v) for v in await self.client.smembers(inflight))
        return taken

    async def finish_push(self, entities: Iterable[str], succeeded: bool) -> None:
        """Forget the pushed ids, or put them back for the next push when it failed."""
        for entity in entities:
            pending = push_pending_key(self.prefix, entity)
            inflight = f"{pending}:inflight:{self._token}"
            if not succeeded:
                await self.client.sunionstore(pending, [pending, inflight])
            await self.client.delete(inflight)

    async def stats_frame(self, entity: str, ids: Sequence[int], now: pd.Timestamp) -> pd.DataFrame:
        """Current statistics of ``ids`` as the push source ``entity`` expects them (see :mod:`stream.sinks`)."""
        prefix = self.prefix
        async with self.client.pipeline(transaction=False) as pipe:
            for entity_id in ids:
                if entity == "video":
                    pipe.hmget(video_stats_key(prefix, entity_id), *_STATS_FIELDS)
                elif entity == "topic":
                    pipe.hmget(topic_stats_key(prefix, entity_id), *_STATS_FIELDS)
                else:
                    pipe.hgetall(user_topic_counts_key(prefix, entity_id))
            raw = await pipe.execute()
        if entity == "user":
            rows = []
            for user_id, histogram in zip(ids, raw):
                ordered = sorted(((int(t), int(n)) for t, n in histogram.items()), key=lambda item: (-item[1], item[0]))
                rows.append({"user_id": user_id, "recent_topic_ids": [t for t, _ in ordered], "recent_topic_counts": [n for _, n in ordered]})
            frame = pd.DataFrame(rows, columns=["user_id", "recent_topic_ids", "recent_topic_counts"])
            frame["user_id"] = frame["user_id"].astype("int64")
        else:
            id_column = f"{entity}_id"
            counts = [_counts(r) for r in raw]
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


def _event_id(message: RawMessage) -> str | None:
    """Best-effort event_id of an invalid message, for the dead letter."""
    try:
        value = json.loads(message.value or b"")
        return value.get("event_id") if isinstance(value, dict) and isinstance(value.get("event_id"), str) else None
    except ValueError:
        return None
