"""Start the local services a command needs when they are not already running (Redis here; the Kafka
broker lives in :mod:`stream.broker`). Production points the settings at real servers instead."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_listening(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_listening(host: str, port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_listening(host, port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start listening on {host}:{port} within {timeout_s:.0f} s")


@dataclass
class LocalRedis:
    """A private, memory-only redis-server child process."""

    port: int
    process: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    @classmethod
    def start(cls, port: int | None = None) -> "LocalRedis":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server); set TOPICFS_REDIS__URL to a running Redis instead")
        port = port or free_port()
        workdir = tempfile.mkdtemp(prefix="topicfs-redis-")
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening("127.0.0.1", port, 10, "redis-server")
        return cls(port, process)


def ensure_redis(url: str) -> LocalRedis | None:
    """Start a local redis-server at ``url``'s port when ``url`` points at this machine and nothing answers.

    Returns the started server (the caller stops it) or None when one was already running.
    """
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if is_listening(host, port):
        return None
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise RuntimeError(f"Redis at {host}:{port} is unreachable (TOPICFS_REDIS__URL={url})")
    logger.info("no Redis on %s:%d; starting a memory-only redis-server there", host, port)
    return LocalRedis.start(port)
