"""The demo's stream step over a Redis that an earlier run left its state in."""

from __future__ import annotations

import pytest
import redis

from stream.demo import clear_stream_state, run_demo_stream
from topicfs.settings import Settings

pytestmark = pytest.mark.integration


def test_clear_stream_state_keeps_the_packed_feast_records(redis_url):
    client = redis.Redis.from_url(redis_url)
    stream_keys = ["d:stats:video:1", "d:stream:offset:ev:0", "d:user:3:clicks", "d:user:3:exposures", "d:queue:2", "d:video:1:topics", "d:popular"]
    for key in stream_keys:
        client.set(key, 1)
    client.set("d:packed:ranker_v1:1", 1)  # TopicRedisOnlineStore's record under the same prefix
    client.set("other:stats:video:1", 1)  # another prefix
    assert clear_stream_state(client, "d") == len(stream_keys)
    assert sorted(client.keys("*")) == [b"d:packed:ranker_v1:1", b"other:stats:video:1"]


@pytest.mark.slow
def test_a_second_demo_stream_over_the_same_redis_replays_instead_of_skipping(redis_url):
    settings = Settings(redis={"url": redis_url, "key_prefix": "demo"})
    settings.stream.user_exposure_counts = True
    settings.stream.rebalance_timeout_s = 2.0
    client = redis.Redis.from_url(redis_url)

    def counts(pattern: str) -> dict:
        return {key: client.hmget(key, "exposures", "clicks") for key in client.scan_iter(match=pattern)}

    first = run_demo_stream(settings, None, 1500)
    videos = counts("demo:stats:video:*")
    exposures = {key: client.hgetall(key) for key in client.scan_iter(match="demo:user:*:exposures")}
    client.delete(*exposures)  # as if the first run had not kept the exposure history
    second = run_demo_stream(settings, None, 1500)

    assert "cleared the stream state" in second["text"] and "cleared" not in first["text"]
    assert videos and counts("demo:stats:video:*") == videos  # replayed once more from an empty state: not skipped, not doubled
    assert exposures and {key: client.hgetall(key) for key in client.scan_iter(match="demo:user:*:exposures")} == exposures
