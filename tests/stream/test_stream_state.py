"""The Redis state layer (stream/state.py) against the private test Redis: exact, idempotent, concurrent-safe."""

from __future__ import annotations

import asyncio
import json
import random

import pandas as pd
import pytest

from stream.state import RawMessage, StateLost, StreamStore
from stream_truth import assert_state_matches, flush_all, truth_of
from topicfs.keys import KeyLayout
from topicfs.redis_client import async_client, sync_client
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


def layout_of(deployment) -> KeyLayout:
    return KeyLayout(PREFIX, deployment.shards)


def new_store(deployment, config=None, push=False) -> StreamStore:
    return StreamStore(async_client(deployment), layout_of(deployment), config or StreamConfig(seed=3), push_enabled=push)


async def _store(deployment, config=None, push=False) -> StreamStore:
    store = new_store(deployment, config, push)
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


def check(deployment, events, config=None):
    config = config or StreamConfig()
    assert_state_matches(
        sync_client(deployment),
        layout_of(deployment),
        truth_of(events, TOPICS_OF),
        TOPICS_OF,
        config.recent_clicks,
        config.min_exposures,
        config.min_ctr,
        config.fresh_share,
    )


def test_batches_give_exact_counts_queues_and_histories(redis_deployment):
    events = make_events(400, seed=1)

    async def go():
        store = await _store(redis_deployment, StreamConfig(recent_clicks=5, seed=3))
        return await _apply_all(store, as_messages(events))

    assert run(go()) == []
    check(redis_deployment, events, StreamConfig(recent_clicks=5))


def test_redelivered_messages_are_not_counted_twice(redis_deployment):
    events = make_events(200, seed=2)
    messages = as_messages(events)

    async def go():
        store = await _store(redis_deployment)
        await _apply_all(store, messages[:300])
        await _apply_all(store, messages[100:], batch=50)  # a restart re-reads from an older committed offset
        await _apply_all(store, messages, batch=1000)

    run(go())
    check(redis_deployment, events)


def test_two_workers_on_shared_videos_stay_exact(redis_deployment):
    """Different partitions touch the same videos at the same time: WATCH makes one retry, nothing is lost."""
    events = make_events(600, seed=3)
    messages = as_messages(events, partitions=4)
    by_worker = [[m for m in messages if m.partition % 2 == w] for w in range(2)]

    async def go():
        stores = [await _store(redis_deployment), await _store(redis_deployment)]
        await asyncio.gather(*(_apply_all(store, part, batch=11) for store, part in zip(stores, by_worker)))
        await stores[0].rebuild_dirty_queues()

    run(go())
    check(redis_deployment, events)


def test_same_partition_applied_by_two_workers_at_once_counts_once(redis_deployment):
    """A rebalance in flight: both workers hold the same batch; the offset CAS lets exactly one apply it."""
    events = make_events(150, seed=4)
    messages = as_messages(events)

    async def go():
        stores = [await _store(redis_deployment), await _store(redis_deployment)]
        for start in range(0, len(messages), 25):
            batch = messages[start : start + 25]
            await asyncio.gather(*(store.apply_batch(batch, _ignore) for store in stores))
        await stores[0].rebuild_dirty_queues()

    run(go())
    check(redis_deployment, events)


async def _ignore(letters):
    assert letters == []


def test_bad_messages_are_dead_lettered_and_good_parts_counted(redis_deployment):
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
        store = await _store(redis_deployment)
        return await _apply_all(store, messages)

    letters = run(go())
    assert len(letters) == 5
    reasons = {letter.event_id: letter.reasons for letter in letters}
    assert reasons["x1"] == ["unknown video_id 999"]
    assert reasons["x3"] == ["video_ids[2] must be an integer >= 0, got 'a'", "unknown video_id 998"]
    assert any("bad JSON" in r for letter in letters for r in letter.reasons)
    assert any("exceeds max_payload_bytes" in r for letter in letters for r in letter.reasons)
    oversize = next(letter for letter in letters if any("exceeds" in r for r in letter.reasons))
    assert len(oversize.payload_b64) > 90000  # the whole payload is kept
    valid = events[:50] + [{**partly, "video_ids": [1, 2]}] + events[50:]
    check(redis_deployment, valid)


