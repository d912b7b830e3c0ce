"""Operations of the stream's processes, run as a user runs them (subprocesses, real broker, private Redis):
the worker's /health during a replay, JSON logs without escape codes, metrics on 127.0.0.1 and per process,
`stream replay` leaving the learned topics alone, `stream broker` stopping its broker on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import redis

from stream.process import WorkerProcess, child_env
from stream.replay import produce
from stream.synthetic_stream import synthetic_stream
from topicfs.keys import decode_ids

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                if len(address) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    found.add(address)
    return found


def get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.status == 200
        return response.read().decode()


def metric(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def wait_for(condition, timeout_s: float, what: str, process: WorkerProcess | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        if process is not None and not process.alive():
            break
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout_s} s" + (f"\n{process.log()[-4000:]}" if process is not None else ""))


def learned_stream(settings, topic_of=lambda video_id: [100 + video_id % 5]):
    """A small synthetic stream and a VIDEO_TOPICS table of 'learned' topics (not the catalogue's true topics 0-5) in
    the worker's tables_dir, which the worker loads on start. Returns (events, learned, true topics)."""
    settings.synthetic.n_videos = 300
    settings.synthetic.n_true_topics = 6
    videos, events = synthetic_stream(settings, n_users=60, n_days=3)
    true = {v["video_id"]: v["topic_ids"] for v in videos}
    learned = {video_id: topic_of(video_id) for video_id in true}
    settings.paths.tables_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"video_id": list(learned), "topic_ids": list(learned.values())}).to_parquet(
        settings.paths.tables_dir / "video_topics.parquet"
    )
    return list(events), learned, true


def video_topics_in_redis(client: redis.Redis, prefix: str) -> dict[int, list[int]]:
    """Every video's topics as the stream keeps them (``...video:{id}:topics`` under the prefix, whatever the shard)."""
    found = {}
    for key in client.scan_iter(match=f"{prefix}:*video:*:topics", count=1000):
        video_id = int(key.decode().rsplit(":", 2)[-2])
        found[video_id] = decode_ids(client.get(key))
    return found


def worker_url(settings, path: str) -> str:
    return f"http://127.0.0.1:{settings.stream.metrics_port}{path}"


pytestmark = [pytest.mark.integration]


