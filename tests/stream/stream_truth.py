"""Ground truth of the stream tests, computed from the produced events by plain counting (not by stream.logic)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import redis

from topicfs.keys import KeyLayout, decode_ids, is_cluster


@dataclass
class Truth:
    video_exposures: Counter = field(default_factory=Counter)
    video_clicks: Counter = field(default_factory=Counter)
    topic_exposures: Counter = field(default_factory=Counter)
    topic_clicks: Counter = field(default_factory=Counter)
    user_clicks: dict = field(default_factory=lambda: defaultdict(list))  # newest last


def truth_of(events: list[dict], topics_of: dict[int, list[int]]) -> Truth:
    """Counts from valid event dicts (known videos only), in the order produced (per user order is what matters)."""
    truth = Truth()
    for event in events:
        if event["type"] == "exposure":
            for video_id in event.get("video_ids", [event.get("video_id")]):
                truth.video_exposures[video_id] += 1
                for topic_id in topics_of[video_id]:
                    truth.topic_exposures[topic_id] += 1
        else:
            truth.video_clicks[event["video_id"]] += 1
            for topic_id in topics_of[event["video_id"]]:
                truth.topic_clicks[topic_id] += 1
            truth.user_clicks[event["user_id"]].append(event["video_id"])
    return truth


def as_layout(layout: KeyLayout | str) -> KeyLayout:
    return layout if isinstance(layout, KeyLayout) else KeyLayout(layout, 1)


def assert_state_matches(
    client: redis.Redis,
    layout: KeyLayout | str,
    truth: Truth,
    topics_of: dict[int, list[int]],
    n1: int,
    tau1: int,
    tau2: float,
    share: float,
) -> None:
    """Counts, user histories and (after a rebuild) the served queues equal the ground truth exactly (``layout``: a
    KeyLayout, or a key prefix of a one-shard layout)."""
    layout = as_layout(layout)
    pipe = client.pipeline()
    videos = sorted(topics_of)
    for video_id in videos:
        pipe.hmget(layout.video_stats(video_id), "exposures", "clicks")
    for video_id, (exposures, clicks) in zip(videos, pipe.execute()):
        assert int(exposures or 0) == truth.video_exposures[video_id], f"video {video_id} exposures"
        assert int(clicks or 0) == truth.video_clicks[video_id], f"video {video_id} clicks"
    topics = sorted({t for ts in topics_of.values() for t in ts})
    for topic_id in topics:
        exposures, clicks = client.hmget(layout.topic_stats(topic_id), "exposures", "clicks")
        assert int(exposures or 0) == truth.topic_exposures[topic_id], f"topic {topic_id} exposures"
        assert int(clicks or 0) == truth.topic_clicks[topic_id], f"topic {topic_id} clicks"
    for user_id, clicked in truth.user_clicks.items():
        stored = [int(v) for v in client.lrange(layout.user_clicks(user_id), 0, -1)]
        assert stored == list(reversed(clicked))[:n1], f"user {user_id} recent clicks"
        votes = Counter(t for v in stored for t in topics_of[v])
        histogram = {int(t): int(n) for t, n in client.hgetall(layout.user_topic_counts(user_id)).items()}
        assert histogram == dict(votes), f"user {user_id} topic histogram"
    assert not any(client.smembers(layout.dirty(s)) for s in layout.all_shards()), "queues not rebuilt yet"
    for topic_id in topics:
        members = [v for v in videos if topic_id in topics_of[v]]
        established = {v for v in members if truth.video_exposures[v] >= tau1 and truth.video_clicks[v] / truth.video_exposures[v] >= tau2}
        fresh = {v for v in members if truth.video_exposures[v] < tau1}
        queue = [int(v) for v in client.zrevrange(layout.queue(topic_id), 0, -1)]
        ctr = {v: truth.video_clicks[v] / truth.video_exposures[v] for v in established}
        served_established = [v for v in queue if v in established]
        assert set(served_established) == established, f"topic {topic_id}: established videos"
        assert [ctr[v] for v in served_established] == sorted(ctr.values(), reverse=True), f"topic {topic_id}: CTR order"
        served_fresh = [v for v in queue if v not in established]
        assert set(served_fresh) <= fresh, f"topic {topic_id}: a pruned video is served"
        if established and len(fresh) > len(served_fresh):
            assert abs(len(served_fresh) - share * len(queue)) <= 1, f"topic {topic_id}: fresh share"


def dead_letters(bootstrap_servers: str, topic: str, timeout_s: float = 10.0) -> list[dict]:
    """Every message of the dead-letter topic, decoded."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def read() -> list[dict]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        out, idle = [], 0
        try:
            while idle < 3:
                batch = await consumer.getmany(timeout_ms=int(timeout_s * 100))
                records = [m for ms in batch.values() for m in ms]
                idle = 0 if records else idle + 1
                out += [json.loads(m.value) for m in records]
        finally:
            await consumer.stop()
        return out

    return asyncio.run(read())


def video_topics(client: redis.Redis, layout: KeyLayout | str, video_ids) -> dict[int, list[int]]:
    layout = as_layout(layout)
    return {v: decode_ids(client.get(layout.video_topics(v))) for v in video_ids}


def flush_all(client) -> None:
    """FLUSHALL on every master of a cluster client, or on a single Redis."""
    if is_cluster(client):
        for node in client.get_primaries():
            client.flushall(target_nodes=node)
    else:
        client.flushall()
