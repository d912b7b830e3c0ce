"""Pins that match what is patched (issue 22): the project uses private code of two dependencies, so pyproject.toml
allows one minor version of each, the installed one is in it, and the private names the project uses still exist.

- faust-streaming 0.15: stream/app.py copies ``Consumer._drain_messages`` and ``Stream.take_events`` (their sources are
  pinned by SHA-256 in tests/stream/test_stream_faust_glue.py) and overrides ``_new_consumer_thread`` / ``_create_worker_consumer``.
- feast 0.67: topicfs/online_store.py and topicfs/feature_client.py import private helpers of Feast's Redis store
  (found here by reading their imports) and call private methods of ``RedisOnlineStore``.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("topicfs", "offline_jobs", "serving", "stream", "topicfs_app")

# distribution -> (the minor whose private code the project uses, the module prefix it imports)
PATCHED = {"faust-streaming": ((0, 15), "faust"), "feast": ((0, 67), "feast")}
# private attributes reached through a public class (subclass overrides and calls), beside the imported private names
PRIVATE_ATTRIBUTES = {
    "faust-streaming": [
        ("faust.transport.consumer", "Consumer._drain_messages"),
        ("faust.transport.consumer", "Consumer._add_gap"),
        ("faust.streams", "Stream._enable_passive"),
        ("faust.streams", "_tracks_buffer_agen"),
        ("faust.transport.drivers.aiokafka", "Consumer._new_consumer_thread"),
        ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread._create_worker_consumer"),
    ],
    "feast": [
        ("feast.infra.online_stores.redis", "RedisOnlineStore._parse_connection_string"),
        ("feast.infra.online_stores.redis", "RedisOnlineStore._get_client"),
    ],
}


def declared(distribution: str) -> Requirement:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    matches = [Requirement(d) for d in dependencies if Requirement(d).name == distribution]
    assert len(matches) == 1, f"{distribution} is declared {len(matches)} times in pyproject.toml"
    return matches[0]


def private_imports(prefix: str) -> set[tuple[str, str]]:
    """(module, name) of every ``from <prefix>... import _name`` in the project's packages."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == prefix:
                    found |= {(node.module, a.name) for a in node.names if a.name.startswith("_")}
    return found


@pytest.mark.parametrize("distribution", sorted(PATCHED))
def test_one_minor_is_allowed_and_it_is_installed(distribution):
    (major, minor), _ = PATCHED[distribution]
    specifier = declared(distribution).specifier
    installed = Version(version(distribution))
    assert installed in specifier, f"{distribution} {installed} is outside the pinned {specifier}"
    assert (installed.major, installed.minor) == (major, minor), f"installed {installed}, the private code used is of {major}.{minor}"
    assert Version(f"{major}.{minor}.0") in specifier
    assert Version(f"{major}.{minor + 1}.0") not in specifier and Version(f"{major}.{minor - 1}.999") not in specifier, specifier


@pytest.mark.parametrize("distribution", sorted(PATCHED))
def test_the_private_names_used_still_exist(distribution):
    _, prefix = PATCHED[distribution]
    names = private_imports(prefix)
    if distribution == "feast":
        assert ("feast.infra.online_stores.helpers", "_redis_key") in names  # the reader finds what online_store imports
    missing = [f"{module}.{name}" for module, name in sorted(names) if not hasattr(importlib.import_module(module), name)]
    for module, dotted in PRIVATE_ATTRIBUTES[distribution]:
        owner = importlib.import_module(module)
        for part in dotted.split("."):
            owner = getattr(owner, part, None)
        if owner is None:
            missing.append(f"{module}.{dotted}")
    assert missing == [], f"{distribution} {version(distribution)} lacks {missing}: review the code that uses them"