@pytest.mark.slow
def test_worker_health_answers_during_a_replay_and_logs_json_lines(stream_settings):
    settings = stream_settings
    settings.stream.metrics_port = free_port()
    settings.logging.format = "json"
    events, _, _ = learned_stream(settings)
    worker = WorkerProcess.start(settings, cwd=settings.paths.artifacts_dir.parent, loglevel="info")  # Faust's data dir goes there
    try:
        first = wait_for(lambda: json.loads(get(worker_url(settings, "/health"))), 90, "a /health answer", worker)
        assert first["alive"] is True
        wait_for(
            lambda: (r := json.loads(get(worker_url(settings, "/health"))))["assigned_partitions"] == [0, 1, 2, 3] and r["ready"],
            60,
            "all 4 partitions assigned and ready",
            worker,
        )

        sent: dict[int, int] = {}
        produced = produce(settings.kafka.bootstrap_servers, settings.stream.events_topic, events, rate_per_s=len(events) / 8.0)
        replay = threading.Thread(target=lambda: sent.update(asyncio.run(produced)))
        replay.start()
        during = []
        while replay.is_alive():
            during.append(json.loads(get(worker_url(settings, "/health"))))
            time.sleep(0.25)
        replay.join()
        assert len(during) >= 10, f"only {len(during)} health answers during an 8 s replay"
        assert all(report["alive"] and report["ready"] for report in during)
        assert all(report["assigned_partitions"] == [0, 1, 2, 3] for report in during)
        measured = [report for report in during if report["lag_age_s"] is not None]
        assert measured and all(
            set(report["lag"]) <= {"0", "1", "2", "3"} and report["lag_total"] == sum(report["lag"].values()) for report in measured
        )

        total = sum(sent.values())
        wait_for(
            lambda: metric(get(worker_url(settings, "/metrics")), "topicfs_stream_messages_total") >= total,
            60,
            "every message applied",
            worker,
        )
        settled = wait_for(
            lambda: (
                (r := json.loads(get(worker_url(settings, "/health"))))["lag_age_s"] is not None
                and r["lag_age_s"] < 5
                and r["lag_total"] == 0
                and r
            ),
            30,
            "zero lag reported",
            worker,
        )
        assert settled["lag"] == {"0": 0, "1": 0, "2": 0, "3": 0}

        # the health command of the image's HEALTHCHECK answers 0 with the report
        done = subprocess.run(
            [sys.executable, "-m", "stream.cli", "health"], env=child_env(settings), cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and json.loads(done.stdout.strip().splitlines()[-1])["alive"] is True, done.stderr
        # the worker's own metrics only (the pusher's push metrics are the pusher's), served on 127.0.0.1 only
        served = get(worker_url(settings, "/metrics"))
        assert 'topicfs_stream_events_total{type="exposure"}' in served and "topicfs_stream_consumer_lag" in served
        assert "topicfs_stream_push" not in served
        assert listening_addresses(settings.stream.metrics_port) == {"127.0.0.1"}
    finally:
        worker.stop()
    log = worker.log()
    assert "\x1b" not in log and "\b" not in log, "escape codes in a non-TTY log"
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines, "the worker logged nothing at level info"
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert {"ts", "level", "logger", "message"} <= set(entry), line


@pytest.mark.slow
def test_replay_leaves_the_learned_topics_in_redis_unchanged(stream_settings):
    settings = stream_settings
    settings.stream.metrics_port = free_port()
    _, learned, true = learned_stream(settings)
    client = redis.Redis.from_url(settings.redis.url)
    worker = WorkerProcess.start(settings, cwd=settings.paths.artifacts_dir.parent)
    env = child_env(settings)
    try:
        wait_for(lambda: json.loads(get(worker_url(settings, "/health")))["ready"], 90, "the worker ready", worker)
        before = video_topics_in_redis(client, settings.redis.key_prefix)
        assert before == learned  # the worker loaded the learned topics

        done = subprocess.run(
            [sys.executable, "-m", "stream.cli", "replay", "--n-users", "60", "--n-days", "3", "--max-messages", "600"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        sent = json.loads(done.stdout.strip().splitlines()[-1])["sent"]
        assert sent == 600
        text = wait_for(
            lambda: (t := get(worker_url(settings, "/metrics"))) and metric(t, "topicfs_stream_messages_total") >= sent and t,
            60,
            "the replay applied",
            worker,
        )
        assert metric(text, "topicfs_stream_dead_letters_total") == 0  # every event named a video the learned topics know
        assert metric(text, 'topicfs_stream_events_total{type="exposure"}') > 0
        assert video_topics_in_redis(client, settings.redis.key_prefix) == learned

        # asked to, it publishes the catalogue's true topics, and the worker replaces the learned ones with them
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "stream.cli",
                "replay",
                "--n-users",
                "60",
                "--n-days",
                "3",
                "--max-messages",
                "1",
                "--publish-true-topics",
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        wait_for(lambda: video_topics_in_redis(client, settings.redis.key_prefix) == true, 60, "the true topics published", worker)
    finally:
        worker.stop()


def test_replay_refuses_true_topics_with_an_event_file(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "click", "event_id": "c1", "user_id": 1, "video_id": 2, "ts": 1.76e9}\n')
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "replay", "--events-file", str(events), "--publish-true-topics"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: --publish-true-topics applies to the synthetic stream only, not to --events-file"
    ]


@pytest.mark.slow
def test_the_pusher_serves_only_its_own_metrics_on_127_0_0_1(redis_url, tmp_path):
    from stream.sinks import write_push_repo
    from topicfs.settings import Settings

    settings = Settings()
    settings.redis.url = redis_url
    settings.redis.key_prefix = f"pusher{os.getpid()}"
    settings.stream.feast_repo_path = tmp_path / "feast_repo"
    settings.stream.pusher_metrics_port = free_port()
    write_push_repo(settings.stream.feast_repo_path, redis_url, project=f"p{os.getpid()}")
    log = (tmp_path / "pusher.log").open("w")
    pusher = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "pusher"], env=child_env(settings), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{settings.stream.pusher_metrics_port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                health = json.loads(get(f"{base}/health"))
                break
            except OSError:
                assert pusher.poll() is None and time.monotonic() < deadline, (tmp_path / "pusher.log").read_text()[-3000:]
                time.sleep(0.3)
        assert health["alive"] is True and health["last_push_age_s"] is None  # nothing changed, nothing pushed yet
        served = get(f"{base}/metrics")
        assert "topicfs_stream_push_latency_seconds_count 0.0" in served and "topicfs_stream_pushed_rows_total 0.0" in served
        assert (
            "topicfs_stream_events" not in served
            and "topicfs_stream_consumer_lag" not in served
            and "topicfs_stream_dead_letters" not in served
        )
        assert listening_addresses(settings.stream.pusher_metrics_port) == {"127.0.0.1"}
    finally:
        pusher.terminate()
        pusher.wait(timeout=30)
        log.close()


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stream_broker_stops_its_broker_on_a_signal(signum):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "broker", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        while "embedded broker on" not in line:  # printed once the broker listens
            line = process.stdout.readline()
            assert line or process.poll() is None, "the broker command exited before its broker listened"
        assert listening_addresses(port) == {"127.0.0.1"}
        brokers = children_of(process.pid)
        assert brokers, "no broker child process"
        process.send_signal(signum)
        assert process.wait(timeout=30) == 0
        assert not listening_addresses(port), f"something still listens on {port} after {signum.name}"
        assert all(gone(pid) for pid in brokers), "the broker outlived the command"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_stream_broker_refuses_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "stream.cli", "broker", "--port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: port {port} is already in use on 127.0.0.1 (choose another with --port)"]
