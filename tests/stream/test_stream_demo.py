"""The demo's stream step over a Redis that an earlier run left its state in."""

from __future__ import annotations

import pytest
import redis

from stream.demo import clear_stream_state, run_demo_stream
from topicfs.keys import KeyLayout
from topicfs.settings import Settings

pytestmark = pytest.mark.integration


def test_clear_stream_state_keeps_the_packed_feast_records(redis_url):
    client = redis.Redis.from_url(redis_url)
    layout = KeyLayout("d", 3)
    stream_keys = [layout.video_stats(1), layout.offset(2, "ev", 0), layout.user_clicks(3), layout.user_exposures(3), layout.queue(2),
                   layout.video_topics(1), layout.popular(0), layout.epoch(1)]  # fmt: skip
    for key in stream_keys:
        client.set(key, 1)
    client.set("d:packed:ranker_v1:1", 1)  # TopicRedisOnlineStore's record under the same prefix
    other = KeyLayout("other", 3).video_stats(1)  # another prefix
    client.set(other, 1)
    assert clear_stream_state(client, layout) == len(stream_keys)
    assert sorted(client.keys("*")) == sorted([b"d:packed:ranker_v1:1", other.encode()])


@pytest.mark.slow
def test_a_second_demo_stream_over_the_same_redis_replays_instead_of_skipping(redis_url):
    settings = Settings(redis={"url": redis_url, "key_prefix": "demo"})
    settings.stream.user_exposure_counts = True
    settings.stream.rebalance_timeout_s = 2.0
    client = redis.Redis.from_url(redis_url)
    layout = KeyLayout.from_config(settings.redis)

    def counts(pattern: str) -> dict:
        return {key: client.hmget(key, "exposures", "clicks") for key in client.scan_iter(match=layout.pattern(pattern))}

    first = run_demo_stream(settings, None, 1500)
    videos = counts("stats:video:*")
    exposures = {key: client.hgetall(key) for key in client.scan_iter(match=layout.pattern("user:*:exposures"))}
    client.delete(*exposures)  # as if the first run had not kept the exposure history
    second = run_demo_stream(settings, None, 1500)

    assert "cleared the stream state" in second["text"] and "cleared" not in first["text"]
    assert videos and counts("stats:video:*") == videos  # replayed once more from an empty state: not skipped, not doubled
    assert exposures and {key: client.hgetall(key) for key in client.scan_iter(match=layout.pattern("user:*:exposures"))} == exposures
