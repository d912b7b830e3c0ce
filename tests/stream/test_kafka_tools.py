"""The kafka-python tools: `topicfs stream produce --interactions`, `stream dead-letters`, `stream topics`.

Unit tests of the click log -> events grouping and of the dead-letter planning; then, as a user runs them
(subprocesses of `python -m topicfs_app.cli` against the embedded broker, a real worker, the private Redis):
produce gives exact counts; dead letters are summarised and re-injected until the counts equal the whole log's.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from stream.kafka_tools import (
    KafkaToolError,
    Letter,
    check_event_times,
    correct,
    interactions_to_events,
    plan_reinjection,
    produce_events,
    read_dead_letters,
    reason_class,
    summarise,
)
from stream.logic import Limits, parse_event
from stream.process import WorkerProcess, child_env
from stream.replay import video_published_events
from stream_truth import Truth, assert_state_matches

T0 = 1_767_225_600.0  # 2026-01-01 UTC


def log_frame(rows: list[tuple[int, int, int, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "video_id", "clicked", "ts"])
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    return frame


def test_rows_become_refreshes_per_user_and_window_in_timestamp_order():
    log = log_frame(
        [
            (1, 10, 0, T0 + 5),
            (2, 30, 1, T0 + 1),
            (1, 11, 1, T0 + 20),
            (1, 12, 0, T0 + 59.9),
            (1, 13, 1, T0 + 66),
            (2, 31, 0, T0 + 2),
            (1, 10, 1, T0 + 66),
        ]
    )
    events = interactions_to_events(log, window_s=60, id_prefix="f")
    assert events == [
        {"type": "exposure", "event_id": "f-x2", "user_id": 2, "request_id": "f-x2", "video_ids": [30, 31], "ts": T0 + 1},
        {"type": "click", "event_id": "f-c2", "user_id": 2, "video_id": 30, "ts": T0 + 1},
        {"type": "exposure", "event_id": "f-x0", "user_id": 1, "request_id": "f-x0", "video_ids": [10, 11, 12], "ts": T0 + 5},
        {"type": "click", "event_id": "f-c3", "user_id": 1, "video_id": 11, "ts": T0 + 20},
        {"type": "exposure", "event_id": "f-x1", "user_id": 1, "request_id": "f-x1", "video_ids": [13, 10], "ts": T0 + 66},
        {"type": "click", "event_id": "f-c5", "user_id": 1, "video_id": 13, "ts": T0 + 66},
        {"type": "click", "event_id": "f-c7", "user_id": 1, "video_id": 10, "ts": T0 + 66},
    ]
    limits = Limits(min_event_ts_s=946684800.0, max_event_ts_s=T0 + 1e6)
    assert all(parse_event(json.dumps(e).encode(), limits)[1] == [] for e in events)  # every message valid


def test_a_refresh_holds_at_most_max_videos_and_counts_equal_the_rows():
    rng = np.random.default_rng(3)
    log = log_frame(
        [
            (int(u), int(v), int(c), T0 + float(t))
            for u, v, c, t in zip(rng.integers(0, 4, 500), rng.integers(0, 40, 500), rng.integers(0, 2, 500), rng.uniform(0, 600, 500))
        ]
    )
    events = interactions_to_events(log, window_s=3600, max_videos=7)
    exposures = [e for e in events if e["type"] == "exposure"]
    assert max(len(e["video_ids"]) for e in exposures) == 7
    assert Counter(v for e in exposures for v in e["video_ids"]) == Counter(log["video_id"].tolist())
    assert Counter(e["video_id"] for e in events if e["type"] == "click") == Counter(log.loc[log["clicked"] == 1, "video_id"].tolist())
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def test_a_log_before_2000_is_refused_with_the_way_out(stream_settings):
    events = interactions_to_events(log_frame([(1, 2, 1, 880_000_000.0)]))  # 1997, like MovieLens-100k
    with pytest.raises(KafkaToolError, match="2 events before 2000-01-01.*--shift-to-now"):
        check_event_times(events, stream_settings)


def test_reason_classes_group_letters_by_cause():
    assert reason_class("unknown video_id 17") == reason_class("unknown video_id 4") == "unknown video_id N"
    assert reason_class("user_id must be an integer, got str") == "user_id must be an integer, got …"
    assert reason_class("bad JSON: Expecting value: line 1 column 1 (char 0)") == "bad JSON"
    letters = [Letter(0, i, {"reasons": [f"unknown video_id {i}"], "source_topic": "e", "payload": "{}"}) for i in range(5)]
    letters.append(Letter(1, 0, {"reasons": ["bad JSON: x", "unknown video_id 3"], "source_topic": "e", "payload": "{"}))
    summary = summarise(letters, samples_per_reason=1)
    assert summary.total == 6 and summary.by_reason == Counter({"unknown video_id N": 6, "bad JSON": 1})
    assert "       6  unknown video_id N" in summary.text() and summary.text().count("e.g.") == 2


def letter(message: dict | bytes, reasons: list[str], settings, partition=0, offset=0) -> Letter:
    raw = message if isinstance(message, bytes) else json.dumps(message).encode()
    return Letter(
        0,
        offset,
        {
            "reasons": reasons,
            "source_topic": settings.stream.events_topic,
            "partition": partition,
            "offset": offset,
            "payload": raw.decode("utf-8", "replace"),
            "payload_b64": base64.b64encode(raw).decode(),
        },
    )


def test_reinjection_sends_only_what_was_not_counted_and_corrects_what_it_can(stream_settings):
    partly = {"type": "exposure", "event_id": "x1", "user_id": 4, "video_ids": [1, 99, "v", 2, 99], "ts": T0}
    untyped_click = {"event_id": 7, "user_id": "4", "video_id": "3", "ts": T0 * 1000}
    letters = [
        letter(
            partly,
            ["video_ids[2] must be an integer >= 0, got 'v'", "unknown video_id 99", "unknown video_id 99"],
            stream_settings,
            offset=5,
        ),
        letter(untyped_click, ["type must be 'exposure' or 'click', got None"], stream_settings, offset=2),
        letter(b"\xff garbage", ["bad JSON: ..."], stream_settings, offset=3),
    ]
    everything = plan_reinjection(letters, stream_settings, "all", now_s=T0)
    values = [json.loads(v) if v.startswith(b"{") else v for _, _, v in everything.messages]
    assert values[0] == {**untyped_click}  # re-sent in source order (offset 2 first), unchanged
    assert values[1] == b"\xff garbage"
    assert values[2] == {**partly, "event_id": "x1:rest", "video_ids": [99, "v", 99]}  # 1 and 2 were counted already
    assert [key for _, key, _ in everything.messages] == [b"4", None, b"4"]
    corrected = plan_reinjection(letters, stream_settings, "corrected", now_s=T0)
    assert [json.loads(v) for _, _, v in corrected.messages] == [{"type": "click", "event_id": "7", "user_id": 4, "video_id": 3, "ts": T0}]
    assert corrected.skipped == Counter(
        {"not a JSON object: nothing to correct": 1, "still invalid after correction: video_ids[N] must be an integer >= N, got …": 1}
    )
    assert correct({"video_ids": ["1", 2], "user_id": 1, "ts": "2026-01-01T00:00:00", "event_id": "a"}, "events") == {
        "type": "exposure",
        "video_ids": [1, 2],
        "user_id": 1,
        "ts": T0,
        "event_id": "a",
    }


# ---------------------------------------------------------------- as a user runs them


def cli(settings, *args, timeout=120, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "topicfs_app.cli", "stream", *args],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def eventually(check, worker, timeout_s=90.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline or not worker.alive():
                print(worker.log()[-3000:])
                raise
            time.sleep(0.5)


def truth_from(exposed: list[int], clicks: list[tuple[int, int]], topics_of: dict[int, list[int]]) -> Truth:
    """Counts straight from log rows: every row an exposure, clicks in the order the worker gets them."""
    truth = Truth()
    for video_id in exposed:
        truth.video_exposures[video_id] += 1
        for topic_id in topics_of[video_id]:
            truth.topic_exposures[topic_id] += 1
    for user_id, video_id in clicks:
        truth.video_clicks[video_id] += 1
        for topic_id in topics_of[video_id]:
            truth.topic_clicks[topic_id] += 1
        truth.user_clicks[user_id].append(video_id)
    return truth


def make_log(n_rows=3000, n_users=40, n_videos=120, seed=11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return log_frame(
        [
            (int(u), int(v), int(c), T0 + float(t))
            for u, v, c, t in zip(
                rng.integers(0, n_users, n_rows), rng.integers(0, n_videos, n_rows), rng.random(n_rows) < 0.2, rng.uniform(0, 86400, n_rows)
            )
        ]
    )


def state_check(client, settings, truth, topics_of):
    config = settings.stream
    return lambda: assert_state_matches(
        client, settings.redis.key_prefix, truth, topics_of, config.recent_clicks, config.min_exposures, config.min_ctr, config.fresh_share
    )


@pytest.mark.integration
@pytest.mark.slow
def test_produce_then_dead_letters_reinjected_give_the_whole_logs_exact_counts(stream_settings, tmp_path):
    from topicfs.redis_client import sync_client

    settings = stream_settings
    n_videos, late = 120, set(range(100, 120))  # videos 100-119 are published only after the replay
    log = make_log(n_videos=n_videos)
    path = tmp_path / "clicks.csv"
    frame = log.assign(ts=log["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    frame.to_csv(path, index=False)
    topics_of = {v: [v % 7, 7 + v % 3] for v in range(n_videos)}

    created = cli(settings, "topics", "--create")
    assert created.returncode == 0, created.stderr[-2000:]
    assert created.stdout.count(": ok") == 3 and created.stdout.count("created, 4 partitions") == 3
    produce_events(
        settings.kafka,
        settings.stream.videos_topic,
        video_published_events({v: topics_of[v] for v in range(100)}, T0),
        key_field="video_id",
    )
    client = sync_client(settings.redis)
    worker = WorkerProcess.start(settings)
    try:
        replayed = cli(settings, "produce", "--interactions", str(path), "--window", "600", "--rate", "5000")
        assert replayed.returncode == 0, replayed.stderr[-2000:]
        report = json.loads(replayed.stdout)
        events = interactions_to_events(log, window_s=600, id_prefix="clicks")
        assert report["rows"] == len(log) and report["sent"] == len(events) == sum(report["per_partition"].values())
        assert report["click_messages"] == int(log["clicked"].sum())

        ordered = log.sort_values("ts", kind="stable")
        known_rows = ordered[~ordered["video_id"].isin(late)]
        clicks_known = [(int(r.user_id), int(r.video_id)) for r in known_rows.itertuples() if r.clicked]
        first_pass = truth_from(known_rows["video_id"].tolist(), clicks_known, topics_of)
        eventually(state_check(client, settings, first_pass, {v: t for v, t in topics_of.items() if v not in late}), worker)

        summary = cli(settings, "dead-letters", "--samples", "1")
        assert summary.returncode == 0, summary.stderr[-2000:]
        late_rows = log[log["video_id"].isin(late)]
        # one letter per click on a late video, one per exposure message listing late videos
        late_exposures = sum(1 for e in events if e["type"] == "exposure" and set(e["video_ids"]) & late)
        late_clicks = int(late_rows["clicked"].sum())
        assert (
            summary.stdout.splitlines()[0]
            == f"{late_exposures + late_clicks} dead letters from {settings.stream.events_topic} ({late_exposures + late_clicks})"
        )
        assert f"{late_exposures + late_clicks:>8}  unknown video_id N" in summary.stdout
        assert summary.stdout.count("e.g.") == 1

        produce_events(
            settings.kafka, settings.stream.videos_topic, video_published_events({v: topics_of[v] for v in late}, T0), key_field="video_id"
        )
        time.sleep(2.0)  # the worker follows the videos topic; let it register them before the letters come back
        again = cli(settings, "dead-letters", "--reinject", "all", "--samples", "0")
        assert again.returncode == 0, again.stderr[-2000:]
        assert f"re-injected {late_exposures + late_clicks} messages from {late_exposures + late_clicks} letters (all)" in again.stdout

        late_sorted = late_rows.sort_values("ts", kind="stable")
        clicks_late = [(int(r.user_id), int(r.video_id)) for r in late_sorted.itertuples() if r.clicked]
        whole = truth_from(log["video_id"].tolist(), clicks_known + clicks_late, topics_of)
        whole.user_clicks = {
            u: [v for uu, v in clicks_known if uu == u] + [v for uu, v in clicks_late if uu == u]
            for u in {u for u, _ in clicks_known + clicks_late}
        }
        eventually(state_check(client, settings, whole, topics_of), worker)

        twice = cli(settings, "dead-letters", "--reinject", "all", "--samples", "0")
        assert twice.returncode == 0 and "re-injected 0 messages from 0 letters (all)" in twice.stdout
        assert f"{late_exposures + late_clicks} letters were re-injected before" in twice.stdout
        time.sleep(1.0)
        state_check(client, settings, whole, topics_of)()  # nothing counted twice
    finally:
        worker.stop()


@pytest.mark.integration
@pytest.mark.slow
def test_corrected_reinjection_fixes_messages_written_without_type_and_with_text_ids(stream_settings):
    from topicfs.redis_client import sync_client

    settings = stream_settings
    topics_of = {v: [v % 5] for v in range(30)}
    assert cli(settings, "topics", "--create").returncode == 0  # before anything is sent: a broker may auto-create topics
    produce_events(settings.kafka, settings.stream.videos_topic, video_published_events(topics_of, T0), key_field="video_id")
    bad = [  # what a producer that followed the old README wrote: no type; some ids as text; ms timestamps
        {"event_id": "a1", "user_id": 3, "request_id": "a1", "video_ids": [1, 2, 3], "ts": T0},
        {"event_id": "a2", "user_id": "3", "video_id": "2", "ts": (T0 + 5) * 1000},
        {"event_id": "a3", "user_id": 8, "video_id": 2, "ts": T0 + 9},
        {"type": "click", "event_id": "a4", "user_id": 8, "video_id": 2, "ts": "soon"},  # cannot be corrected
    ]
    produce_events(settings.kafka, settings.stream.events_topic, bad)
    client = sync_client(settings.redis)
    worker = WorkerProcess.start(settings)
    try:

        def four_letters():
            assert len(read_dead_letters(settings.kafka, settings.stream.dead_letter_topic, idle_s=0.5)) == 4

        eventually(four_letters, worker)
        fixed = cli(settings, "dead-letters", "--reinject", "corrected", "--samples", "0")
        assert fixed.returncode == 0, fixed.stderr[-2000:]
        assert "re-injected 3 messages from 4 letters (corrected)" in fixed.stdout
        assert (
            "not re-injected: 1 letters: still invalid after correction: ts must be a finite number of epoch seconds, got …" in fixed.stdout
        )
        truth = truth_from([1, 2, 3], [(3, 2), (8, 2)], topics_of)
        eventually(state_check(client, settings, truth, topics_of), worker)
        assert "re-injected 0 messages from 0 letters" in cli(settings, "dead-letters", "--reinject", "corrected").stdout
        again = cli(settings, "dead-letters", "--reinject", "corrected", "--from-start", "--samples", "0")
        assert "re-injected 3 messages from 4 letters (corrected)" in again.stdout  # --from-start sends them again
    finally:
        worker.stop()


@pytest.mark.integration
def test_topics_says_what_differs(stream_settings):
    from stream.broker import create_topics
    import asyncio

    settings = stream_settings
    asyncio.run(create_topics(settings.kafka.bootstrap_servers, {settings.stream.events_topic: 2}))
    checked = cli(settings, "topics")
    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    assert lines[0].startswith(f"{settings.stream.events_topic} (events): 2 partitions, replication 1, ")
    assert "DIFFERS: 2 partitions, the settings say 4 (stream.partitions" in lines[0]
    assert lines[1] == f"{settings.stream.videos_topic} (videos): missing (`topicfs stream topics --create` creates it)"
    created = cli(settings, "topics", "--create")
    assert (
        created.returncode == 1
        and "created, 4 partitions" in created.stdout.splitlines()[1]
        and "DIFFERS" in created.stdout.splitlines()[0]
    )


def test_bad_input_is_one_line_and_exit_2(stream_settings, tmp_path):
    missing = cli(stream_settings, "produce", "--interactions", str(tmp_path / "nope.parquet"))
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: ") and "nope.parquet" in missing.stderr
    assert "Traceback" not in missing.stderr
    both = cli(stream_settings, "produce", "--interactions", str(tmp_path / "x.csv"), "--rate", "5", "--speedup", "2")
    assert both.returncode == 2 and both.stderr.strip() == "error: --rate and --speedup exclude each other: give one"
    old = tmp_path / "ml.csv"
    log_frame([(1, 2, 1, 880_000_000.0)]).to_csv(old, index=False)
    refused = cli(stream_settings, "produce", "--interactions", str(old))
    assert refused.returncode == 2 and "--shift-to-now" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    wrong = cli(stream_settings, "dead-letters", "--reinject", "some")
    assert wrong.returncode == 2 and wrong.stderr.strip() == "error: --reinject must be 'all' or 'corrected', got 'some'"


@pytest.mark.integration
def test_rate_and_speedup_pace_the_replay(stream_settings):
    settings = stream_settings
    from stream.kafka_tools import check_topics

    check_topics(settings, create=True)
    events = [{"type": "click", "event_id": f"p{i}", "user_id": 1, "video_id": 1, "ts": T0 + i} for i in range(5)]
    started = time.perf_counter()
    assert sum(produce_events(settings.kafka, settings.stream.events_topic, events, speedup=4.0).values()) == 5
    assert time.perf_counter() - started >= 1.0  # the last event is 4 s of log time after the first: 1 s at 4x
    started = time.perf_counter()
    assert sum(produce_events(settings.kafka, settings.stream.events_topic, events * 2, rate_per_s=8.0).values()) == 10
    assert time.perf_counter() - started >= 10 / 8.0 - 0.01


@pytest.mark.integration
def test_shift_to_now_replays_an_old_log_ending_now_with_its_gaps(stream_settings, tmp_path):
    from stream.kafka_tools import consumer
    from kafka import TopicPartition

    settings = stream_settings
    old = log_frame([(1, 2, 1, 880_000_000.0), (2, 3, 0, 880_000_500.0), (1, 4, 1, 880_086_400.0)])  # 1997, like MovieLens-100k
    path = tmp_path / "ml.parquet"
    old.to_parquet(path)
    before = time.time()
    done = cli(settings, "produce", "--interactions", str(path), "--shift-to-now")
    assert done.returncode == 0, done.stderr[-2000:]
    reader = consumer(settings.kafka)
    try:
        parts = [TopicPartition(settings.stream.events_topic, p) for p in sorted(reader.partitions_for_topic(settings.stream.events_topic))]
        reader.assign(parts)
        reader.seek_to_beginning(*parts)
        sent = sorted((json.loads(record.value) for record in reader), key=lambda e: e["event_id"])
    finally:
        reader.close()
    original = sorted(interactions_to_events(old, id_prefix="ml"), key=lambda e: e["event_id"])
    assert [e["event_id"] for e in sent] == [e["event_id"] for e in original]
    shift = sent[0]["ts"] - original[0]["ts"]
    assert all(abs(s["ts"] - o["ts"] - shift) < 1e-3 for s, o in zip(sent, original))  # same gaps
    assert before - 1 <= max(e["ts"] for e in sent) <= time.time()  # the last event is now
