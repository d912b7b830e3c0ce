"""Bad set-ups fail fast with one line naming the cause: unreachable Redis, a missing Parquet table,
a table whose column types do not match the view, a bad feature_store.yaml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from topicfs import tables
from topicfs.feature_registry import RegistrationError, register_and_materialize
from topicfs.services import free_port
from topicfs.settings import get_settings

from feast_tables import make_tables, point_env

pytestmark = pytest.mark.integration
WORKTREE = Path(__file__).resolve().parents[2]


@pytest.fixture()
def setup(tmp_path, monkeypatch, redis_url):
    repo = point_env(monkeypatch, tmp_path, redis_url)
    make_tables(tmp_path / "artifacts" / "tables")
    yield {"root": tmp_path, "repo": repo, "tables_dir": tmp_path / "artifacts" / "tables"}
    get_settings.cache_clear()


def _error_line(capture) -> str:
    message = str(capture.value)
    assert "\n" not in message
    return message


def test_unreachable_redis(setup, monkeypatch):
    monkeypatch.setenv("TOPICFS_REDIS__URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    with pytest.raises(RegistrationError) as capture:
        register_and_materialize(get_settings())
    assert "unreachable" in _error_line(capture)


def test_missing_parquet_table(setup):
    (setup["tables_dir"] / tables.VIDEO_TAG_EMBEDDINGS).unlink()
    with pytest.raises(RegistrationError) as capture:
        register_and_materialize(get_settings())
    line = _error_line(capture)
    assert tables.VIDEO_TAG_EMBEDDINGS in line and "missing offline table" in line


def test_missing_optional_table_only_skips_its_view(setup):
    (setup["tables_dir"] / tables.MRLM_ITEM_VECTORS).unlink()
    report = register_and_materialize(get_settings())
    assert "mrlm_item_vectors" not in report.materialized
    assert any(line.startswith("mrlm_item_vectors: missing optional table") for line in report.skipped)


def test_schema_mismatch(setup):
    path = setup["tables_dir"] / tables.VIDEO_TOPICS
    table = pq.read_table(path)
    index = table.schema.get_field_index("topic_feature")
    table = table.set_column(index, "topic_feature", table.column("topic_feature").cast(pa.list_(pa.float64())))
    pq.write_table(table, path)
    with pytest.raises(RegistrationError) as capture:
        register_and_materialize(get_settings())
    line = _error_line(capture)
    assert "schema mismatch" in line and "topic_feature" in line and "double" in line and "Array(Float32)" in line


def test_missing_column(setup):
    path = setup["tables_dir"] / tables.TOPIC_CENTROIDS
    pq.write_table(pq.read_table(path).drop_columns(["n_videos"]), path)
    with pytest.raises(RegistrationError) as capture:
        register_and_materialize(get_settings())
    assert "no column 'n_videos'" in _error_line(capture)


def test_bad_feature_store_yaml(setup):
    yaml_path = setup["repo"] / "feature_store.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("url: ${TOPICFS_REDIS__URL}", "url: http://nowhere:1"))
    with pytest.raises(RegistrationError) as capture:
        register_and_materialize(get_settings())
    line = _error_line(capture)
    assert "feature_store.yaml" in line and "redis://" in line


def test_cli_prints_one_line_and_exits_1(setup, monkeypatch):
    (setup["tables_dir"] / tables.VIDEO_TOPICS).unlink()
    env = {key: value for key, value in __import__("os").environ.items()}
    env["PYTHONPATH"] = str(WORKTREE)
    result = subprocess.run(
        [sys.executable, "-c", "from topicfs.feast_cli import app; app()", "register"],
        capture_output=True,
        text=True,
        env=env,
        cwd=WORKTREE,
        timeout=120,
    )
    assert result.returncode == 1
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and tables.VIDEO_TOPICS in error_lines[0]
