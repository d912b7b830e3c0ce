"""Stock Feast commands in feature_repo/ right after the offline jobs, exactly as the README writes them:
`feast apply && feast materialize-incremental <now>` exit 0 and put the tables online (packed records included),
then `feast serve` and `feast ui` answer HTTP 200. On a single Redis and on the 3-master cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from topicfs import feast_names as names
from topicfs.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WORKTREE = Path(__file__).resolve().parents[2]
FEAST = str(Path(sys.executable).with_name("feast"))


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(WORKTREE))


@pytest.fixture(scope="module")
def applied(feast_env):
    """`feast apply` then `feast materialize-incremental <now>` in a fresh repo over fresh tables."""
    repo = feast_env["repo"]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    results = []
    for command in ([FEAST, "apply"], [FEAST, "materialize-incremental", now]):
        results.append(subprocess.run(command, cwd=repo, env=_env(), capture_output=True, text=True, timeout=600))
    return results


def test_apply_exits_0(applied):
    result = applied[0]
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def test_materialize_incremental_exits_0_and_fills_both_layouts(applied, feast_env):
    result = applied[1]
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    from feast import FeatureStore

    from topicfs.feature_client import PackedFeatureClient

    store = FeatureStore(repo_path=str(feast_env["repo"]))
    ids = [1, 2, 3, 7, 26, 999]
    sdk = store.get_online_features(store.get_feature_service(names.RANKER_V1), [{"video_id": i} for i in ids]).to_dict()
    assert all(value is not None for value in sdk["topic_ids"][:5]) and sdk["topic_ids"][5] is None
    assert PackedFeatureClient(store, names.RANKER_V1).read(ids, repair=False).to_dict() == sdk


def _serve(repo: Path, command: list[str], probe: str, timeout_s: float = 120):
    port = free_port()
    process = subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port)],
        cwd=repo,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"{command} exited with {process.returncode}: {process.stdout.read().decode()[-3000:]}")
            try:
                response = httpx.get(url + probe, timeout=2)
                return url, response, process
            except httpx.HTTPError:
                time.sleep(0.5)
        raise AssertionError(f"{command} did not answer {probe} within {timeout_s:.0f} s")
    except BaseException:
        _stop(process)
        raise


def _stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_feast_serve_answers_200(applied, feast_env):
    url, health, process = _serve(feast_env["repo"], [FEAST, "serve", "--no-access-log"], "/health")
    try:
        assert health.status_code == 200
        response = httpx.post(
            f"{url}/get-online-features",
            json={"feature_service": names.RANKER_V1, "entities": {"video_id": [1, 999]}},
            timeout=30,
        )
        assert response.status_code == 200
        body = response.json()
        values = dict(zip(body["metadata"]["feature_names"], [result["values"] for result in body["results"]]))
        assert values["topic_ids"][0] is not None and values["topic_ids"][1] is None
    finally:
        _stop(process)


def test_feast_ui_answers_200(applied, feast_env):
    url, page, process = _serve(feast_env["repo"], [FEAST, "ui"], "/")
    try:
        assert page.status_code == 200
        projects = httpx.get(f"{url}/projects-list.json", timeout=10)
        assert projects.status_code == 200 and "topicfs" in projects.text
    finally:
        _stop(process)
