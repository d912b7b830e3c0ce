"""Ragged modalities (issue 21): the synthetic option, the presence audit, tag imputation, cover dropout, and the
audit a topic run prints and writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from offline_jobs.topics import TagBank, TopicAssignment, TopicModel, impute_tag_half, neighbour_tag_half, presence_audit
from tests.offline.test_encoders import tiny_title_model  # noqa: F401  (fixture)
from topicfs.synthetic import make_catalogue

ROOT = Path(__file__).resolve().parents[2]


def test_ragged_catalogue_shares_follow_publish_time_and_keep_the_content(tmp_path):
    plain = make_catalogue(600, 6, out_dir=tmp_path / "a", seed=3, show_progress=False)
    ragged = make_catalogue(600, 6, out_dir=tmp_path / "b", seed=3, show_progress=False, cover_share=0.3, tag_share=0.15)
    complete = make_catalogue(600, 6, with_images=False, seed=3, show_progress=False, tag_share=1.0)
    assert plain.has_cover.all() and 0.7 < plain.has_tags.mean() < 0.9  # the default draw is unchanged
    assert abs(ragged.has_cover.mean() - 0.3) < 0.06 and abs(ragged.has_tags.mean() - 0.15) < 0.05
    assert complete.has_tags.all() and complete.has_cover is None
    # same titles and topics; a ragged video's tags and cover are the default's or none
    assert (plain.videos["title"] == ragged.videos["title"]).all() and (plain.true_topic == ragged.true_topic).all()
    assert ragged.videos["cover_image"].notna().sum() == ragged.has_cover.sum() == len(list((tmp_path / "b" / "covers").glob("*.png")))
    # older videos (rows are in publish order) have covers and tags more often; the topic does not decide it
    half = len(ragged.has_cover) // 2
    assert ragged.has_cover[:half].mean() > 2 * ragged.has_cover[half:].mean()
    assert ragged.has_tags[:half].mean() > 2 * ragged.has_tags[half:].mean()
    shares = [ragged.has_cover[ragged.true_topic == t].mean() for t in range(6)]
    assert max(shares) - min(shares) < 0.15


@pytest.mark.parametrize("bad", [{"cover_share": 1.5}, {"tag_share": -0.1}, {"presence_age_slope": 2.0}, {"publish_span_days": 0}])
def test_ragged_options_reject_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        make_catalogue(20, 2, with_images=False, show_progress=False, **bad)


def _assignment(topic_lists: list[list[int]]) -> TopicAssignment:
    counts = [len(t) for t in topic_lists]
    return TopicAssignment(
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        np.array([t for ts in topic_lists for t in ts], np.int64),
        np.ones(sum(counts), np.float32),
    )


def test_presence_audit_sees_topics_that_follow_presence():
    has_cover = np.array([True, True, False, False] * 25)
    label = np.arange(100) % 2
    follows_cover = _assignment([[0 if c else 1, 2] for c in has_cover])
    follows_label = _assignment([[int(has)] + [5] * 7 if has else [int(has)] for has in label])
    audit = presence_audit(follows_cover, 8, {"cover": has_cover, "tags": None}, {"class": label})
    assert audit["nmi"]["has cover"] == pytest.approx(1.0) and audit["nmi"]["class"] == pytest.approx(0.0, abs=1e-9)
    assert "has tags" not in audit["nmi"]
    assert audit["groups"]["with cover"] == {"n": 50, "mean_topics": 2.0, "at_cap": 0.0}
    audit = presence_audit(follows_label, 8, {"cover": has_cover}, {"class": label})
    assert audit["nmi"]["has cover"] == pytest.approx(0.0, abs=1e-9) and audit["nmi"]["class"] == pytest.approx(1.0)
    assert audit["groups"]["all"]["at_cap"] == 0.5 and audit["groups"]["all"]["mean_topics"] == 4.5


def test_impute_tag_half_is_the_expected_tag_vector_for_tagless_rows_only():
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    e_bar = np.array([[0.5, 0.5], [0.0, 0.0], [0.0, 0.0]], np.float32)
    has_tags = np.array([True, False, False])
    probs = np.array([[0.9, 0.9, 0.9], [0.6, 0.2, 0.0], [0.0, 0.0, 0.0]])
    out = impute_tag_half(e_bar, has_tags, probs, embeddings, tag_weights=np.array([1.0, 2.0, 1.0]))
    np.testing.assert_allclose(out[0], [0.5, 0.5])  # tagged: unchanged
    np.testing.assert_allclose(out[1], [0.6 / 1.0, 0.4 / 1.0], rtol=1e-6)  # (0.6 e0 + 0.4 e1) / (0.6 + 0.4)
    np.testing.assert_array_equal(out[2], [0.0, 0.0])  # no predicted mass: stays zero
    np.testing.assert_array_equal(e_bar[1], [0.0, 0.0])  # input untouched
    with pytest.raises(ValueError, match="tag_probs"):
        impute_tag_half(e_bar, has_tags, probs[:, :2], embeddings)


def test_neighbour_tag_half_takes_the_tags_of_the_nearest_tagged_videos_in_z():
    # two subjects in z; tagged videos of subject 0 carry tag direction [1, 0], of subject 1 [0, 1]
    z = np.array([[1, 0.1], [1, -0.1], [0.1, 1], [-0.1, 1], [1, 0.05], [0.05, 1], [0, 0]], np.float32)
    e_bar = np.array([[2, 0], [1, 0], [0, 3], [0, 1], [0, 0], [0, 0], [0, 0]], np.float32)
    has_tags = np.array([True, True, True, True, False, False, False])
    bank = TagBank.from_videos(e_bar, has_tags, z, max_rows=10)
    assert len(bank) == 4 and np.allclose(np.linalg.norm(bank.e, axis=1), 1.0)  # tagged rows only, unit ē
    out = neighbour_tag_half(e_bar, has_tags, z, bank, k=2)
    np.testing.assert_allclose(out[4], [1.0, 0.0], atol=1e-6)  # both nearest are subject 0: its tags' direction
    np.testing.assert_allclose(out[5], [0.0, 1.0], atol=1e-6)
    np.testing.assert_array_equal(out[:4], e_bar[:4])  # tagged rows unchanged
    np.testing.assert_array_equal(out[6], [0.0, 0.0])  # no z: nothing to look up by
    assert not e_bar[4].any()  # input untouched
    # weights are the cosines: with k = 4 the near subject outweighs the far one, and different videos differ
    wide = neighbour_tag_half(e_bar, has_tags, z, bank, k=4)
    assert wide[4, 0] > 0.8 > wide[4, 1] and wide[5, 1] > 0.8 > wide[5, 0]
    # looked up in blocks (here one row at a time): the same result
    np.testing.assert_allclose(neighbour_tag_half(e_bar, has_tags, z, bank, k=4, max_block_values=4 * 2), wide, rtol=1e-6)
    index = bank.index()
    assert bank.index() is index  # built once per bank, not per call
    import copy

    assert copy.deepcopy(bank)._index is None and len(copy.deepcopy(bank)) == 4  # a copy rebuilds its own index
    assert len(TagBank.from_videos(e_bar, has_tags, z, max_rows=3)) == 3  # a sample when the bank is capped
    with pytest.raises(ValueError, match="wide"):
        neighbour_tag_half(e_bar, has_tags, z, TagBank(bank.z[:, :1], bank.e), k=2)


def _blobs(n: int, centres: np.ndarray, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(len(centres), size=n)
    return (centres[labels] + noise * rng.normal(size=(n, centres.shape[1]))).astype(np.float32), labels


def test_masked_kmeans_on_complete_rows_is_lloyds_kmeans():
    """Every row has every half: the Euclidean variant is scikit-learn's k-means on the normalised rows (same partition,
    its inertia) and the spherical one faiss's spherical k-means."""
    import faiss
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from offline_jobs.topic_metrics import cluster_scores, l2_normalise
    from offline_jobs.topics import masked_kmeans, topic_representation

    rng = np.random.default_rng(4)
    e, labels = _blobs(400, rng.normal(size=(5, 6)), 0.3, rng)
    z = (np.eye(5)[labels] @ rng.normal(size=(5, 10)) + 0.3 * rng.normal(size=(400, 10))).astype(np.float32)
    a = units = topic_representation(e, z)  # every half unit: the rows masked_kmeans takes
    reference = KMeans(n_clusters=5, n_init=4, random_state=0).fit(l2_normalise(a))
    _, found, inertia = masked_kmeans(units, [6, 10], 5, np.random.default_rng(0), spherical=False, max_iter=300, n_init=4)
    assert adjusted_rand_score(reference.labels_, found) == 1.0
    assert inertia == pytest.approx(reference.inertia_, rel=1e-4)  # (1/H) Σ_h ‖u_h - c_h‖² = ‖a/√2 - c/√2‖²
    kmeans = faiss.Kmeans(16, 5, niter=25, seed=0, spherical=True)
    kmeans.train(np.ascontiguousarray(l2_normalise(a)))
    centres, found, _ = masked_kmeans(units, [6, 10], 5, np.random.default_rng(0), spherical=True, max_iter=25, n_init=4)
    assert adjusted_rand_score(kmeans.index.search(l2_normalise(a), 1)[1][:, 0], found) == 1.0
    assert np.allclose(np.linalg.norm(centres[:, :6], axis=1), 1) and np.allclose(np.linalg.norm(centres[:, 6:], axis=1), 1)
    assert cluster_scores(a, labels, 0, halves=[6, 10]) == pytest.approx(cluster_scores(a, labels, 0))
    with pytest.raises(ValueError, match="at least one non-zero half"):
        masked_kmeans(np.zeros((3, 4), np.float32), [2, 2], 2, rng, spherical=True, max_iter=5)


