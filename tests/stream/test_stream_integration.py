"""End to end against the real broker (embedded tansu) and the private Redis, with worker processes:
(a) exact after a replay, (b) kill -9 mid-replay, (c) two workers one stopped, (d) Redis emptied and rebuilt,
(e) malformed events dead-lettered. Every check compares with ground truth counted from the produced events."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
import urllib.request

import pytest

from stream.app import prepare
from stream.demo import applied_offset
from stream.process import WorkerProcess
from stream.replay import produce
from stream.synthetic_stream import synthetic_stream
from stream_truth import assert_state_matches, dead_letters, flush_all, truth_of
from topicfs.keys import KeyLayout
from topicfs.redis_client import async_client, sync_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def small(settings):
    settings.synthetic.n_videos = 300
    settings.synthetic.n_true_topics = 6
    return settings


def setup_stream(settings, n_users=60, n_days=3):
    """Create topics, publish the videos; returns (events, topics_of)."""
    videos, events = synthetic_stream(small(settings), n_users=n_users, n_days=n_days)
    videos, events = list(videos), list(events)

    async def go():
        await prepare(settings, async_client(settings.redis))
        await produce(settings.kafka.bootstrap_servers, settings.stream.videos_topic, videos, key_field="video_id")

    asyncio.run(go())
    return events, {v["video_id"]: v["topic_ids"] for v in videos}


def replay(settings, messages, rate=None) -> dict[int, int]:
    return asyncio.run(produce(settings.kafka.bootstrap_servers, settings.stream.events_topic, messages, rate_per_s=rate))


def applied(client, settings) -> int:
    """Messages every shard has applied."""
    layout = KeyLayout.from_config(settings.redis)
    return sum(applied_offset(client, layout, settings.stream.events_topic, p) + 1 for p in range(settings.stream.partitions))


def dirty(client, settings) -> bool:
    layout = KeyLayout.from_config(settings.redis)
    return any(client.scard(layout.dirty(s)) for s in layout.all_shards())


def wait_done(client, settings, n_messages, workers, timeout_s=90.0):
    """Until every produced message is applied and every changed queue rebuilt."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if applied(client, settings) >= n_messages and not dirty(client, settings):
            return
        if not any(w.alive() for w in workers):
            break
        time.sleep(0.3)
    logs = "\n".join(w.log()[-3000:] for w in workers)
    raise AssertionError(f"applied {applied(client, settings)} of {n_messages} messages\n{logs}")


def check(client, settings, events, topics_of):
    config = settings.stream
    assert_state_matches(
        client,
        KeyLayout.from_config(settings.redis),
        truth_of(events, topics_of),
        topics_of,
        config.recent_clicks,
        config.min_exposures,
        config.min_ctr,
        config.fresh_share,
    )


def test_a_replay_gives_exact_counts_and_queues(deployed_stream_settings):
    events, topics_of = setup_stream(deployed_stream_settings)
    client = sync_client(deployed_stream_settings.redis)
    worker = WorkerProcess.start(deployed_stream_settings)
    try:
        sent = replay(deployed_stream_settings, events)
        wait_done(client, deployed_stream_settings, sum(sent.values()), [worker])
        check(client, deployed_stream_settings, events, topics_of)
        layout = KeyLayout.from_config(deployed_stream_settings.redis)
        popular = [t for s in layout.all_shards() for t in client.zrevrange(layout.popular(s), 0, -1)]
        assert len(popular) == deployed_stream_settings.synthetic.n_true_topics
    finally:
        worker.stop()


def replay_in_background(settings, client, messages, rate, workers, warm_up=100):
    """Replay the first ``warm_up`` messages and wait until they are applied (the group has joined, however slow
    the machine), then the rest at ``rate`` in a thread, so a stop or kill really lands in the middle of the stream.
    Returns (thread, messages sent per partition in the whole replay, filled when the thread ends)."""
    import threading
    from collections import Counter

    first = replay(settings, messages[:warm_up])
    wait_applied_at_least(client, settings, warm_up, workers[0], timeout_s=90.0)
    sent: dict[int, int] = {}
    thread = threading.Thread(target=lambda: sent.update(Counter(first) + Counter(replay(settings, messages[warm_up:], rate))), daemon=True)
    thread.start()
    return thread, sent


