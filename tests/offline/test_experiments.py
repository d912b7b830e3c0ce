"""Research knobs live in experiment files beside their jobs (offline_jobs/experiments/), each value with its evidence;
the settings they left keep their old TOPICFS_* variables, which still override the file with a deprecation warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from offline_jobs.experiments import load_experiment, read_experiment
from offline_jobs.mrlm import MRLMVariants
from offline_jobs.table2 import MovieLensExperiment, movielens_experiment, topic_settings
from topicfs.settings import MOVED, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = {"table2_movielens": MovieLensExperiment, "mrlm": MRLMVariants}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_value_has_one_line_of_evidence_and_passes_its_model(name: str) -> None:
    values, evidence = read_experiment(name)
    assert set(values) == set(evidence) == set(EXPERIMENTS[name].model_fields)
    assert all(isinstance(line, str) and line.strip() and "\n" not in line for line in evidence.values())
    assert load_experiment(name, EXPERIMENTS[name], environ={}).model_dump() == values


def test_every_moved_setting_is_a_knob_of_its_experiment_and_no_setting_any_more() -> None:
    fields = {(section, name) for section, model in Settings.model_fields.items() for name in model.annotation.model_fields}
    for (section, field), (name, key) in MOVED.items():
        assert (section, field) not in fields
        assert key in read_experiment(name)[0]


def test_an_old_variable_still_overrides_the_file_with_a_deprecation_warning(caplog) -> None:
    environ = {"TOPICFS_RANKERS__MOVIELENS_N_TOPICS": "30", "TOPICFS_RANKERS__MOVIELENS_KG_TAGS": '["genre", "actor"]'}
    with pytest.warns(DeprecationWarning, match="TOPICFS_RANKERS__MOVIELENS_N_TOPICS is deprecated; it still overrides n_topics"):
        movielens = load_experiment("table2_movielens", MovieLensExperiment, environ=environ)
    assert (movielens.n_topics, movielens.kg_tags, movielens.kg_min_movies) == (30, ["genre", "actor"], 2)
    assert sum("is deprecated" in record.message for record in caplog.records) == 2  # the CLI shows the log line
    with pytest.warns(DeprecationWarning):
        variants = load_experiment("mrlm", MRLMVariants, environ={"TOPICFS_MRLM__IN_BATCH_NEGATIVES": "true"})
    assert variants.in_batch_negatives is True and variants.explicit_negative_share == 0.0


def test_a_bad_old_variable_is_one_error_naming_it() -> None:
    with pytest.warns(DeprecationWarning), pytest.raises(SettingsError, match="TOPICFS_RANKERS__MOVIELENS_N_TOPICS=1: Input should be"):
        load_experiment("table2_movielens", MovieLensExperiment, environ={"TOPICFS_RANKERS__MOVIELENS_N_TOPICS": "1"})


def test_table2_takes_movielens_k_from_the_experiment_file(monkeypatch) -> None:
    movielens_experiment.cache_clear()
    assert topic_settings("movielens", Settings()).topics.n_topics == read_experiment("table2_movielens")[0]["n_topics"] == 40
    assert topic_settings("synthetic", Settings()).topics.n_topics == Settings().topics.n_topics
    monkeypatch.setenv("TOPICFS_RANKERS__MOVIELENS_N_TOPICS", "30")
    movielens_experiment.cache_clear()
    try:
        with pytest.warns(DeprecationWarning):
            assert topic_settings("movielens", Settings()).topics.n_topics == 30
    finally:
        movielens_experiment.cache_clear()


def test_the_settings_command_neither_lists_nor_flags_a_moved_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPICFS_")} | {"TOPICFS_RANKERS__MOVIELENS_N_TOPICS": "30"}
    result = subprocess.run(
        [sys.executable, "-m", "topicfs_app.cli", "settings"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert not any(name.startswith("movielens_") for name in json.loads(result.stdout)["rankers"])
    assert "in_batch_negatives" not in json.loads(result.stdout)["mrlm"]
    assert "is not a setting" not in result.stderr
