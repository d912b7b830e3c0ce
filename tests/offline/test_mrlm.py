"""MRLM (seed 003, section 3): DCP, the loss terms, the scoring rule shared by training and serving,
the metrics, and clear errors on bad input. Tiny synthetic data and configs: seconds on one core."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from offline_jobs.mrlm import MRLM, SavedVectors, cosine_scores, difference_calculation, user_vectors, validate_config
from offline_jobs.mrlm_data import MRLMDataError, cluster_ids, feedback, prepare
from offline_jobs.mrlm_job import EvaluationSplit, demo_config, load_dataset, ranking_metrics, train
from topicfs.settings import Settings, SettingsError
from topicfs.synthetic import make_catalogue, make_click_log


@pytest.fixture(scope="module")
def tiny():
    catalogue = make_catalogue(n_videos=80, n_true_topics=4, with_images=False, seed=3, show_progress=False)
    log = make_click_log(catalogue, n_users=24, n_days=3, seed=4)
    return catalogue.videos, log.interactions


def tiny_config(**update):
    config = demo_config(Settings().mrlm).model_copy(update={"vector_dim": 32, "dropout": 0.0, "torch_threads": 1, "fm_epochs": 2})
    return config.model_copy(update=update)


def test_dcp_shape_and_values_on_a_hand_made_example():
    h_user = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (B=1, d2=2, d3=2)
    h_item = torch.tensor([[[10.0, 20.0], [30.0, 40.0]]])
    r = difference_calculation(h_user, h_item)
    assert r.shape == (1, 2, 2, 3, 3)
    # element (0, 0): ε = 1 minus the 3x3 block of h_item centred on (0, 0), zero outside the matrix
    expected_00 = 1.0 - torch.tensor([[0.0, 0.0, 0.0], [0.0, 10.0, 20.0], [0.0, 30.0, 40.0]])
    assert torch.equal(r[0, 0, 0], expected_00)
    # element (1, 1): ε = 4 minus the block centred on (1, 1)
    expected_11 = 4.0 - torch.tensor([[10.0, 20.0, 0.0], [30.0, 40.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.equal(r[0, 1, 1], expected_11)
    # the centre of every block is h_u[i, j] - h_v[i, j]
    assert torch.equal(r[0, :, :, 1, 1], h_user[0] - h_item[0])


def test_dcp_shape_matches_the_conv1_output_of_the_network():
    from offline_jobs.mrlm import GlobalNet

    config = tiny_config()
    net = GlobalNet(config.initial_dim, config.conv_channels, config.global_dim, config.dropout)
    g, h = net(torch.randn(5, config.initial_dim))
    d2, d3 = config.conv_channels[0], (config.initial_dim + 1) // 2
    assert g.shape == (5, config.global_dim) and h.shape == (5, d2, d3)
    assert ((g > 0) & (g < 1)).all()  # sigmoid output
    assert difference_calculation(h, h.flip(0)).shape == (5, d2, d3, 3, 3)


def test_every_loss_term_decreases_on_a_tiny_overfit_run(tiny):
    videos, interactions = tiny
    config = tiny_config(epochs=12, learning_rate=3e-3)
    data = prepare(videos, interactions, config)
    model = MRLM.from_config(config, explicit_negative_share=0.0).fit(data)
    first, last = model.loss_history_[0], model.loss_history_[-1]
    terms = ["g1", "g2", "g3", "m_triplet"] + [f"m_{m}" for m in data.clusters]
    assert {"title", "tags", "categories"} <= set(data.clusters)
    for term in terms:
        assert last[term] < first[term], f"{term}: {first[term]:.4f} -> {last[term]:.4f}"
    assert last["g1"] < 0  # Eq. 3 with a cosine distance: positives end up nearer than negatives


def test_triplet_loss_sign():
    from offline_jobs.mrlm import cosine_distance_triplet

    anchor = torch.tensor([[1.0, 0.0]])
    near, far = torch.tensor([[1.0, 0.1]]), torch.tensor([[0.0, 1.0]])
    assert cosine_distance_triplet(anchor, near, far) < 0 < cosine_distance_triplet(anchor, far, near)


def test_scoring_is_the_same_in_training_and_serving(tiny, tmp_path, monkeypatch):
    videos, interactions = tiny
    monkeypatch.setenv("TOPICFS_PATHS__ARTIFACTS_DIR", str(tmp_path))
    monkeypatch.setenv("TOPICFS_FEAST__MRLM_VECTOR_DIM", "32")
    settings = Settings()
    from offline_jobs.mrlm_job import LoadedData

    result = train(settings, LoadedData(videos, interactions), tiny_config(epochs=2))
    model = result.model
    saved = SavedVectors(result.model_dir)
    clicks = {int(model.user_ids_[u]): [int(model.video_ids_[i]) for i in h] for u, h in enumerate(model.history_)}
    served = saved.user_vectors(clicks)
    trained = model.user_vectors()
    for row, user_id in enumerate(model.user_ids_):
        np.testing.assert_allclose(served[int(user_id)], trained[row], rtol=0, atol=1e-6)
    # the table the Feast view reads holds exactly the trained vectors, float32
    import pyarrow.parquet as pq

    table = pq.read_table(result.tables["mrlm_user_vectors.parquet"]).to_pandas()
    assert np.array_equal(np.stack(table["user_vector"].to_numpy()).astype(np.float32), trained)
    # the training-time score is the cosine of the served vectors
    scores = cosine_scores(trained, model.item_vectors_)
    unit_user = trained[0] / np.linalg.norm(trained[0])
    unit_items = model.item_vectors_ / np.linalg.norm(model.item_vectors_, axis=1, keepdims=True)
    np.testing.assert_allclose(scores[0], unit_items @ unit_user, atol=1e-6)


def test_user_vector_rule_blends_global_and_history():
    items = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    global_m = np.array([[2.0, 0.0]], np.float32)
    only_global = user_vectors(global_m, items, [np.array([1])], alpha=1.0)
    only_history = user_vectors(global_m, items, [np.array([1])], alpha=0.0)
    half = user_vectors(global_m, items, [np.array([1])], alpha=0.5)
    np.testing.assert_allclose(only_global, [[1.0, 0.0]])
    np.testing.assert_allclose(only_history, [[0.0, 1.0]])
    np.testing.assert_allclose(half, [[np.sqrt(0.5), np.sqrt(0.5)]], atol=1e-6)
    np.testing.assert_allclose(user_vectors(None, items, [np.array([0, 1])], alpha=0.5), [[np.sqrt(0.5), np.sqrt(0.5)]], atol=1e-6)


def test_ranking_metrics_on_a_hand_made_ranking():
    # one user, 6 items; item 5 already seen; positives {0, 3}; ranking 0 > 1 > 2 > 3 > 4
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 1.0]])
    split = EvaluationSplit(exclude=[np.array([5])], truth=[np.array([0, 3])])
    metrics = ranking_metrics(scores, split, cutoffs=(1, 2, 4))
    assert metrics["Recall@1"] == 0.5 and metrics["Recall@4"] == 1.0
    # 3 negatives: full ranking has item 0 above all 3, item 3 above 1 of them (item 4): AUC = 4/6
    assert metrics["AUC@4"] == pytest.approx(4 / 6)
    # cut at 2: item 0 beats all 3; item 3 is below the cut with item 2 and 4 (ties: 0.5 each) = 3 + 1
    assert metrics["AUC@2"] == pytest.approx(4 / 6)
    # cut at 1: item 0 beats 3; item 3 ties with the 3 negatives below the cut: 1.5
    assert metrics["AUC@1"] == pytest.approx(4.5 / 6)


def test_cluster_ids_recover_separated_blocks():
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 5
    features = np.vstack([centres[k] + 0.1 * rng.standard_normal((10, 3)) for k in range(3)])
    labels = cluster_ids([features, features * 2], n_clusters=3, seed=0)
    assert len(np.unique(labels)) == 3
    assert all(len(np.unique(labels[k * 10 : (k + 1) * 10])) == 1 for k in range(3))


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(MRLMDataError, match="unknown dataset 'imdb'"):
        load_dataset("imdb", Settings())


def test_vector_dim_mismatch_is_a_clear_error():
    with pytest.raises(SettingsError, match=rf"mrlm.vector_dim \(d4\) = {Settings().mrlm.vector_dim} but feast.mrlm_vector_dim = 8"):
        validate_config(Settings().mrlm, feast_vector_dim=8)
    with pytest.raises(SettingsError, match="λ1 \\+ λ2 must be < 1"):
        validate_config(Settings().mrlm.model_copy(update={"lambda_triplet": 0.7, "lambda_softmax": 0.3}), None)
    with pytest.raises(ValueError, match="λ1 \\+ λ2 must be < 1"):  # and as settings: the rule lives in MRLMConfig
        Settings(mrlm={"lambda_triplet": 0.7, "lambda_softmax": 0.3})


def test_empty_or_unusable_interactions_are_clear_errors(tiny):
    videos, interactions = tiny
    with pytest.raises(MRLMDataError, match="interactions: the table is empty"):
        feedback(interactions.iloc[:0], 4.0)
    with pytest.raises(MRLMDataError, match="no positive feedback"):
        feedback(interactions.assign(clicked=0), 4.0)
    with pytest.raises(MRLMDataError, match="missing column 'ts'"):
        feedback(interactions.drop(columns=["ts"]), 4.0)
    with pytest.raises(MRLMDataError, match="'clicked' \\(0/1\\) or a 'rating'"):
        feedback(interactions.drop(columns=["clicked"]), 4.0)
    with pytest.raises(MRLMDataError, match="videos: the table is empty"):
        prepare(videos.iloc[:0], interactions, tiny_config())


def test_ratings_use_the_threshold():
    frame = pd.DataFrame({"user_id": [1, 1], "video_id": [1, 2], "rating": [4.0, 3.0], "ts": pd.to_datetime([0, 1], unit="s", utc=True)})
    assert feedback(frame, 4.0)["positive"].tolist() == [True, False]


# --- the optional training deviations (skip path, several / in-batch negatives, smooth max) -------------


def test_multi_negative_triplet_with_one_negative_is_eq3():
    from offline_jobs.mrlm import cosine_distance_triplet, multi_negative_triplet

    gen = torch.Generator().manual_seed(0)
    anchor, positive, negative = (torch.randn(16, 7, generator=gen) for _ in range(3))
    expected = cosine_distance_triplet(anchor, positive, negative)
    got = multi_negative_triplet(anchor, positive, negative[None], in_batch=False, temperature=0.0)
    assert torch.equal(got, expected)
    # K negatives, τ = 0: the mean of Eq. 3 over them
    negatives = torch.randn(4, 16, 7, generator=gen)
    mean_of_eq3 = torch.stack([cosine_distance_triplet(anchor, positive, n) for n in negatives]).mean()
    torch.testing.assert_close(multi_negative_triplet(anchor, positive, negatives), mean_of_eq3)


def test_in_batch_negatives_never_use_the_own_positive():
    from offline_jobs.mrlm import multi_negative_triplet

    # 3 triplets in 2-d; each anchor equals its own positive (cos 1), the random negative is orthogonal (cos 0)
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    positive = anchor.clone()
    negative = torch.stack([torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, -1.0])])[None]
    cos = torch.nn.functional.normalize(anchor, dim=1) @ torch.nn.functional.normalize(positive, dim=1).T
    # row i: the random negative (0 - 1) and the two other positives (cos[i, j] - 1), never j = i
    expected = torch.stack([((0.0 - 1.0) + sum(cos[i, j] - 1.0 for j in range(3) if j != i)) / 3 for i in range(3)]).mean()
    got = multi_negative_triplet(anchor, positive, negative, in_batch=True)
    torch.testing.assert_close(got, expected)
    # if the own positive were used it would add a 0 difference and shrink the mean: guard against it
    with_own = torch.stack([((0.0 - 1.0) + sum(cos[i, j] - 1.0 for j in range(3))) / 4 for i in range(3)]).mean()
    assert not torch.isclose(got, with_own)
    # ids: a copy of the own positive item, or another positive of the same user, is not a negative either
    items, users = torch.tensor([5, 5, 7]), torch.tensor([0, 1, 0])  # rows 0 and 1 share item 5; rows 0 and 2 share user 0
    got_ids = multi_negative_triplet(anchor, positive, negative, in_batch=True, anchor_ids=users, positive_ids=items)
    expected_ids = torch.stack(
        [
            torch.tensor(0.0 - 1.0),  # row 0: row 1 holds its item, row 2 its user: only the random negative is left
            ((0.0 - 1.0) + (cos[1, 2] - 1.0)) / 2,  # row 1: row 0 holds its item; row 2 is a true negative
            ((0.0 - 1.0) + (cos[2, 1] - 1.0)) / 2,  # row 2: row 0 holds its user; row 1 is a true negative
        ]
    ).mean()
    torch.testing.assert_close(got_ids, expected_ids)
    only_random = torch.tensor(-1.0)
    assert not torch.isclose(got_ids, only_random)


def test_triplet_temperature_is_a_smooth_max_over_the_negatives():
    from offline_jobs.mrlm import multi_negative_triplet

    gen = torch.Generator().manual_seed(1)
    anchor, positive = torch.randn(8, 5, generator=gen), torch.randn(8, 5, generator=gen)
    negatives = torch.randn(6, 8, 5, generator=gen)
    diff = torch.nn.functional.cosine_similarity(anchor[None], negatives, dim=-1) - torch.nn.functional.cosine_similarity(anchor, positive)
    hardest, mean = diff.max(0).values.mean(), diff.mean()
    values = [multi_negative_triplet(anchor, positive, negatives, temperature=t) for t in (1.0, 0.1, 0.01, 0.001)]
    # between the mean and the max; increases towards the max as τ -> 0 (within τ·log K of it)
    for t, value in zip((1.0, 0.1, 0.01, 0.001), values):
        assert mean - 1e-6 <= value <= hardest + 1e-6
        assert hardest - value <= t * np.log(6) + 1e-6
    assert all(a <= b + 1e-6 for a, b in zip(values, values[1:]))
    torch.testing.assert_close(values[-1], hardest, atol=2e-3, rtol=0)


def test_skip_connection_network_shapes():
    from offline_jobs.mrlm import GlobalNet, MultimodalNet

    config = tiny_config()
    net = GlobalNet(config.initial_dim, config.conv_channels, config.global_dim, config.dropout, skip=True)
    x = torch.randn(5, config.initial_dim)
    g, h = net(x)
    assert g.shape == (5, config.global_dim) and h.shape == (5, config.conv_channels[0], (config.initial_dim + 1) // 2)
    assert (g < 0).any() and net.skip.weight.shape == (config.global_dim, config.initial_dim)  # linear path, no sigmoid
    siamese = MultimodalNet(config.global_dim, config.siamese_channels, config.vector_dim, config.dropout, skip=True)
    m = siamese(g)
    assert m.shape == (5, config.vector_dim) and (m < 0).any()
    # the skip path alone: with the conv FC zeroed, g is exactly W_s·x
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.zero_()
    net.eval()
    torch.testing.assert_close(net(x)[0], x @ net.skip.weight.T)


def test_default_options_give_the_paper_loss(tiny):
    """K = 1, no in-batch negatives, τ = 0, no skip path: the losses equal the paper's single-negative formulas of Eq. 3-17."""
    import torch.nn.functional as F

    from offline_jobs.mrlm import MRLMNetwork, MRLMParams, cosine_distance_triplet

    config = MRLMParams(
        **tiny_config(triplet_negatives=1, triplet_temperature=0.0, skip_connection=False).model_dump(), in_batch_negatives=False
    )
    torch.manual_seed(0)
    net = MRLMNetwork(config, n_users=10, n_items=30, n_clusters={"tags": 4})
    batch = 6
    gen = torch.Generator().manual_seed(2)
    u0, v0_pos, v0_neg = (torch.randn(batch, config.initial_dim, generator=gen) for _ in range(3))
    user, item_pos, item_neg = (
        torch.randint(0, 10, (batch,), generator=gen),
        torch.randint(0, 30, (batch,), generator=gen),
        torch.randint(0, 30, (batch,), generator=gen),
    )
    clusters_pos, clusters_neg = (
        {"tags": torch.randint(0, 4, (batch,), generator=gen)},
        {"tags": torch.randint(0, 4, (batch,), generator=gen)},
    )
    terms = net.losses(config, {"tags": 1.0}, u0, v0_pos, v0_neg, user, item_pos, item_neg, clusters_pos, clusters_neg)
    g, _ = net.global_net(torch.cat([u0, v0_pos, v0_neg]))  # dropout 0: same BN batch, same output
    g_u, g_pos, g_neg = g.split(batch)
    torch.testing.assert_close(terms["g1"], cosine_distance_triplet(g_u, g_pos, g_neg), rtol=0, atol=0)
    m_pos, m_neg, m_u = net.multimodal_net(torch.cat([g_pos, g_neg, g_u])).split(batch)
    torch.testing.assert_close(terms["m_triplet"], cosine_distance_triplet(m_u, m_pos, m_neg), rtol=0, atol=0)
    head = net.modality_heads["tags"]
    torch.testing.assert_close(
        terms["m_tags"],
        F.cross_entropy(head(m_pos), clusters_pos["tags"]) + F.cross_entropy(head(m_neg), clusters_neg["tags"]),
        rtol=0,
        atol=0,
    )


def test_loss_terms_decrease_with_the_new_options(tiny):
    videos, interactions = tiny
    config = tiny_config(
        epochs=12,
        learning_rate=3e-3,
        skip_connection=True,
        triplet_negatives=4,
        triplet_temperature=0.1,
    )
    data = prepare(videos, interactions, config)
    model = MRLM.from_config(config, in_batch_negatives=True).fit(data)
    first, last = model.loss_history_[0], model.loss_history_[-1]
    for term in ["g1", "g2", "g3", "m_triplet"] + [f"m_{m}" for m in data.clusters]:
        assert last[term] < first[term], f"{term}: {first[term]:.4f} -> {last[term]:.4f}"
    assert model.item_vectors_.shape == (data.n_items, config.vector_dim)
    assert np.isfinite(model.item_vectors_).all() and np.isfinite(model.user_vectors()).all()
