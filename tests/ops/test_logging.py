"""logging.format: text lines or one JSON object per line (tracebacks included), for every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import logging
from topicfs.logs import configure_logging
from topicfs.settings import get_settings
configure_logging(get_settings().logging)
logging.getLogger("stream.app").info("batch of %d messages", 5000)
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("stream.pusher").exception("push failed\\non two lines")
logging.getLogger("feast").info("a chatty library line, hidden without -v")
"""


def run(fmt: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPICFS_")}
    env["TOPICFS_LOGGING__FORMAT"] = fmt
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def test_json_format_writes_one_object_per_line_with_the_traceback():
    lines = run("json")
    entries = [json.loads(line) for line in lines]  # every line parses
    assert [(e["level"], e["logger"]) for e in entries] == [("INFO", "stream.app"), ("ERROR", "stream.pusher")]
    assert entries[0]["message"] == "batch of 5000 messages" and entries[0]["pid"] > 0 and entries[0]["ts"].endswith("+00:00")
    assert entries[1]["message"] == "push failed\non two lines"
    assert "ZeroDivisionError: division by zero" in entries[1]["exc_info"] and "Traceback" in entries[1]["exc_info"]


def test_text_format_is_the_default_line_format():
    lines = run("text")
    assert lines[0].endswith(" INFO stream.app: batch of 5000 messages")
    assert any(line.startswith("ZeroDivisionError") for line in lines)
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


def test_escape_codes_libraries_print_are_removed_when_not_a_terminal():
    """Feast's materialize prints colours (colorama codes) whatever its output is; a log file gets the text only."""
    script = (
        "import sys\n"
        "from topicfs.logs import configure_logging\n"
        "from topicfs.settings import get_settings\n"
        "configure_logging(get_settings().logging)\n"
        "print('Materializing \\x1b[1m\\x1b[32m1\\x1b[0m feature views')\n"
        "sys.stderr.write('\\x1b[?25lspinner\\x1b[?25h\\n')\n"
        "configure_logging(get_settings().logging)  # twice: wrapped once\n"
        "print(type(sys.stdout).__name__, type(sys.stdout.wrapped).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Materializing 1 feature views", "EscapeStrippingStream TextIOWrapper"]
    assert done.stderr == "spinner\n"
