"""The topic assignment rule (issue 21): the paper's given τ3, and τ3 calibrated at fit to a target number of topics per
video; the rule and its τ3 are saved with the topic model and the stream assigns new videos with them, as the offline
job does."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offline_jobs.topics import META_FILE, TopicModel, calibrated_threshold, select_topics
from tests.offline.test_encoders import tiny_title_model  # noqa: F401  (fixture)
from tests.offline.test_topics import separated_clusters, small_model


def test_calibrated_threshold_hand_example() -> None:
    sims = np.array([[0.9, 0.8, 0.3], [0.95, 0.5, 0.4], [0.7, 0.6, 0.2]])
    ids = np.tile(np.arange(3), (3, 1))
    # 2nd..3rd nearest: 0.8 0.3 0.5 0.4 0.6 0.2; a mean of 5/3 needs 2 of them: τ3 = 0.6 (videos get 2, 1, 2)
    assert calibrated_threshold(sims, 5 / 3) == pytest.approx(0.6)
    assert select_topics(ids, sims, calibrated_threshold(sims, 5 / 3), 3).counts.tolist() == [2, 1, 2]
    assert calibrated_threshold(sims, 2.0) == pytest.approx(0.5)  # 3 of them: 2, 2, 2
    assert select_topics(ids, sims, calibrated_threshold(sims, 1.0), 3).counts.tolist() == [1, 1, 1]  # nearest only
    assert calibrated_threshold(sims, 3.0) == -1.0 and calibrated_threshold(sims, 7.0) == -1.0  # every video its 3 nearest
    with pytest.raises(ValueError, match=">= 1"):
        calibrated_threshold(sims, 0.5)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 40), k=st.integers(1, 8), target=st.floats(1, 9, allow_subnormal=False))
def test_calibrated_threshold_gives_the_target_mean(seed: int, n: int, k: int, target: float) -> None:
    """Distinct cosines: the threshold rule under the calibrated τ3 gives the mean closest to the target it can reach."""
    rng = np.random.default_rng(seed)
    sims = -np.sort(-rng.permutation(np.linspace(-1, 1, n * k)).reshape(n, k), axis=1)  # distinct, each row descending
    counts = select_topics(np.tile(np.arange(k), (n, 1)), sims, calibrated_threshold(sims, target), k).counts
    reachable = np.arange(n * (k - 1) + 1) / n + 1  # the means a threshold can give: 1 + j / n
    assert abs(counts.mean() - target) <= np.min(np.abs(reachable - target)) + 1e-9  # (half-way: either neighbour)
    assert np.min(np.abs(reachable - counts.mean())) < 1e-9


def test_calibrated_model_fits_the_target_and_assigns_with_the_fixed_threshold() -> None:
    """Over-split clusters (K = 4 x the clusters): under the paper's τ3 videos get whatever number of topics the centres'
    crowding gives; calibrated, the fitted videos get the target on average, and new rows are judged by the same τ3."""
    points, _ = separated_clusters(n_per_cluster=40, n_clusters=3, dim=8, seed=2)
    points += np.random.default_rng(0).normal(0, 0.25, points.shape).astype(np.float32)
    paper = small_model(n_topics=12, assign_threshold=0.0, max_topics_per_video=8, block_size=17).fit(points)
    model = copy.copy(paper).set_params(assign_rule="calibrated", target_topics_per_video=2.5).calibrate(points)
    assert paper.assign(points).counts.mean() > 3.5  # the paper's rule here: most videos get most of their cluster's centres
    assert model.assign(points).counts.mean() == pytest.approx(2.5, abs=1 / len(points))
    fitted = small_model(
        n_topics=12, assign_threshold=0.0, max_topics_per_video=8, block_size=17, assign_rule="calibrated", target_topics_per_video=2.5
    ).fit(points)
    assert fitted.calibrated_threshold_ == model.calibrated_threshold_ == model.assignment_threshold
    new = points[:30] + np.random.default_rng(1).normal(0, 0.1, (30, 8)).astype(np.float32)
    cosine = model.centred(new) @ model.cluster_centers_.T  # (30, K) dense reference for rows the model never saw
    dense = select_topics(np.tile(np.arange(12), (30, 1)), cosine, model.calibrated_threshold_, 8)
    assigned = model.assign(new)
    for row in range(30):
        if np.min(np.abs(cosine[row] - model.calibrated_threshold_)) > 1e-5:  # float32 rounding could flip a borderline one
            np.testing.assert_array_equal(assigned.video(row)[0], dense.video(row)[0])
    with pytest.raises(RuntimeError, match="calibrate"):
        copy.copy(paper).set_params(assign_rule="calibrated").assign(points)
    with pytest.raises(ValueError, match="assign_rule"):
        small_model(assign_rule="margin").fit(points)


def test_saved_model_keeps_its_rule_and_older_models_load_with_the_papers(tmp_path: Path, monkeypatch) -> None:
    points, _ = separated_clusters(n_per_cluster=30, n_clusters=3, dim=8, seed=5)
    points += np.random.default_rng(1).normal(0, 0.25, points.shape).astype(np.float32)
    model = small_model(n_topics=9, max_topics_per_video=8, assign_rule="calibrated", target_topics_per_video=3.0).fit(points)
    expected = model.assign(points)
    loaded = TopicModel.load(model.save(tmp_path / "calibrated"))
    assert (loaded.assign_rule, loaded.target_topics_per_video) == ("calibrated", 3.0)
    assert loaded.calibrated_threshold_ == model.calibrated_threshold_ != model.assign_threshold
    assert loaded.assign(points).to_lists() == expected.to_lists()
    # a model saved before the rule existed (format 2, no assign_rule) keeps the paper's rule whatever the default is
    meta_path = tmp_path / "calibrated" / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 2
    del meta["config"]["assign_rule"], meta["config"]["target_topics_per_video"], meta["calibrated_threshold"]
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setattr(TopicModel.__init__, "__defaults__", _defaults_with(assign_rule="calibrated"))
    assert TopicModel().assign_rule == "calibrated"  # the patched default is in force ...
    old = TopicModel.load(tmp_path / "calibrated")
    assert old.assign_rule == "threshold"  # ... and the old model ignores it
    assert old.assign(points).to_lists() == copy.copy(model).set_params(assign_rule="threshold").assign(points).to_lists()


def _defaults_with(**changes) -> tuple:
    import inspect

    parameters = [p for p in inspect.signature(TopicModel.__init__).parameters.values() if p.default is not inspect.Parameter.empty]
    return tuple(changes.get(p.name, p.default) for p in parameters)


def test_stream_assigns_as_the_offline_job_under_the_calibrated_rule(tmp_path: Path, tiny_title_model) -> None:  # noqa: F811
    """The topic job fits with assign_rule=calibrated and writes its models; the stream's assigner (offline_jobs.inference)
    loads them and gives the fitted videos the job's topics and weights, and new videos topics under the same τ3."""
    from offline_jobs.inference import load_topic_assigner
    from offline_jobs.pipeline import run_topic_job
    from topicfs.settings import Settings
    from topicfs.synthetic import make_catalogue

    catalogue = make_catalogue(180, 3, 16, True, tmp_path / "catalogue", 4, show_progress=False, cover_share=0.3, tag_share=0.15)
    fitted, new = catalogue.videos.iloc[:150].reset_index(drop=True), catalogue.videos.iloc[150:].reset_index(drop=True)
    config = Settings(
        paths={"artifacts_dir": tmp_path / "artifacts"},
        mmoe={
            "title_encoder": str(tiny_title_model),
            "epochs": 1,
            "n_experts": 2,
            "expert_dim": 8,
            "tower_hidden": 8,
            "image_size_px": 16,
            "cnn_channels": [4],
            "torch_threads": 1,
        },
        tag_graph={"walk_length": 10, "walks_per_tag": 2, "epochs": 1, "workers": 1},
        topics={"n_topics": 8, "assign_rule": "calibrated", "target_topics_per_video": 2.5, "missing_modalities": "predict"},
    )
    job = run_topic_job(fitted, config, write=True)
    assert job.assignment.counts.mean() == pytest.approx(2.5, abs=0.05)  # the rule is in force (ties could add a few)
    assigner = load_topic_assigner(config.paths.models_dir)
    topics = assigner.models.topics
    assert topics.assign_rule == "calibrated" and topics.assignment_threshold == job.models.topics.calibrated_threshold_
    ids, weights = assigner.assign_with_weights(fitted)
    job_ids, job_weights = job.assignment.to_lists()
    assert ids == job_ids
    np.testing.assert_allclose(np.concatenate(weights), np.concatenate(job_weights), atol=1e-6)
    new_ids, new_weights = assigner.assign_with_weights(new)
    a, _, _ = assigner.models.representation(new)
    assert new_ids == topics.assign(a).to_lists()[0]
    assert all(min(w[1:], default=1.0) >= topics.calibrated_threshold_ - 1e-6 for w in new_weights)  # the fixed τ3, not re-fitted


