"""Click-through rankers in torch: LR, Embedding&MLP (EMLP) and DCN, with or without topic features (MTL III-B, Table II).

Features of one (user, video) example, as in the paper's Wide&Deep ranker ("the embedding from a video and
the mean embedding from the historical click videos of a user are combined"):

* every feature set (``"base"``): ``user_id`` and ``video_id`` ID features (embedded in ``id_embedding_dim``;
  one weight each for LR) and the user's history, ``history_video_ids`` (their latest clicked videos before
  the example, newest first), pooled as the mean of those videos' ID embeddings;
* ``features="topic"`` (the paper's Baseline+Topic) adds the topics as ID features embedded in 8 dims
  (``topic_embedding_dim``): the video's ``topic_ids`` pooled by their similarities ``topic_weights``, and the
  user's topics ``history_topic_ids`` (the topics voted by their last N1 clicks, as candidate generation
  counts them) pooled by their vote shares ``history_topic_weights``; plus the video's 8-dim ``topic_feature``
  vector (DESIGN.md: the similarity-weighted mean of its topics' embeddings);
* ``exposure_history=True`` (Table II) adds what the user's earlier exposures say, not only their clicks:
  every feature set gets the user's smoothed click rate and exposure count (``user_exposures``,
  ``user_clicks``); with topics, also the user's smoothed click rate on the video's topics, its lift over the
  user's own rate and how often the user was shown those topics (``topic_exposures``, ``topic_clicks``, one
  count per video topic), see :func:`exposure_features`;
* ``features="content"`` (the paper's Baseline+CNN, for the Fig. 6 cost comparison) adds a 128-dim
  ``content_embedding`` vector of the video instead of the topic features.

LR is linear in its inputs, so it cannot combine user and video columns by itself; as in the wide part of
Wide&Deep it gets hashed cross features (``cross_buckets`` weights): history video x video in every feature
set, history topic x video topic with topics. EMLP and DCN learn such interactions themselves.

:class:`Ranker` is a scikit-learn style estimator over DataFrames holding those columns (:func:`
serving.features.build_training_frame` makes them): ``fit`` returns ``self``, the learned state ends in
``_``, ``random_state`` fixes the result, ``save``/``load`` keep the config beside the weights. Serving
passes arrays straight in (:class:`RankerInputs`), skipping the DataFrame.
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

from serving.padding import PADDING, pad_lists
from topicfs.settings import RankerConfig, TopicsConfig

logger = logging.getLogger(__name__)

ModelName = Literal["lr", "emlp", "dcn"]
FeatureSet = Literal["base", "topic", "content"]
MODELS: tuple[str, ...] = ("lr", "emlp", "dcn")
FEATURE_SETS: tuple[str, ...] = ("base", "topic", "content")
# cross feature (a, b) -> bucket (a * M + b + salt) mod buckets; the salt keeps the two cross kinds apart
CROSS_HASH_MULTIPLIER = 1_000_003
VIDEO_CROSS_SALT, TOPIC_CROSS_SALT = 0, 500_009


@dataclass
class RankerInputs:
    """Raw inputs for N examples as arrays; list features padded with :data:`PADDING` (ids) and 0 (weights)."""

    user_id: np.ndarray  # (N,) int64
    video_id: np.ndarray  # (N,) int64
    history_video_ids: np.ndarray  # (N, H) int64, newest first
    topic_ids: np.ndarray | None = None  # (N, T) int64
    topic_weights: np.ndarray | None = None  # (N, T) float32
    topic_feature: np.ndarray | None = None  # (N, 8) float32
    history_topic_ids: np.ndarray | None = None  # (N, M) int64, most votes first
    history_topic_weights: np.ndarray | None = None  # (N, M) float32 share of the user's recent clicks
    content_embedding: np.ndarray | None = None  # (N, 128) float32
    user_exposures: np.ndarray | None = None  # (N,) int64 the user's earlier exposures
    user_clicks: np.ndarray | None = None  # (N,) int64 the user's earlier clicks
    topic_exposures: np.ndarray | None = None  # (N, T) int64 the user's earlier exposures to each video topic, 0 on padding
    topic_clicks: np.ndarray | None = None  # (N, T) int64 the user's earlier clicks on each video topic

    def __len__(self) -> int:
        return int(self.user_id.shape[0])

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        features: FeatureSet,
        history_videos: int,
        topics_per_video: int,
        history_topics: int,
        exposure_history: bool = False,
    ) -> "RankerInputs":
        inputs = cls(
            user_id=frame["user_id"].to_numpy(dtype=np.int64),
            video_id=frame["video_id"].to_numpy(dtype=np.int64),
            history_video_ids=pad_lists(frame["history_video_ids"].tolist(), history_videos, np.int64, PADDING),
        )
        if features == "topic":
            inputs.topic_ids = pad_lists(frame["topic_ids"].tolist(), topics_per_video, np.int64, PADDING)
            inputs.topic_weights = pad_lists(frame["topic_weights"].tolist(), topics_per_video, np.float32, 0.0)
            inputs.topic_feature = _stack(frame["topic_feature"], "topic_feature")
            inputs.history_topic_ids = pad_lists(frame["history_topic_ids"].tolist(), history_topics, np.int64, PADDING)
            inputs.history_topic_weights = pad_lists(frame["history_topic_weights"].tolist(), history_topics, np.float32, 0.0)
        elif features == "content":
            inputs.content_embedding = _stack(frame["content_embedding"], "content_embedding")
        if exposure_history:
            inputs.user_exposures = frame["user_exposures"].to_numpy(dtype=np.int64)
            inputs.user_clicks = frame["user_clicks"].to_numpy(dtype=np.int64)
            if features == "topic":
                inputs.topic_exposures = pad_lists(frame["topic_exposures"].tolist(), topics_per_video, np.int64, 0)
                inputs.topic_clicks = pad_lists(frame["topic_clicks"].tolist(), topics_per_video, np.int64, 0)
        return inputs


def _stack(column: pd.Series, name: str) -> np.ndarray:
    try:
        return np.stack([np.asarray(v, dtype=np.float32) for v in column]) if len(column) else np.zeros((0, 0), np.float32)
    except ValueError as error:
        raise ValueError(f"column '{name}' must hold vectors of one length ({error})") from error


def topic_affinity(inputs: RankerInputs) -> np.ndarray:
    """How much of the user's recent clicking went to the video's topics, (N,) in [0, 1]:
    sum over the video's topics of similarity x the topic's vote share, over the sum of similarities.

    The one number a linear model needs to match a user's topics with a video's (EMLP and DCN get it too,
    so every model sees the same features).
    """
    same = (inputs.topic_ids[:, :, None] == inputs.history_topic_ids[:, None, :]) & (inputs.topic_ids[:, :, None] != PADDING)  # (N, T, M)
    share = (same * inputs.history_topic_weights[:, None, :]).sum(axis=2)  # (N, T)
    weights = np.where(inputs.topic_ids != PADDING, inputs.topic_weights, 0.0)  # (N, T)
    return ((weights * share).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-6)).astype(np.float32)


EXPOSURE_LOG_SCALE = 5.0  # log1p(count) / 5 is about 0-1.4 for up to 1000 exposures, the scale of the other dense inputs


def exposure_features(inputs: RankerInputs, with_topics: bool, prior_strength: float) -> np.ndarray:
    """Dense features from the user's earlier exposures and clicks: (N, 2), or (N, 5) with topics.

    Columns: the user's click rate r = (clicks + 1) / (exposures + 2) (Laplace: a user without history is at
    0.5) and log1p(exposures) / 5; with topics, over the video's topics weighted by similarity, the user's click
    rate on each topic shrunk towards r with ``prior_strength`` pseudo-exposures, (c_k + a r) / (e_k + a), its
    lift over r (does this user like these topics more than they like videos in general), and log1p(e_k) / 5.
    A video without topics gets r, 0 and 0.
    """
    if inputs.user_exposures is None or inputs.user_clicks is None:
        raise ValueError("this ranker uses the user's exposure history: inputs need user_exposures and user_clicks")
    exposures = inputs.user_exposures.astype(np.float64)  # (N,)
    rate = (inputs.user_clicks + 1.0) / (exposures + 2.0)  # (N,)
    columns = [rate, np.log1p(exposures) / EXPOSURE_LOG_SCALE]
    if with_topics:
        if inputs.topic_exposures is None or inputs.topic_clicks is None:
            raise ValueError("this topic ranker uses the user's exposure history: inputs need topic_exposures and topic_clicks")
        weights = np.where(inputs.topic_ids != PADDING, inputs.topic_weights, 0.0)  # (N, T)
        total = weights.sum(axis=1)  # (N,)
        topic_rate = (inputs.topic_clicks + prior_strength * rate[:, None]) / (inputs.topic_exposures + prior_strength)  # (N, T)
        mean_rate = np.where(total > 0, (weights * topic_rate).sum(axis=1) / np.maximum(total, 1e-6), rate)
        mean_exposures = (weights * np.log1p(inputs.topic_exposures)).sum(axis=1) / np.maximum(total, 1e-6)
        columns += [mean_rate, mean_rate - rate, mean_exposures / EXPOSURE_LOG_SCALE]
    return np.stack(columns, axis=1).astype(np.float32)


@dataclass
class Batch:
    """Model inputs for B examples as vocabulary indexes (0 = padding or unseen in training)."""

    user: torch.Tensor  # (B,) int64
    video: torch.Tensor  # (B,) int64
    history_video: torch.Tensor  # (B, H) int64
    topic: torch.Tensor  # (B, T) int64
    topic_weight: torch.Tensor  # (B, T) float32, 0 on padding
    history_topic: torch.Tensor  # (B, M) int64
    history_topic_weight: torch.Tensor  # (B, M) float32, 0 on padding
    cross: torch.Tensor  # (B, C) int64 hashed cross buckets (LR only; C = 0 otherwise)
    cross_weight: torch.Tensor  # (B, C) float32
    dense: torch.Tensor  # (B, D) float32: topic_feature (D = 8) or content embedding (D = 128) or empty (D = 0)

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def take(self, index: torch.Tensor) -> "Batch":
        return Batch(*(getattr(self, name)[index] for name in self.__dataclass_fields__))


def _pool(embedding: nn.Embedding, ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean of the embeddings of a list: (B, L) -> (B, d); zeros for an empty list."""
    vectors = embedding(ids)  # (B, L, d)
    total = weight.sum(dim=1, keepdim=True).clamp_min(1e-6)  # (B, 1)
    return (vectors * weight.unsqueeze(-1)).sum(dim=1) / total


