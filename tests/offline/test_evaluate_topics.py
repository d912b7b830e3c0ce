"""Table I / Fig. 3 evaluation: held-out split, clustering scores, inter/intra ratio, the whole report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from offline_jobs.evaluate_topics import (
    REFERENCE_ROW,
    _scores,
    evaluate_representations,
    holdout_split,
    markdown_table,
    supervised_reference_features,
    tagged_rows,
    write_report,
)
from offline_jobs.topic_metrics import cluster_scores, inter_intra_ratio
from tests.offline.test_encoders import tiny_title_model, tiny_torchscript_cnn  # noqa: F401  (fixtures)
from tests.offline.test_mmoe import make_videos, tiny_config
from topicfs.settings import EvaluationConfig, PathsConfig, Settings, TagGraphConfig, TopicsConfig


def blobs(n_per_class: int = 40, n_classes: int = 4, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, 8))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    return centres[labels] + noise * rng.standard_normal((len(labels), 8)), labels


def test_holdout_split_is_seeded_disjoint_and_complete() -> None:
    train, held = holdout_split(1000, 0.1, seed=3)
    assert len(held) == 100 and len(train) == 900
    assert np.intersect1d(train, held).size == 0 and np.union1d(train, held).tolist() == list(range(1000))
    again_train, again_held = holdout_split(1000, 0.1, seed=3)
    assert np.array_equal(held, again_held) and np.array_equal(train, again_train)
    assert not np.array_equal(held, holdout_split(1000, 0.1, seed=4)[1])


def test_cluster_scores_separate_perfect_from_random() -> None:
    features, labels = blobs()
    assert cluster_scores(features, labels, seed=0) == pytest.approx((1.0, 1.0))
    noise = np.random.default_rng(1).standard_normal(features.shape)
    ari, nmi = cluster_scores(noise, labels, seed=0)
    assert abs(ari) < 0.1 and nmi < 0.15
    # string labels and K = number of distinct labels
    assert cluster_scores(features, np.array(["a", "b", "c", "d"])[labels], seed=0) == pytest.approx((1.0, 1.0))
    with pytest.raises(ValueError, match="feature rows but"):
        cluster_scores(features[:-1], labels)
    with pytest.raises(ValueError, match="at least 2 classes"):
        cluster_scores(features, np.zeros(len(labels)))


def test_table1_cells_average_the_k_means_runs() -> None:
    """evaluation.cluster_runs: each cell is the mean over k-means seeds seed .. seed + runs - 1 (one run = today's cell)."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 120)
    features = np.eye(4)[labels] + rng.normal(0, 0.9, (120, 4))  # overlapping classes: k-means seeds disagree
    held = pd.DataFrame({"primary_class": labels, "secondary_class": labels % 2})
    single = [cluster_scores(features, labels, seed) for seed in (5, 6, 7)]
    assert len({round(ari, 9) for ari, _ in single}) > 1  # the runs differ, so the mean is a real average
    one, three = _scores("x", features, held, 5), _scores("x", features, held, 5, runs=3)
    assert (one.ari_pc, one.nmi_pc) == pytest.approx(single[0])
    assert (three.ari_pc, three.nmi_pc) == pytest.approx(tuple(np.mean(single, axis=0)))
    assert three.ari_sc == pytest.approx(np.mean([cluster_scores(features, labels % 2, seed)[0] for seed in (5, 6, 7)]))


def test_inter_intra_ratio_rewards_tight_far_classes() -> None:
    tight, labels = blobs(noise=0.05)
    loose, _ = blobs(noise=1.0)
    assert inter_intra_ratio(tight, labels) > 5 * inter_intra_ratio(loose, labels)
    # scale-free: features are L2-normalised first
    assert inter_intra_ratio(10 * tight, labels) == pytest.approx(inter_intra_ratio(tight, labels), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 classes"):
        inter_intra_ratio(tight, np.zeros(len(labels)))


def test_evaluate_representations_end_to_end(tiny_title_model, tiny_torchscript_cnn, tmp_path) -> None:  # noqa: F811
    """Every column of Table I, fitted on the training part only, per modality group, and the Markdown/JSON/PNG report.
    Every fourth video has no cover (the cover-only row is scored on the others), every fifth no tags."""
    videos = make_videos(120, tmp_path)
    videos.loc[videos.index % 4 == 1, "cover_image"] = None
    settings = Settings(
        paths=PathsConfig(artifacts_dir=tmp_path),
        tag_graph=TagGraphConfig(walk_length=10, walks_per_tag=5, embedding_dim=8, epochs=2),
        mmoe=tiny_config(tiny_title_model, image_encoder=tiny_torchscript_cnn, epochs=3),
        topics=TopicsConfig(n_topics=6, kmeans_iterations=10, missing_modalities="predict"),
        evaluation=EvaluationConfig(holdout_fraction=0.25, seed=2),
    )
    rows, facts = evaluate_representations(videos, settings)
    assert [r.representation for r in rows] == [
        "title only (pretrained f_T)",
        "tags only (ē)",
        "cover only (pretrained f_C)",
        "MMoE (z)",
        "MMoE+Tag (a)",
        REFERENCE_ROW,
    ]
    assert facts["n_train"] == 90 and facts["n_held_out"] == 30
    for row in rows:
        assert -1 <= row.ari_pc <= 1 and 0 <= row.nmi_pc <= 1 and row.inter_intra > 0
    by_name = {r.representation: r for r in rows}
    # the three classes show in the class tags, colours and title words: the learned columns find them
    # (tags alone less so: every fifth video has none, and those share ē = 0)
    assert by_name["MMoE+Tag (a)"].nmi_pc > 0.8 and by_name["tags only (ē)"].nmi_pc > 0.4
    for part in ("train", "held_out"):
        report = facts["topics_per_video"][part]
        assert report["n_videos"] == (90 if part == "train" else 30) and report["videos_without_topic"] == 0
    assert set(facts["seconds"]) >= {"tag_graph", "mmoe", "supervised_reference", "topics", "total"}
    # every fifth video has no tags: the table again on the held-out videos that have them
    tagged = tagged_rows(facts)
    assert 0 < facts["with_tags"]["n_videos"] < 30 and facts["with_tags"]["n_videos"] == round(30 * facts["held_out_with_tags"])
    assert [r.representation for r in tagged] == [r.representation for r in rows]
    assert all(0 <= r.nmi_pc <= 1 for r in tagged) and tagged[0] != rows[0]
    # the cover-only row on the held-out videos with a cover, every other row on all; each group's table
    n_covers = round(30 * facts["held_out_with_cover"])
    assert 0 < n_covers < 30 and by_name["cover only (pretrained f_C)"].n == n_covers and by_name["MMoE (z)"].n == 30
    assert set(facts["groups"]) == {"with tags", "without tags", "with cover", "without cover"}
    without_cover = [r["representation"] for r in facts["groups"]["without cover"]["rows"]]
    assert "cover only (pretrained f_C)" not in without_cover and "MMoE+Tag (a)" in without_cover
    # 'predict' builds a from the models' predictions for the ragged tags and covers; presence is audited
    assert facts["predicted_modalities"] == ["tags", "cover"]
    audit = facts["presence_audit"]["held_out"]
    assert {"has cover", "has tags", "primary class"} <= set(audit["nmi"]) and audit["groups"]["all"]["n"] == 30

    paths = write_report(rows, facts, tmp_path / "report", "Table I on a test catalogue")
    markdown = paths["markdown"].read_text()
    assert markdown_table(rows) in markdown and "topics per video, held_out videos" in markdown
    assert f"The same on the {facts['with_tags']['n_videos']} held-out videos with tags" in markdown
    assert markdown_table(tagged) in markdown and "held-out videos without cover" in markdown
    assert "held_out videos, presence audit: NMI(nearest topic, x)" in markdown
    assert json.loads(paths["json"].read_text())["rows"][0]["representation"] == "title only (pretrained f_T)"
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_needs_primary_classes(tiny_title_model, tmp_path) -> None:  # noqa: F811
    videos = make_videos(20).assign(primary_class=None)
    settings = Settings(paths=PathsConfig(artifacts_dir=tmp_path), mmoe=tiny_config(tiny_title_model))
    with pytest.raises(ValueError, match="needs primary classes"):
        evaluate_representations(videos, settings)


def _titled(words_by_class: dict[str, list[str]], n_per_class: int, seed: int) -> pd.DataFrame:
    """Videos whose title holds two of their primary class's words and one shared filler word."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, words in words_by_class.items():
        for _ in range(n_per_class):
            rows.append(
                {
                    "title": " ".join([*rng.choice(words, 2), rng.choice(["视频", "今天", "快乐"])]),
                    "primary_class": label,
                    "secondary_class": label + "-sub" if rng.random() < 0.5 else None,
                }
            )
    return pd.DataFrame(rows)


def test_supervised_reference_learns_the_classes_from_titles() -> None:
    words = {"美食": ["做饭", "红烧", "美味"], "游戏": ["王者", "上分", "段位"], "宠物": ["猫咪", "狗狗", "萌宠"]}
    train, held = _titled(words, 30, seed=0), _titled(words, 10, seed=1)
    features = supervised_reference_features(train, held, seed=0)
    # three primary and three secondary probabilities per held-out video, each block sums to 1
    assert features.shape == (30, 6) and features.dtype == np.float32
    np.testing.assert_allclose(features[:, :3].sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(features[:, 3:].sum(1), 1.0, rtol=1e-5)
    predicted = np.array(sorted(words))[features[:, :3].argmax(1)]
    assert (predicted == held["primary_class"].to_numpy()).mean() == 1.0
    assert cluster_scores(features, held["primary_class"].to_numpy(), seed=0) == pytest.approx((1.0, 1.0))


def test_supervised_reference_leaves_out_single_class_columns_and_empty_titles() -> None:
    words = {"美食": ["做饭", "红烧"], "游戏": ["王者", "上分"]}
    train, held = _titled(words, 20, seed=0).assign(secondary_class=None), _titled(words, 5, seed=1)
    assert supervised_reference_features(train, held, seed=0).shape == (10, 2)  # no secondary column to learn
    blank = train.assign(title=None)
    assert supervised_reference_features(blank, held, seed=0) is None
