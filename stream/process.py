"""Run a worker as a child process (demo, tests, benchmark): settings travel as ``TOPICFS_*`` variables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from topicfs.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """``TOPICFS_<SECTION>__<FIELD>`` variables that rebuild ``settings`` in a child process."""
    env = {}
    for section, values in settings.model_dump(mode="json").items():
        for name, value in values.items():
            if value is None:
                continue
            secret = getattr(getattr(settings, section), name)
            if isinstance(secret, SecretStr):  # model_dump masks it; the child needs the value itself
                value = secret.get_secret_value()
            if isinstance(value, bool):
                text = str(value).lower()
            elif isinstance(value, (list, dict)):
                text = json.dumps(value)  # pydantic-settings parses complex fields as JSON
            else:
                text = str(value)
            env[f"TOPICFS_{section.upper()}__{name.upper()}"] = text
    return env


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a ``python -m stream.cli ...`` child: ours without TOPICFS_* (``settings`` replaces them),
    and this checkout on PYTHONPATH (the child imports the same code, installed or not)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOPICFS_")}
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
        # feast.metrics sets these for its own gunicorn workers when imported; our processes keep in-process metrics
        if Path(env.get(name, "")).name.startswith("feast_metrics_"):
            del env[name]
    env.update(settings_env(settings))
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@dataclass
class WorkerProcess:
    """A ``python -m stream.cli worker`` child; its output goes to ``log_path``."""

    process: subprocess.Popen = field(repr=False)
    log_path: Path

    @classmethod
    def start(cls, settings: Settings, cwd: str | Path | None = None, loglevel: str = "warning") -> "WorkerProcess":
        env = child_env(settings)
        log = tempfile.NamedTemporaryFile(prefix="topicfs-worker-", suffix=".log", delete=False)
        root = Path(__file__).resolve().parent.parent
        process = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker", "--loglevel", loglevel],
            cwd=str(cwd or root),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return cls(process, Path(log.name))

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int:
        """Graceful stop (SIGTERM: Faust finishes the batch in hand and leaves the group)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """kill -9: no cleanup at all."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
