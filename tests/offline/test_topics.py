"""Topic representation, k-means topics, threshold assignment, 8-dim topic features and the Parquet tables."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from offline_jobs.tag_graph import TagGraphEmbedder
from offline_jobs.topics import (
    TopicAssignment,
    TopicModel,
    format_topics_per_video_report,
    pca_topic_embeddings,
    select_topics,
    representation_halves,
    topic_representation,
    topics_per_video_report,
    weighted_topic_features,
    write_topic_tables,
)
from topicfs import tables
from topicfs.settings import TopicsConfig

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def separated_clusters(n_per_cluster: int = 100, n_clusters: int = 12, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm points around random unit centres, noise far below the gap between centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_clusters), n_per_cluster)
    points = centres[labels] + 0.05 * rng.standard_normal((len(labels), dim))
    return points.astype(np.float32), labels


def small_model(**overrides) -> TopicModel:
    params = dict(
        n_topics=12, assign_threshold=0.6, max_topics_per_video=4, topic_feature_dim=8, kmeans_iterations=20, seed=1, show_progress=False
    )
    params.update(overrides)
    return TopicModel(**params)


# --- select_topics: the assignment rule --------------------------------------------------------------

candidate_blocks = st.integers(1, 6).flatmap(
    lambda k: st.tuples(
        arrays(np.int64, st.tuples(st.integers(0, 8), st.just(k)), elements=st.integers(-1, 9)),
        st.integers(0, 10**6),
    )
)


@settings(max_examples=200, deadline=None)
@given(block=candidate_blocks, threshold=st.floats(-1, 1, allow_subnormal=False), max_topics=st.integers(1, 7))
def test_select_topics_properties(block: tuple[np.ndarray, int], threshold: float, max_topics: int) -> None:
    ids, seed = block
    sims = np.random.default_rng(seed).uniform(-1, 1, size=ids.shape).astype(np.float32)
    sims[:, ::2] = np.round(sims[:, ::2], 1)  # ties, and values exactly at thresholds like 0.6
    result = select_topics(ids, sims, threshold, max_topics)
    assert len(result) == len(ids)
    for row in range(len(ids)):
        best: dict[int, float] = {}
        for topic, sim in zip(ids[row], sims[row]):
            if topic >= 0:
                best[int(topic)] = max(best.get(int(topic), -np.inf), float(sim))
        got_ids, got_weights = result.video(row)
        got_weights = got_weights.astype(np.float64)
        if not best:
            assert len(got_ids) == 0
            continue
        nearest_sim = max(best.values())
        assert got_weights[0] == nearest_sim and best[int(got_ids[0])] == nearest_sim  # the nearest always first
        assert len(set(got_ids.tolist())) == len(got_ids)  # no duplicates
        assert (np.diff(got_weights) <= 0).all()  # sorted by similarity
        assert (got_weights[1:] >= threshold).all()  # all above τ3 except the guaranteed nearest
        assert 1 <= len(got_ids) <= max_topics  # cap respected
        assert all(best[int(t)] == w for t, w in zip(got_ids, got_weights))  # weights are the (best) cosines
        passing = sum(sim >= threshold for sim in best.values())
        assert len(got_ids) == min(max_topics, max(1, passing))  # nothing that passes is dropped below the cap


def test_select_topics_hand_example() -> None:
    ids = np.array([[3, 1, 7, 2], [5, 4, -1, 0], [-1, -1, -1, -1]])
    sims = np.array([[0.7, 0.9, 0.61, 0.59], [0.2, 0.1, 0.99, -0.3], [0.9, 0.9, 0.9, 0.9]], dtype=np.float32)
    result = select_topics(ids, sims, threshold=0.6, max_topics=2)
    topics, weights = result.to_lists()
    assert topics == [[1, 3], [5], []]
    np.testing.assert_allclose(weights[0], [0.9, 0.7])
    assert result.counts.tolist() == [2, 1, 0]
    # one τ3 per video: the first video's 0.7 falls below its 0.8, the second's 0.1 passes its 0.05
    per_video = select_topics(ids, sims, threshold=np.array([0.8, 0.05, 0.6]), max_topics=3)
    assert per_video.to_lists()[0] == [[1], [5, 4], []]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), threshold=st.floats(0.0, 0.9, allow_subnormal=False), cap=st.integers(1, 5))
def test_assign_matches_brute_force_cosine(seed: int, threshold: float, cap: int) -> None:
    """Blocked faiss top-k + rule == the rule applied to the full dense cosine matrix."""
    points, _ = separated_clusters(n_per_cluster=10, n_clusters=6, dim=5, seed=seed % 97)
    points += np.random.default_rng(seed).normal(0, 0.3, points.shape).astype(np.float32)
    model = small_model(n_topics=6, max_topics_per_video=cap, assign_threshold=threshold, block_size=7).fit(points)
    result = model.assign(points)
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    unit -= unit.mean(axis=0)  # the model centres a (one half here) on the mean direction of the rows it was fitted on
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    cosine = unit @ model.cluster_centers_.T  # (n, K) dense reference
    all_ids = np.tile(np.arange(6), (len(points), 1))
    reference = select_topics(all_ids, cosine, threshold, cap)
    for row in range(len(points)):
        if np.any(np.abs(cosine[row] - threshold) < 1e-5) or len(np.unique(np.round(cosine[row], 5))) < 6:
            continue  # float32 rounding between faiss and numpy could flip a borderline or tied topic
        np.testing.assert_array_equal(result.video(row)[0], reference.video(row)[0])
        np.testing.assert_allclose(result.video(row)[1], reference.video(row)[1], atol=1e-5)


def test_zero_rows_get_no_topic() -> None:
    points, _ = separated_clusters()
    model = small_model().fit(np.vstack([points, np.zeros((3, points.shape[1]), np.float32)]))
    result = model.assign(np.vstack([np.zeros((2, points.shape[1]), np.float32), points[:5]]))
    assert result.counts.tolist()[:2] == [0, 0] and (result.counts[2:] >= 1).all()


# --- topic representation a -----------------------------------------------------------------------------


def test_topic_representation_normalises_each_half() -> None:
    e_bar = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    z = np.array([[0.0, 0.0, 2.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    a = topic_representation(e_bar, z)
    expected = np.array([[0.6, 0.8, 0.0, 0.0, 1.0], [0.0, 0.0, 2**-0.5, 2**-0.5, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(a, expected, rtol=1e-6)
    assert a.dtype == np.float32
    np.testing.assert_allclose(topic_representation(None, z), [[0, 0, 1], [2**-0.5, 2**-0.5, 0], [0, 0, 0]], rtol=1e-6)


def test_topic_representation_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        topic_representation(None, None)
    with pytest.raises(ValueError, match="e_bar has 2 rows but z has 3"):
        topic_representation(np.ones((2, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="z: 1 row.*first at row 1"):
        topic_representation(np.ones((2, 2)), np.array([[1.0, 0.0], [np.nan, 1.0]]))


# --- k-means ----------------------------------------------------------------------------------------------


def test_kmeans_recovers_separated_clusters() -> None:
    points, labels = separated_clusters(n_per_cluster=80, n_clusters=12, dim=16, seed=5)
    model = small_model().fit(points)
    nearest = model.assign(points).topic_ids[model.assign(points).offsets[:-1]]
    assert adjusted_rand_score(labels, nearest) > 0.99
    assert normalized_mutual_info_score(labels, nearest) > 0.99
    np.testing.assert_allclose(np.linalg.norm(model.cluster_centers_, axis=1), 1.0, rtol=1e-5)


def test_kmeans_on_topic_representation_of_two_modalities() -> None:
    """Tags and content each split the videos differently; a = [ē, z] separates all combinations."""
    rng = np.random.default_rng(2)
    tag_groups, content_groups = rng.integers(3, size=600), rng.integers(4, size=600)
    tag_centres, content_centres = rng.standard_normal((3, 8)), rng.standard_normal((4, 12))
    e_bar = tag_centres[tag_groups] + 0.05 * rng.standard_normal((600, 8))
    z = content_centres[content_groups] + 0.05 * rng.standard_normal((600, 12))
    a = topic_representation(e_bar, z)
    truth = tag_groups * 4 + content_groups
    model = small_model(n_topics=12).fit(a)
    assignment = model.assign(a)
    assert adjusted_rand_score(truth, assignment.topic_ids[assignment.offsets[:-1]]) > 0.99


def shared_direction_halves(n: int = 600, seed: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ē whose 4 groups differ only slightly around one direction every video shares (as skip-gram tag vectors
    over few tags do: mean cosine ~0.99), z pure noise: the groups live in the ē half alone."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(4, size=n)
    shared = np.zeros(8)
    shared[0] = 1.0
    offsets = 0.15 * rng.standard_normal((4, 8))
    e_bar = shared + offsets[groups] + 0.01 * rng.standard_normal((n, 8))
    z = rng.standard_normal((n, 12))
    return e_bar.astype(np.float32), z.astype(np.float32), groups


def test_centring_lets_a_half_with_a_shared_direction_count() -> None:
    e_bar, z, groups = shared_direction_halves()
    a, halves = topic_representation(e_bar, z), representation_halves(e_bar, z)
    assert halves == [8, 12]

    def nearest_ari(model: TopicModel) -> float:
        assignment = model.assign(a)
        return adjusted_rand_score(groups, assignment.topic_ids[assignment.offsets[:-1]])

    raw = small_model(n_topics=4, center_halves=False).fit(a, halves)
    centred = small_model(n_topics=4).fit(a, halves)
    assert nearest_ari(raw) < 0.2 < 0.9 < nearest_ari(centred)  # raw: the noise half decides; centred: ē's groups
    assert raw.assign(a).counts.mean() > centred.assign(a).counts.mean()  # raw cosines are all lifted by ē's shared part


def test_centred_rows_by_hand() -> None:
    e_bar = np.array([[1.0, 1.0], [1.0, -1.0], [0.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    z = np.array([[0.0, 3.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    a = topic_representation(e_bar, z)
    model = small_model(n_topics=2).fit(a, representation_halves(e_bar, z))
    # ē half: mean of the 3 tagged unit rows (1/√2, 1/√2), (1/√2, -1/√2), (1, 0) = ((√2 + 1) / 3, 0); z half: mean of 4 rows
    np.testing.assert_allclose(model.half_means_, [(2**0.5 + 1) / 3, 0.0, 0.0, 0.5], rtol=1e-6)
    x = model.centred(a)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(x[2, :2], [0.0, 0.0])  # no tags: the ē half stays zero
    r = 2**-0.5
    e_half = np.array([[r - (2**0.5 + 1) / 3, r], [r - (2**0.5 + 1) / 3, -r], [0, 0], [1 - (2**0.5 + 1) / 3, 0]])
    z_half = np.array([[0.0, 0.5], [0.0, 0.5], [1.0, -0.5], [-1.0, -0.5]])
    halves = [h / np.linalg.norm(h, axis=1, keepdims=True).clip(1e-12) for h in (e_half, z_half)]
    expected = np.concatenate(halves, axis=1)
    np.testing.assert_allclose(x, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)
    uncentred = small_model(n_topics=2, center_halves=False).fit(a, representation_halves(e_bar, z))
    np.testing.assert_array_equal(uncentred.half_means_, np.zeros(4, np.float32))
    np.testing.assert_allclose(uncentred.centred(a), a / np.linalg.norm(a, axis=1, keepdims=True), rtol=1e-6)
    with pytest.raises(ValueError, match=r"halves \[2, 3\] must be positive widths adding up to a's 4 columns"):
        small_model(n_topics=2).fit(a, [2, 3])


def test_fit_is_deterministic_and_seed_matters() -> None:
    points, _ = separated_clusters(n_per_cluster=30, n_clusters=12, dim=8, seed=3)
    points += np.random.default_rng(0).normal(0, 0.3, points.shape).astype(np.float32)
    first, second = small_model().fit(points), small_model().fit(points)
    np.testing.assert_array_equal(first.cluster_centers_, second.cluster_centers_)
    np.testing.assert_array_equal(first.topic_embeddings_, second.topic_embeddings_)
    assert not np.array_equal(first.cluster_centers_, small_model(seed=2).fit(points).cluster_centers_)


def test_fit_and_assign_errors_are_clear() -> None:
    points, _ = separated_clusters(n_per_cluster=2, n_clusters=3)
    with pytest.raises(ValueError, match="6 non-zero rows cannot make n_topics=12"):
        small_model().fit(points)
    with pytest.raises(ValueError, match="assign_threshold"):
        small_model(assign_threshold=1.5).fit(points)
    with pytest.raises(RuntimeError, match="not fitted"):
        small_model().assign(points)
    model = small_model(n_topics=3).fit(points)
    with pytest.raises(ValueError, match="a has 4 columns but the topics were fitted on 16"):
        model.assign(points[:, :4])


# --- 8-dim topic embeddings and features ------------------------------------------------------------------


def test_weighted_topic_features_hand_example() -> None:
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [2**-0.5, 2**-0.5]], dtype=np.float32)
    assignment = TopicAssignment(
        offsets=np.array([0, 2, 3, 3, 5]),
        topic_ids=np.array([0, 1, 2, 1, 0]),
        weights=np.array([0.8, 0.6, -0.1, 0.9, -0.2], dtype=np.float32),
    )
    features = weighted_topic_features(assignment, embeddings)
    expected = [
        [0.8 / 1.4, 0.6 / 1.4],  # (0.8 e0 + 0.6 e1) / 1.4
        [2**-0.5, 2**-0.5],  # only a negative similarity: plain mean of its one topic
        [0.0, 0.0],  # no topic
        [0.0, 1.0],  # the negative similarity casts no vote
    ]
    np.testing.assert_allclose(features, expected, rtol=1e-6)
    assert features.dtype == np.float32


def test_pca_topic_embeddings_unit_deterministic_and_neighbour_preserving() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 32))
    centres[1] = centres[0] + 0.01 * rng.standard_normal(32)  # topic 1 is a near-copy of topic 0
    embeddings = pca_topic_embeddings(centres, 8)
    assert embeddings.shape == (40, 8) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(embeddings, pca_topic_embeddings(centres.copy(), 8))
    cosine = embeddings @ embeddings.T
    assert cosine[0, 1] > 0.99 and cosine[0, 1] >= np.sort(cosine[0])[-2]


def test_pca_topic_embeddings_with_fewer_directions_than_dims() -> None:
    embeddings = pca_topic_embeddings(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), 8)
    assert embeddings.shape == (3, 8)
    assert not embeddings[:, 2:].any()  # 3 centres span 2 directions once centred
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_topics_per_video_report() -> None:
    assignment = TopicAssignment(
        np.array([0, 1, 4, 4, 6]), np.array([0, 1, 2, 3, 0, 1]), np.array([0.5, 0.9, 0.8, 0.7, 0.95, 0.6], np.float32)
    )
    report = topics_per_video_report(assignment, assign_threshold=0.6)
    assert report["mean_topics_per_video"] == pytest.approx(1.5)
    assert report["histogram"] == {0: 1, 1: 1, 2: 1, 3: 1}
    assert report["videos_without_topic"] == 1 and report["forced_nearest_only"] == 1
    assert "mean topics/video: 1.50" in format_topics_per_video_report(report)


# --- persistence and tables -------------------------------------------------------------------------------


def test_model_save_load_round_trip(tmp_path: Path) -> None:
    points, _ = separated_clusters()
    model = small_model().fit(points)
    loaded = TopicModel.load(model.save(tmp_path / "topics"))
    np.testing.assert_array_equal(loaded.cluster_centers_, model.cluster_centers_)
    original, restored = model.assign(points), loaded.assign(points)
    np.testing.assert_array_equal(original.topic_ids, restored.topic_ids)
    np.testing.assert_array_equal(model.topic_features(original), loaded.topic_features(restored))
    assert TopicModel.from_config(TopicsConfig(n_topics=7)).n_topics == 7


def test_saved_centring_is_used_and_version_1_models_load_uncentred(tmp_path: Path) -> None:
    e_bar, z, _ = shared_direction_halves(n=200)
    a, halves = topic_representation(e_bar, z), representation_halves(e_bar, z)
    model = small_model(n_topics=4).fit(a, halves)
    loaded = TopicModel.load(model.save(tmp_path / "topics"))
    assert loaded.half_sizes_ == [8, 12] and loaded.center_halves
    np.testing.assert_array_equal(loaded.half_means_, model.half_means_)
    np.testing.assert_array_equal(loaded.assign(a).topic_ids, model.assign(a).topic_ids)
    # a model saved before centring existed (format 1: no half_means, no center_halves) compares raw cosines
    meta = json.loads((tmp_path / "topics" / "topic_model.json").read_text())
    meta["format_version"] = 1
    del meta["half_sizes"], meta["config"]["center_halves"]
    (tmp_path / "topics" / "topic_model.json").write_text(json.dumps(meta))
    with np.load(tmp_path / "topics" / "topic_model.npz") as arrays:
        np.savez(
            tmp_path / "topics" / "topic_model.npz", cluster_centers=arrays["cluster_centers"], topic_embeddings=arrays["topic_embeddings"]
        )
    old = TopicModel.load(tmp_path / "topics")
    assert not old.center_halves and old.half_sizes_ == [20]
    np.testing.assert_allclose(old.centred(a), a / np.linalg.norm(a, axis=1, keepdims=True), rtol=1e-6)


@pytest.fixture(scope="module")
def fitted_pipeline() -> dict:
    rng = np.random.default_rng(4)
    tags = [
        list(rng.choice(["cat", "dog", "pet", "car", "road", "race"][(i % 2) * 3 : (i % 2) * 3 + 3], 2, replace=False)) for i in range(60)
    ]
    tags[:10] = [[] for _ in range(10)]  # untagged videos
    embedder = TagGraphEmbedder(walk_length=10, walks_per_tag=5, embedding_dim=6, epochs=2, show_progress=False).fit(tags)
    e_bar, has_tags = embedder.transform(tags)
    z = rng.standard_normal((60, 5)).astype(np.float32)
    a = topic_representation(e_bar, z)
    model = small_model(n_topics=4, assign_threshold=0.3).fit(a)
    return {
        "embedder": embedder,
        "e_bar": e_bar,
        "has_tags": has_tags,
        "model": model,
        "assignment": model.assign(a),
        "video_ids": np.arange(100, 160),
    }


def test_tables_round_trip_with_the_right_types(tmp_path: Path, fitted_pipeline: dict) -> None:
    p = fitted_pipeline
    publish = pd.date_range("2026-01-01", periods=60, freq="h", tz="Europe/Berlin")
    paths = write_topic_tables(
        tmp_path, p["video_ids"], p["embedder"], p["e_bar"], p["has_tags"], p["model"], p["assignment"], NOW, video_event_timestamps=publish
    )
    assert set(paths) == {tables.VIDEO_TOPICS, tables.TAG_EMBEDDINGS, tables.VIDEO_TAG_EMBEDDINGS, tables.TOPIC_CENTROIDS}
    timestamp = pa.timestamp("us", tz="UTC")
    i64 = pa.list_(pa.int64())

    def types(name: str) -> dict[str, pa.DataType]:
        schema = pq.read_schema(tmp_path / name)
        return {field.name: field.type.value_type if pa.types.is_list(field.type) else field.type for field in schema}

    def read(name: str) -> pa.Table:
        return pq.read_table(tmp_path / name)

    video_topics = read(tables.VIDEO_TOPICS)
    assert (
        video_topics.schema.field("topic_ids").type.equals(i64)
        and video_topics.schema.field("topic_weights").type.value_type == pa.float32()
    )
    assert types(tables.VIDEO_TOPICS) == {
        "video_id": pa.int64(),
        "topic_ids": pa.int64(),
        "topic_weights": pa.float32(),
        "topic_feature": pa.float32(),
        "n_topics": pa.int64(),
        "event_timestamp": timestamp,
        "created": timestamp,
    }
    assert video_topics.column("video_id").to_pylist() == list(range(100, 160))
    ids, weights = p["assignment"].to_lists()
    assert video_topics.column("topic_ids").to_pylist() == ids
    np.testing.assert_allclose(np.concatenate(video_topics.column("topic_weights").to_pylist()), np.concatenate(weights))
    np.testing.assert_allclose(np.array(video_topics.column("topic_feature").to_pylist()), p["model"].topic_features(p["assignment"]))
    assert all(len(f) == 8 for f in video_topics.column("topic_feature").to_pylist())
    assert video_topics.column("n_topics").to_pylist() == p["assignment"].counts.tolist()
    assert video_topics.column("event_timestamp")[0].as_py() == datetime(2025, 12, 31, 23, 0, tzinfo=timezone.utc)

    assert types(tables.TAG_EMBEDDINGS) == {
        "tag": pa.string(),
        "tag_embedding": pa.float32(),
        "event_timestamp": timestamp,
        "created": timestamp,
    }
    tag_table = read(tables.TAG_EMBEDDINGS)
    assert tag_table.column("tag").to_pylist() == p["embedder"].tags_
    np.testing.assert_array_equal(np.array(tag_table.column("tag_embedding").to_pylist(), np.float32), p["embedder"].embeddings_)
    assert tag_table.column("event_timestamp")[0].as_py() == NOW

    assert types(tables.VIDEO_TAG_EMBEDDINGS) == {
        "video_id": pa.int64(),
        "video_tag_embedding": pa.float32(),
        "has_tags": pa.bool_(),
        "event_timestamp": timestamp,
        "created": timestamp,
    }
    video_tags = read(tables.VIDEO_TAG_EMBEDDINGS)
    np.testing.assert_array_equal(np.array(video_tags.column("video_tag_embedding").to_pylist(), np.float32), p["e_bar"])
    assert video_tags.column("has_tags").to_pylist() == [False] * 10 + [True] * 50

    assert types(tables.TOPIC_CENTROIDS) == {
        "topic_id": pa.int64(),
        "centroid": pa.float32(),
        "topic_embedding": pa.float32(),
        "n_videos": pa.int64(),
        "event_timestamp": timestamp,
        "created": timestamp,
    }
    centroids = read(tables.TOPIC_CENTROIDS)
    np.testing.assert_array_equal(np.array(centroids.column("centroid").to_pylist(), np.float32), p["model"].cluster_centers_)
    assert sum(centroids.column("n_videos").to_pylist()) == len(p["assignment"].topic_ids)

    created = {read(name).column("created")[0].as_py() for name in paths}
    assert len(created) == 1 and created.pop().tzinfo is not None
    sidecar = json.loads((tmp_path / "video_topics.json").read_text())
    assert sidecar["rows"] == 60 and sidecar["config"]["topics"]["n_topics"] == 4
    assert sidecar["data_fingerprints"]["topics_fit"] == p["model"].data_fingerprint_ and sidecar["data_fingerprints"]["table_values"]
    assert sidecar["schema"]["topic_ids"] == "list<element: int64>" or "int64" in sidecar["schema"]["topic_ids"]


def test_table_fingerprint_ignores_created_but_not_values(tmp_path: Path, fitted_pipeline: dict) -> None:
    p = fitted_pipeline
    args = (p["video_ids"], p["embedder"], p["e_bar"], p["has_tags"], p["model"], p["assignment"], NOW)
    write_topic_tables(tmp_path / "one", *args)
    write_topic_tables(tmp_path / "two", *args)
    other = (p["video_ids"] + 1, *args[1:])
    write_topic_tables(tmp_path / "three", *other)

    def fingerprint(folder: str) -> str:
        return json.loads((tmp_path / folder / "video_topics.json").read_text())["data_fingerprints"]["table_values"]

    assert fingerprint("one") == fingerprint("two") != fingerprint("three")


def test_writer_input_errors(tmp_path: Path, fitted_pipeline: dict) -> None:
    p = fitted_pipeline
    args = [p["video_ids"], p["embedder"], p["e_bar"], p["has_tags"], p["model"], p["assignment"]]
    with pytest.raises(ValueError, match="timezone-aware"):
        write_topic_tables(tmp_path, *args, datetime(2026, 1, 1))
    duplicated = np.concatenate([p["video_ids"][:-1], p["video_ids"][:1]])
    with pytest.raises(ValueError, match="duplicates"):
        write_topic_tables(tmp_path, duplicated, *args[1:], NOW)
    with pytest.raises(ValueError, match="expected 60 ids"):
        write_topic_tables(tmp_path, p["video_ids"][:5], *args[1:], NOW)
