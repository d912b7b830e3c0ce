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
    workdir: str | None = None  # removed on stop

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
                self.process.wait(timeout=10)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @classmethod
    def start(cls, port: int | None = None) -> "LocalRedis":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed (Debian package redis-server); set TOPICFS_REDIS__URL to a running Redis instead"
            )
        port = port or free_port()
        workdir = tempfile.mkdtemp(prefix="topicfs-redis-")
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening("127.0.0.1", port, 10, "redis-server")
        return cls(port, process, workdir)


@dataclass
class LocalRedisCluster:
    """A private, memory-only Redis Cluster of ``n`` masters on loopback (no replicas), for tests and benchmarks.

    Built as a user would: ``redis-server --cluster-enabled yes`` per node, then ``redis-cli --cluster create``.
    """

    nodes: list[LocalRedis]
    workdir: str

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """A URL of one node: cluster clients discover the others."""
        return self.nodes[0].url

    def node_url(self, index: int) -> str:
        return self.nodes[index].url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart_node_empty(self, index: int) -> None:
        """Kill one master and start it again with the same cluster identity but no data (as after a crash of a
        master that keeps nothing on disk)."""
        node = self.nodes[index]
        node.process.kill()
        node.process.wait(timeout=10)
        self.nodes[index] = LocalRedis(node.port, _cluster_node_process(node.port, self.workdir))
        wait_listening("127.0.0.1", node.port, 10, "redis-server")
        _wait_cluster_ok(self.ports, 30)

    @classmethod
    def start(cls, n_masters: int = 3) -> "LocalRedisCluster":
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server / redis-cli are not installed (Debian package redis-server)")
        workdir = tempfile.mkdtemp(prefix="topicfs-redis-cluster-")
        ports = _cluster_ports(n_masters)
        nodes = [LocalRedis(port, _cluster_node_process(port, workdir)) for port in ports]
        for port in ports:
            wait_listening("127.0.0.1", port, 10, "redis-server")
        created = subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        cluster = cls(nodes, workdir)
        if created.returncode != 0:
            cluster.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-500:]} {created.stderr[-500:]}")
        _wait_cluster_ok(ports, 30)
        return cluster


def _cluster_ports(n: int) -> list[int]:
    """``n`` free ports whose cluster bus ports (port + 10000) are valid and free too."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port + 10000 > 65535 or port in ports or is_listening("127.0.0.1", port + 10000, 0.1):
            continue
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


def _cluster_node_process(port: int, workdir: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{port}.conf",
            "--cluster-node-timeout",
            "2000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_cluster_ok(ports: list[int], timeout_s: float) -> None:
    cli = shutil.which("redis-cli") or "redis-cli"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = [subprocess.run([cli, "-p", str(p), "cluster", "info"], capture_output=True, text=True, timeout=10).stdout for p in ports]
        if all("cluster_state:ok" in s for s in states):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the local Redis Cluster on ports {ports} did not reach cluster_state:ok in {timeout_s:.0f} s")


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
