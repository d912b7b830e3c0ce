"""Candidate generation: pure logic (exact and property tests) and both Redis readers on hand-built states, on a
single Redis and on a 3-master Redis Cluster (the ``redis_deployment`` fixture), state written with KeyLayout keys."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.candidates import (
    CORRUPT_VALUES,
    AsyncCandidateGenerator,
    Candidate,
    CandidateGenerator,
    CandidateStoreUnavailable,
    _json_from_reply,
    draw_candidates,
    parse_id,
    result_json,
    split_quota,
    vote_topics,
)
from topicfs import keys
from topicfs.keys import KeyLayout
from topicfs.redis_client import async_client, sync_client
from topicfs.services import free_port
from topicfs.settings import RedisConfig, Settings

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
    for t1, c1 in votes:
        for t2, c2 in votes:
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


# --- the Redis readers ----------------------------------------------------------------------------


def write_state(client, layout: KeyLayout, queues=None, video_topics=None, clicks=None, popular=None) -> None:
    """The state the stream keeps, written with the layout's keys: queues in served order (ZREVRANGE), video topic
    lists, click lists (newest first), popular topics (each in its own shard's ZSET)."""
    for topic_id, videos in (queues or {}).items():
        if videos:
            client.zadd(layout.queue(topic_id), {str(v): float(len(videos) - i) for i, v in enumerate(videos)})
    for video_id, topics in (video_topics or {}).items():
        client.set(layout.video_topics(video_id), keys.encode_ids(topics))
    for user_id, videos in (clicks or {}).items():
        if videos:
            client.rpush(layout.user_clicks(user_id), *videos)
    for topic_id, score in (popular or {}).items():
        client.zadd(layout.popular(layout.shard(topic_id)), {str(topic_id): score})


HAND_BUILT = dict(
    queues={1: [100, 101, 102, 103, 104, 105], 2: [200, 101, 201, 202], 3: [300, 301], 4: [400, 401, 402]},
    video_topics={900: [1, 2], 901: [1], 902: [1, 3], 903: [2], 102: [1], 904: []},
    clicks={7: [900, 901, 902, 903, 102, 904]},
    popular={4: 50.0, 3: 30.0, 1: 10.0},
)


@pytest.fixture()
def deployment(redis_deployment):
    """(sync client, layout, config) of the single Redis (1 shard) or the cluster (5 shards)."""
    client = sync_client(redis_deployment)
    yield client, KeyLayout(PREFIX, redis_deployment.shards), redis_deployment
    client.close()


def generators(client, layout, *args):
    """The default generator of the deployment (the script on a single Redis) and the Python reader."""
    default = CandidateGenerator(client, layout, *args)
    return default, CandidateGenerator(client, layout, *args, server_side=False)


@pytest.mark.integration
def test_the_default_reader_is_the_script_on_one_shard_and_python_on_the_cluster(deployment):
    client, layout, config = deployment
    assert CandidateGenerator(client, layout).server_side is (not config.cluster)
    if config.cluster:
        with pytest.raises(ValueError, match="single Redis"):
            CandidateGenerator(client, layout, server_side=True)
    with pytest.raises(ValueError, match="one shard"):
        CandidateGenerator(redis.Redis(), KeyLayout(PREFIX, 2), server_side=True)


@pytest.mark.integration
def test_generator_exact_list_on_hand_built_state(deployment):
    client, layout, _ = deployment
    write_state(client, layout, **HAND_BUILT)
    for generator in generators(client, layout, 128, 2, 6):
        result = generator.candidates(7)
        # votes: topic 1 -> 4 (900, 901, 902, 102), topic 2 -> 2 (900, 903), topic 3 -> 1: top 2 = 1, 2
        assert result.source == "history"
        assert [(t.topic_id, t.votes) for t in result.topics] == [(1, 4.0), (2, 2.0)]
        # quotas 4 / 2; 102 was clicked, 101 comes from topic 1 first
        assert [(c.video_id, c.topic_id) for c in result.candidates] == [(100, 1), (200, 2), (101, 1), (201, 2), (103, 1), (104, 1)]
        assert [t.n_candidates for t in result.topics] == [4, 2]
        assert result.clicked == [900, 901, 902, 903, 102, 904]
        assert result.clicked_topics == [[1, 2], [1], [1, 3], [2], [1], []]
        # a larger n than the queues hold returns every eligible video once
        everything = generator.candidates(7, n=100)
        assert sorted(c.video_id for c in everything.candidates) == [100, 101, 103, 104, 105, 200, 201, 202]
    # N1 = 2 looks at 900 and 901 only: topic 1 has 2 votes, topic 2 has 1
    for recent in generators(client, layout, 2, 4, 3):
        result = recent.candidates(7)
        assert [(t.topic_id, t.votes) for t in result.topics] == [(1, 2.0), (2, 1.0)]
        assert [c.video_id for c in result.candidates] == [100, 200, 101]


@pytest.mark.integration
def test_generator_popular_fallback_merges_the_shards_and_empty_store(deployment):
    client, layout, config = deployment
    write_state(client, layout, **HAND_BUILT)
    if config.cluster:  # the popular topics really sit in three shards, on more than one master
        assert len({layout.shard(t) for t in HAND_BUILT["popular"]}) == 3
        assert len({client.keyslot(layout.popular(s)) for s in layout.all_shards()}) == layout.shards
    for generator in generators(client, layout, 128, 2, 4):
        result = generator.candidates(12345)  # no clicks
        assert result.source == "popular"
        assert [(t.topic_id, t.votes) for t in result.topics] == [(4, 50.0), (3, 30.0)]
        # 4 * 50/80 = 2.5, 4 * 30/80 = 1.5: the remainder tie goes to topic 4
        assert [(c.video_id, c.topic_id) for c in result.candidates] == [(400, 4), (300, 3), (401, 4), (402, 4)]


@pytest.mark.integration
def test_popular_ties_keep_the_order_of_one_zset(deployment):
    """Equal clicks: the larger member (as bytes) first, as ZREVRANGE orders one ZSET, however the shards split them."""
    client, layout, _ = deployment
    write_state(client, layout, queues={9: [1], 10: [2], 11: [3], 3: [4]}, popular={9: 5.0, 10: 5.0, 11: 5.0, 3: 7.0, 12: 0.0})
    for generator in generators(client, layout, 128, 3, 3):
        result = generator.candidates(1)
        assert [t.topic_id for t in result.topics] == [3, 9, 11]  # b"9" > b"11" > b"10"; 0 clicks never count
    for generator in generators(client, layout, 128, 10, 3):
        assert [t.topic_id for t in generator.candidates(1).topics] == [3, 9, 11, 10]


@pytest.mark.integration
def test_empty_store(deployment):
    client, layout, _ = deployment
    for generator in generators(client, layout, 128, 2, 4):
        empty = generator.candidates(1)
        assert empty.source == "none" and empty.candidates == [] and empty.topics == []


@pytest.mark.integration
def test_generator_reads_deeper_when_clicks_hide_the_queue_head(deployment):
    client, layout, _ = deployment
    clicked = list(range(1000, 1100))
    client.zadd(layout.queue(1), {str(v): float(10_000 - v) for v in range(1000, 1400)})
    write_state(client, layout, video_topics={v: [1] for v in clicked}, clicks={3: clicked})
    for generator in generators(client, layout, 128, 4, 250):
        assert [c.video_id for c in generator.candidates(3).candidates] == list(range(1100, 1350))


def test_parse_id_takes_canonical_int64_only():
    assert parse_id(b"0") == 0 and parse_id(b"9223372036854775807") == 2**63 - 1 and parse_id("12") == 12
    for bad in [
        b"9223372036854775808",
        b"-0",
        b"-1",
        b"+3",
        b"007",
        b" 7",
        b"7 ",
        b"1_000",
        b"1e3",
        b"",
        b"x",
        b"9" * 4300,
        None,
        "\u0661",
    ]:
        assert parse_id(bad) is None, bad


CORRUPT = [
    # (what is written, kind counted)
    ("click", "click"),
    ("topic list", "topic_list"),
    ("popular inf", "popular"),
    ("popular 1e308", "popular"),
    ("popular member", "popular"),
    ("queue member", "queue_member"),
    ("wrong type", "wrong_type"),
]


def _write_corrupt(client, layout: KeyLayout, what: str) -> int:
    """A small valid state plus one kind of corrupt entry; returns the user to ask for (42 has clicks, 43 none)."""
    write_state(
        client, layout, queues={1: [5, 6, 8], 2: [20, 21]}, video_topics={1: [1], 2: [1, 2]}, clicks={42: [1, 2]}, popular={1: 9.0, 2: 4.0}
    )
    if what == "click":
        client.rpush(layout.user_clicks(42), "oops", "-0", "+3", "007", "9" * 4300, "99999999999999999999")
    elif what == "topic list":
        client.set(layout.video_topics(2), "x,y")
    elif what == "popular inf":
        client.zadd(layout.popular(layout.shard(3)), {"3": float("inf")})
        return 43
    elif what == "popular 1e308":
        client.zadd(layout.popular(layout.shard(3)), {"3": 1e308})
        client.zadd(layout.popular(layout.shard(4)), {"4": 1e308})
        return 43
    elif what == "popular member":
        client.zadd(layout.popular(0), {"banana": 100.0, "-5": 50.0, "18446744073709551616": 40.0})
        return 43
    elif what == "queue member":
        client.zadd(layout.queue(1), {"x": 9.5, "007": 5.5, "-1": 4.5, "1.5": 0.5})
    elif what == "wrong type":
        client.delete(layout.queue(2))
        client.set(layout.queue(2), "not a zset")
        client.delete(layout.video_topics(1))
        client.rpush(layout.video_topics(1), "1")
    return 42


def _corrupt_count(kind: str) -> float:
    return CORRUPT_VALUES.labels(kind)._value.get()


@pytest.mark.integration
@pytest.mark.parametrize(("what", "kind"), CORRUPT)
def test_corrupt_entries_are_skipped_warned_and_counted(deployment, caplog, what, kind):
    client, layout, _ = deployment
    user = _write_corrupt(client, layout, what)
    results = []
    for generator in generators(client, layout, 128, 4, 10):
        before = _corrupt_count(kind)
        caplog.clear()
        results.append(generator.candidates(user))
        assert _corrupt_count(kind) > before, f"{kind} not counted"
        assert results[-1].skipped.get(kind, 0) >= 1
        assert f"user {user}: skipped" in caplog.text
    assert results[0] == results[1]
    result = results[0]
    ids = [c.video_id for c in result.candidates]
    if user == 43:  # the popular fallback: only the valid topics, by clicks
        assert [t.topic_id for t in result.topics] == [1, 2] and result.source == "popular"
    else:
        assert result.source == "history" and result.clicked == [1, 2]
        assert set(ids) <= {5, 6, 8, 20, 21} and 5 in ids
    if what == "queue member":
        assert ids[:3] == [5, 20, 6]
    if what == "wrong type":
        assert 20 not in ids and result.clicked_topics == [[], [1, 2]]


@pytest.mark.integration
def test_generator_raises_unavailable_when_redis_is_down():
    client = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    for server_side in (True, False):
        with pytest.raises(CandidateStoreUnavailable, match="Redis"):
            CandidateGenerator(client, KeyLayout(PREFIX), server_side=server_side).candidates(1)
    # a cluster client asks for the topology when built: a dead cluster is unavailable too, not a crash
    settings = Settings(redis={"url": f"redis://127.0.0.1:{free_port()}/0", "cluster": True, "shards": 3}, serving={"redis_timeout_s": 0.5})
    with pytest.raises(CandidateStoreUnavailable, match="Redis"):
        CandidateGenerator.from_settings(settings).candidates(1)


@pytest.mark.integration
def test_fresh_videos_the_stream_places_in_a_queue_are_candidates(deployment):
    """A queue built by the stream's own logic (established by CTR, 10% fresh spread among them) is served as is."""
    import random

    from stream.logic import build_queue

    client, layout, _ = deployment
    established = [(v, 0.5 - v / 1000) for v in range(100, 118)]  # (video, CTR), all above τ2
    fresh = [900, 901, 902, 903, 904]
    queue = build_queue(established, fresh, len(fresh), fresh_share=0.1, cold_start_fresh=0, max_queue_length=1000, rng=random.Random(1))
    served_fresh = [v for v in queue if v in fresh]
    assert served_fresh and len(served_fresh) == 2  # 10% of 20 videos
    write_state(client, layout, queues={1: queue}, popular={1: 5.0})
    for generator in generators(client, layout, 128, 4, 600):
        result = generator.candidates(42)  # no history: the popular topic
        assert [c.video_id for c in result.candidates] == queue
        assert set(served_fresh) <= {c.video_id for c in result.candidates}


@pytest.mark.integration
def test_async_generator_answers_as_the_sync_one(deployment):
    client, layout, config = deployment
    write_state(client, layout, **HAND_BUILT)
    sync = CandidateGenerator(client, layout, 128, 2, 6)

    async def run():
        fast = AsyncCandidateGenerator(async_client(config), layout, 128, 2, 6, max_concurrency=4)
        assert fast.server_side is (not config.cluster)
        try:
            results = await asyncio.gather(*(fast.candidates(u) for u in (7, 12345, 1) * 20))
            bodies = [await fast.candidates_json(u) for u in (7, 12345, 1)]
            await fast.ping()
        finally:
            await fast.aclose()
        return results, bodies

    results, bodies = asyncio.run(run())
    assert results[:3] == [sync.candidates(u) for u in (7, 12345, 1)] and results[3:6] == results[:3]
    assert bodies == [result_json(r) for r in results[:3]]


@pytest.mark.integration
def test_sync_generator_lets_at_most_max_concurrency_requests_use_redis(deployment, monkeypatch):
    """The synchronous generator's turns: 8 threads, max_concurrency 2, never more than 2 requests inside Redis."""
    import serving.candidates as candidates_module

    client, layout, _ = deployment
    write_state(client, layout, **HAND_BUILT)
    generator = CandidateGenerator(client, layout, 128, 2, 6, server_side=False, max_concurrency=2)
    expected = [generator.candidates(u) for u in (7, 12345, 1)]
    run_sync, lock, inside, peak = candidates_module._run_sync, threading.Lock(), [], []

    def counted(*args):
        with lock:
            inside.append(1)
            peak.append(len(inside))
        time.sleep(0.01)
        try:
            return run_sync(*args)
        finally:
            with lock:
                inside.pop()

    monkeypatch.setattr(candidates_module, "_run_sync", counted)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(generator.candidates, (7, 12345, 1) * 8))
    assert results == expected * 8
    assert max(peak) == 2


