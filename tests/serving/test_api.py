"""The candidate HTTP API on a single Redis and on a 3-master Redis Cluster: the happy path, the OpenAPI spec, every
error path (all JSON, uvicorn's own included), corrupt state, /metrics, a burst of 1,000 concurrent requests through
``topicfs serve api`` with a bounded Redis pool, the start-up address line and the access-log setting."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.candidates import AsyncCandidateGenerator
from topicfs.keys import KeyLayout
from topicfs.redis_client import async_client, sync_client
from topicfs.services import free_port, wait_listening
from topicfs.settings import RedisConfig, Settings

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "api"


def _settings(config: RedisConfig, **serving) -> Settings:
    redis_settings = config.model_dump() | {"key_prefix": PREFIX}
    return Settings(redis=redis_settings, serving={"n_candidates": 3, "max_candidates": 50, "redis_timeout_s": 0.5} | serving)


def _write_state(config: RedisConfig) -> None:
    layout = KeyLayout(PREFIX, config.shards)
    client = sync_client(config)
    client.zadd(layout.queue(1), {"10": 3.0, "11": 2.0, "12": 1.0, "13": 0.5})
    client.set(layout.video_topics(5), "1")
    client.rpush(layout.user_clicks(42), 5, 12)
    client.zadd(layout.popular(layout.shard(1)), {"1": 9.0})
    client.close()


@pytest.fixture()
def client(redis_deployment):
    _write_state(redis_deployment)
    with TestClient(create_app(_settings(redis_deployment))) as test_client:
        yield test_client


def _metric(text: str, name: str, **labels) -> float:
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.integration
def test_candidates_ok(client):
    response = client.get("/users/42/candidates")
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "history"
    assert [c["video_id"] for c in body["candidates"]] == [10, 11, 13]  # 12 was clicked, n defaults to N3=3
    assert body["topics"] == [{"topic_id": 1, "votes": 1.0, "n_candidates": 3}]
    assert [c["video_id"] for c in client.get("/users/42/candidates", params={"n": 1}).json()["candidates"]] == [10]
    assert client.get("/users/7/candidates").json()["source"] == "popular"
    assert client.get(f"/users/{2**63 - 1}/candidates").json()["source"] == "popular"
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.integration
def test_openapi_spec_documents_the_endpoint(client):
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/users/{user_id}/candidates"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"user_id", "n"}
    assert {"200", "422", "503"} <= set(operation["responses"])
    assert "/metrics" in spec["paths"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/users/abc/candidates", ["user_id", "decimal integer", "abc"]),
        ("/users/-1/candidates", ["user_id", "without sign"]),
        ("/users/-0/candidates", ["user_id", "without sign", "'-0'"]),
        ("/users/007/candidates", ["user_id", "leading zeros"]),
        ("/users/%207/candidates", ["user_id", "spaces"]),
        ("/users/1_000/candidates", ["user_id"]),
        ("/users/" + "9" * 4300 + "/candidates", ["user_id", "at most 9223372036854775807", "4300 characters"]),
        (f"/users/{2**63}/candidates", ["user_id", "less than or equal to 9223372036854775807"]),
        ("/users/1/candidates?n=0", ["n", "greater than or equal to 1"]),
        ("/users/1/candidates?n=51", ["n", "less than or equal to 50"]),
        ("/users/1/candidates?n=ten", ["n", "decimal integer", "ten"]),
        ("/users/1/candidates?n=%2B3", ["n", "without sign", "'+3'"]),
        ("/users/1/candidates?n=03", ["n", "leading zeros"]),
        ("/users/1/candidates?n=" + "1" * 4300, ["n", "at most"]),
        ("/users/1/candidates?n=", ["n"]),
    ],
)
def test_invalid_parameters_get_422_with_a_message(client, path, words):
    response = client.get(path)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str) and len(detail) < 300
    for word in words:
        assert word in detail


@pytest.mark.integration
def test_unknown_route_and_method_are_json(client):
    for response in (client.get("/users/1/nothing"), client.post("/users/1/candidates")):
        assert response.status_code in (404, 405)
        assert response.headers["content-type"] == "application/json"
        assert isinstance(response.json()["detail"], str)


@pytest.mark.integration
@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
def test_redis_down_gives_503_not_500(cluster):
    config = RedisConfig(url=f"redis://127.0.0.1:{free_port()}/0", cluster=cluster, shards=3 if cluster else 1)
    with TestClient(create_app(_settings(config)), raise_server_exceptions=False) as test_client:
        response = test_client.get("/users/1/candidates")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "candidate store unavailable" in response.json()["detail"]
        assert "Traceback" not in response.text
        assert test_client.get("/healthz").status_code == 503
        assert _metric(test_client.get("/metrics").text, "topicfs_api_requests_total", status="503") == 2


def test_unexpected_error_gives_json_500_without_traceback():
    class Broken:
        client = None

        def candidates(self, user_id, n=None):
            raise KeyError("boom")

    app = create_app(_settings(RedisConfig(url="redis://127.0.0.1:1/0")), generator=Broken())
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/users/1/candidates")
        assert response.status_code == 500
        assert response.json() == {"detail": "internal error: KeyError"}
        assert _metric(test_client.get("/metrics").text, "topicfs_api_requests_total", status="500") == 1


@pytest.mark.integration
def test_corrupt_state_is_skipped_and_counted_never_a_500(redis_deployment):
    config = redis_deployment
    layout = KeyLayout(PREFIX, config.shards)
    r = sync_client(config)
    r.zadd(layout.queue(1), {"10": 3.0, "x": 2.5, "-3": 2.2, "11": 2.0})
    r.zadd(layout.queue(2), {"20": 1.0})
    r.set(layout.video_topics(5), "1")
    r.set(layout.video_topics(6), "1,banana")
    r.rpush(layout.user_clicks(42), 5, "garbage", 6, "9" * 30)
    r.zadd(layout.popular(layout.shard(1)), {"1": float("inf"), "oops": 5.0})
    r.zadd(layout.popular(layout.shard(2)), {"2": 1e308})
    r.zadd(layout.popular(layout.shard(3)), {"3": 4.0})
    r.set(layout.user_clicks(43), "a string, not a list")
    r.close()
    with TestClient(create_app(_settings(config)), raise_server_exceptions=False) as test_client:
        history = test_client.get("/users/42/candidates")
        assert history.status_code == 200
        assert [c["video_id"] for c in history.json()["candidates"]] == [10, 11]
        popular = test_client.get("/users/7/candidates")
        assert popular.status_code == 200 and popular.json()["topics"] == [{"topic_id": 3, "votes": 4.0, "n_candidates": 0}]
        assert test_client.get("/users/43/candidates").status_code == 200
        metrics = test_client.get("/metrics").text
    for kind in ("click", "topic_list", "queue_member", "popular", "wrong_type"):
        assert _metric(metrics, "topicfs_candidates_corrupt_values_total", kind=kind) >= 1, kind
    assert _metric(metrics, "topicfs_api_requests_total", status="200") == 3
    assert _metric(metrics, "topicfs_api_requests_total", status="500") == 0


@pytest.mark.integration
def test_metrics_count_requests_by_status(client):
    for path in ["/users/42/candidates", "/users/7/candidates", "/users/-0/candidates", "/nothing"]:
        client.get(path)
    text = client.get("/metrics").text
    assert _metric(text, "topicfs_api_requests_total", status="200") == 2
    assert _metric(text, "topicfs_api_requests_total", status="422") == 1
    assert _metric(text, "topicfs_api_requests_total", status="404") == 1
    assert "# TYPE topicfs_candidates_corrupt_values_total counter" in text


@pytest.mark.integration
def test_the_asyncio_pool_waits_and_stays_bounded(redis_deployment):
    """300 concurrent reads with a 3-connection bound: every one answers, and Redis never sees more connections
    (per node) than the bound plus the test's own."""
    config = redis_deployment.model_copy(update={"max_connections": 3})
    layout = KeyLayout(PREFIX, config.shards)
    _write_state(config)
    watcher = _ConnectionWatcher(config)

    async def run():
        fast = AsyncCandidateGenerator(async_client(config, timeout_s=5), layout, 128, 4, 3, max_concurrency=config.max_connections)
        raw = async_client(config, timeout_s=5) if not config.cluster else None
        try:
            results = await asyncio.gather(*(fast.candidates(u % 50 + 40) for u in range(300)))
            # the single-node pool itself waits for a free connection (BlockingConnectionPool), nothing in front of it
            if raw is not None:
                await asyncio.gather(*(raw.lrange(layout.user_clicks(42), 0, -1) for _ in range(300)))
        finally:
            await fast.aclose()
            if raw is not None:
                await raw.aclose()
        return results

    with watcher:
        results = asyncio.run(run())
    assert [r.candidates for r in results if r.user_id == 42][0][0].video_id == 10
    assert len(results) == 300
    # single: the generator's pool plus the raw client's; cluster: plus the one connection topology discovery opens
    assert watcher.most <= (config.max_connections + 1 if config.cluster else 2 * config.max_connections), watcher.most