def test_video_topics_table_is_loaded_and_topic_changes_move_videos(redis_deployment, tmp_path):
    frame = pd.DataFrame({"video_id": [1, 2, 3], "topic_ids": [[7], [7, 8], []], "topic_weights": [[0.9], [0.8, 0.7], []]})
    frame.to_parquet(tmp_path / VIDEO_TOPICS)
    client = sync_client(redis_deployment)
    layout = layout_of(redis_deployment)

    async def go():
        store = new_store(redis_deployment, StreamConfig())
        assert await store.load_video_topics_table(tmp_path, show_progress=False) == 3
        await store.rebuild_dirty_queues()
        assert client.get(layout.video_topics(2)) == b"7,8" and client.get(layout.video_topics(3)) == b""
        assert {int(v) for v in client.zrange(layout.queue(7), 0, -1)} == {1, 2}  # cold topic: fresh videos served
        await store.register_videos({2: [9]})
        await store.rebuild_dirty_queues()
        assert {int(v) for v in client.zrange(layout.queue(7), 0, -1)} == {1}
        assert {int(v) for v in client.zrange(layout.queue(9), 0, -1)} == {2}

    run(go())
    with pytest.raises(FileNotFoundError, match="video_topics"):
        run(new_store(redis_deployment, StreamConfig()).load_video_topics_table(tmp_path / "missing"))


def test_decay_keeps_counts_below_the_plain_ones(redis_deployment):
    events = make_events(200, seed=6)

    async def go():
        store = await _store(redis_deployment, StreamConfig(half_life_s=50.0, seed=1))
        await _apply_all(store, as_messages(events))

    run(go())
    client = sync_client(redis_deployment)
    layout = layout_of(redis_deployment)
    truth = truth_of(events, TOPICS_OF)
    decayed = {v: float(client.hget(layout.video_stats(v), "exposures") or 0) for v in TOPICS_OF}
    assert all(decayed[v] <= truth.video_exposures[v] + 1e-9 for v in TOPICS_OF)
    assert sum(decayed.values()) < 0.5 * sum(truth.video_exposures.values())


def test_decayed_counts_equal_merge_counts_batch_by_batch(redis_deployment):
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
        store = await _store(redis_deployment, config)
        await _apply_all(store, messages)

    run(go())
    client = sync_client(redis_deployment)
    layout = layout_of(redis_deployment)
    for video_id, counts in expected.items():
        exposures, clicks, ts = (float(x) for x in client.hmget(layout.video_stats(video_id), "exposures", "clicks", "ts"))
        assert (exposures, clicks, ts) == (counts.exposures, counts.clicks, counts.ts), f"video {video_id}"


def test_a_batch_touching_ten_thousand_videos_commits(redis_deployment):
    """One batch's writes (10,000 changed video ids in one push set, big topic indexes) fit the write script."""
    topics_of = {v: [v % 3] for v in range(10_000)}
    events = [
        {"type": "exposure", "event_id": f"e{i}", "user_id": i, "video_ids": list(range(200 * i, 200 * (i + 1))), "ts": TS}
        for i in range(50)
    ]

    async def go():
        client = async_client(redis_deployment)
        layout = layout_of(redis_deployment)
        store = StreamStore(client, layout, StreamConfig(), push_enabled=True)
        await store.register_videos(topics_of)
        await store.apply_batch(as_messages(events, partitions=1), lambda letters: asyncio.sleep(0))
        pending = sum([await client.scard(layout.push_pending(shard, "video")) for shard in layout.all_shards()])
        exposures = await client.hget(layout.video_stats(9999), "exposures")
        await client.aclose()
        return pending, exposures

    pending, exposures = run(go())
    assert pending == 10_000 and int(exposures) == 1