def _presence_independent_of_topic(seed: int) -> tuple[np.ndarray, list[int], np.ndarray, np.ndarray]:
    """a = [ē, z] of 1,500 videos on 6 topics; tags (ē) on 30%, drawn whatever the topic. Returns (a, halves, topic,
    has_tags)."""
    from offline_jobs.topics import representation_halves, topic_representation

    rng = np.random.default_rng(seed)
    z, topic = _blobs(1500, rng.normal(size=(6, 16)), 1.0, rng)
    e = (rng.normal(size=(6, 8))[topic] + rng.normal(size=(1500, 8))).astype(np.float32)
    has_tags = rng.random(1500) < 0.3
    e[~has_tags] = 0
    return topic_representation(e, z), representation_halves(e, z), topic, has_tags


@pytest.mark.parametrize("seed", [0, 1])
def test_mask_topics_follow_the_topic_not_tag_presence(seed, tmp_path):
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from offline_jobs.topics import nearest_topics, normalize_rows

    a, halves, topic, has_tags = _presence_independent_of_topic(seed)
    nearest = {}
    for mode in ("zero", "mask"):
        model = TopicModel(n_topics=24, seed=seed, show_progress=False, missing_modalities=mode).fit(a, halves)
        nearest[mode] = nearest_topics(model.assign(a))
    assert nmi(has_tags, nearest["zero"]) > 0.1  # zero-filled ē: many topics are (un)tagged videos only
    assert nmi(has_tags, nearest["mask"]) < 0.02 and nmi(topic, nearest["mask"]) > nmi(topic, nearest["zero"]) - 0.03
    # a tagless video's similarity to a topic is the cosine of its centred z with the topic's z half; a tagged one's
    # the mean of its two halves' cosines; the saved model (the stream's) assigns the same
    loaded = TopicModel.load(model.save(tmp_path / "topics"))
    assignment = loaded.assign(a)
    x = model.centred(a)
    unit_centres = np.concatenate([normalize_rows(model.cluster_centers_[:, :8]), normalize_rows(model.cluster_centers_[:, 8:])], axis=1)
    tagless, tagged = np.flatnonzero(~has_tags)[0], np.flatnonzero(has_tags)[0]
    ids, weights = assignment.video(tagless)
    np.testing.assert_allclose(weights, normalize_rows(x[tagless : tagless + 1, 8:])[0] @ unit_centres[ids, 8:].T, atol=1e-5)
    ids, weights = assignment.video(tagged)
    halves_of = [normalize_rows(x[tagged : tagged + 1, :8])[0], normalize_rows(x[tagged : tagged + 1, 8:])[0]]
    expected = (halves_of[0] @ unit_centres[ids, :8].T + halves_of[1] @ unit_centres[ids, 8:].T) / 2
    np.testing.assert_allclose(weights, expected, atol=1e-5)
    assert ids[0] == int(np.argmax(halves_of[0] @ unit_centres[:, :8].T + halves_of[1] @ unit_centres[:, 8:].T))
    assert assignment.to_lists() == model.assign(a).to_lists()
    # without centring, and halves of a that are not unit vectors: still the mean of the halves' cosines
    raw = a.copy()
    raw[:, :8] *= 3.0
    plain = TopicModel(n_topics=6, seed=seed, show_progress=False, missing_modalities="mask", center_halves=False).fit(raw, halves)
    centres = np.concatenate([normalize_rows(plain.cluster_centers_[:, :8]), normalize_rows(plain.cluster_centers_[:, 8:])], axis=1)
    ids, weights = plain.assign(raw).video(tagged)
    cosines = (
        normalize_rows(raw[tagged : tagged + 1, :8])[0] @ centres[ids, :8].T
        + normalize_rows(raw[tagged : tagged + 1, 8:])[0] @ centres[ids, 8:].T
    )
    np.testing.assert_allclose(weights, cosines / 2, atol=1e-5)


