"""Candidate generation: pure logic (exact and property tests) and the Redis reader on a hand-built queue state."""

from __future__ import annotations

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.candidates import (
    Candidate,
    CandidateGenerator,
    CandidateStoreUnavailable,
    _json_from_reply,
    result_json,
    draw_candidates,
    split_quota,
    vote_topics,
)
from topicfs import keys
from topicfs.services import free_port

PREFIX = "t"


def test_vote_topics_counts_each_video_once_and_breaks_ties_by_recency():
    # newest first: video topics [3,1], [1,1,2], [2], [5]
    assert vote_topics([[3, 1], [1, 1, 2], [2], [5]], 3) == [(1, 2), (2, 2), (3, 1)]
    assert vote_topics([], 4) == []
    with pytest.raises(ValueError, match="topics_per_user"):
        vote_topics([[1]], 0)


def test_split_quota_largest_remainder():
    assert split_quota([(7, 3), (8, 1)], 10) == {7: 8, 8: 2}  # 7.5 -> 8, 2.5 -> 2 (tie goes to the earlier topic)
    assert split_quota([(1, 1), (2, 1), (3, 1)], 10) == {1: 4, 2: 3, 3: 3}
    assert split_quota([(1, 0)], 5) == {1: 0}
    with pytest.raises(ValueError):
        split_quota([(1, -1)], 5)


def test_draw_round_robin_skips_clicked_and_duplicates_and_refills_dry_queues():
    votes = [(10, 2), (20, 1), (30, 1)]
    queues = {10: [1, 2, 3, 4, 5, 6], 20: [2], 30: [8, 9, 11, 12]}
    draw = draw_candidates(votes, queues, 8, exclude={3})
    # quotas 4/2/2. Round 1: 1 (10), 2 (20), 8 (30). Topic 20 is dry after one video: its slot goes to
    # topic 10 (more votes). Topic 10 skips 2 (drawn) and 3 (clicked) and runs dry after 6 with 4 of its
    # 5 slots filled: the last slot goes to topic 30 (11).
    assert [c.video_id for c in draw.candidates] == [1, 2, 8, 4, 9, 5, 6, 11]
    assert draw.candidates[1] == Candidate(2, 20)
    assert draw.quota == {10: 4, 20: 1, 30: 3}


# --- property tests -------------------------------------------------------------------------------

topic_ids = st.integers(0, 6)
video_ids = st.integers(0, 60)


@st.composite
def draw_inputs(draw):
    topics = draw(st.lists(topic_ids, min_size=1, max_size=4, unique=True))
    votes = [(t, draw(st.integers(1, 20))) for t in topics]
    queues = {t: draw(st.lists(video_ids, max_size=40, unique=True)) for t in topics}
    exclude = draw(st.sets(video_ids, max_size=15))
    n = draw(st.integers(0, 80))
    return votes, queues, n, exclude


@settings(max_examples=300, deadline=None)
@given(draw_inputs())
def test_draw_properties(args):
    votes, queues, n, exclude = args
    result = draw_candidates(votes, queues, n, exclude).candidates
    ids = [c.video_id for c in result]
    assert len(ids) == len(set(ids)), "no duplicates"
    assert not set(ids) & exclude, "no clicked videos"
    assert len(ids) <= n
    for c in result:
        assert c.video_id in queues[c.topic_id]
    eligible = set().union(*map(set, queues.values())) - exclude
    assert len(ids) == min(n, len(eligible)), "short only when the queues run out"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=4), st.integers(0, 600))
def test_topic_split_follows_votes_when_queues_are_deep(counts, n):
    votes = [(t, c) for t, c in enumerate(counts)]
    queues = {t: list(range(t * 10_000, t * 10_000 + n + 5)) for t, _ in votes}  # disjoint, deep enough
    result = draw_candidates(votes, queues, n).candidates
    drawn = {t: sum(c.topic_id == t for c in result) for t, _ in votes}
    total = sum(counts)
    for t, c in votes:
        assert abs(drawn[t] - n * c / total) < 1
    assert drawn == split_quota(votes, n)
    # more votes never means fewer candidates
    for (t1, c1) in votes:
        for (t2, c2) in votes:
            if c1 > c2:
                assert drawn[t1] >= drawn[t2]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(topic_ids, max_size=5), max_size=30), st.integers(1, 5))
def test_vote_topics_properties(video_topics, k):
    top = vote_topics(video_topics, k)
    assert len(top) <= k
    assert len({t for t, _ in top}) == len(top)
    counts = [c for _, c in top]
    assert counts == sorted(counts, reverse=True)
    for t, c in top:
        assert c == sum(t in set(v) for v in video_topics)
    left_out = {t for v in video_topics for t in v} - {t for t, _ in top}
    if top:
        assert all(sum(t in set(v) for v in video_topics) <= counts[-1] for t in left_out)


