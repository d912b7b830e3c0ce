"""The stream's Lua scripts: shared Lua joined in by ``-- needs:`` lines (stream.state.lua), and the queue writer they
share (replace_queue.lua) writing long queues in chunks."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import redis

from stream.state import lua

SCRIPTS = sorted(
    path.name.removesuffix(".lua") for path in resources.files("stream").joinpath("lua").iterdir() if path.name.endswith(".lua")
)


def _needs(name: str) -> list[str]:
    source = resources.files("stream").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    return re.findall(r"^-- needs: (\w+)\.lua$", source, re.MULTILINE)


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_is_its_file_after_the_files_it_needs(name: str) -> None:
    own = resources.files("stream").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    joined = lua(name)
    assert joined.endswith(own)
    for needed in _needs(name):
        assert needed in SCRIPTS and joined.count(lua(needed)) == 1


def test_both_queue_writers_share_replace_queue() -> None:
    assert _needs("write_queue") == _needs("rebuild_queues") == ["replace_queue"]


@pytest.mark.integration
def test_write_queue_replaces_a_long_queue_in_served_order(redis_url: str) -> None:
    """1,234 ids: three ZADD chunks of at most 500; the first id gets the top score, what was there before is gone."""
    client = redis.Redis.from_url(redis_url)
    write = client.register_script(lua("write_queue"))
    client.zadd("q", {"old": 99999})
    ids = [str(v) for v in range(5000, 3766, -1)]
    assert write(keys=["q"], args=ids) == len(ids)
    assert [v.decode() for v in client.zrevrange("q", 0, -1)] == ids
    assert client.zscore("q", ids[0]) == len(ids) and client.zscore("q", ids[-1]) == 1
