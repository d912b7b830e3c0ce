"""Unit and property tests of the pure logic (stream/logic.py): validation, counts, decay, pruning, queues."""

from __future__ import annotations

import json
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.logic import (
    Counts,
    Limits,
    build_queue,
    decay_to,
    drop_unknown_videos,
    fold_events,
    fresh_count,
    merge_counts,
    next_rebuild_at,
    parse_event,
    parse_video_event,
    push_pause_s,
    video_status,
)
from stream.records import ClickEvent, ExposureEvent

LIMITS = Limits(max_payload_bytes=2000, max_videos_per_exposure=20, min_event_ts_s=1e9, max_event_ts_s=2e9)
TAU1, TAU2, SHARE = 10, 0.07, 0.1


def raw(message) -> bytes:
    return json.dumps(message).encode()


# ------------------------------------------------------------ validation


def test_parse_exposure_refresh_and_single_video_form():
    event, errors = parse_event(
        raw({"type": "exposure", "event_id": "e1", "user_id": 3, "request_id": "r", "video_ids": [1, 2], "ts": 1.5e9}), LIMITS
    )
    assert errors == [] and isinstance(event, ExposureEvent) and event.video_ids == [1, 2] and event.request_id == "r"
    event, errors = parse_event(raw({"type": "exposure", "event_id": "e2", "user_id": 3, "video_id": 7, "ts": 1.5e9}), LIMITS)
    assert errors == [] and event.video_ids == [7]


def test_parse_click():
    event, errors = parse_event(raw({"type": "click", "event_id": "e1", "user_id": 3, "video_id": 9, "ts": 1.5e9}), LIMITS)
    assert errors == [] and isinstance(event, ClickEvent) and event.video_id == 9


def test_partly_bad_exposure_keeps_its_valid_videos():
    event, errors = parse_event(
        raw({"type": "exposure", "event_id": "e1", "user_id": 3, "video_ids": [1, "x", 2, -4, True], "ts": 1.5e9}), LIMITS
    )
    assert event.video_ids == [1, 2]
    assert len(errors) == 3 and "video_ids[1]" in errors[0]


def test_invalid_messages_are_named():
    cases = {
        b"{not json": "bad JSON",
        b"[1, 2]": "JSON object",
        raw({"type": "view", "event_id": "e", "user_id": 1, "ts": 1.5e9}): "type must be",
        raw({"type": "click", "event_id": "e", "user_id": "1", "video_id": 2, "ts": 1.5e9}): "user_id must be an integer",
        raw({"type": "click", "event_id": "e", "user_id": True, "video_id": 2, "ts": 1.5e9}): "user_id must be an integer",
        raw({"type": "click", "event_id": "e", "user_id": 1, "video_id": 2, "ts": 5.0}): "outside the plausible range",
        raw({"type": "click", "event_id": "e", "user_id": 1, "video_id": 2, "ts": "soon"}): "ts must be",
        raw({"type": "click", "user_id": 1, "video_id": 2, "ts": 1.5e9}): "event_id is missing",
        raw({"type": "exposure", "event_id": "e", "user_id": 1, "video_ids": list(range(21)), "ts": 1.5e9}): "max_videos_per_exposure",
        raw({"type": "exposure", "event_id": "e", "user_id": 1, "video_ids": [], "ts": 1.5e9}): "no video",
        raw({"type": "click", "event_id": "e" * 3000, "user_id": 1, "video_id": 2, "ts": 1.5e9}): "exceeds max_payload_bytes",
        None: "empty message",
    }
    for payload, expected in cases.items():
        event, errors = parse_event(payload, LIMITS)
        assert event is None, payload
        assert any(expected in error for error in errors), (payload, errors)


def test_unknown_videos_are_dropped_and_named():
    event = ExposureEvent(event_id="e", user_id=1, video_ids=[1, 99, 2], ts=1.5e9)
    kept, errors = drop_unknown_videos(event, {1: (0,), 2: (1,)})
    assert kept.video_ids == [1, 2] and errors == ["unknown video_id 99"]
    kept, errors = drop_unknown_videos(ClickEvent(event_id="c", user_id=1, video_id=99, ts=1.5e9), {1: (0,)})
    assert kept is None and errors == ["unknown video_id 99"]