# --- the script against the Python reader, and the cluster layout against one shard ----------------

_examples = iter(range(10**9))


@pytest.mark.integration
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    queues=st.dictionaries(st.integers(1, 8), st.lists(st.integers(100, 160), unique=True, max_size=25), max_size=8),
    video_topics=st.dictionaries(st.integers(100, 160), st.lists(st.integers(1, 9), unique=True, max_size=4), max_size=40),
    clicks=st.lists(st.integers(100, 170), max_size=40),
    popular=st.dictionaries(st.integers(1, 9), st.floats(0, 100, allow_nan=False), max_size=5),
    recent=st.integers(1, 50),
    top=st.integers(1, 5),
    n=st.integers(0, 60),
)
def test_script_python_and_cluster_answer_alike(redis_url, redis_cluster, queues, video_topics, clicks, popular, recent, top, n):
    """The same logical state: the script and the Python reader on one shard of a single Redis, and the Python
    reader on 5 shards of the cluster, give the same answer (and the script's JSON body is the Python result's)."""
    prefix = f"h{next(_examples)}"  # each example its own keys: no flush between examples
    state = dict(queues=queues, video_topics=video_topics, clicks={5: clicks}, popular=popular)
    single = redis.Redis.from_url(redis_url)
    cluster = sync_client(RedisConfig(url=redis_cluster.url, cluster=True, shards=5))
    one, five = KeyLayout(prefix, 1), KeyLayout(prefix, 5)
    write_state(single, one, **state)
    write_state(cluster, five, **state)
    script = CandidateGenerator(single, one, recent, top, n)
    python = script.python_candidates(5)
    assert script.candidates(5) == python
    assert CandidateGenerator(cluster, five, recent, top, n).candidates(5) == python
    assert _json_from_reply(5, script.script_reply(5, n)) == result_json(python)
    cluster.close()


