"""`topicfs demo --serve` ends by serving the topic browser: the serving step prints its address once it listens,
answers, and stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from topicfs.services import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_serving_step_prints_the_address_answers_and_stops_on_ctrl_c(redis_url, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "TOPICFS_REDIS__URL": redis_url,
        "TOPICFS_SERVING__UI_PORT": str(port),
        "TOPICFS_PATHS__ARTIFACTS_DIR": str(tmp_path),
    }
    code = "from topicfs_app.demo import serve_browser; from topicfs.settings import get_settings; serve_browser(get_settings(), print)"
    process = subprocess.Popen(
        [sys.executable, "-u", "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        line = process.stdout.readline()
        assert line.startswith(f"topic browser at http://127.0.0.1:{port}/"), line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) in (0, -signal.SIGINT)  # uvicorn shuts down, then re-raises Ctrl-C
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
