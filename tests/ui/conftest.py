"""Fixtures of the browser tests: real tables from the topic job on a small synthetic catalogue (covers rendered, one
deleted), Feast registered and materialized, a stream state applied by StreamStore, an LR ranker, and
``topicfs serve ui`` running as a subprocess on a free port, the way a user starts it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from chromium import Chromium, chromium_binary  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOPICFS = Path(sys.executable).with_name("topicfs")
N_TOPICS = 6
MISSING_COVER_VIDEO = 3  # its cover file is deleted: the browser must serve the placeholder

# small models: the real pipeline in about a minute instead of the demo's several
ENVIRONMENT = {
    "TOPICFS_TAG_GRAPH__WALK_LENGTH": "20",
    "TOPICFS_TAG_GRAPH__WALKS_PER_TAG": "5",
    "TOPICFS_TAG_GRAPH__EMBEDDING_DIM": "16",
    "TOPICFS_TAG_GRAPH__EPOCHS": "2",
    "TOPICFS_MMOE__EPOCHS": "1",
    "TOPICFS_MMOE__MAX_TITLE_TOKENS": "16",
    "TOPICFS_MMOE__TITLE_TRAINABLE_LAYERS": "1",
    "TOPICFS_MMOE__N_EXPERTS": "4",
    "TOPICFS_MMOE__EXPERT_DIM": "16",
    "TOPICFS_MMOE__TOWER_HIDDEN": "16",
    "TOPICFS_MMOE__BATCH_SIZE": "32",
    "TOPICFS_MMOE__TORCH_THREADS": "2",
    "TOPICFS_TOPICS__N_TOPICS": str(N_TOPICS),
    "TOPICFS_TOPICS__KMEANS_ITERATIONS": "10",
    "TOPICFS_FEAST__MRLM_VECTOR_DIM": "8",
    "TOPICFS_RANKERS__EPOCHS": "1",
    "TOPICFS_RANKERS__LOGISTIC_EPOCHS": "1",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def chromium():
    if chromium_binary() is None:
        pytest.fail("chromium is not installed: run bash .ci/setup (it installs Debian's chromium package)")
    with Chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def ui_state(tmp_path_factory, redis_server):
    """The whole state, built once per module; yields a dict with settings, catalogue, click log, paths."""
    import redis

    from offline_jobs.pipeline import run_topic_job
    from offline_jobs.ranker_training import train_ranker
    from state import fill_stream_state
    from topicfs_app.demo import write_click_log
    from topicfs.feature_registry import register_and_materialize
    from topicfs.settings import get_settings
    from topicfs.synthetic import make_catalogue, make_click_log

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    root = tmp_path_factory.mktemp("ui")
    repo = root / "feature_repo"
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    environment = {
        **ENVIRONMENT,
        "TOPICFS_PATHS__ARTIFACTS_DIR": str(root / "artifacts"),
        "TOPICFS_REDIS__URL": redis_server.url,
        "TOPICFS_FEAST__REPO_PATH": str(repo),
    }
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        settings = get_settings()
        catalogue = make_catalogue(
            n_videos=240, n_true_topics=4, image_size=16, with_images=True, out_dir=root / "catalogue", seed=3, show_progress=False
        )
        result = run_topic_job(catalogue.videos, settings)
        Path(catalogue.videos.loc[catalogue.videos["video_id"] == MISSING_COVER_VIDEO, "cover_image"].iloc[0]).unlink()
        log = make_click_log(catalogue, n_users=40, n_days=2, seed=5)
        write_click_log(log.interactions, settings)
        register_and_materialize(settings)
        applied = fill_stream_state(settings, settings.paths.tables_dir, log.events())
        ranker_dir = train_ranker(log.interactions, settings, repo, model="lr", with_topics=True)
        yield {
            "settings": settings,
            "environment": environment,
            "catalogue": catalogue,
            "log": log,
            "result": result,
            "applied": applied,
            "ranker_dir": ranker_dir,
            "root": root,
        }
    get_settings.cache_clear()


class UIServer:
    """``topicfs serve ui`` in a subprocess."""

    def __init__(self, environment: dict[str, str], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [str(TOPICFS), "serve", "ui", "--port", str(port)],
            env={**os.environ, **environment},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=2).read()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"topicfs serve ui did not start:\n{self.process.stdout.read() if self.process.stdout else ''}")
                time.sleep(0.3)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        return self.process.stdout.read() if self.process.stdout else ""


@pytest.fixture(scope="module")
def metrics_endpoints():
    """A worker's and a pusher's real metrics servers (stream.metrics: WorkerMetrics, PusherMetrics, MetricsServer on
    an event loop of their own) holding figures a worker and a pusher would have set."""
    import asyncio
    import threading

    from stream.metrics import MetricsServer, PusherMetrics, WorkerMetrics, pusher_health

    worker, pusher = WorkerMetrics(), PusherMetrics()
    worker.record_events(exposures=1200, clicks=80)
    worker.observe_lag({0: 17, 1: 0, 2: 240, 3: 5})
    worker.dead_letters.labels("unknown video").inc(3)
    for seconds in (0.004, 0.006, 0.02):
        pusher.record_push(seconds, rows=10)
    started = time.monotonic()
    servers = [
        (MetricsServer(worker.registry, lambda: {"alive": True, "assigned_partitions": [0, 1, 2, 3]}), free_port()),
        (MetricsServer(pusher.registry, lambda: pusher_health(pusher, started)), free_port()),
    ]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    for server, port in servers:
        asyncio.run_coroutine_threadsafe(server.start("127.0.0.1", port), loop).result(30)
    yield [f"http://127.0.0.1:{port}/metrics" for _, port in servers]
    for server, _ in servers:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture(scope="module")
def ui_server(ui_state, metrics_endpoints):
    server = UIServer({**ui_state["environment"], "TOPICFS_SERVING__UI_METRICS_URLS": json.dumps(metrics_endpoints)}, free_port())
    yield server
    server.stop()