def test_mask_calibrates_tau3_per_modality_pattern(tmp_path):
    """Under mask a tagless video is scored by one cosine, a tagged one by the mean of two: one τ3 gives the two groups
    different numbers of topics; calibrated per pattern, each gets the target on average, and the stream's model too."""
    from offline_jobs.topics import select_topics

    a, halves, _, has_tags = _presence_independent_of_topic(0)
    model = TopicModel(n_topics=24, seed=0, show_progress=False, missing_modalities="mask", assign_rule="calibrated").fit(a, halves)
    assert set(model.pattern_thresholds_) == {"01", "11"} and model.pattern_thresholds_["01"] > model.pattern_thresholds_["11"]
    counts = model.assign(a).counts
    assert abs(counts[has_tags].mean() - 4) < 0.1 and abs(counts[~has_tags].mean() - 4) < 0.1
    single = select_topics(*_candidates(model, a), model.calibrated_threshold_, 8).counts  # one τ3 for both
    assert abs(single[has_tags].mean() - single[~has_tags].mean()) > 0.3  # here 3.7 with tags, 4.1 without
    loaded = TopicModel.load(model.save(tmp_path / "topics"))
    assert loaded.pattern_thresholds_ == model.pattern_thresholds_ and (loaded.assign(a).counts == counts).all()
    thresholds = model.video_thresholds(a)  # what reports compare the forced nearest topic with
    np.testing.assert_array_equal(thresholds, np.where(has_tags, model.pattern_thresholds_["11"], model.pattern_thresholds_["01"]))
    # a pattern with too few fitted rows (here: ē without z) keeps the overall τ3
    only_tags = a.copy()
    only_tags[:5, 8:] = 0
    assert "10" not in model.calibrate(only_tags).pattern_thresholds_