class FeatureEmbedding(nn.Module):
    """Concatenated input x0 of EMLP and DCN: [user (e), video (e), history videos (e), topics (8), user topics (8), dense (D)]."""

    def __init__(self, n_users: int, n_videos: int, n_topics: int, features: FeatureSet, id_dim: int, topic_dim: int, dense_dim: int):
        super().__init__()
        self.user = nn.Embedding(n_users, id_dim)
        self.video = nn.Embedding(n_videos, id_dim, padding_idx=0)
        self.topic = nn.Embedding(n_topics, topic_dim, padding_idx=0) if features == "topic" else None
        self.output_dim = 3 * id_dim + (2 * topic_dim if self.topic is not None else 0) + dense_dim
        for table in (self.user, self.video, self.topic):
            if table is not None:
                nn.init.normal_(table.weight, std=0.05)
                if table.padding_idx is not None:
                    nn.init.zeros_(table.weight[table.padding_idx])

    def forward(self, batch: Batch) -> torch.Tensor:
        history = _pool(self.video, batch.history_video, (batch.history_video > 0).float())  # (B, e)
        parts = [self.user(batch.user), self.video(batch.video), history]  # (B, e) each
        if self.topic is not None:
            parts.append(_pool(self.topic, batch.topic, batch.topic_weight))  # (B, 8)
            parts.append(_pool(self.topic, batch.history_topic, batch.history_topic_weight))  # (B, 8)
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
    """logit = b + w_user + w_video + crosses [+ pooled w_topic + pooled w_user_topic] + <w, dense>."""

    def __init__(self, n_users: int, n_videos: int, n_topics: int, features: FeatureSet, cross_buckets: int, dense_dim: int):
        super().__init__()
        self.user = nn.Embedding(n_users, 1)
        self.video = nn.Embedding(n_videos, 1)
        self.cross = nn.Embedding(cross_buckets, 1)
        with_topics = features == "topic"
        self.topic = nn.Embedding(n_topics, 1, padding_idx=0) if with_topics else None
        self.history_topic = nn.Embedding(n_topics, 1, padding_idx=0) if with_topics else None
        self.dense = nn.Linear(dense_dim, 1) if dense_dim else None
        self.bias = nn.Parameter(torch.zeros(1))
        for table in (self.user, self.video, self.cross, self.topic, self.history_topic):
            if table is not None:
                nn.init.zeros_(table.weight)

    def forward(self, batch: Batch) -> torch.Tensor:
        logit = self.bias + self.user(batch.user)[:, 0] + self.video(batch.video)[:, 0]  # (B,)
        logit = logit + (self.cross(batch.cross)[..., 0] * batch.cross_weight).sum(dim=1)
        if self.topic is not None:
            logit = logit + _pool(self.topic, batch.topic, batch.topic_weight)[:, 0]
            logit = logit + _pool(self.history_topic, batch.history_topic, batch.history_topic_weight)[:, 0]
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