@pytest.mark.integration
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    members=st.lists(st.one_of(st.integers(0, 40).map(str), st.sampled_from(["x", "007", "-1", "+2", "1.5", "", "9" * 30])), max_size=30),
    clicks=st.lists(st.one_of(st.integers(0, 40).map(str), st.sampled_from(["oops", "-0", "01"])), max_size=10),
    topic_list=st.sampled_from(["1", "1,2", "x", "1,,2", "2,y", ""]),
    scores=st.lists(
        st.sampled_from([0.0, 1.0, 3.0, -1.0, float("inf"), float("-inf"), 1e308, 2.0**53, 2.0**53 + 2]), min_size=2, max_size=2
    ),
    n=st.integers(0, 20),
)
def test_script_and_python_skip_corrupt_entries_alike(redis_url, members, clicks, topic_list, scores, n):
    prefix = f"c{next(_examples)}"
    client = redis.Redis.from_url(redis_url)
    layout = KeyLayout(prefix, 1)
    for topic_id in (1, 2):
        if members:
            client.zadd(layout.queue(topic_id), {m: float(i) for i, m in enumerate(members)})
    client.set(layout.video_topics(3), topic_list)
    if clicks:
        client.rpush(layout.user_clicks(5), *clicks)
    client.zadd(layout.popular(0), {"1": scores[0], "2": scores[1], "zz": 5.0})
    script = CandidateGenerator(client, layout, 16, 2, n)
    python = script.python_candidates(5)
    answer = script.candidates(5)
    assert answer == python
    # what the draw visited was skipped alike (deeper corrupt members may be counted by one reader only)
    assert {k: v for k, v in answer.skipped.items() if k != "queue_member"} == {
        k: v for k, v in python.skipped.items() if k != "queue_member"
    }


