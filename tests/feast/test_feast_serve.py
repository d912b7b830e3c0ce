"""`feast serve` over the plugin answers /get-online-features for the ranker service, and a push
through its HTTP API reaches the packed records too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from topicfs import feast_names as names
from topicfs.feature_client import PackedFeatureClient
from topicfs.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WORKTREE = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(registered, feast_env):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(WORKTREE))
    feast_binary = Path(sys.executable).with_name("feast")
    process = subprocess.Popen(
        [str(feast_binary), "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log"],
        cwd=feast_env["repo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"feast serve exited: {process.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError("feast serve did not answer /health within 90 s")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _served(url: str, ids: list[int]) -> dict:
    response = httpx.post(
        f"{url}/get-online-features",
        json={"feature_service": names.RANKER_V1, "entities": {"video_id": ids}},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    keys = body["metadata"]["feature_names"]
    columns = [result["values"] for result in body["results"]]
    return dict(zip(keys, columns))


def test_serve_answers_the_ranker_service(server, registered):
    store, _ = registered
    ids = [1, 2, 3, 7, 26, 999]
    served = _served(server, ids)
    sdk = store.get_online_features(store.get_feature_service(names.RANKER_V1), [{"video_id": i} for i in ids]).to_dict()
    assert served == sdk
    assert PackedFeatureClient(store, names.RANKER_V1).read(ids).to_dict() == sdk


def test_push_over_http_updates_the_packed_records(server, registered):
    store, _ = registered
    now = pd.Timestamp.now(tz="UTC").isoformat()
    payload = {
        "push_source_name": names.VIDEO_STATS_PUSH,
        "df": {"video_id": [5], "exposures": [31], "clicks": [4], "ctr": [0.125], "event_timestamp": [now]},
        "to": "online",
    }
    httpx.post(f"{server}/push", json=payload, timeout=30).raise_for_status()
    fast = PackedFeatureClient(store, names.RANKER_V1).read([5])
    assert fast.to_dict()["exposures"] == [31]
    assert _served(server, [5])["exposures"] == [31]
