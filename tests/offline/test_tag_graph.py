"""Tag co-occurrence graph, DeepWalk walks, skip-gram tag embeddings and ē (MTL Eq. 3-4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare

from offline_jobs.tag_graph import (
    TagGraphEmbedder,
    clean_tag_lists,
    cooccurrence_matrix,
    random_walks,
    transition_matrix,
)
from topicfs.settings import TagGraphConfig

# Videos of a small known graph. Edge values: a-b 3, a-c 1, b-c 2, c-d 1; e is isolated (alone on its video).
KNOWN_VIDEOS = [["a", "b"], ["a", "b"], ["a", "b", "c"], ["b", "c"], ["c", "d"], ["e"], []]
EXPECTED_EDGES = {("a", "b"): 3, ("a", "c"): 1, ("b", "c"): 2, ("c", "d"): 1}


def small_embedder(**overrides) -> TagGraphEmbedder:
    params = dict(walk_length=20, walks_per_tag=20, embedding_dim=16, window=3, epochs=5, seed=3, show_progress=False)
    params.update(overrides)
    return TagGraphEmbedder(**params)


def two_community_videos(n_videos: int = 400, seed: int = 0) -> tuple[list[list[str]], list[str], list[str]]:
    """Videos that draw 2-3 tags from one of two unrelated communities."""
    rng = np.random.default_rng(seed)
    sport = [f"sport{i}" for i in range(8)]
    food = [f"food{i}" for i in range(8)]
    videos = []
    for _ in range(n_videos):
        community = sport if rng.random() < 0.5 else food
        videos.append(list(rng.choice(community, size=rng.integers(2, 4), replace=False)))
    return videos, sport, food


def test_cooccurrence_and_transition_follow_eq3() -> None:
    embedder = small_embedder().fit(KNOWN_VIDEOS)
    index = embedder.tag_index_
    transition = embedder.transition_.toarray()
    degree = {t: 0 for t in index}
    for (u, v), value in EXPECTED_EDGES.items():
        degree[u] += value
        degree[v] += value
    expected = np.zeros_like(transition)
    for (u, v), value in EXPECTED_EDGES.items():
        expected[index[u], index[v]] = value / degree[u]
        expected[index[v], index[u]] = value / degree[v]
    np.testing.assert_allclose(transition, expected)
    assert embedder.isolated_[index["e"]] and embedder.isolated_.sum() == 1
    np.testing.assert_allclose(transition[~embedder.isolated_].sum(axis=1), 1.0)
    # most frequent first, ties alphabetical: b (4 videos), c (3), a (3), d, e
    assert embedder.tags_ == ["b", "a", "c", "d", "e"]
    assert embedder.tag_counts_.tolist() == [4, 3, 3, 1, 1]


def test_walk_transitions_match_edge_probabilities() -> None:
    """Chi-square per node: the empirical next-node counts must follow x_uv / sum_w x_uw."""
    index_lists = [[0, 1], [0, 1], [0, 1], [0, 1], [0, 1], [0, 2], [1, 2], [1, 2], [2, 3], [0, 3], [0, 3], [0, 3]]
    cooccurrence = cooccurrence_matrix(index_lists, 4)  # a star-ish graph with unequal weights
    transition = transition_matrix(cooccurrence).toarray()
    walks = random_walks(cooccurrence, walk_length=50, walks_per_tag=200, rng=np.random.default_rng(0), show_progress=False)
    sources, targets = walks[:, :-1].ravel(), walks[:, 1:].ravel()
    counts = np.zeros((4, 4))
    np.add.at(counts, (sources, targets), 1)
    for node in range(4):
        neighbours = np.flatnonzero(transition[node])
        observed = counts[node, neighbours]
        assert counts[node].sum() == observed.sum(), "a walk stepped along a non-edge"
        expected = transition[node, neighbours] * observed.sum()
        assert chisquare(observed, expected).pvalue > 1e-3, (node, observed, expected)
    # a uniform sampler would fail: node 0's edges have values 5 (to 1), 1 (to 2), 3 (to 3)
    np.testing.assert_allclose(counts[0, [1, 2, 3]] / counts[0].sum(), [5 / 9, 1 / 9, 3 / 9], atol=0.01)


def test_isolated_tag_walks_are_one_token_and_still_embedded() -> None:
    index_lists = [[0, 1], [2]]
    cooccurrence = cooccurrence_matrix(index_lists, 3)
    walks = random_walks(cooccurrence, walk_length=5, walks_per_tag=3, rng=np.random.default_rng(1), show_progress=False)
    isolated_walks = walks[walks[:, 0] == 2]
    assert len(isolated_walks) == 3 and (isolated_walks[:, 1:] == -1).all()
    assert (walks[walks[:, 0] != 2] >= 0).all()

    embedder = small_embedder().fit(KNOWN_VIDEOS)
    vector = embedder.embedding_of("e")
    trained = embedder.embeddings_[~embedder.isolated_]
    assert np.isfinite(vector).all()
    assert np.linalg.norm(vector) == pytest.approx(np.linalg.norm(trained, axis=1).mean(), rel=1e-4)
    e_bar, has_tags = embedder.transform([["e"]])
    assert has_tags[0] and np.allclose(e_bar[0], vector)


def test_video_representation_is_the_mean_of_its_tags_eq4() -> None:
    embedder = small_embedder(weighting="mean").fit(KNOWN_VIDEOS)  # the paper's plain mean (the default is idf)
    embedder.embeddings_ = np.array(  # hand-set e_j, rows in tags_ order b, a, c, d, e
        [[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 5.0], [0.5, 0.5]], dtype=np.float32
    )
    e_bar, has_tags = embedder.transform([["a", "b"], ["a", "b", "c"], ["d"], ["c", "c", "a"]])
    expected = np.array([[0.5, 1.0], [4 / 3, 5 / 3], [-1.0, 5.0], [1.5, 2.5]], dtype=np.float32)
    np.testing.assert_allclose(e_bar, expected, rtol=1e-6)
    assert e_bar.dtype == np.float32 and has_tags.tolist() == [True] * 4


def test_idf_weighting_is_a_weighted_mean_that_favours_rare_tags() -> None:
    embedder = small_embedder(weighting="idf").fit(KNOWN_VIDEOS)  # 7 videos; b on 4, a and c on 3, d and e on 1
    embedder.embeddings_ = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 5.0], [0.5, 0.5]], dtype=np.float32)
    e_bar, has_tags = embedder.transform([["a", "b"], ["d"], ["b", "d"], []])
    idf = {tag: np.log(8 / (1 + count)) + 1 for tag, count in {"b": 4, "a": 3, "d": 1}.items()}
    expected = np.array(
        [
            (idf["a"] * np.array([0.0, 2.0]) + idf["b"] * np.array([1.0, 0.0])) / (idf["a"] + idf["b"]),
            [-1.0, 5.0],  # one tag: its own embedding, whatever its weight
            (idf["b"] * np.array([1.0, 0.0]) + idf["d"] * np.array([-1.0, 5.0])) / (idf["b"] + idf["d"]),
            [0.0, 0.0],
        ]
    )
    np.testing.assert_allclose(e_bar, expected, rtol=1e-6)
    assert has_tags.tolist() == [True, True, True, False]
    # the rarer tag d pulls harder than under the plain mean of Eq. 4
    assert e_bar[2, 1] > 2.5
    with pytest.raises(ValueError, match="TagGraphEmbedder: weighting='tfidf': String should match pattern"):
        small_embedder(weighting="tfidf").fit(KNOWN_VIDEOS)


def test_videos_without_tags_get_zero_and_has_tags_false() -> None:
    embedder = small_embedder().fit(KNOWN_VIDEOS)
    e_bar, has_tags = embedder.transform([[], None, ["a"], ("  ",)])
    assert has_tags.tolist() == [False, False, True, False]
    assert not e_bar[[0, 1, 3]].any()
    assert e_bar.shape == (4, 16)


def test_unknown_tags_are_skipped() -> None:
    embedder = small_embedder(min_tag_count=2).fit(KNOWN_VIDEOS)
    assert "d" not in embedder.tags_  # on one video only
    e_bar, has_tags = embedder.transform([["a", "never-seen", "d"], ["never-seen"], ["a"]])
    np.testing.assert_allclose(e_bar[0], embedder.embedding_of("a"))
    np.testing.assert_allclose(e_bar[0], e_bar[2])
    assert has_tags.tolist() == [True, False, True] and not e_bar[1].any()


def test_same_seed_same_embeddings_other_seed_differs() -> None:
    videos, _, _ = two_community_videos(120)
    first = small_embedder().fit(videos)
    second = small_embedder().fit(list(reversed(videos)))  # order of videos does not change the graph
    third = small_embedder(seed=4).fit(videos)
    np.testing.assert_array_equal(first.embeddings_, second.embeddings_)
    assert first.tags_ == second.tags_
    assert not np.allclose(first.embeddings_, third.embeddings_)


def test_embeddings_identical_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    """workers=1 promise: bit-identical vectors in another interpreter, whatever PYTHONHASHSEED is."""
    script = (
        "import sys, numpy as np; from offline_jobs.tag_graph import TagGraphEmbedder;"
        "videos = [['a','b'],['b','c'],['a','c','d'],['d','e'],['e','f'],['f','a']] * 5;"
        "e = TagGraphEmbedder(walk_length=10, walks_per_tag=5, embedding_dim=8, epochs=2, show_progress=False).fit(videos);"
        "np.save(sys.argv[1], e.embeddings_)"
    )
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / f"{hash_seed}.npy")], check=True, env=env, cwd=Path(__file__).parents[2]
        )
    np.testing.assert_array_equal(np.load(tmp_path / "1.npy"), np.load(tmp_path / "2.npy"))


def test_cooccurring_tags_are_closer_than_unrelated_ones() -> None:
    videos, sport, food = two_community_videos(400)
    embedder = small_embedder(walks_per_tag=30, epochs=10).fit(videos)
    vectors = embedder.embeddings_ / np.linalg.norm(embedder.embeddings_, axis=1, keepdims=True)
    sport_rows = [embedder.tag_index_[t] for t in sport]
    food_rows = [embedder.tag_index_[t] for t in food]
    cosine = vectors @ vectors.T
    within = np.concatenate([cosine[np.ix_(rows, rows)][~np.eye(len(rows), dtype=bool)] for rows in (sport_rows, food_rows)])
    across = cosine[np.ix_(sport_rows, food_rows)].ravel()
    assert within.min() > across.max(), (within.min(), across.max())
    assert within.mean() - across.mean() > 0.3


def test_duplicate_tags_on_a_video_count_once() -> None:
    embedder = small_embedder().fit([["a", "b", "a"], ["a", "b"]])
    assert embedder.tag_counts_.tolist() == [2, 2]
    assert embedder.transition_.toarray().tolist() == [[0.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("abc", "single string"),
        (["abc"], "position 0: tags must be a list"),
        ([["a"], ["b", 3]], "position 1: tag 3 is int"),
    ],
)
def test_bad_tag_input_is_named(tags, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        clean_tag_lists(tags)


def test_fit_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="min_tag_count=5"):
        small_embedder(min_tag_count=5).fit(KNOWN_VIDEOS)
    with pytest.raises(ValueError, match="TagGraphEmbedder: walk_length=1: Input should be greater than or equal to 2"):
        small_embedder(walk_length=1).fit(KNOWN_VIDEOS)
    with pytest.raises(RuntimeError, match="not fitted"):
        small_embedder().transform([["a"]])
    with pytest.raises(KeyError, match="'zzz'"):
        small_embedder().fit(KNOWN_VIDEOS).embedding_of("zzz")


def test_save_load_round_trip(tmp_path: Path) -> None:
    embedder = small_embedder().fit(KNOWN_VIDEOS)
    embedder.save(tmp_path / "tags")
    loaded = TagGraphEmbedder.load(tmp_path / "tags")
    assert loaded.tags_ == embedder.tags_ and loaded.get_params() == {**embedder.get_params(), "show_progress": True}
    np.testing.assert_array_equal(loaded.embeddings_, embedder.embeddings_)
    np.testing.assert_array_equal(loaded.transition_.toarray(), embedder.transition_.toarray())
    for a, b in zip(loaded.transform(KNOWN_VIDEOS), embedder.transform(KNOWN_VIDEOS)):
        np.testing.assert_array_equal(a, b)
    meta = json.loads((tmp_path / "tags" / "tag_graph.json").read_text())
    assert meta["data_fingerprint"] == embedder.data_fingerprint_ and meta["config"]["walk_length"] == 20


def test_from_config_uses_every_setting() -> None:
    config = TagGraphConfig(walk_length=7, walks_per_tag=2, embedding_dim=4, window=2, epochs=1, min_tag_count=1, seed=5)
    embedder = TagGraphEmbedder.from_config(config, show_progress=False)
    assert {k: getattr(embedder, k) for k in config.model_dump()} == config.model_dump()
    assert embedder.fit(KNOWN_VIDEOS).embeddings_.shape == (5, 4)