def wait_applied_at_least(client, settings, n, worker, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while applied(client, settings) < n:
        assert worker.alive() and time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.05)


def test_b_kill_9_mid_replay_then_restart_is_exact(deployed_stream_settings):
    events, topics_of = setup_stream(deployed_stream_settings, n_users=80)
    client = sync_client(deployed_stream_settings.redis)
    worker = WorkerProcess.start(deployed_stream_settings)
    try:
        thread, sent = replay_in_background(deployed_stream_settings, client, events, rate=100, workers=[worker])
        kills = []
        for share in (0.08, 0.16, 0.24):  # kill -9 three times, each mid-stream, restarting in between
            wait_applied_at_least(client, deployed_stream_settings, int(len(events) * share), worker)
            if not thread.is_alive():
                break
            worker.kill()
            kills.append(applied(client, deployed_stream_settings))
            worker = WorkerProcess.start(deployed_stream_settings)
        thread.join()
        assert len(kills) == 3 and kills[-1] < len(events), f"kills at {kills} of {len(events)}: not all mid-stream"
        wait_done(client, deployed_stream_settings, sum(sent.values()), [worker])
        check(client, deployed_stream_settings, events, topics_of)
    finally:
        worker.stop()


def test_c_two_workers_one_stopped_mid_stream_is_exact(deployed_stream_settings):
    events, topics_of = setup_stream(deployed_stream_settings, n_users=80)
    client = sync_client(deployed_stream_settings.redis)
    workers = [WorkerProcess.start(deployed_stream_settings), WorkerProcess.start(deployed_stream_settings)]
    try:
        thread, sent = replay_in_background(deployed_stream_settings, client, events, rate=400, workers=workers)
        wait_applied_at_least(client, deployed_stream_settings, len(events) // 3, workers[0])
        workers[0].stop()
        at_stop = applied(client, deployed_stream_settings)
        thread.join()
        assert at_stop < len(events), "the stop came after the replay: nothing tested"
        wait_done(client, deployed_stream_settings, sum(sent.values()), workers[1:], timeout_s=120)
        check(client, deployed_stream_settings, events, topics_of)
    finally:
        for worker in workers:
            worker.stop()


def test_d_redis_emptied_while_down_is_rebuilt_from_the_log(deployed_stream_settings):
    events, topics_of = setup_stream(deployed_stream_settings)
    client = sync_client(deployed_stream_settings.redis)
    worker = WorkerProcess.start(deployed_stream_settings)
    try:
        sent = replay(deployed_stream_settings, events)
        wait_done(client, deployed_stream_settings, sum(sent.values()), [worker])
        pattern = KeyLayout.from_config(deployed_stream_settings.redis).pattern("stats:*")
        before = {k: client.hgetall(k) for k in client.scan_iter(match=pattern)}
        worker.stop()
        flush_all(client)
        worker = WorkerProcess.start(deployed_stream_settings)
        wait_done(client, deployed_stream_settings, sum(sent.values()), [worker])
        check(client, deployed_stream_settings, events, topics_of)
        after = {k: client.hgetall(k) for k in client.scan_iter(match=pattern)}
        assert before == after
    finally:
        worker.stop()


def lose_state_mid_stream(settings, lose) -> str:
    """Replay at 400 messages/s; once a quarter is applied, ``lose(client)`` destroys Redis state under the running
    worker; every count, history and queue must end exact. Returns the worker's log."""
    events, topics_of = setup_stream(settings, n_users=80)
    client = sync_client(settings.redis)
    worker = WorkerProcess.start(settings)
    try:
        thread, sent = replay_in_background(settings, client, events, rate=400, workers=[worker])
        wait_applied_at_least(client, settings, len(events) // 4, worker)
        lose(client)
        thread.join()
        assert len(events) // 4 < sum(sent.values())
        wait_done(client, settings, sum(sent.values()), [worker], timeout_s=120)
        check(client, settings, events, topics_of)
        return worker.log()
    finally:
        worker.stop()


def test_f_redis_emptied_under_a_running_worker_is_detected_and_rebuilt(deployed_stream_settings):
    """FLUSHALL (every master) while the worker applies a replay: the worker notices, logs an error, counts it, replays
    the log from its start, and every count, history and queue ends exact (today's main lost a third)."""
    log = lose_state_mid_stream(deployed_stream_settings, flush_all)
    assert "was lost" in log and "rebuilt lost Redis state" in log, log[-3000:]


def test_g_one_master_restarted_empty_is_rebuilt(deployed_stream_settings, request):
    """On the cluster, one master is killed and started again empty mid-stream: the shards it held are rebuilt."""
    if not deployed_stream_settings.redis.cluster:
        pytest.skip("a cluster scenario")
    cluster = request.getfixturevalue("redis_cluster")
    log = lose_state_mid_stream(deployed_stream_settings, lambda client: cluster.restart_node_empty(1))
    assert "rebuilt lost Redis state" in log, log[-3000:]


def test_h_kill_9_three_times_during_a_200k_event_replay_on_the_cluster(deployed_stream_settings):
    """The acceptance run of the cluster: 200,000+ events (exposed videos + clicks) already in the log, the worker
    killed -9 three times while it applies them and restarted each time: 0 lost, 0 doubled."""
    settings = deployed_stream_settings
    if not settings.redis.cluster:
        pytest.skip("the single-node kill test is test_b")
    events, topics_of = setup_stream(settings, n_users=1500)
    n_events = sum(len(e["video_ids"]) if e["type"] == "exposure" else 1 for e in events)
    assert n_events >= 200_000
    client = sync_client(settings.redis)
    sent = replay(settings, events)
    n_messages = sum(sent.values())
    worker = WorkerProcess.start(settings)
    try:
        kills = []
        for share in (0.2, 0.45, 0.7):
            wait_applied_at_least(client, settings, int(n_messages * share), worker, timeout_s=180)
            worker.kill()
            kills.append(applied(client, settings))
            worker = WorkerProcess.start(settings)
        assert kills[-1] < n_messages, f"kills at {kills} of {n_messages}: the last came after the replay"
        wait_done(client, settings, n_messages, [worker], timeout_s=300)
        check(client, settings, events, topics_of)
    finally:
        worker.stop()


def malformed(rng: random.Random, valid: dict, n_videos: int) -> tuple[bytes, dict | None]:
    """A bad message derived from a valid one, and the valid part the worker must still count (or None)."""
    kind = rng.randrange(7)
    if kind == 0:
        return json.dumps(valid).encode()[:-3], None  # truncated JSON
    if kind == 1:
        return json.dumps({**valid, "user_id": str(valid["user_id"])}).encode(), None  # wrong type
    if kind == 2:
        return json.dumps({**valid, "ts": 4.1e10}).encode(), None  # absurd timestamp (year 3269)
    if kind == 3:
        return json.dumps({**valid, "padding": "x" * 70000}).encode(), None  # oversize
    if kind == 4:
        bad = {"type": "click", "event_id": valid["event_id"], "user_id": valid["user_id"], "video_id": n_videos + 17, "ts": valid["ts"]}
        return json.dumps(bad).encode(), None  # unknown video
    if kind == 5:
        return b"\xff\xfe not even text", None
    shown = [n_videos + 5, rng.randrange(n_videos), "v", rng.randrange(n_videos)]
    partly = {"type": "exposure", "event_id": valid["event_id"] + "p", "user_id": valid["user_id"], "video_ids": shown, "ts": valid["ts"]}
    return json.dumps(partly).encode(), {**partly, "video_ids": [shown[1], shown[3]]}


def test_e_malformed_events_go_to_the_dead_letter_topic_and_good_ones_count(stream_settings):
    events, topics_of = setup_stream(stream_settings, n_users=40, n_days=2)
    rng = random.Random(9)
    n_videos = stream_settings.synthetic.n_videos
    mixed, counted = [], []
    bad_indices = set(rng.sample(range(len(events) + 10000), 10000))
    source = iter(events)
    for index in range(len(events) + 10000):
        if index in bad_indices:
            template = events[rng.randrange(len(events))]
            raw, valid_part = malformed(rng, template, n_videos)
            mixed.append(raw)
            if valid_part is not None:
                counted.append(valid_part)
        else:
            event = next(source)
            mixed.append(event)
            counted.append(event)
    client = sync_client(stream_settings.redis)
    worker = WorkerProcess.start(stream_settings)
    try:
        sent = replay(stream_settings, mixed)
        wait_done(client, stream_settings, sum(sent.values()), [worker], timeout_s=150)
        check(client, stream_settings, counted, topics_of)
    finally:
        worker.stop()
    letters = dead_letters(stream_settings.kafka.bootstrap_servers, stream_settings.stream.dead_letter_topic)
    sources = {(letter["partition"], letter["offset"]) for letter in letters}
    assert len(sources) == 10000
    assert all(letter["reasons"] for letter in letters)


def _pusher_pids(worker_pid: int) -> list[int]:
    """Pids of the ``stream.cli pusher`` children of ``worker_pid``."""
    import subprocess

    out = subprocess.run(["pgrep", "-P", str(worker_pid), "-f", "stream.cli pusher"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_worker_pusher_brings_every_count_into_feast_and_dies_with_its_worker(stream_settings, tmp_path):
    from stream.sinks import write_push_repo

    stream_settings.stream.feast_repo_path = tmp_path / "feast_repo"
    with socket.socket() as probe:  # a free port for the pusher's Prometheus endpoint
        probe.bind(("127.0.0.1", 0))
        stream_settings.stream.pusher_metrics_port = probe.getsockname()[1]
    feast_store = write_push_repo(
        stream_settings.stream.feast_repo_path, stream_settings.redis.url, project=f"p{stream_settings.redis.key_prefix}".replace("-", "_")
    )
    events, topics_of = setup_stream(stream_settings, n_users=30, n_days=2)
    client = sync_client(stream_settings.redis)
    worker = WorkerProcess.start(stream_settings)
    try:
        sent = replay(stream_settings, events)
        wait_done(client, stream_settings, sum(sent.values()), [worker])
        truth = truth_of(events, topics_of)
        videos = sorted(truth.video_exposures)
        deadline = time.monotonic() + 30
        while True:  # the pusher pushes every push_interval_s: wait until Feast has caught up
            online = feast_store.get_online_features(
                features=["video_stats:exposures", "video_stats:clicks"], entity_rows=[{"video_id": v} for v in videos]
            ).to_dict()
            expected_exposures = [truth.video_exposures[v] for v in videos]
            expected_clicks = [truth.video_clicks.get(v, 0) for v in videos]
            if online["exposures"] == expected_exposures and online["clicks"] == expected_clicks:
                break
            assert time.monotonic() < deadline, "Feast never caught up with the counts"
            time.sleep(0.2)
        pushers = _pusher_pids(worker.process.pid)
        assert len(pushers) == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{stream_settings.stream.pusher_metrics_port}/metrics", timeout=5) as response:
            served = response.read().decode()
        pushed = [line for line in served.splitlines() if line.startswith("topicfs_stream_pushed_rows_total ")]
        assert pushed and float(pushed[0].split()[1]) >= len(videos)  # every video's row went through this pusher
        assert "topicfs_stream_push_latency_seconds_count" in served
        worker.kill()  # kill -9: the pusher must not outlive its worker
        deadline = time.monotonic() + 10
        while _alive(pushers[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pushers[0]), "the pusher outlived its killed worker"
    finally:
        worker.stop()