def test_the_job_suggests_the_calibrated_rule_when_most_videos_hit_the_cap(tmp_path: Path, caplog) -> None:
    """τ3 = -1 gives every video the cap under the paper's rule: the job says so and names the setting; calibrated, it does not."""
    from offline_jobs.pipeline import run_topic_job
    from topicfs.settings import Settings
    from topicfs.synthetic import make_catalogue

    videos = make_catalogue(120, 3, with_images=False, seed=2, show_progress=False, tag_share=1.0).videos.assign(title="")  # no MMoE
    for rule, warned in (("threshold", True), ("calibrated", False)):
        config = Settings(
            paths={"artifacts_dir": tmp_path / rule},
            tag_graph={"walk_length": 10, "walks_per_tag": 2, "epochs": 1, "workers": 1},
            topics={"n_topics": 10, "assign_threshold": -1.0, "max_topics_per_video": 4, "assign_rule": rule},
        )
        caplog.clear()
        with caplog.at_level("WARNING", logger="offline_jobs.pipeline"):
            job = run_topic_job(videos, config, write=False)
        assert job.assignment.counts.mean() == (4.0 if warned else pytest.approx(4.0, abs=0.1))
        assert any("ASSIGN_RULE=calibrated" in r.getMessage() for r in caplog.records) is warned