def test_the_rebuild_script_builds_what_build_queue_specifies(redis_deployment):
    """The Lua rebuild against the pure spec :func:`stream.logic.build_queue` on random states: same length, the same
    established videos in the same places (CTR order, ties by id), fresh videos at the same ranks, drawn from the
    topic's fresh videos; with a sample that covers the fresh index, the same candidates as the spec gets."""
    import math

    from stream.logic import build_queue

    client = sync_client(redis_deployment)
    layout = layout_of(redis_deployment)
    rng = random.Random(11)

    async def go() -> int:
        checked = 0
        for case in range(80):
            config = StreamConfig(
                max_queue_length=rng.choice([1, 2, 5, 10, 40, 200]),
                fresh_share=rng.choice([0.1, 0.25, 0.5]),
                cold_start_fresh=rng.randrange(0, 12),
                seed=case,
            )
            store = new_store(redis_deployment, config)
            topic = case
            established = {v: rng.choice([0.05, 0.1, 0.1, 0.2, 0.5]) for v in rng.sample(range(1000), rng.randrange(0, 120))}
            sample_size = max(math.ceil(config.fresh_share * config.max_queue_length), config.cold_start_fresh)
            fresh = set(
                rng.sample(
                    range(500, 1500), rng.randrange(0, sample_size + 1) if rng.random() < 0.8 else sample_size + rng.randrange(1, 40)
                )
            )
            if established and rng.random() < 0.2:
                fresh |= set(rng.sample(sorted(established), 1))  # a video in both indexes (the spec tolerates it)
            for v, ctr in established.items():  # each video in its own shard's index
                client.zadd(layout.established(layout.shard(v), topic), {str(v): ctr})
            for v in fresh:
                client.zadd(layout.fresh(layout.shard(v), topic), {str(v): 0})
            client.sadd(layout.dirty(layout.shard(topic)), topic)
            keep = config.max_queue_length - math.ceil(config.fresh_share * config.max_queue_length - 1e-9)
            # the spec's established part: the top `keep` of the whole index by CTR, then id (also where CTRs tie at the cut)
            fetched = sorted(established.items(), key=lambda item: (-item[1], item[0]))[: max(keep, 0)]
            queue = await store.rebuild_queue(topic)
            assert [int(v) for v in client.zrevrange(layout.queue(topic), 0, -1)] == queue
            assert not any(client.sismember(layout.dirty(shard), topic) for shard in layout.all_shards())
            covered = len(fresh) <= sample_size  # ZRANDMEMBER then returns the whole fresh index
            candidates = sorted(fresh) if covered else sorted(fresh)[:sample_size]
            spec = build_queue(
                fetched, candidates, len(fresh), config.fresh_share, config.cold_start_fresh, config.max_queue_length, random.Random(0)
            )
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


def test_the_rebuild_orders_equal_ctrs_by_id_as_numbers(redis_deployment):
    """Equal CTRs come from Redis in byte order ("10" before "9"); the queue wants lower ids first, also when the run
    of equal CTRs reaches past the `keep` cut. The script sorts runs of ids without a sign by length, then bytes, and
    falls back to a numeric sort when a run holds a sign; the sharded path reads the run at the cut whole."""
    client = sync_client(redis_deployment)
    layout = layout_of(redis_deployment)
    config = StreamConfig(max_queue_length=20, fresh_share=0.1, cold_start_fresh=0, seed=1)
    cut_config = StreamConfig(max_queue_length=10, fresh_share=0.1, cold_start_fresh=0, seed=1)  # keep = 9

    async def go(topic: int, ctrs: dict[int, float]) -> list[int]:
        for v, ctr in ctrs.items():
            client.zadd(layout.established(layout.shard(v), topic), {str(v): ctr})
        store = new_store(redis_deployment, cut_config if topic in (3, 4) else config)
        queue = await store.rebuild_queue(topic)
        await store.client.aclose()
        return queue

    # a run of equal CTRs reaching past the cut (keep = 9 of 20 tied ids; Redis would keep 9..3, 20, 2): the lowest ids
    tied = {v: 0.5 for v in range(1, 21)}
    assert run(go(3, tied)) == list(range(1, 10))
    assert run(go(4, {**tied, 500: 0.9, 77: 0.9})) == [77, 500, *range(1, 8)]  # runs before the cut stay in place
    ids = [9, 10, 100, 11, 2, 1000, 99, 101]
    assert run(go(1, {**{v: 0.5 for v in ids}, 7: 0.7, 12345: 0.1})) == [7, 2, 9, 10, 11, 99, 100, 101, 1000, 12345]
    signed = [-3, 5, -10, 12]  # outside the contract (ids >= 0), still ordered
    assert run(go(2, {v: 0.2 for v in signed})) == [-10, -3, 5, 12]


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
        int(frame.at[i, "user_id"]): (
            int(exposures[i]),
            int(clicks[i]),
            dict(zip(everything, topic_exposures[i])),
            dict(zip(everything, topic_clicks[i])),
        )
        for i in last
    }


@pytest.mark.parametrize("half_life_s", [None, 3600.0])
def test_user_exposure_history_equals_the_rankers_offline_counts(redis_deployment, half_life_s):
    from serving.features import UserExposureHistory

    events = make_events(300, seed=11)
    config = StreamConfig(user_exposure_counts=True, half_life_s=half_life_s, seed=3)

    async def go():
        store = await _store(redis_deployment, config)
        await _apply_all(store, as_messages(events), batch=23)
        await store.client.aclose()

    run(go())
    client = sync_client(redis_deployment)
    layout = layout_of(redis_deployment)
    expected = _offline_exposure_totals(events)
    assert len(expected) == 12
    for user_id, (exposures, clicks, per_topic_exposures, per_topic_clicks) in expected.items():
        stored = UserExposureHistory.from_hash(client.hgetall(layout.user_exposures(user_id)), user_id)
        assert (stored.exposures, stored.clicks) == (exposures, clicks), f"user {user_id}"
        assert stored.topic_exposures == {t: n for t, n in per_topic_exposures.items() if n}, f"user {user_id} topic exposures"
        assert stored.topic_clicks == {t: n for t, n in per_topic_clicks.items() if n}, f"user {user_id} topic clicks"


