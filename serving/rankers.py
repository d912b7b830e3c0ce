"""Click-through rankers in torch: LR, Embedding&MLP (EMLP) and DCN, with or without topic features (MTL III-B, Table II).

Features of one (user, video) example:

* ``user_id``, ``video_id``: ID features, embedded (``id_embedding_dim``; one weight each for LR);
* with ``features="topic"`` (the paper's Baseline+Topic): the video's topic ids as ID features embedded in
  8 dims (``topic_embedding_dim``), pooled by the topic similarities ``topic_weights``, plus the 8-dim
  ``topic_feature`` vector (DESIGN.md: the similarity-weighted mean of the video's topics' embeddings);
* with ``features="content"`` (the paper's Baseline+CNN, for the Fig. 6 cost comparison): a 128-dim
  content embedding vector of the video instead of the topic features.

LR is linear in its inputs, so it cannot combine the user and topic columns by itself; as in the wide part
of Wide&Deep, LR with topics also gets the hashed user x topic cross feature (``cross_buckets`` weights).
EMLP and DCN learn such interactions themselves and get no cross feature.

:class:`Ranker` is a scikit-learn style estimator over DataFrames holding those columns (:func:`
serving.features.build_training_frame` makes them): ``fit`` returns ``self``, the learned state ends in
``_``, ``random_state`` fixes the result, ``save``/``load`` keep the config beside the weights.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

ModelName = Literal["lr", "emlp", "dcn"]
FeatureSet = Literal["base", "topic", "content"]
MODELS: tuple[str, ...] = ("lr", "emlp", "dcn")
CROSS_HASH_MULTIPLIER = 1_000_003  # user x topic -> bucket: (user * M + topic) mod buckets


@dataclass
class Batch:
    """Model inputs for B examples, T topic slots per video."""

    user: torch.Tensor  # (B,) int64 user index, 0 = unseen in training
    video: torch.Tensor  # (B,) int64 video index, 0 = unseen
    topic: torch.Tensor  # (B, T) int64 topic index, 0 = padding or unseen
    topic_weight: torch.Tensor  # (B, T) float32 similarity of each topic, 0 on padding
    cross: torch.Tensor  # (B, T) int64 hashed user x topic bucket (LR only)
    dense: torch.Tensor  # (B, D) float32: topic_feature (D = 8) or content embedding (D = 128) or empty (D = 0)

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def take(self, index: torch.Tensor) -> "Batch":
        return Batch(*(t[index] for t in (self.user, self.video, self.topic, self.topic_weight, self.cross, self.dense)))


def _pool(embedding: nn.Embedding | nn.EmbeddingBag, ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Similarity-weighted mean of the embeddings of a video's topics: (B, T) -> (B, d); zeros when it has none."""
    vectors = embedding(ids)  # (B, T, d)
    total = weight.sum(dim=1, keepdim=True).clamp_min(1e-6)  # (B, 1)
    return (vectors * weight.unsqueeze(-1)).sum(dim=1) / total


class FeatureEmbedding(nn.Module):
    """Concatenated input x0 of EMLP and DCN: [user (e), video (e), pooled topics (8), dense (D)]."""

    def __init__(self, n_users: int, n_videos: int, n_topics: int, features: FeatureSet, id_dim: int, topic_dim: int, dense_dim: int):
        super().__init__()
        self.features = features
        self.user = nn.Embedding(n_users, id_dim)
        self.video = nn.Embedding(n_videos, id_dim)
        self.topic = nn.Embedding(n_topics, topic_dim, padding_idx=0) if features == "topic" else None
        self.output_dim = 2 * id_dim + (topic_dim if self.topic is not None else 0) + dense_dim
        for table in (self.user, self.video, self.topic):
            if table is not None:
                nn.init.normal_(table.weight, std=0.05)

    def forward(self, batch: Batch) -> torch.Tensor:
        parts = [self.user(batch.user), self.video(batch.video)]  # (B, e) each
        if self.topic is not None:
            parts.append(_pool(self.topic, batch.topic, batch.topic_weight))  # (B, 8)
        if batch.dense.shape[1]:
            parts.append(batch.dense)  # (B, D)
        return torch.cat(parts, dim=1)  # (B, output_dim)


