"""MMoE (Eq. 1-2): gates, shapes, training, dropped tasks/modalities, reproducibility, save/load."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from offline_jobs.mmoe import MMoE, MultimodalTopicEncoder, sortish_batches
from tests.offline.test_encoders import tiny_title_model, tiny_torchscript_cnn, write_png  # noqa: F401  (fixtures)
from topicfs.settings import MMoEConfig

WORDS = {"food": ["美食", "做饭", "好吃"], "game": ["游戏", "王者", "上分"], "pets": ["猫咪", "狗狗", "可爱"]}
COLOURS = {"food": (220, 40, 20), "game": (20, 40, 220), "pets": (30, 200, 40)}


def make_videos(n: int, folder: Path | None = None, seed: int = 0) -> pd.DataFrame:
    """n videos of three classes: class words in titles, class colours on covers, class tags."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        topic = list(WORDS)[i % 3]
        words = rng.choice(WORDS[topic], size=2)
        cover = None
        if folder is not None:
            cover = write_png(
                folder / f"{i}.png", tuple(int(c) for c in np.clip(np.array(COLOURS[topic]) + rng.integers(-20, 20, 3), 0, 255))
            )
        rows.append(
            {
                "video_id": i,
                "title": f"{words[0]}{words[1]} 第{i}集",
                "cover_image": cover,
                "primary_class": topic,
                "secondary_class": None if i % 4 == 0 else f"{topic}-{i % 2}",
                "tags": [f"#{topic}", f"#{topic}{i % 2}"] if i % 5 else [],
                "publish_ts": pd.Timestamp(0, unit="s", tz="UTC"),
            }
        )
    return pd.DataFrame(rows)


def tiny_config(title_model: Path, **update) -> MMoEConfig:
    base = dict(
        title_encoder=str(title_model),
        n_experts=3,
        expert_dim=8,
        tower_hidden=8,
        batch_size=8,
        epochs=2,
        image_size_px=16,
        cnn_channels=[4, 8],
        title_trainable_layers=1,
        learning_rate=3e-3,
        seed=5,
        torch_threads=1,
    )
    return MMoEConfig(**(base | update))


@pytest.fixture(scope="module")
def fitted(tiny_title_model, tmp_path_factory):  # noqa: F811
    videos = make_videos(24, tmp_path_factory.mktemp("covers"))
    return videos, MultimodalTopicEncoder.from_config(tiny_config(tiny_title_model)).fit(videos)


def test_gates_are_softmax_over_experts(fitted):
    videos, model = fitted
    gates = model.gate_weights(videos)
    assert gates.shape == (24, 3, 3)  # (videos, N tasks, H experts)
    np.testing.assert_allclose(gates.sum(-1), 1.0, atol=1e-5)
    assert (gates > 0).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 9))
def test_mmoe_module_shapes_and_gates(batch, n_experts, expert_dim):
    torch.manual_seed(0)
    head = MMoE([5, 7], n_experts, expert_dim, 4, [3, 2, 6], dropout=0.0)
    logits, gates, mixtures = head(torch.randn(batch, 12))
    assert [tuple(t.shape) for t in logits] == [(batch, 3), (batch, 2), (batch, 6)]
    assert gates.shape == (batch, 3, n_experts) and mixtures.shape == (batch, 3, expert_dim)
    assert torch.allclose(gates.sum(-1), torch.ones(batch, 3), atol=1e-5) and (gates > 0).all()


def test_output_shapes_and_tasks(fitted):
    videos, model = fitted
    assert model.modalities_ == ("cover", "title")
    assert [t.name for t in model.tasks_] == ["primary_class", "secondary_class", "tags"]
    assert len(model.tasks_[0].classes) == 3 and len(model.tasks_[1].classes) == 6 and len(model.tasks_[2].classes) == 9
    encoder_z = model.transform(videos, "encoder")
    assert encoder_z.shape == (24, 8 + 32) and encoder_z.dtype == np.float32
    experts_z = model.transform(videos, "experts")
    assert experts_z.shape == (24, 3 * 8) and experts_z.dtype == np.float32
    probabilities = model.predict_proba(videos)
    assert probabilities["primary_class"].shape == (24, 3)
    np.testing.assert_allclose(probabilities["primary_class"].sum(1), 1.0, atol=1e-5)
    assert probabilities["tags"].shape == (24, 9)
    # Order follows the input: transforming a reversed table reverses the rows.
    np.testing.assert_allclose(model.transform(videos.iloc[::-1]), model.transform(videos)[::-1], atol=1e-5)


def test_loss_decreases_when_overfitting(tiny_title_model, tmp_path):  # noqa: F811
    videos = make_videos(12, tmp_path)
    config = tiny_config(tiny_title_model, epochs=15, batch_size=4, learning_rate=1e-2, dropout=0.0)
    model = MultimodalTopicEncoder.from_config(config).fit(videos)
    first, last = (sum(epoch.values()) for epoch in (model.history_[0], model.history_[-1]))
    assert last < 0.5 * first, model.history_
    predicted = model.predict_proba(videos)["primary_class"].argmax(1)
    classes = model.tasks_[0].classes
    assert np.mean([classes[p] == c for p, c in zip(predicted, videos["primary_class"])]) >= 0.9


