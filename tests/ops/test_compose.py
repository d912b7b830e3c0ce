"""The production shape: docker-compose.yml, the Dockerfile, the Prometheus scrape config and the Grafana dashboard.

No Docker engine is needed: `docker-compose config` validates and resolves the compose file, the Dockerfile is parsed,
and every command the containers run is run here with --help against this checkout.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PASSWORD = "0123456789abcdef0123456789abcdef"
SERVICES = {"kafka", "redis", "topics", "feast-apply", "worker", "api", "ui", "feast", "prometheus", "grafana"}
IMAGE_SERVICES = {"topics", "feast-apply", "worker", "api", "ui", "feast"}
WAITS_FOR_FEAST_APPLY = {"worker", "api", "ui", "feast"}

pytestmark = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is installed by .ci/setup")


def compose(*args: str, password: str | None = PASSWORD) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TOPICFS_REDIS_PASSWORD" and not k.startswith("TOPICS_")}
    if password is not None:
        env["TOPICFS_REDIS_PASSWORD"] = password
    return subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def config() -> dict:
    """The compose file as docker-compose resolves it (anchors merged, variables substituted)."""
    done = compose("config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def command_of(service: dict) -> list[str]:
    command = service.get("command")
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_compose_file_validates_and_names_every_service(config):
    done = compose("config", "-q")
    assert done.returncode == 0, done.stderr
    assert SERVICES <= set(config["services"]), f"missing services: {SERVICES - set(config['services'])}"
    assert "grafana" in compose("config", "--services").stdout.split()  # optional (profile grafana) but named


def test_redis_has_a_password_that_every_client_uses(config):
    services = config["services"]
    redis = services["redis"]
    assert "--requirepass" in " ".join(command_of(redis))
    assert redis["environment"]["REDIS_PASSWORD"] == PASSWORD and redis["environment"]["REDISCLI_AUTH"] == PASSWORD
    for name in IMAGE_SERVICES:
        url = services[name]["environment"]["TOPICFS_REDIS__URL"]
        assert url.startswith(f"redis://:{PASSWORD}@redis:6379/"), (name, url)
    # no password, no stack: the variable is required, and the error names it
    done = compose("config", "-q", password=None)
    assert done.returncode != 0 and "TOPICFS_REDIS_PASSWORD" in done.stderr


def test_kafka_is_kraft_and_keeps_its_log_from_the_first_event(config):
    services = config["services"]
    kafka = services["kafka"]
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in env["KAFKA_PROCESS_ROLES"].split(",") and "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert not any("zookeeper" in str(s.get("image", "")) for s in services.values())
    # nothing deleted by age or size (a rebuild replays the log from its start) ...
    assert env["KAFKA_LOG_RETENTION_MS"] == "-1" and env["KAFKA_LOG_RETENTION_BYTES"] == "-1"
    assert not any(k.startswith("KAFKA_LOG_RETENTION_") and k not in {"KAFKA_LOG_RETENTION_MS", "KAFKA_LOG_RETENTION_BYTES"} for k in env)
    # ... and the log is on a named volume, which outlives the container
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in kafka["volumes"]}
    assert mounts[env["KAFKA_LOG_DIRS"]] in config["volumes"]
    assert services["worker"]["environment"]["TOPICFS_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_one_shot_jobs_run_first_and_the_services_wait_for_them(config):
    services = config["services"]
    assert "topicfs topics learn" in " ".join(command_of(services["topics"]))
    assert command_of(services["feast-apply"])[:3] == ["topicfs", "feast", "register"]
    assert services["feast-apply"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["feast-apply"]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in WAITS_FOR_FEAST_APPLY:
        assert services[name]["depends_on"]["feast-apply"]["condition"] == "service_completed_successfully", name
    for name in ("topics", "feast-apply"):
        assert services[name]["restart"] == "no" and services[name]["healthcheck"]["test"] == ["NONE"]  # healthcheck: disable
    assert services["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    # the jobs write where the others read: one artifacts volume and one Feast registry volume for all of them
    for name in IMAGE_SERVICES:
        assert {"artifacts:/data/artifacts:rw", "feast-registry:/app/feature_repo/data:rw"} <= set(services[name]["volumes"]), name
        assert services[name]["environment"]["TOPICFS_PATHS__ARTIFACTS_DIR"] == "/data/artifacts"


def test_the_worker_runs_its_pusher_and_serves_metrics_to_the_network(config):
    env = config["services"]["worker"]["environment"]
    assert env["TOPICFS_STREAM__FEAST_REPO_PATH"] == "/app/feature_repo"  # the worker starts its Feast pusher
    assert env["TOPICFS_STREAM__METRICS_HOST"] == "0.0.0.0"  # Prometheus scrapes from another container
    assert env["TOPICFS_LOGGING__FORMAT"] == "json"
    assert command_of(config["services"]["worker"]) == ["topicfs", "stream", "worker"]
    assert config["services"]["worker"]["healthcheck"]["test"] == ["CMD", "topicfs", "stream", "health"]


def image_commands(config) -> dict[str, list[str]]:
    """The topicfs / feast command line of every service built from the image (the topics job's from its shell line)."""
    commands = {}
    for name in IMAGE_SERVICES:
        command = command_of(config["services"][name])
        if command[:2] == ["sh", "-c"]:
            learn = re.search(r"exec (topicfs topics learn [^;]*)", command[2])
            assert learn, command
            command = shlex.split(learn.group(1))
        commands[name] = command
    return commands


@pytest.mark.parametrize("service", sorted(IMAGE_SERVICES))
def test_every_service_command_exists_in_this_checkout(config, service):
    """The command (and its options) of each service parses: `<command> --help` exits 0."""
    command = image_commands(config)[service]
    assert command[0] in {"topicfs", "feast"}
    done = subprocess.run([str(VENV_BIN / command[0]), *command[1:], "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{service}: {' '.join(command)} --help failed:\n{done.stdout}\n{done.stderr}"
    if service == "topics":
        assert "--dataset" in command and "--data" in command


def test_prometheus_scrapes_worker_pusher_and_api_on_their_ports(config):
    services = config["services"]
    mount = next(v for v in services["prometheus"]["volumes"] if v.endswith(":/etc/prometheus/prometheus.yml:ro"))
    scrape = yaml.safe_load(Path(mount.split(":")[0]).read_text())
    targets = {}
    for job in scrape["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets[job["job_name"]] = (sd["names"], sd["port"], job.get("metrics_path", "/metrics"))
        for static in job.get("static_configs", []):
            targets[job["job_name"]] = (static["targets"], None, job.get("metrics_path", "/metrics"))
    worker_env = services["worker"]["environment"]
    assert targets["worker"] == (["worker"], int(worker_env["TOPICFS_STREAM__METRICS_PORT"]), "/metrics")
    assert targets["pusher"] == (["worker"], int(worker_env["TOPICFS_STREAM__PUSHER_METRICS_PORT"]), "/metrics")
    api_command = command_of(services["api"])
    assert targets["api"] == (["api"], int(api_command[api_command.index("--port") + 1]), "/metrics")


def test_grafana_dashboard_queries_metrics_the_processes_export():
    from stream.metrics import PusherMetrics, WorkerMetrics

    exported = {metric.name for registry in (WorkerMetrics().registry, PusherMetrics().registry) for metric in registry.collect()}
    dashboard = json.loads((ROOT / "ops/grafana/dashboards/topicfs.json").read_text())
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried |= set(re.findall(r"topicfs_[a-z_]+", target["expr"]))
    assert queried, "the dashboard queries no topicfs metric"
    suffixes = re.compile(r"_(total|bucket|count|sum|created)$")
    unknown = {name for name in queried if suffixes.sub("", name) not in exported}
    assert not unknown, f"the dashboard queries metrics nobody exports: {unknown}"
    datasource = yaml.safe_load((ROOT / "ops/grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and all(p["datasource"]["uid"] == datasource["uid"] for p in dashboard["panels"])


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#"))
    )
    instructions = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_the_image_runs_as_a_non_root_user_with_a_healthcheck():
    instructions = dockerfile_instructions()
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the Dockerfile sets no USER: the image runs as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    created = [args for keyword, args in instructions if keyword == "RUN" and re.search(rf"useradd\b.*\b{user}\b", args)]
    assert created, f"the Dockerfile never creates user {user!r}"
    assert re.search(r"--uid\s+(\d+)", created[0]) and int(re.search(r"--uid\s+(\d+)", created[0]).group(1)) != 0
    # the folders compose mounts named volumes on belong to that user (a fresh named volume copies the ownership)
    assert all(folder in created[0] for folder in ("/data/artifacts", "/app/feature_repo/data")) and f"chown -R {user}:{user}" in created[0]
    index = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "USER")
    assert not any(keyword in {"RUN", "COPY", "ADD"} for keyword, _ in instructions[index + 1 :]), (
        "build steps after USER would run as that user"
    )
    checks = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    assert len(checks) == 1 and "NONE" not in checks[0].upper()
    check = json.loads(checks[0][checks[0].index("CMD") + 3 :])
    assert check == ["topicfs", "stream", "health"]
    cmd = json.loads(next(args for keyword, args in instructions if keyword == "CMD"))
    assert cmd == ["topicfs", "stream", "worker"]  # the HEALTHCHECK asks the default command's /health
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "TOPICFS_STREAM__METRICS_PORT=9100" in env  # so the worker serves the /health the check asks


def test_the_healthcheck_command_fails_when_no_worker_answers(tmp_path):
    """`topicfs stream health` (the image's HEALTHCHECK) exits 1 when nothing answers (answering: tests/stream/test_stream_ops.py)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TOPICFS_STREAM__METRICS_PORT": str(port)}
    done = subprocess.run(
        [str(VENV_BIN / "topicfs"), "stream", "health", "--timeout", "2"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and done.stderr.startswith("error: no health report from http://127.0.0.1:")
    done = subprocess.run(
        [str(VENV_BIN / "topicfs"), "stream", "health"],
        env={**os.environ, "TOPICFS_STREAM__METRICS_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: TOPICFS_STREAM__METRICS_PORT is 0: the worker serves no /health"
    ]


def test_the_build_context_holds_only_what_the_dockerfile_copies():
    """.dockerignore ignores everything (.venv alone is GBs) but the COPY sources, and the Feast registry folder."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    included = {line[1:] for line in lines if line.startswith("!")}
    sources = set()
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            sources |= {part.rstrip("/") for part in args.split()[:-1] if not part.startswith("--")}
    assert sources and sources <= included, f"COPY sources the context leaves out: {sources - included}"
    assert included <= sources, f"context entries no COPY uses: {included - sources}"
    assert "feature_repo/data" in lines  # a local registry must not end up in the image
