"""The Redis state layer (stream/state.py) against the private test Redis: exact, idempotent, concurrent-safe."""

from __future__ import annotations

import asyncio
import json
import random

import pandas as pd
import pytest
import redis
import redis.asyncio as aioredis

from stream.state import RawMessage, StreamStore
from stream_truth import assert_state_matches, truth_of
from topicfs.settings import StreamConfig
from topicfs.tables import VIDEO_TOPICS

pytestmark = pytest.mark.integration
PREFIX = "t"
TOPICS_OF = {v: [v % 4] + ([4] if v % 5 == 0 else []) for v in range(60)}
TS = 1.76e9  # 2025-10


def make_events(n_refreshes: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    events = []
    for i in range(n_refreshes):
        user = rng.randrange(12)
        shown = rng.sample(range(60), 6)
        events.append({"type": "exposure", "event_id": f"e{i}", "user_id": user, "request_id": f"r{i}", "video_ids": shown, "ts": TS + i})
        for video_id in shown:
            if rng.random() < 0.15 + 0.3 * (video_id % 3 == 0):
                events.append({"type": "click", "event_id": f"c{i}-{video_id}", "user_id": user, "video_id": video_id, "ts": TS + i + 0.5})
    return events


def as_messages(events, topic="ev", partitions=3) -> list[RawMessage]:
    offsets = [0] * partitions
    messages = []
    for event in events:
        partition = event.get("user_id", 0) % partitions if isinstance(event, dict) else 0
        value = json.dumps(event).encode() if isinstance(event, dict) else event
        messages.append(RawMessage(topic, partition, offsets[partition], value))
        offsets[partition] += 1
    return messages


def run(coroutine):
    return asyncio.run(coroutine)


async def _store(redis_url, config=None, push=False) -> StreamStore:
    store = StreamStore(aioredis.Redis.from_url(redis_url), PREFIX, config or StreamConfig(seed=3), push_enabled=push)
    await store.register_videos(TOPICS_OF)
    return store


async def _apply_all(store, messages, batch=37):
    letters = []

    async def collect(new):
        letters.extend(new)

    for start in range(0, len(messages), batch):
        await store.apply_batch(messages[start : start + batch], collect)
    await store.rebuild_dirty_queues()
    return letters


def check(redis_url, events, config=None):
    config = config or StreamConfig()
    assert_state_matches(redis.Redis.from_url(redis_url), PREFIX, truth_of(events, TOPICS_OF), TOPICS_OF, config.recent_clicks, config.min_exposures, config.min_ctr, config.fresh_share)


def test_batches_give_exact_counts_queues_and_histories(redis_url):
    events = make_events(400, seed=1)

    async def go():
        store = await _store(redis_url, StreamConfig(recent_clicks=5, seed=3))
        return await _apply_all(store, as_messages(events))

    assert run(go()) == []
    check(redis_url, events, StreamConfig(recent_clicks=5))


def test_redelivered_messages_are_not_counted_twice(redis_url):
    events = make_events(200, seed=2)
    messages = as_messages(events)

    async def go():
        store = await _store(redis_url)
        await _apply_all(store, messages[:300])
        await _apply_all(store, messages[100:], batch=50)  # a restart re-reads from an older committed offset
        await _apply_all(store, messages, batch=1000)

    run(go())
    check(redis_url, events)


def test_two_workers_on_shared_videos_stay_exact(redis_url):
    """Different partitions touch the same videos at the same time: WATCH makes one retry, nothing is lost."""
    events = make_events(600, seed=3)
    messages = as_messages(events, partitions=4)
    by_worker = [[m for m in messages if m.partition % 2 == w] for w in range(2)]

    async def go():
        stores = [await _store(redis_url), await _store(redis_url)]
        await asyncio.gather(*(_apply_all(store, part, batch=11) for store, part in zip(stores, by_worker)))
        await stores[0].rebuild_dirty_queues()

    run(go())
    check(redis_url, events)


def test_same_partition_applied_by_two_workers_at_once_counts_once(redis_url):
    """A rebalance in flight: both workers hold the same batch; the offset CAS lets exactly one apply it."""
    events = make_events(150, seed=4)
    messages = as_messages(events)

    async def go():
        stores = [await _store(redis_url), await _store(redis_url)]
        for start in range(0, len(messages), 25):
            batch = messages[start : start + 25]
            await asyncio.gather(*(store.apply_batch(batch, _ignore) for store in stores))
        await stores[0].rebuild_dirty_queues()

    run(go())
    check(redis_url, events)


async def _ignore(letters):
    assert letters == []


def test_bad_messages_are_dead_lettered_and_good_parts_counted(redis_url):
    events = make_events(100, seed=5)
    bad = [
        b"{oops",
        json.dumps({"type": "click", "event_id": "x1", "user_id": 1, "video_id": 999, "ts": TS}).encode(),  # unknown video
        json.dumps({"type": "click", "event_id": "x2", "user_id": 1, "video_id": 3, "ts": 1.0}).encode(),  # absurd ts
        b'{"type": "click", "pad": "' + b"x" * 70000 + b'"}',  # oversize
    ]
    partly = {"type": "exposure", "event_id": "x3", "user_id": 2, "video_ids": [1, 998, "a", 2], "ts": TS}
    mixed = events[:50] + [bad[0], bad[1], partly, bad[2], bad[3]] + events[50:]
    messages = as_messages(mixed)

    async def go():
        store = await _store(redis_url)
        return await _apply_all(store, messages)

    letters = run(go())
    assert len(letters) == 5
    reasons = {letter.event_id: letter.reasons for letter in letters}
    assert reasons["x1"] == ["unknown video_id 999"]
    assert reasons["x3"] == ["video_ids[2] must be an integer >= 0, got 'a'", "unknown video_id 998"]
    assert any("bad JSON" in r for letter in letters for r in letter.reasons)
    assert any("exceeds max_payload_bytes" in r for letter in letters for r in letter.reasons)
    oversize = next(l for l in letters if any("exceeds" in r for r in l.reasons))
    assert len(oversize.payload_b64) > 90000  # the whole payload is kept
    valid = events[:50] + [{**partly, "video_ids": [1, 2]}] + events[50:]
    check(redis_url, valid)


def test_video_topics_table_is_loaded_and_topic_changes_move_videos(redis_url, tmp_path):
    frame = pd.DataFrame({"video_id": [1, 2, 3], "topic_ids": [[7], [7, 8], []], "topic_weights": [[0.9], [0.8, 0.7], []]})
    frame.to_parquet(tmp_path / VIDEO_TOPICS)
    client = redis.Redis.from_url(redis_url)

    async def go():
        store = StreamStore(aioredis.Redis.from_url(redis_url), PREFIX, StreamConfig())
        assert await store.load_video_topics_table(tmp_path, show_progress=False) == 3
        await store.rebuild_dirty_queues()
        assert client.get(f"{PREFIX}:video:2:topics") == b"7,8" and client.get(f"{PREFIX}:video:3:topics") == b""
        assert {int(v) for v in client.zrange(f"{PREFIX}:queue:7", 0, -1)} == {1, 2}  # cold topic: fresh videos served
        await store.register_videos({2: [9]})
        await store.rebuild_dirty_queues()
        assert {int(v) for v in client.zrange(f"{PREFIX}:queue:7", 0, -1)} == {1}
        assert {int(v) for v in client.zrange(f"{PREFIX}:queue:9", 0, -1)} == {2}

    run(go())
    with pytest.raises(FileNotFoundError, match="video_topics"):
        run(StreamStore(aioredis.Redis.from_url(redis_url), PREFIX, StreamConfig()).load_video_topics_table(tmp_path / "missing"))


def test_decay_keeps_counts_below_the_plain_ones(redis_url):
    events = make_events(200, seed=6)

    async def go():
        store = await _store(redis_url, StreamConfig(half_life_s=50.0, seed=1))
        await _apply_all(store, as_messages(events))

    run(go())
    client = redis.Redis.from_url(redis_url)
    truth = truth_of(events, TOPICS_OF)
    decayed = {v: float(client.hget(f"{PREFIX}:stats:video:{v}", "exposures") or 0) for v in TOPICS_OF}
    assert all(decayed[v] <= truth.video_exposures[v] + 1e-9 for v in TOPICS_OF)
    assert sum(decayed.values()) < 0.5 * sum(truth.video_exposures.values())


def test_decayed_counts_equal_merge_counts_batch_by_batch(redis_url):
    """The batch script's decay is stream.logic's: each stored count equals merge_counts over the batch deltas."""
    from stream.logic import Counts, Limits, fold_events, merge_counts, parse_event

    events = make_events(150, seed=8)
    messages = as_messages(events, partitions=1)
    config = StreamConfig(half_life_s=40.0, seed=1)
    expected: dict[int, Counts] = {}
    for start in range(0, len(messages), 37):
        parsed = [parse_event(m.value, Limits())[0] for m in messages[start : start + 37]]
        delta = fold_events(parsed, TOPICS_OF, config.half_life_s)
        for video_id, counts in delta.videos.items():
            expected[video_id] = merge_counts(expected.get(video_id, Counts()), counts, config.half_life_s)

    async def go():
        store = await _store(redis_url, config)
        await _apply_all(store, messages)

    run(go())
    client = redis.Redis.from_url(redis_url)
    for video_id, counts in expected.items():
        exposures, clicks, ts = (float(x) for x in client.hmget(f"{PREFIX}:stats:video:{video_id}", "exposures", "clicks", "ts"))
        assert (exposures, clicks, ts) == (counts.exposures, counts.clicks, counts.ts), f"video {video_id}"


def test_a_batch_touching_ten_thousand_videos_commits(redis_url):
    """One batch's writes (10,000 changed video ids in one push set, big topic indexes) fit the write script."""
    topics_of = {v: [v % 3] for v in range(10_000)}
    events = [
        {"type": "exposure", "event_id": f"e{i}", "user_id": i, "video_ids": list(range(200 * i, 200 * (i + 1))), "ts": TS}
        for i in range(50)
    ]

    async def go():
        client = aioredis.Redis.from_url(redis_url)
        store = StreamStore(client, PREFIX, StreamConfig(), push_enabled=True)
        await store.register_videos(topics_of)
        await store.apply_batch(as_messages(events, partitions=1), lambda letters: asyncio.sleep(0))
        pending = await client.scard(f"{PREFIX}:stream:push:video")
        exposures = await client.hget(f"{PREFIX}:stats:video:9999", "exposures")
        await client.aclose()
        return pending, exposures

    pending, exposures = run(go())
    assert pending == 10_000 and int(exposures) == 1


def test_the_rebuild_script_builds_what_build_queue_specifies(redis_url):
    """The Lua rebuild against the pure spec :func:`stream.logic.build_queue` on random states: same length, the same
    established videos in the same places (CTR order, ties by id), fresh videos at the same ranks, drawn from the
    topic's fresh videos; with a sample that covers the fresh index, the same candidates as the spec gets."""
    import math

    from stream.logic import build_queue
    from stream.state import dirty_topics_key, established_key, fresh_key

    client = redis.Redis.from_url(redis_url)
    rng = random.Random(11)

    async def go() -> int:
        checked = 0
        for case in range(80):
            config = StreamConfig(
                max_queue_length=rng.choice([1, 2, 5, 10, 40, 200]), fresh_share=rng.choice([0.1, 0.25, 0.5]), cold_start_fresh=rng.randrange(0, 12), seed=case
            )
            store = StreamStore(aioredis.Redis.from_url(redis_url), PREFIX, config)
            topic = case
            established = {v: rng.choice([0.05, 0.1, 0.1, 0.2, 0.5]) for v in rng.sample(range(1000), rng.randrange(0, 120))}
            sample_size = max(math.ceil(config.fresh_share * config.max_queue_length), config.cold_start_fresh)
            fresh = set(rng.sample(range(500, 1500), rng.randrange(0, sample_size + 1) if rng.random() < 0.8 else sample_size + rng.randrange(1, 40)))
            if established and rng.random() < 0.2:
                fresh |= set(rng.sample(sorted(established), 1))  # a video in both indexes (the spec tolerates it)
            if established:
                client.zadd(established_key(PREFIX, topic), {str(v): ctr for v, ctr in established.items()})
            if fresh:
                client.zadd(fresh_key(PREFIX, topic), {str(v): 0 for v in fresh})
            client.sadd(dirty_topics_key(PREFIX), topic)
            keep = config.max_queue_length - math.ceil(config.fresh_share * config.max_queue_length - 1e-9)
            fetched = [(int(v), s) for v, s in client.zrevrange(established_key(PREFIX, topic), 0, keep - 1, withscores=True)] if keep > 0 else []
            queue = await store.rebuild_queue(topic)
            assert [int(v) for v in client.zrevrange(f"{PREFIX}:queue:{topic}", 0, -1)] == queue
            assert not client.sismember(dirty_topics_key(PREFIX), topic)
            covered = len(fresh) <= sample_size  # ZRANDMEMBER then returns the whole fresh index
            candidates = sorted(fresh) if covered else sorted(fresh)[:sample_size]
            spec = build_queue(fetched, candidates, len(fresh), config.fresh_share, config.cold_start_fresh, config.max_queue_length, random.Random(0))
            ranked = {v for v, _ in fetched}
            spec_fresh_ranks = [i for i, v in enumerate(spec) if v not in ranked]
            assert len(queue) == len(spec) or not covered, (case, queue, spec)
            if covered:
                assert [v for v in queue if v in ranked] == [v for v in spec if v in ranked]
                assert [i for i, v in enumerate(queue) if v not in ranked] == spec_fresh_ranks
            served_fresh = [v for v in queue if v not in ranked]
            assert len(set(served_fresh)) == len(served_fresh) and set(served_fresh) <= fresh - ranked
            assert len(set(queue)) == len(queue) <= config.max_queue_length
            checked += covered
            await store.client.aclose()
        return checked

    assert run(go()) > 40  # most cases compare against the spec exactly


def _offline_exposure_totals(events: list[dict]) -> dict[int, tuple]:
    """Per user, what serving.features.exposure_history gives a row after all of the user's events (the ranker's
    training counts), on the same log: every shown video a row, labelled 1 when the user clicked it in that refresh."""
    from serving.features import exposure_history

    clicked = {(e["user_id"], int(e["event_id"][1:].split("-")[0]), e["video_id"]) for e in events if e["type"] == "click"}
    rows = [
        (e["user_id"], v, e["ts"], int((e["user_id"], int(e["event_id"][1:]), v) in clicked), TOPICS_OF[v])
        for e in events
        if e["type"] == "exposure"
        for v in e["video_ids"]
    ]
    users = sorted({r[0] for r in rows})
    everything = sorted({t for ts in TOPICS_OF.values() for t in ts})
    rows += [(u, -1, TS + 1e6, 0, everything) for u in users]  # one row after everything: its counts are the totals
    frame = pd.DataFrame(rows, columns=["user_id", "video_id", "ts", "label", "topic_ids"])
    frame["event_timestamp"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    exposures, clicks, topic_exposures, topic_clicks = exposure_history(frame)
    last = frame.index[frame["video_id"] == -1]
    return {
        int(frame.at[i, "user_id"]): (int(exposures[i]), int(clicks[i]), dict(zip(everything, topic_exposures[i])), dict(zip(everything, topic_clicks[i])))
        for i in last
    }


@pytest.mark.parametrize("half_life_s", [None, 3600.0])
def test_user_exposure_history_equals_the_rankers_offline_counts(redis_url, half_life_s):
    from serving.features import UserExposureHistory

    events = make_events(300, seed=11)
    config = StreamConfig(user_exposure_counts=True, half_life_s=half_life_s, seed=3)

    async def go():
        store = await _store(redis_url, config)
        await _apply_all(store, as_messages(events), batch=23)
        await store.client.aclose()

    run(go())
    client = redis.Redis.from_url(redis_url)
    expected = _offline_exposure_totals(events)
    assert len(expected) == 12
    for user_id, (exposures, clicks, per_topic_exposures, per_topic_clicks) in expected.items():
        stored = UserExposureHistory.from_hash(client.hgetall(f"{PREFIX}:user:{user_id}:exposures"), user_id)
        assert (stored.exposures, stored.clicks) == (exposures, clicks), f"user {user_id}"
        assert stored.topic_exposures == {t: n for t, n in per_topic_exposures.items() if n}, f"user {user_id} topic exposures"
        assert stored.topic_clicks == {t: n for t, n in per_topic_clicks.items() if n}, f"user {user_id} topic clicks"


def test_user_exposure_history_is_off_by_default(redis_url):
    events = make_events(40, seed=12)

    async def go():
        store = await _store(redis_url)
        await _apply_all(store, as_messages(events))
        await store.client.aclose()

    run(go())
    assert not redis.Redis.from_url(redis_url).keys(f"{PREFIX}:user:*:exposures")