def test_video_published_needs_topics_or_content():
    event, errors = parse_video_event(
        raw({"type": "video_published", "event_id": "v", "video_id": 4, "topic_ids": [1, 2], "ts": 1.5e9}), LIMITS
    )
    assert errors == [] and event.topic_ids == [1, 2]
    event, errors = parse_video_event(raw({"event_id": "v", "video_id": 4, "title": "a cat", "tags": ["cat"], "ts": 1.5e9}), LIMITS)
    assert errors == [] and event.topic_ids is None and event.title == "a cat"
    event, errors = parse_video_event(raw({"event_id": "v", "video_id": 4, "ts": 1.5e9}), LIMITS)
    assert event is None and "needs topic_ids" in errors[0]
    event, errors = parse_video_event(raw({"event_id": "v", "video_id": 4, "topic_ids": ["a"], "ts": 1.5e9}), LIMITS)
    assert event is None and "topic_ids" in errors[0]


# ------------------------------------------------------------ counts and decay

events_strategy = st.lists(
    st.one_of(
        st.builds(
            lambda user, videos, ts: ExposureEvent(event_id="e", user_id=user, video_ids=videos, ts=ts),
            st.integers(0, 5),
            st.lists(st.integers(0, 9), min_size=1, max_size=10),
            st.floats(1e9, 1e9 + 1e5),
        ),
        st.builds(
            lambda user, video, ts: ClickEvent(event_id="c", user_id=user, video_id=video, ts=ts),
            st.integers(0, 5),
            st.integers(0, 9),
            st.floats(1e9, 1e9 + 1e5),
        ),
    ),
    max_size=60,
)
TOPICS_OF = {v: (v % 3, 3 + v % 2) for v in range(10)}


@given(events_strategy)
def test_fold_events_counts_every_exposure_and_click_once(events):
    delta = fold_events(events, TOPICS_OF, None)
    for video_id in range(10):
        exposures = sum(e.video_ids.count(video_id) for e in events if isinstance(e, ExposureEvent))
        clicks = sum(1 for e in events if isinstance(e, ClickEvent) and e.video_id == video_id)
        counts = delta.videos.get(video_id, Counts())
        assert (counts.exposures, counts.clicks) == (exposures, clicks)
    for topic_id in range(5):
        exposures = sum(1 for e in events if isinstance(e, ExposureEvent) for v in e.video_ids if topic_id in TOPICS_OF[v])
        assert delta.topics.get(topic_id, Counts()).exposures == exposures


@given(events_strategy, st.sampled_from([None, 3600.0]))
def test_fold_lists_each_users_exposed_videos_only_when_asked(events, half_life_s):
    delta = fold_events(events, TOPICS_OF, half_life_s, count_user_exposures=True)
    for user_id in range(6):
        shown = [v for e in events if isinstance(e, ExposureEvent) and e.user_id == user_id for v in e.video_ids]
        assert delta.user_exposed.get(user_id, []) == shown
    assert fold_events(events, TOPICS_OF, half_life_s).user_exposed == {}


@given(events_strategy, st.integers(0, 30))
def test_counts_are_monotone(events, split):
    first = fold_events(events[:split], TOPICS_OF, None)
    both = {
        v: merge_counts(first.videos.get(v, Counts()), fold_events(events[split:], TOPICS_OF, None).videos.get(v, Counts()), None)
        for v in range(10)
    }
    for video_id in range(10):
        before = first.videos.get(video_id, Counts())
        assert both[video_id].exposures >= before.exposures and both[video_id].clicks >= before.clicks