# --- the Redis reader -----------------------------------------------------------------------------


def _build_state(client: redis.Redis) -> None:
    """Queues of topics 1..4, video topics, one user with history, popular topics."""
    queues = {
        1: [100, 101, 102, 103, 104, 105],  # served order = descending score
        2: [200, 101, 201, 202],
        3: [300, 301],
        4: [400, 401, 402],
    }
    for topic_id, videos in queues.items():
        client.zadd(keys.queue_key(PREFIX, topic_id), {str(v): float(len(videos) - i) for i, v in enumerate(videos)})
    video_topics = {900: [1, 2], 901: [1], 902: [1, 3], 903: [2], 102: [1], 904: []}
    for video_id, topics in video_topics.items():
        client.set(keys.video_topics_key(PREFIX, video_id), keys.encode_ids(topics))
    client.rpush(keys.user_clicks_key(PREFIX, 7), 900, 901, 902, 903, 102, 904)  # newest first
    client.zadd(keys.popular_topics_key(PREFIX), {"4": 50.0, "3": 30.0, "1": 10.0})


@pytest.mark.integration
def test_generator_exact_list_on_hand_built_state(redis_url):
    client = redis.Redis.from_url(redis_url)
    _build_state(client)
    generator = CandidateGenerator(client, PREFIX, recent_clicks=128, topics_per_user=2, n_candidates=6)
    result = generator.candidates(7)
    # votes: topic 1 -> 4 (900, 901, 902, 102), topic 2 -> 2 (900, 903), topic 3 -> 1: top 2 = 1, 2
    assert result.source == "history"
    assert [(t.topic_id, t.votes) for t in result.topics] == [(1, 4.0), (2, 2.0)]
    # quotas 4 / 2; 102 was clicked, 101 comes from topic 1 first
    assert [(c.video_id, c.topic_id) for c in result.candidates] == [(100, 1), (200, 2), (101, 1), (201, 2), (103, 1), (104, 1)]
    assert [t.n_candidates for t in result.topics] == [4, 2]

    # N1 = 2 looks at 900 and 901 only: topic 1 has 2 votes, topic 2 has 1
    recent = CandidateGenerator(client, PREFIX, recent_clicks=2, topics_per_user=4, n_candidates=3).candidates(7)
    assert [(t.topic_id, t.votes) for t in recent.topics] == [(1, 2.0), (2, 1.0)]
    assert [c.video_id for c in recent.candidates] == [100, 200, 101]

    # a larger n than the queues hold returns every eligible video once
    everything = generator.candidates(7, n=100)
    assert sorted(c.video_id for c in everything.candidates) == [100, 101, 103, 104, 105, 200, 201, 202]


@pytest.mark.integration
def test_generator_popular_fallback_and_empty_store(redis_url):
    client = redis.Redis.from_url(redis_url)
    _build_state(client)
    generator = CandidateGenerator(client, PREFIX, recent_clicks=128, topics_per_user=2, n_candidates=4)
    result = generator.candidates(12345)  # no clicks
    assert result.source == "popular"
    assert [(t.topic_id, t.votes) for t in result.topics] == [(4, 50.0), (3, 30.0)]
    # quota 2.5/1.5 -> 3/1... largest remainder: 4 * 50/80 = 2.5, 4 * 30/80 = 1.5 -> tie goes to topic 4
    assert [(c.video_id, c.topic_id) for c in result.candidates] == [(400, 4), (300, 3), (401, 4), (402, 4)]

    client.flushall()
    empty = generator.candidates(1)
    assert empty.source == "none" and empty.candidates == [] and empty.topics == []


@pytest.mark.integration
def test_generator_reads_deeper_when_clicks_hide_the_queue_head(redis_url):
    client = redis.Redis.from_url(redis_url)
    clicked = list(range(1000, 1100))
    client.zadd(keys.queue_key(PREFIX, 1), {str(v): float(10_000 - v) for v in range(1000, 1400)})
    for v in clicked:
        client.set(keys.video_topics_key(PREFIX, v), "1")
    client.rpush(keys.user_clicks_key(PREFIX, 3), *clicked)
    # another topic shares nothing; deep overlap forces a second, deeper read
    result = CandidateGenerator(client, PREFIX, 128, 4, 250).candidates(3)
    assert [c.video_id for c in result.candidates] == list(range(1100, 1350))


