"""One source for every setting: estimator defaults equal the settings' defaults, and a concept is one field.

Code that builds an estimator directly gets the same model as the CLI, which builds it from the settings.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from topicfs.settings import (
    RENAMED,
    MMoEConfig,
    MRLMConfig,
    RankerConfig,
    ServingConfig,
    Settings,
    StreamConfig,
    TagGraphConfig,
    TopicsConfig,
)

ROOT = Path(__file__).resolve().parents[1]


def _estimators():
    """(callable, {parameter: (config model, field)}, parameters that are no setting) for every estimator with defaults."""
    from offline_jobs.mmoe import MultimodalTopicEncoder
    from offline_jobs.mrlm import MRLM, MRLMVariants
    from offline_jobs.tag_graph import TagGraphEmbedder
    from offline_jobs.topics import TopicModel
    from serving.candidates import AsyncCandidateGenerator, CandidateGenerator
    from serving.features import build_training_frame
    from serving.rankers import Ranker

    ranker = {name: (RankerConfig, name) for name in inspect.signature(Ranker).parameters if name in RankerConfig.model_fields}
    ranker |= {
        "random_state": (RankerConfig, "seed"),
        "topic_embedding_dim": (TopicsConfig, "topic_feature_dim"),
        "max_topics_per_video": (TopicsConfig, "max_topics_per_video"),
    }
    candidates = {
        "recent_clicks": (StreamConfig, "recent_clicks"),
        "topics_per_user": (ServingConfig, "topics_per_user"),
        "n_candidates": (ServingConfig, "n_candidates"),
    }
    return [
        (TagGraphEmbedder, {name: (TagGraphConfig, name) for name in TagGraphConfig.model_fields}, {"show_progress"}),
        (
            TopicModel,
            {name: (TopicsConfig, name) for name in TopicsConfig.model_fields},
            {"block_size", "max_points_per_centroid", "init_sample_per_topic", "show_progress"},
        ),
        (MultimodalTopicEncoder, {name: (MMoEConfig, name) for name in MMoEConfig.model_fields}, set()),
        # the preprocessing and baseline settings of MRLMConfig belong to mrlm_data.prepare and the job, not the model
        (
            MRLM,
            {name: (MRLMConfig, name) for name in inspect.signature(MRLM).parameters if name in MRLMConfig.model_fields}
            | {name: (MRLMVariants, name) for name in MRLMVariants.model_fields},  # research knobs: offline_jobs/experiments/mrlm.toml
            {"feast_vector_dim"},
        ),
        (Ranker, ranker, {"model", "features", "show_progress"}),
        (CandidateGenerator, candidates, {"client", "layout", "server_side", "max_concurrency"}),
        (AsyncCandidateGenerator, candidates, {"client", "layout", "server_side", "max_concurrency"}),
        (
            build_training_frame,
            {
                "topic_feature_dim": (TopicsConfig, "topic_feature_dim"),
                "recent_clicks": (StreamConfig, "recent_clicks"),
                "history_videos": (RankerConfig, "history_videos"),
                "history_topics": (RankerConfig, "history_topics"),
            },
            {"entity_df", "fetch_features"},
        ),
    ]


def _default(config: type[BaseModel], field: str):
    value = getattr(config(), field)
    return tuple(value) if isinstance(value, list) else value  # estimators take tuples where settings hold lists


@pytest.mark.parametrize("index", range(8))
def test_every_estimator_default_is_the_settings_default(index: int) -> None:
    estimator, settings_of, not_settings = _estimators()[index]
    parameters = inspect.signature(estimator).parameters
    undeclared = set(parameters) - set(settings_of) - not_settings
    assert not undeclared, f"{estimator.__name__}: parameters with no setting named in this test: {sorted(undeclared)}"
    drift = {}
    for name, (config, field) in settings_of.items():
        assert name in parameters, f"{estimator.__name__} takes no {name} ({config.__name__}.{field})"
        default = parameters[name].default
        default = tuple(default) if isinstance(default, list) else default
        if default != _default(config, field):
            drift[name] = (default, f"{config.__name__}.{field}", _default(config, field))
    assert not drift, f"{estimator.__name__}: defaults differ from the settings (parameter: default, setting, value): {drift}"


def test_a_changed_setting_reaches_the_estimator_the_cli_builds() -> None:
    """from_config passes every setting through (the defaults above are equal, so a changed value tells)."""
    from offline_jobs.mmoe import MultimodalTopicEncoder
    from offline_jobs.mrlm import MRLM
    from offline_jobs.tag_graph import TagGraphEmbedder
    from offline_jobs.topics import TopicModel
    from serving.rankers import Ranker

    settings = Settings(
        tag_graph={"weighting": "mean"},
        topics={"max_topics_per_video": 3, "topic_feature_dim": 4},
        rankers={"weight_decay": 0.5},
        mmoe={"n_experts": 5},
        mrlm={"theta": 0.5},
    )
    assert TagGraphEmbedder.from_config(settings.tag_graph).weighting == "mean"
    assert TopicModel.from_config(settings.topics).max_topics_per_video == 3
    assert MultimodalTopicEncoder.from_config(settings.mmoe).n_experts == 5
    assert MRLM.from_config(settings.mrlm).theta == 0.5
    ranker = Ranker.from_config(settings.rankers, "dcn", "topic", settings.topics)
    assert (ranker.max_topics_per_video, ranker.topic_embedding_dim, ranker.weight_decay) == (3, 4, 0.5)


def test_a_concept_is_one_field() -> None:
    """N1, the topic ids per video and the topic embedding size each have one field; the old twins are gone."""
    fields = {(section, name) for section, model in Settings.model_fields.items() for name in model.annotation.model_fields}
    owners = {name: sorted(s for s, n in fields if n == name) for name in ("recent_clicks", "max_topics_per_video", "topic_feature_dim")}
    assert owners == {"recent_clicks": ["stream"], "max_topics_per_video": ["topics"], "topic_feature_dim": ["topics"]}
    assert not any(name == "topic_embedding_dim" for _, name in fields)
    assert all(old not in fields and new in fields for old, new in RENAMED.items())


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("TOPICFS_SERVING__RECENT_CLICKS", "TOPICFS_STREAM__RECENT_CLICKS", ("stream", "recent_clicks")),
        ("TOPICFS_RANKERS__MAX_TOPICS_PER_VIDEO", "TOPICFS_TOPICS__MAX_TOPICS_PER_VIDEO", ("topics", "max_topics_per_video")),
        ("TOPICFS_RANKERS__TOPIC_EMBEDDING_DIM", "TOPICFS_TOPICS__TOPIC_FEATURE_DIM", ("topics", "topic_feature_dim")),
    ],
)
def test_an_old_variable_still_works_with_one_deprecation_line(old: str, new: str, path: tuple[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPICFS_")} | {old: "5"}
    result = subprocess.run(
        [sys.executable, "-m", "topicfs_app.cli", "settings"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[path[0]][path[1]] == 5
    lines = [line for line in result.stderr.splitlines() if old in line]
    assert len(lines) == 1 and f"{old} is deprecated; use {new}" in lines[0], result.stderr
    assert "is not a setting" not in result.stderr

    both = env | {new: "6"}  # the new name wins
    result = subprocess.run(
        [sys.executable, "-m", "topicfs_app.cli", "settings"], env=both, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[path[0]][path[1]] == 6
    assert f"{old} is deprecated and ignored: {new} is set" in result.stderr