@given(events_strategy, st.floats(10.0, 1e6), st.randoms(use_true_random=False))
def test_decayed_counts_do_not_depend_on_batching_or_order(events, half_life_s, rnd):
    whole = fold_events(events, TOPICS_OF, half_life_s)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    cut = len(shuffled) // 2
    parts = [fold_events(shuffled[:cut], TOPICS_OF, half_life_s), fold_events(shuffled[cut:], TOPICS_OF, half_life_s)]
    for video_id in whole.videos:
        merged = merge_counts(parts[0].videos.get(video_id, Counts()), parts[1].videos.get(video_id, Counts()), half_life_s)
        assert math.isclose(merged.exposures, whole.videos[video_id].exposures, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(merged.clicks, whole.videos[video_id].clicks, rel_tol=1e-9, abs_tol=1e-9)


# allow_subnormal=False: a native library in the test process sets flush-to-zero, which Hypothesis refuses to mix with subnormals
_counts = st.floats(0, 1e6, allow_subnormal=False)


@given(
    _counts,
    _counts,
    st.floats(0, 2e9, allow_subnormal=False),
    st.floats(0, 1e7, allow_subnormal=False),
    st.one_of(st.none(), st.floats(1.0, 1e7)),
)
def test_decay_never_increases_a_count(exposures, clicks, ts, elapsed, half_life_s):
    counts = Counts(exposures, clicks, ts)
    later = decay_to(counts, ts + elapsed, half_life_s)
    assert later.exposures <= exposures and later.clicks <= clicks
    if half_life_s is None:
        assert later == counts


def test_decay_halves_after_one_half_life():
    later = decay_to(Counts(8.0, 2.0, 100.0), 100.0 + 3600.0, 3600.0)
    assert math.isclose(later.exposures, 4.0) and math.isclose(later.clicks, 1.0) and later.ts == 3700.0


def test_status_follows_tau1_tau2():
    assert video_status(Counts(9, 9), TAU1, TAU2) == "fresh"
    assert video_status(Counts(10, 1), TAU1, TAU2) == "established"
    assert video_status(Counts(100, 6), TAU1, TAU2) == "pruned"


# ------------------------------------------------------------ queues

videos_strategy = st.dictionaries(st.integers(0, 500), st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=300)


def _split(videos):
    established = [(v, c / e) for v, (e, c) in videos.items() if video_status(Counts(e, c), TAU1, TAU2) == "established"]
    fresh = [v for v, (e, c) in videos.items() if e < TAU1]
    return established, fresh


@settings(max_examples=200)
@given(videos_strategy, st.integers(1, 400), st.integers(0, 10**6))
def test_queue_invariants(videos, max_length, seed):
    established, fresh = _split(videos)
    queue = build_queue(established, fresh, len(fresh), SHARE, 50, max_length, random.Random(seed))
    ctr_of = dict(established)
    assert len(queue) == len(set(queue)) <= max_length
    # nothing in a queue below τ2 after τ1 exposures
    for video_id in queue:
        exposures, clicks = videos[video_id]
        assert exposures < TAU1 or clicks / exposures >= TAU2
    # queue order equals CTR order among established videos
    in_queue = [ctr_of[v] for v in queue if v in ctr_of]
    assert in_queue == sorted(in_queue, reverse=True)
    # the best established videos are the ones kept
    if in_queue:
        assert min(in_queue) >= max([c for v, c in established if v not in set(queue)], default=-1)
    # fresh share is 10% (± one video) whenever enough fresh videos exist
    n_fresh = sum(1 for v in queue if v not in ctr_of)
    if in_queue and len(fresh) >= math.ceil(SHARE * max_length) + 1:
        assert abs(n_fresh - SHARE * len(queue)) <= 1


def test_fresh_videos_are_spread_and_rotate():
    established = [(v, 0.5 - v / 1000) for v in range(90)]
    fresh = list(range(1000, 1100))
    rng = random.Random(1)
    queue = build_queue(established, fresh, len(fresh), SHARE, 50, 1000, rng)
    positions = [rank for rank, v in enumerate(queue) if v >= 1000]
    assert len(positions) == 10 and positions[0] < 10 and positions[-1] > 80
    draws = {frozenset(v for v in build_queue(established, fresh, len(fresh), SHARE, 50, 1000, rng) if v >= 1000) for _ in range(5)}
    assert len(draws) > 1  # redrawn each rebuild


def test_cold_topic_serves_fresh_videos():
    assert fresh_count(0, 500, SHARE, 50) == 50
    assert fresh_count(9, 500, SHARE, 50) == 1
    assert fresh_count(900, 3, SHARE, 50) == 3


def test_metrics_are_exposed_in_prometheus_format():
    from stream.metrics import PusherMetrics, WorkerMetrics

    metrics = WorkerMetrics()
    metrics.record_events(100, 7)
    metrics.record_events(50, 3)
    metrics.dead_letters.labels("bad JSON").inc(2)
    metrics.observe_lag({0: 12, 1: 3})
    metrics.observe_lag({0: 12})  # partition 1 was revoked: it leaves the gauge
    text = metrics.text()
    assert 'topicfs_stream_events_total{type="exposure"} 150.0' in text
    assert 'topicfs_stream_dead_letters_total{reason="bad JSON"} 2.0' in text
    assert 'topicfs_stream_consumer_lag{partition="0"} 12.0' in text and 'partition="1"' not in text
    assert "topicfs_stream_events_per_second" in text
    assert "topicfs_stream_push" not in text  # each process exports only its own metrics: pushes are the pusher's
    pusher = PusherMetrics()
    pusher.record_push(0.05, 7)
    text = pusher.text()
    assert "topicfs_stream_pushed_rows_total 7.0" in text and "topicfs_stream_push_latency_seconds_count 1.0" in text
    assert "topicfs_stream_events" not in text and "topicfs_stream_consumer_lag" not in text


@given(st.one_of(st.just(0.0), st.floats(1e-6, 100.0)), st.floats(0.01, 1.0))
def test_push_pause_keeps_pushes_within_their_share(push_s, share):
    pause = push_pause_s(push_s, share)
    assert pause >= 0
    if push_s > 0:
        assert math.isclose(push_s / (push_s + pause), share, rel_tol=1e-9)


@given(
    st.floats(0.0, 1e6, allow_subnormal=False), st.floats(0.0, 5.0, allow_subnormal=False), st.floats(0.01, 1.0), st.floats(0.01, 1.0)
)  # no subnormals: a library loaded earlier may set flush-to-zero
def test_queue_rebuilds_respect_both_the_interval_and_their_share(start, duration, interval, share):
    end = start + duration
    earliest = next_rebuild_at(start, end, interval, share)
    assert earliest >= start + interval - 1e-9  # never two starts closer than the interval
    assert duration <= share * (earliest - start) + 1e-6  # rebuilding took at most its share of the cycle
    if duration <= 1e-12:
        assert math.isclose(earliest, start + interval)  # a rebuild that cost nothing: the interval alone decides


def test_a_slow_rebuild_under_a_backlog_defers_the_next_one():
    # light load: a 5 ms rebuild, 0.1 s interval, 20% share → the next starts on the interval
    assert math.isclose(next_rebuild_at(10.0, 10.005, 0.1, 0.2), 10.1)
    # backlog: a 50 ms rebuild at a 20% share → 200 ms of pause after it ends
    assert math.isclose(next_rebuild_at(10.0, 10.05, 0.1, 0.2), 10.25)


def test_dead_letter_reasons_become_bounded_kinds():
    from stream.logic import Limits, parse_event, reason_kind

    samples = {
        b"{oops": "bad JSON",
        b"[1]": "not a JSON object",
        b'{"type": "view", "event_id": "a", "user_id": 1, "video_id": 2, "ts": 1.8e9}': "bad type",
        b'{"type": "click", "event_id": "a", "user_id": "1", "video_id": 2, "ts": 1.8e9}': "user_id invalid",
        b'{"type": "click", "event_id": "a", "user_id": 1, "video_id": 2, "ts": 5}': "bad ts",
        b'{"type": "exposure", "event_id": "a", "user_id": 1, "video_ids": [], "ts": 1.8e9}': "no video",
    }
    for raw, kind in samples.items():
        _, errors = parse_event(raw, Limits())
        assert errors and reason_kind(errors[0]) == kind, (raw, errors)
    assert reason_kind("unknown video_id 12345") == reason_kind("unknown video_id 7") == "unknown video"
    assert reason_kind("payload of 70001 bytes exceeds max_payload_bytes=65536") == "oversize"