def test_missing_covers_drop_the_image_modality_with_a_warning(tiny_title_model):  # noqa: F811
    videos = make_videos(12)  # cover_image None everywhere, as in KuaiRec
    with pytest.warns(UserWarning, match="cover dropped"):
        model = MultimodalTopicEncoder.from_config(tiny_config(tiny_title_model, epochs=1)).fit(videos)
    assert model.modalities_ == ("title",) and model.cover_encoder_ is None
    assert model.transform(videos, "encoder").shape == (12, 32)


def test_some_missing_cover_files_get_zero_image_features(tiny_title_model, tmp_path):  # noqa: F811
    videos = make_videos(12, tmp_path)
    videos.loc[3, "cover_image"] = str(tmp_path / "gone.png")
    videos.loc[4, "cover_image"] = None
    model = MultimodalTopicEncoder.from_config(tiny_config(tiny_title_model, epochs=1)).fit(videos)
    cover_part = model.joint_features(videos)[:, :8]  # f_C comes first in z
    assert not cover_part[3].any() and not cover_part[4].any() and cover_part[5].any()


def test_tasks_without_labels_are_dropped_with_a_warning(tiny_title_model):  # noqa: F811
    videos = make_videos(12).assign(secondary_class=None, tags=[[] for _ in range(12)])
    with pytest.warns(UserWarning) as caught:
        model = MultimodalTopicEncoder.from_config(tiny_config(tiny_title_model, epochs=1)).fit(videos)
    messages = " ".join(str(w.message) for w in caught)
    assert "task secondary_class dropped" in messages and "task tags dropped" in messages
    assert [t.name for t in model.tasks_] == ["primary_class"]
    assert model.transform(videos, "experts").shape == (12, 8)


def test_no_labels_at_all_keeps_pretrained_features(tiny_title_model):  # noqa: F811
    videos = make_videos(6).assign(primary_class=None, secondary_class=None, tags=[[] for _ in range(6)])
    with pytest.warns(UserWarning, match="no task has labels"):
        model = MultimodalTopicEncoder.from_config(tiny_config(tiny_title_model)).fit(videos)
    assert model.tasks_ == [] and model.history_ == []
    assert model.transform(videos, "experts").shape == (6, 32)


def test_bad_input_is_a_clear_error(tiny_title_model):  # noqa: F811
    model = MultimodalTopicEncoder.from_config(tiny_config(tiny_title_model))
    with pytest.raises(ValueError, match="missing column"):
        model.fit(pd.DataFrame({"video_id": [1]}))
    with pytest.raises(ValueError, match="empty"):
        model.fit(make_videos(3).iloc[:0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="nothing to learn z from"):
            model.fit(make_videos(4).assign(title=""))
    with pytest.raises(RuntimeError, match="not fitted"):
        MultimodalTopicEncoder.from_config(tiny_config(tiny_title_model)).transform(make_videos(2))
    with pytest.raises(ValueError, match="representation"):
        MMoEConfig(representation="logits")


def test_same_seed_same_weights_and_z(tiny_title_model, tmp_path):  # noqa: F811
    videos = make_videos(16, tmp_path)
    config = tiny_config(tiny_title_model)
    first, second = MultimodalTopicEncoder.from_config(config).fit(videos), MultimodalTopicEncoder.from_config(config).fit(videos)
    for a, b in zip(first.mmoe_.state_dict().values(), second.mmoe_.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(first.title_encoder_.new_token_embeddings.weight, second.title_encoder_.new_token_embeddings.weight)
    np.testing.assert_array_equal(first.transform(videos), second.transform(videos))
    other = MultimodalTopicEncoder.from_config(tiny_config(tiny_title_model, seed=6)).fit(videos)
    assert not np.array_equal(other.transform(videos), first.transform(videos))


def test_save_load_round_trip(fitted, tmp_path):
    videos, model = fitted
    before = {r: model.transform(videos, r) for r in ("encoder", "experts")}
    model.save(tmp_path / "mmoe")
    assert (tmp_path / "mmoe" / "config.json").is_file()
    loaded = MultimodalTopicEncoder.load(tmp_path / "mmoe")
    assert loaded.config_ == model.config_ and loaded.get_params() == model.get_params() and loaded.tasks_ == model.tasks_
    assert loaded.data_fingerprint_ == model.data_fingerprint_
    for representation, values in before.items():
        np.testing.assert_allclose(loaded.transform(videos, representation), values, atol=1e-6)
    # A video published later: new text and an unseen cover still encode.
    np.testing.assert_allclose(loaded.transform(videos.iloc[:2]), model.transform(videos.iloc[:2]), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="config.json"):
        MultimodalTopicEncoder.load(tmp_path)


def test_torchscript_cover_encoder_end_to_end(tiny_title_model, tiny_torchscript_cnn, tmp_path):  # noqa: F811
    videos = make_videos(12, tmp_path)
    model = MultimodalTopicEncoder.from_config(tiny_config(tiny_title_model, image_encoder=tiny_torchscript_cnn, epochs=1)).fit(videos)
    assert model.cover_encoder_.pretrained and model.cover_encoder_.output_dim == 6
    z = model.transform(videos, "encoder")
    assert z.shape == (12, 6 + 32)
    model.save(tmp_path / "saved")
    np.testing.assert_allclose(MultimodalTopicEncoder.load(tmp_path / "saved").transform(videos, "encoder"), z, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=300), st.integers(1, 16), st.integers(0, 3))
def test_sortish_batches_cover_every_video_once(lengths, batch_size, seed):
    batches = sortish_batches(lengths, batch_size, np.random.default_rng(seed))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    again = sortish_batches(lengths, batch_size, np.random.default_rng(seed))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