def _mlp(input_dim: int, hidden: list[int]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for units in hidden:
        layers += [nn.Linear(input_dim, units), nn.ReLU()]
        input_dim = units
    return nn.Sequential(*layers), input_dim


class LogisticRegression(nn.Module):
    """logit = b + w_user + w_video [+ pooled w_topic + pooled w_user x topic] + <w, dense>."""

    def __init__(self, n_users: int, n_videos: int, n_topics: int, features: FeatureSet, cross_buckets: int, dense_dim: int):
        super().__init__()
        self.user = nn.Embedding(n_users, 1)
        self.video = nn.Embedding(n_videos, 1)
        with_topics = features == "topic"
        self.topic = nn.Embedding(n_topics, 1, padding_idx=0) if with_topics else None
        self.cross = nn.Embedding(cross_buckets, 1) if with_topics else None
        self.dense = nn.Linear(dense_dim, 1) if dense_dim else None
        self.bias = nn.Parameter(torch.zeros(1))
        for table in (self.user, self.video, self.topic, self.cross):
            if table is not None:
                nn.init.zeros_(table.weight)

    def forward(self, batch: Batch) -> torch.Tensor:
        logit = self.bias + self.user(batch.user)[:, 0] + self.video(batch.video)[:, 0]  # (B,)
        if self.topic is not None:
            logit = logit + _pool(self.topic, batch.topic, batch.topic_weight)[:, 0]
            logit = logit + _pool(self.cross, batch.cross, batch.topic_weight)[:, 0]
        if self.dense is not None:
            logit = logit + self.dense(batch.dense)[:, 0]
        return logit


class EmbeddingMLP(nn.Module):
    """Embedding&MLP: x0 -> ReLU MLP -> logit."""

    def __init__(self, embedding: FeatureEmbedding, hidden: list[int]):
        super().__init__()
        self.embedding = embedding
        self.mlp, out_dim = _mlp(embedding.output_dim, hidden)
        self.head = nn.Linear(out_dim, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.head(self.mlp(self.embedding(batch)))[:, 0]  # (B,)


class DeepCrossNetwork(nn.Module):
    """DCN (Wang et al. 2017): cross layers x_{l+1} = x0 (x_l . w_l) + b_l + x_l beside a deep MLP, both into one logit."""

    def __init__(self, embedding: FeatureEmbedding, hidden: list[int], cross_layers: int):
        super().__init__()
        self.embedding = embedding
        d = embedding.output_dim
        self.cross_weight = nn.Parameter(torch.randn(cross_layers, d) * 0.01)  # (L, d)
        self.cross_bias = nn.Parameter(torch.zeros(cross_layers, d))  # (L, d)
        self.deep, deep_dim = _mlp(d, hidden)
        self.head = nn.Linear(d + deep_dim, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        x0 = self.embedding(batch)  # (B, d)
        x = x0
        for layer in range(self.cross_weight.shape[0]):
            x = x0 * (x @ self.cross_weight[layer]).unsqueeze(1) + self.cross_bias[layer] + x  # (B, d)
        return self.head(torch.cat([x, self.deep(x0)], dim=1))[:, 0]  # (B,)


def _index(values: np.ndarray) -> dict[int, int]:
    """Raw id -> 1..V (0 stays for unseen ids and padding)."""
    return {int(v): i + 1 for i, v in enumerate(np.unique(values))}


class Ranker:
    """A click-through ranker; ``predict_proba(frame)`` gives P(click) per row.

    Parameters
    ----------
    model: "lr", "emlp" or "dcn".
    features: "base" (user and video IDs), "topic" (+ topic ids and the topic feature vector) or
        "content" (+ a content embedding vector in column ``content_embedding``, for the Fig. 6 cost comparison).
    """

    def __init__(
        self,
        model: ModelName = "dcn",
        features: FeatureSet = "topic",
        id_embedding_dim: int = 16,
        topic_embedding_dim: int = 8,
        max_topics_per_video: int = 8,
        hidden_units: tuple[int, ...] = (64, 32),
        cross_layers: int = 2,
        cross_buckets: int = 200_003,
        learning_rate: float = 2e-3,
        weight_decay: float = 1e-6,
        batch_size: int = 1024,
        epochs: int = 3,
        random_state: int = 31,
        show_progress: bool = True,
    ) -> None:
        self.model = model
        self.features = features
        self.id_embedding_dim = id_embedding_dim
        self.topic_embedding_dim = topic_embedding_dim
        self.max_topics_per_video = max_topics_per_video
        self.hidden_units = hidden_units
        self.cross_layers = cross_layers
        self.cross_buckets = cross_buckets
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.random_state = random_state
        self.show_progress = show_progress

    @classmethod
    def from_config(cls, config, model: ModelName, features: FeatureSet, **overrides) -> "Ranker":
        """Build from :class:`topicfs.settings.RankerConfig`."""
        params = dict(
            id_embedding_dim=config.id_embedding_dim,
            topic_embedding_dim=config.topic_embedding_dim,
            max_topics_per_video=config.max_topics_per_video,
            hidden_units=tuple(config.hidden_units),
            cross_layers=config.cross_layers,
            cross_buckets=config.cross_buckets,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            batch_size=config.batch_size,
            epochs=config.epochs,
            random_state=config.seed,
        )
        params.update(overrides)
        return cls(model=model, features=features, **params)

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in (
            "model", "features", "id_embedding_dim", "topic_embedding_dim", "max_topics_per_video", "hidden_units",
            "cross_layers", "cross_buckets", "learning_rate", "weight_decay", "batch_size", "epochs", "random_state",
        )}

    # -- inputs ----------------------------------------------------------------------------------

    def _check(self, frame: pd.DataFrame, with_label: bool) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.features not in ("base", "topic", "content"):
            raise ValueError(f"features must be 'base', 'topic' or 'content', got {self.features!r}")
        needed = ["user_id", "video_id"] + (["label"] if with_label else [])
        needed += {"base": [], "topic": ["topic_ids", "topic_weights", "topic_feature"], "content": ["content_embedding"]}[self.features]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"ranker ({self.model}, {self.features}): missing column(s) {missing}")

    def _dense(self, frame: pd.DataFrame) -> np.ndarray:
        column = {"topic": "topic_feature", "content": "content_embedding"}.get(self.features)
        if column is None:
            return np.zeros((len(frame), 0), dtype=np.float32)
        dense = np.asarray([np.asarray(v, dtype=np.float32) for v in frame[column]], dtype=np.float32)  # (B, D)
        if dense.ndim != 2:
            raise ValueError(f"column '{column}' must hold vectors of one length")
        return dense

    def _batch(self, frame: pd.DataFrame) -> Batch:
        n, t = len(frame), self.max_topics_per_video
        users = frame["user_id"].to_numpy(dtype=np.int64)
        videos = frame["video_id"].to_numpy(dtype=np.int64)
        user = np.fromiter((self.user_index_.get(int(u), 0) for u in users), dtype=np.int64, count=n)
        video = np.fromiter((self.video_index_.get(int(v), 0) for v in videos), dtype=np.int64, count=n)
        topic = np.zeros((n, t), dtype=np.int64)
        weight = np.zeros((n, t), dtype=np.float32)
        cross = np.zeros((n, t), dtype=np.int64)
        if self.features == "topic":
            for row, (ids, sims) in enumerate(zip(frame["topic_ids"], frame["topic_weights"])):
                k = min(len(ids), t)
                for slot in range(k):
                    topic[row, slot] = self.topic_index_.get(int(ids[slot]), 0)
                    weight[row, slot] = max(float(sims[slot]), 0.0) if len(sims) > slot else 1.0
                    cross[row, slot] = (int(users[row]) * CROSS_HASH_MULTIPLIER + int(ids[slot])) % self.cross_buckets
            weight[topic == 0] = 0.0
        dense = self._dense(frame)
        if dense.shape[1] and dense.shape[1] != self.dense_dim_:
            raise ValueError(f"dense feature has {dense.shape[1]} values, the ranker was trained with {self.dense_dim_}")
        return Batch(*(torch.from_numpy(a) for a in (user, video, topic, weight, cross, dense)))

    def _build(self) -> nn.Module:
        n_users, n_videos, n_topics = len(self.user_index_) + 1, len(self.video_index_) + 1, len(self.topic_index_) + 1
        if self.model == "lr":
            return LogisticRegression(n_users, n_videos, n_topics, self.features, self.cross_buckets, self.dense_dim_)
        embedding = FeatureEmbedding(
            n_users, n_videos, n_topics, self.features, self.id_embedding_dim, self.topic_embedding_dim, self.dense_dim_
        )
        if self.model == "emlp":
            return EmbeddingMLP(embedding, list(self.hidden_units))
        return DeepCrossNetwork(embedding, list(self.hidden_units), self.cross_layers)

    # -- estimator -------------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame) -> "Ranker":
        """Train on rows with user_id, video_id, label (0/1) and the feature set's columns."""
        self._check(frame, with_label=True)
        if len(frame) == 0:
            raise ValueError("cannot fit a ranker on an empty frame")
        torch.manual_seed(self.random_state)
        # Adam's moments of rarely touched embedding rows decay into denormal floats, which are ~100x slower on CPU
        torch.set_flush_denormal(True)
        rng = np.random.default_rng(self.random_state)
        self.user_index_ = _index(frame["user_id"].to_numpy())
        self.video_index_ = _index(frame["video_id"].to_numpy())
        topic_values = [int(t) for ids in frame["topic_ids"] for t in ids] if self.features == "topic" else []
        self.topic_index_ = _index(np.asarray(topic_values, dtype=np.int64))
        self.dense_dim_ = self._dense(frame.iloc[:1]).shape[1]
        self.model_ = self._build()
        batch = self._batch(frame)
        labels = torch.from_numpy(frame["label"].to_numpy(dtype=np.float32))  # (N,)
        optimizer = torch.optim.Adam(self.model_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        loss_fn = nn.BCEWithLogitsLoss()
        self.model_.train()
        self.loss_curve_: list[float] = []
        steps = (len(frame) + self.batch_size - 1) // self.batch_size
        for epoch in range(self.epochs):
            order = torch.from_numpy(rng.permutation(len(frame)))
            total = 0.0
            for step in tqdm(range(steps), desc=f"{self.model}/{self.features} epoch {epoch + 1}", disable=not self.show_progress, leave=False):
                index = order[step * self.batch_size : (step + 1) * self.batch_size]
                optimizer.zero_grad()
                loss = loss_fn(self.model_(batch.take(index)), labels[index])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(index)
            self.loss_curve_.append(total / len(frame))
            logger.debug("%s/%s epoch %d: loss %.4f", self.model, self.features, epoch + 1, self.loss_curve_[-1])
        self.model_.eval()
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """P(click) for every row, shape (N,)."""
        if not hasattr(self, "model_"):
            raise RuntimeError("ranker is not fitted: call fit() or Ranker.load() first")
        self._check(frame, with_label=False)
        batch = self._batch(frame)
        with torch.inference_mode():
            return torch.sigmoid(self.model_(batch)).numpy()

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model_.parameters())

    # -- persistence -----------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Weights (``ranker.pt``) with the config and id indexes (``ranker.json``) beside them."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "params": self.get_params(),
            "dense_dim": self.dense_dim_,
            "user_ids": list(self.user_index_),
            "video_ids": list(self.video_index_),
            "topic_ids": list(self.topic_index_),
        }
        (directory / "ranker.json").write_text(json.dumps(meta))
        torch.save(self.model_.state_dict(), directory / "ranker.pt")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Ranker":
        directory = Path(directory)
        if not (directory / "ranker.json").exists():
            raise FileNotFoundError(f"{directory}: no ranker.json (not a saved ranker)")
        meta = json.loads((directory / "ranker.json").read_text())
        params = meta["params"] | {"hidden_units": tuple(meta["params"]["hidden_units"])}  # JSON has no tuples
        ranker = cls(**params, show_progress=False)
        ranker.dense_dim_ = meta["dense_dim"]
        ranker.user_index_ = {int(v): i + 1 for i, v in enumerate(meta["user_ids"])}
        ranker.video_index_ = {int(v): i + 1 for i, v in enumerate(meta["video_ids"])}
        ranker.topic_index_ = {int(v): i + 1 for i, v in enumerate(meta["topic_ids"])}
        ranker.model_ = ranker._build()
        ranker.model_.load_state_dict(torch.load(directory / "ranker.pt", weights_only=True))
        ranker.model_.eval()
        return ranker