def _lookup(vocabulary: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Raw ids -> 1..V by position in the sorted ``vocabulary``; 0 for ids not in it (unseen, padding)."""
    if len(vocabulary) == 0:
        return np.zeros(ids.shape, dtype=np.int64)
    position = np.searchsorted(vocabulary, ids)
    clipped = np.minimum(position, len(vocabulary) - 1)
    return np.where(vocabulary[clipped] == ids, clipped + 1, 0).astype(np.int64)


def _normalise(weights: np.ndarray) -> np.ndarray:
    """Rows scaled to sum 1 (all-zero rows stay zero): (N, L) -> (N, L) float32."""
    return (weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-6)).astype(np.float32)


def _cross(left: np.ndarray, right: np.ndarray, left_weight: np.ndarray, right_weight: np.ndarray, salt: int, buckets: int):
    """Every (left slot, right slot) pair of each row hashed into ``buckets``; weight = product, 0 where a slot is padding.

    (N, A), (N, B) -> buckets (N, A * B), weights (N, A * B).
    """
    bucket = (left[:, :, None] * CROSS_HASH_MULTIPLIER + right[:, None, :] + salt) % buckets  # (N, A, B)
    weight = left_weight[:, :, None] * right_weight[:, None, :]  # (N, A, B)
    weight = np.where((left[:, :, None] == PADDING) | (right[:, None, :] == PADDING), 0.0, weight)
    return bucket.reshape(len(left), -1), weight.reshape(len(left), -1).astype(np.float32)


_RANKER, _TOPICS = RankerConfig(), TopicsConfig()  # the defaults of Ranker's parameters are the settings' defaults


class Ranker:
    """A click-through ranker; ``predict_proba(frame)`` gives P(click) per row.

    Parameters
    ----------
    model: "lr", "emlp" or "dcn".
    features: "base" (user, video and history IDs), "topic" (+ video and user topic ids and the topic feature
        vector) or "content" (+ a content embedding vector, for the Fig. 6 cost comparison).
    The other parameters are the settings of the same name in :class:`topicfs.settings.RankerConfig`
    (``random_state`` = ``seed``), ``topic_embedding_dim`` = ``topics.topic_feature_dim`` and ``max_topics_per_video`` =
    ``topics.max_topics_per_video``; their defaults are those settings' defaults (tests/test_settings_consistency.py).
    """

    def __init__(
        self,
        model: ModelName = "dcn",
        features: FeatureSet = "topic",
        id_embedding_dim: int = _RANKER.id_embedding_dim,
        topic_embedding_dim: int = _TOPICS.topic_feature_dim,
        max_topics_per_video: int = _TOPICS.max_topics_per_video,
        history_videos: int = _RANKER.history_videos,
        history_topics: int = _RANKER.history_topics,
        exposure_history: bool = _RANKER.exposure_history,
        exposure_prior_strength: float = _RANKER.exposure_prior_strength,
        user_id_dropout: float = _RANKER.user_id_dropout,
        hidden_units: tuple[int, ...] = tuple(_RANKER.hidden_units),
        cross_layers: int = _RANKER.cross_layers,
        cross_buckets: int = _RANKER.cross_buckets,
        learning_rate: float = _RANKER.learning_rate,
        weight_decay: float = _RANKER.weight_decay,
        batch_size: int = _RANKER.batch_size,
        epochs: int = _RANKER.epochs,
        random_state: int = _RANKER.seed,
        show_progress: bool = False,
    ) -> None:
        self.model = model
        self.features = features
        self.id_embedding_dim = id_embedding_dim
        self.topic_embedding_dim = topic_embedding_dim
        self.max_topics_per_video = max_topics_per_video
        self.history_videos = history_videos
        self.history_topics = history_topics
        self.exposure_history = exposure_history
        self.exposure_prior_strength = exposure_prior_strength
        self.user_id_dropout = user_id_dropout
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
    def from_config(
        cls, config: RankerConfig, model: ModelName, features: FeatureSet, topics: TopicsConfig | None = None, **overrides
    ) -> "Ranker":
        """Build from :class:`topicfs.settings.RankerConfig`; the topic-id embedding size and the topic ids read per
        video come from ``topics`` (:class:`topicfs.settings.TopicsConfig`, its defaults when None)."""
        topics = topics if topics is not None else TopicsConfig()
        params = dict(
            id_embedding_dim=config.id_embedding_dim,
            topic_embedding_dim=topics.topic_feature_dim,
            max_topics_per_video=topics.max_topics_per_video,
            history_videos=config.history_videos,
            history_topics=config.history_topics,
            exposure_history=config.exposure_history,
            exposure_prior_strength=config.exposure_prior_strength,
            user_id_dropout=config.user_id_dropout,
            hidden_units=tuple(config.hidden_units),
            cross_layers=config.cross_layers,
            cross_buckets=config.cross_buckets,
            learning_rate=config.logistic_learning_rate if model == "lr" else config.learning_rate,
            weight_decay=config.weight_decay,
            batch_size=config.batch_size,
            epochs=config.logistic_epochs if model == "lr" else config.epochs,
            random_state=config.seed,
        )
        params.update(overrides)
        return cls(model=model, features=features, **params)

    _PARAMS = (
        "model",
        "features",
        "id_embedding_dim",
        "topic_embedding_dim",
        "max_topics_per_video",
        "history_videos",
        "history_topics",
        "exposure_history",
        "exposure_prior_strength",
        "user_id_dropout",
        "hidden_units",
        "cross_layers",
        "cross_buckets",
        "learning_rate",
        "weight_decay",
        "batch_size",
        "epochs",
        "random_state",
    )

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in self._PARAMS}

    # -- inputs ----------------------------------------------------------------------------------

    def required_columns(self, with_label: bool) -> list[str]:
        needed = ["user_id", "video_id", "history_video_ids"] + (["label"] if with_label else [])
        if self.exposure_history:
            needed += ["user_exposures", "user_clicks"] + (["topic_exposures", "topic_clicks"] if self.features == "topic" else [])
        return (
            needed
            + {
                "base": [],
                "topic": ["topic_ids", "topic_weights", "topic_feature", "history_topic_ids", "history_topic_weights"],
                "content": ["content_embedding"],
            }[self.features]
        )

    def _check(self, frame: pd.DataFrame, with_label: bool) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.features not in FEATURE_SETS:
            raise ValueError(f"features must be one of {FEATURE_SETS}, got {self.features!r}")
        missing = [c for c in self.required_columns(with_label) if c not in frame.columns]
        if missing:
            raise ValueError(f"ranker ({self.model}, {self.features}): missing column(s) {missing}")

    def inputs(self, frame: pd.DataFrame) -> RankerInputs:
        """The frame's feature columns as :class:`RankerInputs`."""
        self._check(frame, with_label=False)
        return RankerInputs.from_frame(
            frame, self.features, self.history_videos, self.max_topics_per_video, self.history_topics, self.exposure_history
        )

    def _dense(self, inputs: RankerInputs) -> np.ndarray:
        """(N, D) dense inputs: the content vector, or the topic vector plus the user-video topic affinity;
        then the exposure features when ``exposure_history``."""
        dense = {"topic": inputs.topic_feature, "content": inputs.content_embedding}.get(self.features)
        if dense is None:
            dense = np.zeros((len(inputs), 0), dtype=np.float32)
        elif dense.ndim != 2:
            raise ValueError(f"the {self.features} vector must be (N, D), got shape {dense.shape}")
        if self.features == "topic":
            dense = np.concatenate([dense, topic_affinity(inputs)[:, None]], axis=1)
        if self.exposure_history:
            dense = np.concatenate([dense, exposure_features(inputs, self.features == "topic", self.exposure_prior_strength)], axis=1)
        return np.ascontiguousarray(dense, dtype=np.float32)

    def _batch(self, inputs: RankerInputs) -> Batch:
        n = len(inputs)
        user = _lookup(self.user_vocabulary_, inputs.user_id)
        video = _lookup(self.video_vocabulary_, inputs.video_id)
        history_video = _lookup(self.video_vocabulary_, inputs.history_video_ids)
        empty_ids, empty_weights = np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
        topic, topic_weight, history_topic, history_topic_weight = empty_ids, empty_weights, empty_ids, empty_weights
        if self.features == "topic":
            topic = _lookup(self.topic_vocabulary_, inputs.topic_ids)
            topic_weight = np.where(topic > 0, np.maximum(inputs.topic_weights, 0.0), 0.0).astype(np.float32)
            history_topic = _lookup(self.topic_vocabulary_, inputs.history_topic_ids)
            history_topic_weight = np.where(history_topic > 0, np.maximum(inputs.history_topic_weights, 0.0), 0.0).astype(np.float32)
        cross, cross_weight = empty_ids, empty_weights
        if self.model == "lr":
            history_weight = _normalise((inputs.history_video_ids != PADDING).astype(np.float32))
            crosses = [
                _cross(
                    inputs.history_video_ids,
                    inputs.video_id[:, None],
                    history_weight,
                    np.ones((n, 1), np.float32),
                    VIDEO_CROSS_SALT,
                    self.cross_buckets,
                )
            ]
            if self.features == "topic":
                # both sides normalised to sum 1, so the 8 x 8 topic pairs weigh as much together as one ID feature
                user_share = _normalise(np.where(inputs.history_topic_ids != PADDING, inputs.history_topic_weights, 0.0))
                video_share = _normalise(np.where(inputs.topic_ids != PADDING, inputs.topic_weights, 0.0))
                crosses.append(
                    _cross(inputs.history_topic_ids, inputs.topic_ids, user_share, video_share, TOPIC_CROSS_SALT, self.cross_buckets)
                )
            cross = np.concatenate([c for c, _ in crosses], axis=1)
            cross_weight = np.concatenate([w for _, w in crosses], axis=1)
        dense = self._dense(inputs)
        if dense.shape[1] != self.dense_dim_:
            raise ValueError(f"dense feature has {dense.shape[1]} values, the ranker was trained with {self.dense_dim_}")
        arrays = (user, video, history_video, topic, topic_weight, history_topic, history_topic_weight, cross, cross_weight, dense)
        return Batch(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))

    def _build(self) -> nn.Module:
        n_users, n_videos, n_topics = len(self.user_vocabulary_) + 1, len(self.video_vocabulary_) + 1, len(self.topic_vocabulary_) + 1
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
        inputs = self.inputs(frame)
        self.user_vocabulary_ = np.unique(inputs.user_id)
        self.video_vocabulary_ = np.unique(inputs.video_id)
        topics = (
            np.concatenate([inputs.topic_ids.ravel(), inputs.history_topic_ids.ravel()])
            if self.features == "topic"
            else np.zeros(0, np.int64)
        )
        self.topic_vocabulary_ = np.unique(topics[topics != PADDING])
        self.dense_dim_ = self._dense(inputs).shape[1]
        self.model_ = self._build()
        batch = self._batch(inputs)
        labels = torch.from_numpy(frame["label"].to_numpy(dtype=np.float32))  # (N,)
        optimizer = torch.optim.Adam(self.model_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        loss_fn = nn.BCEWithLogitsLoss()
        self.model_.train()
        self.loss_curve_: list[float] = []
        steps = (len(frame) + self.batch_size - 1) // self.batch_size
        for epoch in range(self.epochs):
            order = torch.from_numpy(rng.permutation(len(frame)))
            total = 0.0
            for step in tqdm(
                range(steps), desc=f"{self.model}/{self.features} epoch {epoch + 1}", disable=not self.show_progress, leave=False
            ):
                index = order[step * self.batch_size : (step + 1) * self.batch_size]
                optimizer.zero_grad()
                step_batch = batch.take(index)
                if self.user_id_dropout > 0:
                    # index 0 is every user unseen in training; without these steps its embedding stays at its random start
                    dropped = torch.from_numpy(rng.random(len(index)) < self.user_id_dropout)
                    step_batch.user = torch.where(dropped, torch.zeros_like(step_batch.user), step_batch.user)
                loss = loss_fn(self.model_(step_batch), labels[index])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(index)
            self.loss_curve_.append(total / len(frame))
            logger.debug("%s/%s epoch %d: loss %.4f", self.model, self.features, epoch + 1, self.loss_curve_[-1])
        self.model_.eval()
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """P(click) for every row, shape (N,)."""
        self._fitted()
        return self.predict_inputs(self.inputs(frame))

    def predict_inputs(self, inputs: RankerInputs) -> np.ndarray:
        """P(click) for :class:`RankerInputs` (the serving path), shape (N,)."""
        self._fitted()
        batch = self._batch(inputs)
        with torch.inference_mode():
            return torch.sigmoid(self.model_(batch)).numpy()

    def _fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("ranker is not fitted: call fit() or Ranker.load() first")

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model_.parameters())

    # -- persistence -----------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Weights (``ranker.pt``) with the config and id vocabularies (``ranker.json``) beside them."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "params": self.get_params(),
            "dense_dim": self.dense_dim_,
            "user_ids": self.user_vocabulary_.tolist(),
            "video_ids": self.video_vocabulary_.tolist(),
            "topic_ids": self.topic_vocabulary_.tolist(),
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
        ranker = cls(**params)
        ranker.dense_dim_ = meta["dense_dim"]
        ranker.user_vocabulary_ = np.asarray(meta["user_ids"], dtype=np.int64)
        ranker.video_vocabulary_ = np.asarray(meta["video_ids"], dtype=np.int64)
        ranker.topic_vocabulary_ = np.asarray(meta["topic_ids"], dtype=np.int64)
        ranker.model_ = ranker._build()
        ranker.model_.load_state_dict(torch.load(directory / "ranker.pt", weights_only=True))
        ranker.model_.eval()
        return ranker