@pytest.mark.integration
def test_mrlm_refresh_reads_the_click_lists_through_the_layout(deployment, caplog):
    """The MRLM refresh reads the users' click lists as candidate generation does, on either deployment, and skips
    a corrupt entry with a warning."""
    from offline_jobs.mrlm_job import read_recent_clicks

    client, layout, config = deployment
    write_state(client, layout, clicks={3: [30, 31, 32], 4: [40]})
    client.rpush(layout.user_clicks(4), "junk")
    settings = Settings(redis=config.model_dump() | {"key_prefix": PREFIX}, mrlm={"latest_items": 2})
    assert read_recent_clicks(settings, [3, 4, 5]) == {3: [30, 31], 4: [40], 5: []}
    assert "user 4: skipped 1 click list entries" in caplog.text


@pytest.mark.integration
def test_serve_candidates_prints_json_and_refuses_an_id_beyond_int64(deployment):
    import json
    import os
    import subprocess
    import sys

    client, layout, config = deployment
    write_state(client, layout, **HAND_BUILT)
    env = os.environ | {
        "TOPICFS_REDIS__URL": config.url,
        "TOPICFS_REDIS__CLUSTER": str(config.cluster).lower(),
        "TOPICFS_REDIS__SHARDS": str(config.shards),
        "TOPICFS_REDIS__KEY_PREFIX": PREFIX,
        "TOPICFS_SERVING__TOPICS_PER_USER": "2",
        "TOPICFS_SERVING__N_CANDIDATES": "6",
    }
    done = subprocess.run(
        [sys.executable, "-m", "topicfs_app.cli", "serve", "candidates", "7"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["candidates"] == [[100, 1], [200, 2], [101, 1], [201, 2], [103, 1], [104, 1]]
    bad = subprocess.run(
        [sys.executable, "-m", "topicfs_app.cli", "serve", "candidates", str(2**63)], env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
