"""f_T and f_C: model resolution, pooling, vocabulary extension, cover decoding, TorchScript CNNs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from offline_jobs.encoders import (
    PACKAGED_TITLE_ENCODER,
    CoverEncoder,
    TitleEncoder,
    encode_covers,
    encode_titles,
    load_covers,
    mean_pool,
    pad_batch,
    pretrained_cover_embeddings,
    pretrained_title_embeddings,
    resolve_title_encoder,
)
from topicfs.settings import MMoEConfig

CHINESE_TITLES = ["精神小伙路难走", "晚饭后运动一下", "我平淡无奇惊艳不了时光", "美食 cooking 做饭"]


@pytest.fixture(scope="session")
def tiny_title_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with the MiniLM tokenizer: the real code path at a fraction of the cost."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_title_encoder(PACKAGED_TITLE_ENCODER), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_torchscript_cnn(tmp_path_factory) -> Path:
    """A scripted 2-conv CNN whose output (B, 6, 1, 1) must be flattened to 6 features."""
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.AdaptiveAvgPool2d(1))
    path = tmp_path_factory.mktemp("cnn") / "cnn.pt"
    torch.jit.save(torch.jit.script(cnn), str(path))
    return path


def write_png(path: Path, colour: tuple[int, int, int], size: int = 20) -> str:
    Image.new("RGB", (size, size), colour).save(path)
    return str(path)


def test_packaged_minilm_resolves_and_embeds_offline():
    path = resolve_title_encoder(PACKAGED_TITLE_ENCODER)
    assert (path / "model.safetensors").is_file()
    vectors = pretrained_title_embeddings(["a cat on a mat", "", "精神小伙"], MMoEConfig())
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    # sentence-transformers' MiniLM: related English titles are closer than unrelated ones.
    more = pretrained_title_embeddings(["a cat sleeps on the mat", "stock market crash"], MMoEConfig())
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    assert unit(vectors[0]) @ unit(more[0]) > unit(vectors[0]) @ unit(more[1])


def test_unknown_title_encoder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a transformers model folder"):
        resolve_title_encoder(tmp_path)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=5), st.integers(1, 4))
def test_mean_pool_ignores_padding(lengths, dim):
    torch.manual_seed(0)
    ids, mask = pad_batch([[1] * n for n in lengths], pad_id=0)
    hidden = torch.randn(len(lengths), ids.shape[1], dim)
    pooled = mean_pool(hidden, mask)
    for row, n in enumerate(lengths):
        assert torch.allclose(pooled[row], hidden[row, :n].mean(0), atol=1e-6)


def test_vocabulary_extension_removes_unk_for_chinese(tiny_title_model, tmp_path):
    encoder = TitleEncoder(tiny_title_model, max_tokens=32)
    assert encoder.unk_rate(CHINESE_TITLES) > 0.3  # the English vocabulary lacks most of these characters
    report = encoder.extend_vocabulary(CHINESE_TITLES, seed=1)
    assert report.added_tokens > 0 and report.unk_rate_before > 0.3
    assert report.unk_rate_after == 0.0 == encoder.unk_rate(CHINESE_TITLES)
    ids = encoder.tokenize(["精神"])[0]
    assert any(i >= encoder.base_vocab_size for i in ids)  # new characters get new ids
    # Adding again is a no-op: nothing is missing any more.
    assert encoder.extend_vocabulary(CHINESE_TITLES, seed=1).added_tokens == 0
    before = encode_titles(encoder, CHINESE_TITLES, batch_size=2)
    encoder.save(tmp_path / "f_T")
    reloaded = TitleEncoder(tmp_path / "f_T", max_tokens=32)
    assert reloaded.unk_rate(CHINESE_TITLES) == 0.0  # the extended tokenizer is saved with the model
    np.testing.assert_allclose(encode_titles(reloaded, CHINESE_TITLES, batch_size=3), before, atol=1e-5)


def test_new_token_rows_are_seeded_and_learnable(tiny_title_model):
    first, second = TitleEncoder(tiny_title_model, 32), TitleEncoder(tiny_title_model, 32)
    first.extend_vocabulary(CHINESE_TITLES, seed=3)
    second.extend_vocabulary(CHINESE_TITLES, seed=3)
    assert torch.equal(first.new_token_embeddings.weight, second.new_token_embeddings.weight)
    first.freeze_lower_layers(1)
    assert first.new_parameters()[0].requires_grad
    assert not first.transformer.get_input_embeddings().weight.requires_grad
    ids, mask = pad_batch(first.tokenize(CHINESE_TITLES), first.pad_id)
    first(ids, mask).sum().backward()
    assert first.new_token_embeddings.weight.grad.abs().sum() > 0


def test_skipgram_init_places_cooccurring_characters_close(tiny_title_model):
    """Characters that share titles start closer than characters that never meet, on the pretrained scale."""
    rng = np.random.default_rng(0)
    # two groups of characters that never share a title (enough of them that skip-gram's downsampling of
    # very frequent tokens leaves pairs to learn from)
    food, games = "饭菜汤面粥饺包肉鱼虾蛋糕甜辣酸咸", "游戏王者段位赛队员打输赢局枪战关卡"
    titles = ["".join(rng.choice(list(group), size=8)) for group in (food, games) for _ in range(400)]
    first, second = TitleEncoder(tiny_title_model, 32), TitleEncoder(tiny_title_model, 32)
    first.extend_vocabulary(titles, seed=4, init="skipgram")
    second.extend_vocabulary(titles, seed=4, init="skipgram")
    assert torch.equal(first.new_token_embeddings.weight, second.new_token_embeddings.weight)
    rows = first.new_token_embeddings.weight.detach()
    index = {
        ch: ids[0] - first.base_vocab_size
        for ch in food + games
        for ids in [first.tokenize([ch])[0][1:-1]]
        if ids[0] >= first.base_vocab_size
    }
    centred = torch.nn.functional.normalize(rows - rows.mean(0), dim=1)

    def mean_cosine(a: str, b: str) -> float:
        pairs = [(x, y) for x in a for y in b if x != y and x in index and y in index]
        return float(np.mean([float(centred[index[x]] @ centred[index[y]]) for x, y in pairs]))

    assert mean_cosine(food, food) > mean_cosine(food, games) + 0.2
    assert mean_cosine(games, games) > mean_cosine(food, games) + 0.2
    pretrained = first.transformer.get_input_embeddings().weight.detach()
    torch.testing.assert_close(rows.mean(0), pretrained.mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(rows.std(0), pretrained.std(0), rtol=0.05, atol=1e-4)
    with pytest.raises(ValueError, match="init must be"):
        TitleEncoder(tiny_title_model, 32).extend_vocabulary(titles, seed=4, init="random")


def test_freeze_lower_layers_keeps_only_top_layers_trainable(tiny_title_model):
    encoder = TitleEncoder(tiny_title_model, 32)
    encoder.freeze_lower_layers(1)
    layers = encoder.transformer.encoder.layer
    assert all(p.requires_grad for p in layers[1].parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    encoder.freeze_lower_layers(None)
    assert all(p.requires_grad for p in encoder.transformer.parameters())


def test_covers_decode_and_missing_ones_are_flagged(tmp_path):
    paths = [write_png(tmp_path / "red.png", (255, 0, 0)), None, str(tmp_path / "absent.png"), str(tmp_path)]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    paths.append(str(tmp_path / "broken.png"))
    images, present = load_covers(paths, size_px=16)
    assert images.shape == (5, 3, 16, 16)
    assert present.tolist() == [True, False, False, False, False]
    assert images[0, 0].mean() > images[0, 1].mean()  # red channel brightest after normalisation
    assert torch.count_nonzero(images[1:]) == 0


def test_torchscript_cnn_is_loaded_flattened_and_zero_for_missing(tiny_torchscript_cnn, tmp_path):
    encoder = CoverEncoder(tiny_torchscript_cnn, image_size_px=16, channels=[8])
    assert encoder.pretrained and encoder.output_dim == 6
    paths = [write_png(tmp_path / "a.png", (10, 200, 30)), None]
    features = encode_covers(encoder, paths, batch_size=2)
    assert features.shape == (2, 6)
    assert np.abs(features[0]).sum() > 0 and not features[1].any()
    assert len(encoder.pretrained_parameters()) == 4 and not encoder.new_parameters()
    config = MMoEConfig(image_encoder=tiny_torchscript_cnn, image_size_px=16)
    np.testing.assert_allclose(pretrained_cover_embeddings(paths, config), features, atol=1e-6)


def test_bad_image_encoder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such TorchScript file"):
        CoverEncoder(tmp_path / "nope.pt", 16, [8])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="TorchScript"):
        CoverEncoder(bad, 16, [8])
    with pytest.raises(ValueError, match="pretrained CNN"):
        pretrained_cover_embeddings([None], MMoEConfig())


def test_compact_cnn_when_no_pretrained_one(tmp_path):
    encoder = CoverEncoder(None, image_size_px=16, channels=[4, 8])
    assert not encoder.pretrained and encoder.output_dim == 8 and encoder.new_parameters()
    paths = [write_png(tmp_path / "b.png", (0, 0, 255)), None, write_png(tmp_path / "c.png", (0, 255, 0))]
    images, present = load_covers(paths, 16)
    features = encoder.train()(images, present)  # train mode: BatchNorm sees only the two real covers
    assert features.shape == (3, 8) and not features[1].any() and features[0].abs().sum() > 0