class _ConnectionWatcher:
    """Polls CLIENT LIST on every node while active; ``most`` = the most client connections seen on one node beyond
    those open when it started (its own included)."""

    def __init__(self, config: RedisConfig) -> None:
        if config.cluster:
            probe = sync_client(config)
            self.urls = [f"redis://{node.host}:{node.port}/0" for node in probe.get_primaries()]
            probe.close()
        else:
            self.urls = [config.url]
        self.most = 0
        self._stop = threading.Event()

    def _watch(self, clients: list[redis.Redis], before: list[int]) -> None:
        while not self._stop.is_set():
            for c, idle in zip(clients, before):
                self.most = max(self.most, len(c.client_list()) - idle)
            time.sleep(0.005)
        for c in clients:
            c.close()

    def __enter__(self):
        clients = [redis.Redis.from_url(url) for url in self.urls]
        # connections already open (the watcher's own, earlier tests' idle ones) are not the code under test
        self.before = [len(c.client_list()) for c in clients]
        self._thread = threading.Thread(target=self._watch, args=(clients, self.before), daemon=True)
        self._thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def _serve(config: RedisConfig, log_path: Path, **env) -> tuple[subprocess.Popen, int]:
    port = free_port()
    variables = (
        os.environ
        | {
            "TOPICFS_REDIS__URL": config.url,
            "TOPICFS_REDIS__CLUSTER": str(config.cluster).lower(),
            "TOPICFS_REDIS__SHARDS": str(config.shards),
            "TOPICFS_REDIS__KEY_PREFIX": PREFIX,
            "TOPICFS_SERVING__N_CANDIDATES": "3",
        }
        | env
    )
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "topicfs_app.cli", "serve", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=variables,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        wait_listening("127.0.0.1", port, 60, "candidate API")
    except Exception:
        process.kill()
        raise RuntimeError(log_path.read_text())
    return process, port


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.mark.integration
def test_serve_api_survives_1000_concurrent_requests_with_a_bounded_pool(redis_deployment, tmp_path):
    """`topicfs serve api`: it logs its address; 1,000 concurrent GETs all answer 200 (0 5xx) while Redis never sees
    more connections per node than redis.max_connections (8 here; one more on a cluster, for topology discovery); each request is in the access log
    and in /metrics."""
    config = redis_deployment
    _write_state(config)
    process, port = _serve(config, tmp_path / "api.log", TOPICFS_REDIS__MAX_CONNECTIONS="8")
    try:
        url = f"http://127.0.0.1:{port}"

        async def burst() -> list[int]:
            limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
                responses = await asyncio.gather(
                    *(http.get(f"/users/{40 + i % 5}/candidates") for i in range(1000)), return_exceptions=True
                )
            return [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in responses]

        with _ConnectionWatcher(config) as watcher:
            statuses = asyncio.run(burst())
        assert statuses.count(200) == 1000, {s: statuses.count(s) for s in set(statuses)}
        assert 1 <= watcher.most <= 8 + config.cluster, watcher.most  # + topology discovery on a cluster
        metrics = httpx.get(f"{url}/metrics").text
        assert _metric(metrics, "topicfs_api_requests_total", status="200") == 1000
    finally:
        _stop(process)
    log = (tmp_path / "api.log").read_text()
    assert f"candidate API listening on http://127.0.0.1:{port}" in log
    assert "access log on" in log
    assert log.count('"GET /users/4') == 1000  # uvicorn's access lines
    assert "Traceback" not in log


@pytest.mark.integration
def test_serve_api_access_log_off_and_uvicorns_own_errors_are_json(redis_url, tmp_path):
    config = RedisConfig(url=redis_url)
    _write_state(config)
    process, port = _serve(config, tmp_path / "api.log", TOPICFS_SERVING__ACCESS_LOG="false")
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/users/42/candidates").status_code == 200
        replies = []
        for garbage in [
            b"GARBAGE\r\n\r\n",
            b"GET /users/1/candidates HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ]:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(garbage)
                replies.append(_read_all(sock))
        for reply in replies:
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400"), reply
            assert b"content-type: application/json" in head.lower()
            assert httpx.Response(400, content=body).json()["detail"].startswith("bad request")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert _metric(metrics, "topicfs_api_requests_total", status="400") == 3
    finally:
        _stop(process)
    log = (tmp_path / "api.log").read_text()
    assert f"candidate API listening on http://127.0.0.1:{port}" in log and "access log off" in log
    assert '"GET /users/42/candidates' not in log


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