def _candidates(model: TopicModel, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every video's 8 nearest topics and their similarities, as :meth:`TopicModel.assign` scores them."""
    x = model.centred(a)
    sims, ids = model._centre_index().search(np.ascontiguousarray(x), 8)
    return ids, sims * model._score_scale(x)


def test_topic_model_keeps_the_tag_bank(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6)).astype(np.float32)
    bank = TagBank(rng.normal(size=(20, 4)).astype(np.float32), rng.normal(size=(20, 2)).astype(np.float32))
    model = TopicModel(n_topics=3, show_progress=False, missing_modalities="neighbours").fit(a, [2, 4], tag_bank=bank)
    loaded = TopicModel.load(model.save(tmp_path / "topics"))
    np.testing.assert_array_equal(loaded.tag_bank_.z, bank.z)
    np.testing.assert_array_equal(loaded.tag_bank_.e, bank.e)
    assert loaded.missing_modalities == "neighbours" and loaded.neighbours == 10
    plain = TopicModel.load(TopicModel(n_topics=3, show_progress=False).fit(a).save(tmp_path / "plain"))
    assert plain.tag_bank_ is None


def _ragged_env(tmp_path: Path, title_model: Path) -> dict[str, str]:
    return {
        "TOPICFS_PATHS__ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "TOPICFS_SYNTHETIC__N_VIDEOS": "150",
        "TOPICFS_SYNTHETIC__N_TRUE_TOPICS": "3",
        "TOPICFS_SYNTHETIC__IMAGE_SIZE": "16",
        "TOPICFS_SYNTHETIC__COVER_SHARE": "0.3",
        "TOPICFS_SYNTHETIC__TAG_SHARE": "0.15",
        "TOPICFS_MMOE__TITLE_ENCODER": str(title_model),
        "TOPICFS_MMOE__EPOCHS": "1",
        "TOPICFS_MMOE__N_EXPERTS": "2",
        "TOPICFS_MMOE__EXPERT_DIM": "8",
        "TOPICFS_MMOE__TOWER_HIDDEN": "8",
        "TOPICFS_MMOE__IMAGE_SIZE_PX": "16",
        "TOPICFS_MMOE__CNN_CHANNELS": "[4]",
        "TOPICFS_MMOE__TORCH_THREADS": "1",
        "TOPICFS_MMOE__MODALITY_DROPOUT": "0.5",
        "TOPICFS_TAG_GRAPH__WALK_LENGTH": "10",
        "TOPICFS_TAG_GRAPH__WALKS_PER_TAG": "2",
        "TOPICFS_TAG_GRAPH__EPOCHS": "1",
        "TOPICFS_TOPICS__N_TOPICS": "4",
        "TOPICFS_TOPICS__MISSING_MODALITIES": "predict",
    }