def test_user_exposure_history_is_off_by_default(redis_deployment):
    events = make_events(40, seed=12)

    async def go():
        store = await _store(redis_deployment)
        await _apply_all(store, as_messages(events))
        await store.client.aclose()

    run(go())
    assert not list(sync_client(redis_deployment).scan_iter(match=layout_of(redis_deployment).pattern("user:*:exposures")))


def test_a_crash_between_two_shards_writes_loses_and_doubles_nothing(redis_deployment):
    """One shard's script call fails after the others applied the batch (a worker killed between shard writes):
    a restarted worker re-reads the batch and each shard applies exactly what it lacks."""
    events = make_events(300, seed=21)
    messages = as_messages(events)

    async def go():
        store = await _store(redis_deployment)
        original = store._apply_script
        calls = {"n": 0}

        async def crash_on_one_shard(keys, args):
            calls["n"] += 1
            if calls["n"] == 7 and store.layout.shards > 1:  # a middle batch: one shard's write never happens
                raise ConnectionError("killed between shard writes")
            return await original(keys=keys, args=args)

        store._apply_script = crash_on_one_shard
        crashed_at = None
        for start in range(0, len(messages), 40):
            try:
                await store.apply_batch(messages[start : start + 40], _ignore)
            except ConnectionError:
                crashed_at = start
                break
        layout = store.layout
        if layout.shards > 1:  # the shards' offsets now disagree: one shard is a batch behind
            assert crashed_at is not None
            stored = [
                [int(v) if v is not None else -1 for v in sync_client(redis_deployment).mget([layout.offset(s, "ev", p) for p in range(3)])]
                for s in layout.all_shards()
            ]
            assert len({tuple(row) for row in stored}) == 2
        restarted = new_store(redis_deployment)  # reads every shard's stored offsets afresh
        await _apply_all(restarted, messages, batch=40)  # re-delivery from the start of the log

    run(go())
    check(redis_deployment, events)


def test_state_lost_under_a_running_store_is_detected_and_nothing_is_written(redis_deployment):
    """FLUSHALL between two batches: the next batch raises StateLost and writes nothing (no offset past messages it
    did not apply); a rebuild from the start of the log is exact."""
    events = make_events(200, seed=22)
    messages = as_messages(events)
    client = sync_client(redis_deployment)

    async def go():
        store = await _store(redis_deployment)
        await _apply_all(store, messages[:150])
        flush_all(client)
        with pytest.raises(StateLost, match="epoch"):
            await store.apply_batch(messages[150:200], _ignore)
        layout = store.layout
        assert not any(client.exists(layout.offset(s, "ev", p)) for s in layout.all_shards() for p in range(3))
        # the rebuild the worker runs: new epochs, video topics again, replay from the start of the log
        await store.init_epochs()
        store.forget_offsets()
        await store.register_videos(TOPICS_OF)
        await _apply_all(store, messages)

    run(go())
    check(redis_deployment, events)


def test_stored_offsets_going_back_is_state_loss(redis_deployment):
    """A shard whose offsets went back (restored from an older copy, epoch kept) is lost state, not a rebalance."""
    events = make_events(100, seed=23)
    messages = as_messages(events)
    client = sync_client(redis_deployment)

    async def go():
        store = await _store(redis_deployment)
        await _apply_all(store, messages[:120])
        layout = store.layout
        for shard in layout.all_shards():
            for p in range(3):
                client.set(layout.offset(shard, "ev", p), 0)
        with pytest.raises(StateLost, match="went back"):
            await store.apply_batch(messages[120:], _ignore)

    run(go())


def test_the_fresh_draw_over_shards_is_uniform():
    """_uniform_draw gives every fresh video of every shard the same chance, however unequal the shards."""
    from collections import Counter

    from stream.state import _uniform_draw

    shards = [list(range(0, 5)), list(range(100, 160)), [], list(range(200, 215))]
    counts = Counter()
    rng = random.Random(0)
    trials = 4000
    for _ in range(trials):
        samples = [rng.sample(s, min(len(s), 10)) for s in shards]
        drawn = _uniform_draw(samples, [len(s) for s in shards], 10, rng)
        assert len(drawn) == 10 == len(set(drawn))
        counts.update(drawn)
    expected = trials * 10 / 80
    for video in (v for s in shards for v in s):
        assert abs(counts[video] - expected) < 0.2 * expected, (video, counts[video], expected)