@pytest.mark.integration
def test_generator_skips_malformed_entries(redis_url, caplog):
    client = redis.Redis.from_url(redis_url)
    client.zadd(keys.queue_key(PREFIX, 1), {"5": 2.0, "6": 1.0})
    client.set(keys.video_topics_key(PREFIX, 1), "1")
    client.set(keys.video_topics_key(PREFIX, 2), "x,y")
    client.rpush(keys.user_clicks_key(PREFIX, 9), "oops", 1, 2)
    result = CandidateGenerator(client, PREFIX, 128, 4, 10).candidates(9)
    assert [c.video_id for c in result.candidates] == [5, 6]
    assert "not a video id" in caplog.text and "malformed topic list" in caplog.text


def test_generator_raises_unavailable_when_redis_is_down():
    client = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    with pytest.raises(CandidateStoreUnavailable, match="Redis"):
        CandidateGenerator(client, PREFIX).candidates(1)


@pytest.mark.integration
def test_fresh_videos_the_stream_places_in_a_queue_are_candidates(redis_url):
    """A queue built by the stream's own logic (established by CTR, 10% fresh spread among them) is served as is."""
    import random

    from stream.logic import build_queue, queue_scores

    client = redis.Redis.from_url(redis_url)
    established = [(v, 0.5 - v / 1000) for v in range(100, 118)]  # (video, CTR), all above τ2
    fresh = [900, 901, 902, 903, 904]
    queue = build_queue(established, fresh, len(fresh), fresh_share=0.1, cold_start_fresh=0, max_queue_length=1000, rng=random.Random(1))
    served_fresh = [v for v in queue if v in fresh]
    assert served_fresh and len(served_fresh) == 2  # 10% of 20 videos
    client.zadd(keys.queue_key(PREFIX, 1), queue_scores(queue))
    client.zadd(keys.popular_topics_key(PREFIX), {"1": 5.0})
    result = CandidateGenerator(client, PREFIX, 128, 4, 600).candidates(42)  # no history: the popular topic
    assert [c.video_id for c in result.candidates] == queue
    assert set(served_fresh) <= {c.video_id for c in result.candidates}


@pytest.mark.integration
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # the test flushes the db itself
@given(
    queues=st.dictionaries(st.integers(1, 8), st.lists(st.integers(100, 160), unique=True, max_size=25), max_size=8),
    video_topics=st.dictionaries(st.integers(100, 160), st.lists(st.integers(1, 9), unique=True, max_size=4), max_size=40),
    clicks=st.lists(st.integers(100, 170), max_size=40),
    popular=st.dictionaries(st.integers(1, 9), st.floats(0, 100, allow_nan=False), max_size=5),
    recent=st.integers(1, 50),
    top=st.integers(1, 5),
    n=st.integers(0, 60),
)
def test_the_server_side_script_answers_exactly_as_the_python_reference(redis_url, queues, video_topics, clicks, popular, recent, top, n):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    for topic_id, videos in queues.items():
        if videos:
            client.zadd(keys.queue_key(PREFIX, topic_id), {str(v): float(len(videos) - i) for i, v in enumerate(videos)})
    for video_id, topics in video_topics.items():
        client.set(keys.video_topics_key(PREFIX, video_id), keys.encode_ids(topics))
    if clicks:
        client.rpush(keys.user_clicks_key(PREFIX, 5), *clicks)
    if popular:
        client.zadd(keys.popular_topics_key(PREFIX), {str(t): s for t, s in popular.items()})
    generator = CandidateGenerator(client, PREFIX, recent, top, n, server_side=True)
    script = generator.candidates(5)
    python = CandidateGenerator(client, PREFIX, recent, top, n, server_side=False).candidates(5)
    assert script == python
    # the HTTP body formatted from the raw reply is byte for byte the body of the Python result
    assert _json_from_reply(5, generator._script(keys=generator.script_keys(5), args=generator.script_args(n))) == result_json(python)


@pytest.mark.integration
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_malformed_queue_members_give_the_python_answer(redis_url, n):
    """The script checks a queue member when its draw reaches it and then hands over to the Python reader; a
    malformed member deeper than the draw goes (n = 1, 2) changes neither answer."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.zadd(keys.queue_key(PREFIX, 1), {"5": 9.0, "6": 8.0, "007": 7.0, "x": 6.0, "8": 5.0})
    client.set(keys.video_topics_key(PREFIX, 1), "1")
    client.rpush(keys.user_clicks_key(PREFIX, 9), 1)
    script = CandidateGenerator(client, PREFIX, 128, 4, n, server_side=True)
    python = CandidateGenerator(client, PREFIX, 128, 4, n, server_side=False).candidates(9)
    assert script.candidates(9) == python
    reply = script._script(keys=script.script_keys(9), args=script.script_args(n))
    assert (reply[0] == b"ok") == (n <= 2)