def _topics_cli(env: dict[str, str], *args: str) -> str:
    """``topicfs topics <args>`` as a user runs it, with ``env`` over the base environment; its stdout (exit code 0)."""
    done = subprocess.run(
        [sys.executable, "-m", "topicfs_app.cli", "topics", *args],
        cwd=ROOT,
        env={**_base_env(), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _saved_models_reassign_the_tables(tmp_path: Path):
    """After `topics learn`: the saved models (the stream's assigner) give every video the topics the tables hold.
    Returns the assigner."""
    import pandas as pd

    from offline_jobs.inference import load_topic_assigner
    from topicfs.contracts import load_videos

    assigner = load_topic_assigner(tmp_path / "artifacts" / "models")
    videos = load_videos(tmp_path / "artifacts" / "synthetic" / "videos.parquet")
    table = pd.read_parquet(tmp_path / "artifacts" / "tables" / "video_topics.parquet")
    assert assigner.assign(videos) == [list(ids) for ids in table["topic_ids"]]
    return assigner


def _every_tag_half_filled_and_reassigned_alike(tmp_path: Path):
    """After `topics learn` on the ragged catalogue: some videos lack tags yet every stored tag half is non-zero, and
    the saved models reassign the tables (:func:`_saved_models_reassign_the_tables`). Returns (assigner, the video tag
    embeddings table)."""
    import pandas as pd

    stored = pd.read_parquet(tmp_path / "artifacts" / "tables" / "video_tag_embeddings.parquet")
    assert not stored["has_tags"].all() and (np.stack(stored["video_tag_embedding"]).any(axis=1)).all()
    return _saved_models_reassign_the_tables(tmp_path), stored


def test_topic_learn_prints_and_writes_the_presence_audit(tmp_path, tiny_title_model):  # noqa: F811
    """The user's command on a small ragged catalogue: the audit is printed and saved beside the tables, and with the
    imputation every video has a tag half."""
    env = _ragged_env(tmp_path, tiny_title_model)
    stdout = _topics_cli(env, "learn")
    assert "presence audit: NMI(nearest topic, x) — has cover" in stdout and "without tags" in stdout
    audit = json.loads((tmp_path / "artifacts" / "tables" / "presence_audit.json").read_text())
    assert set(audit["nmi"]) >= {"has cover", "has tags", "primary class", "secondary class"}
    assert audit["groups"]["with cover"]["n"] + audit["groups"]["without cover"]["n"] == 150
    # the saved models remember which modalities a took from predictions: the stream's assigner gives the same topics
    assigner, _ = _every_tag_half_filled_and_reassigned_alike(tmp_path)
    assert assigner.models.topics.predicted_modalities_ == ["cover", "tags"]


def test_topic_learn_with_neighbours_fills_every_tag_half_and_assigns_later_videos_alike(tmp_path, tiny_title_model):  # noqa: F811
    env = {**_ragged_env(tmp_path, tiny_title_model), "TOPICFS_TOPICS__MISSING_MODALITIES": "neighbours", "TOPICFS_TOPICS__NEIGHBOURS": "3"}
    _topics_cli(env, "learn")
    assigner, stored = _every_tag_half_filled_and_reassigned_alike(tmp_path)
    bank = assigner.models.topics.tag_bank_
    assert len(bank) == int(stored["has_tags"].sum()) and bank.e.shape[1] == np.stack(stored["video_tag_embedding"]).shape[1]


def test_topic_learn_with_mask_keeps_zero_tag_halves_and_assigns_later_videos_alike(tmp_path, tiny_title_model):  # noqa: F811
    import pandas as pd

    env = {**_ragged_env(tmp_path, tiny_title_model), "TOPICFS_TOPICS__MISSING_MODALITIES": "mask"}
    _topics_cli(env, "learn")
    stored = pd.read_parquet(tmp_path / "artifacts" / "tables" / "video_tag_embeddings.parquet")
    tag_halves = np.stack(stored["video_tag_embedding"])
    assert not tag_halves[~stored["has_tags"].to_numpy()].any() and tag_halves[stored["has_tags"].to_numpy()].any(axis=1).all()
    topics = _saved_models_reassign_the_tables(tmp_path).models.topics
    assert topics.missing_modalities == "mask" and topics.predicted_modalities_ == ["cover"]  # covers on 30%: z without them


@pytest.mark.parametrize("mode", ["predict", "neighbours", "mask"])
def test_topic_evaluate_prints_table1_per_modality_group_and_the_audit(tmp_path, tiny_title_model, mode):  # noqa: F811
    env = {
        **_ragged_env(tmp_path, tiny_title_model),
        "TOPICFS_TOPICS__MISSING_MODALITIES": mode,
        "TOPICFS_SYNTHETIC__N_VIDEOS": "300",
        "TOPICFS_EVALUATION__HOLDOUT_FRACTION": "0.3",
        "TOPICFS_EVALUATION__SUPERVISED_REFERENCE": "false",
    }
    stdout = _topics_cli(env, "evaluate", "--out", str(tmp_path / "report"))
    for group in ("with tags", "without tags", "with cover", "without cover"):
        assert f"held-out videos {group}:" in stdout
    assert "held_out videos, presence audit: NMI(nearest topic, x) — has cover" in stdout
    facts = json.loads((tmp_path / "report" / "table1.json").read_text())["facts"]
    assert facts["missing_modalities"] == mode and set(facts["presence_audit"]) == {"train", "held_out"}
    assert facts["predicted_modalities"] == {"predict": ["tags", "cover"], "mask": ["cover"]}.get(mode, [])


def test_cover_dropout_encodes_dropped_covers_as_missing(tiny_title_model, tmp_path):  # noqa: F811
    from offline_jobs.mmoe import MultimodalTopicEncoder
    from tests.offline.test_mmoe import make_videos, tiny_config

    videos = make_videos(12, tmp_path)
    model = MultimodalTopicEncoder.from_config(tiny_config(tiny_title_model, epochs=1, modality_dropout=0.5)).fit(videos)
    rows = np.arange(12)
    title_ids = model.title_encoder_.tokenize(videos["title"].tolist())
    covers = videos["cover_image"].tolist()
    cover_dim = model.cover_encoder_.output_dim
    model.cover_encoder_.eval()
    kept = model._joint(title_ids, covers, rows)[:, :cover_dim]  # no rng: inference, every cover used
    dropped = model._joint(title_ids, covers, rows, np.random.default_rng(0))[:, :cover_dim]
    zero_rows = (dropped == 0).all(dim=1)
    assert (kept != 0).any(dim=1).all() and 0 < int(zero_rows.sum()) < 12
    assert np.allclose(dropped[~zero_rows].detach().numpy(), kept[~zero_rows].detach().numpy(), atol=1e-6)


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("TOPICFS_")}
