"""MRLM model (seed 003, section 3.2-3.3): GFRL triplet network + MFRL siamese network, trained jointly.

Inputs are the initial vectors u0, v0 (d0) of offline_jobs/mrlm_data.py. One shared five-layer network
(conv1..conv4, each Conv1d + BN + ReLU, dropout, FC + sigmoid) maps u0, v0+, v0- to global vectors g (d1):

    L_g1 = mean( d(g_u, g_v+) - d(g_u, g_v-) ),  d = 1 - cos     (Eq. 3, cosine *distance*: a good
                                                                  model makes it negative)
    L_g2 = full softmax cross-entropy of the user id from g_u and of the item ids from g_v+, g_v-
                                                                 (Eq. 4-5; full, not sampled: ids are few)
    L_g3 = BCE of the DCP verifier: 1 for (u, v+), 0 for (u, v-) (Eq. 6-10)
    L_GFRL = λ1 L_g1 + λ2 L_g2 + (1 - λ1 - λ2) L_g3              (Eq. 11)

DCP (Eq. 6-7): h = conv1 output, a d2 x d3 matrix (d2 = μ1 kernels, d3 = d0/2 positions, stride 2);
R[i, j] = ε·1(3x3) - the 3x3 block of h_v around (i, j), zero-padded at the border, so R is
d2 x d3 x 3 x 3; it is flattened, compressed by one linear layer (Eq. 8-9) and classified by another.

A shared three-layer siamese network (conv1, conv2, FC + sigmoid) maps g_v to the multimodal vector m (d4);
one softmax classifier per modality predicts the item's cluster id (Eq. 14-15):

    L_MFRL = Σ_i ν_i L_mi  +  ρ L_m                                (Eq. 16, plus ρ L_m below)
    L_MRLM = θ1 L_GFRL + (1 - θ1) L_MFRL                         (Eq. 17)

Scoring. Feast serves d4-wide vectors for both sides, so every score is a cosine between two d4 vectors:
the item vector is m_v, the user vector is

    user = norm( α·norm(m(g_u)) + (1 - α)·norm(mean_{v in latest L items} norm(m_v)) ),  score = cos(user, m_v)

m(g_u) passes the user's global vector through the same siamese network as the items. The paper
concatenates [g_u, m of the latest items] (d1 + d4) and takes a cosine with d4-dim items, which is
undefined; its intent, "global + latest items, cosine", is what the rule above keeps. To train with the
cosine we serve, ``serving_triplet_weight`` (ρ) adds Eq. 3 on (m(g_u), m_v+, m_v-) to L_MFRL (ρ = 0 is
the paper). docs/appendix/MRLM_history.md compares this rule with the alternatives on the validation split.

Deviations chosen on ml-100k valid (docs/appendix/MRLM_history.md, "What we tried"; each can be switched back to the paper):
``skip_connection`` adds a linear path to both networks (g = W_s·u0 + FC(conv4), m = W_s'·g + FC(conv2),
no sigmoid), so the FM's initial vectors are not lost in the convolutions; ``triplet_negatives`` K and
``triplet_temperature`` τ turn Eq. 3 (on g and on m) into a smooth maximum over K random negatives
(:func:`multi_negative_triplet`; K = 1, τ = 0 is Eq. 3 exactly). Two variants lost there and are off
(:class:`MRLMVariants`, values and evidence in offline_jobs/experiments/mrlm.toml): ``in_batch_negatives`` and
``explicit_negative_share``.

    from offline_jobs.mrlm import MRLM
    model = MRLM.from_config(get_settings().mrlm).fit(data)   # data: offline_jobs.mrlm_data.MRLMData; or MRLM(epochs=2)
    item_m = model.item_vectors_                          # (n_items, d4) float32
    users = model.user_vectors(histories)                 # (n_users, d4) float32
    model.save("artifacts/models/mrlm")                   # weights + config.json + vectors.npz
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from pydantic import BaseModel, Field, model_validator
from tqdm.auto import tqdm

from offline_jobs.artifacts import fingerprint_arrays, write_json_atomic
from offline_jobs.estimator import SettingsEstimator
from offline_jobs.mrlm_data import MRLMData, MRLMDataError
from topicfs.settings import MRLMConfig, SettingsError

logger = logging.getLogger(__name__)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    # stride 2 halves the length: conv1 gives d3 = ceil(d0 / 2) positions
    return nn.Sequential(nn.Conv1d(in_channels, out_channels, 3, stride=2, padding=1), nn.BatchNorm1d(out_channels), nn.ReLU())


def _conv_length(length: int, layers: int) -> int:
    for _ in range(layers):
        length = (length - 1) // 2 + 1
    return length


class GlobalNet(nn.Module):
    """GFRL's shared base network: conv1..conv4 + dropout + FC + sigmoid (Eq. 1-2).

    With ``skip`` (our deviation): g = W_s·x + FC(conv4), no sigmoid, so g starts as a linear map of the
    initial vector and the convs learn a correction to it.
    """

    def __init__(self, initial_dim: int, channels: list[int], global_dim: int, dropout: float, skip: bool = False):
        super().__init__()
        self.conv1 = _conv_block(1, channels[0])
        self.rest = nn.Sequential(*[_conv_block(a, b) for a, b in zip(channels[:-1], channels[1:])])
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels[-1] * _conv_length(initial_dim, 4), global_dim)
        self.skip = nn.Linear(initial_dim, global_dim, bias=False) if skip else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv1(x.unsqueeze(1))  # (n, d2 = μ1, d3): the low-level matrix DCP uses
        c4 = self.rest(h)  # (n, μ4, ψ)
        out = self.fc(self.dropout(c4.flatten(1)))  # (n, d1)
        g = torch.sigmoid(out) if self.skip is None else self.skip(x) + out
        return g, h


class MultimodalNet(nn.Module):
    """MFRL's shared siamese base network: conv1, conv2 + dropout + FC + sigmoid (Eq. 12-13).

    With ``skip`` (our deviation): m = W_s·g + FC(conv2), no sigmoid.
    """

    def __init__(self, global_dim: int, channels: list[int], vector_dim: int, dropout: float, skip: bool = False):
        super().__init__()
        self.convs = nn.Sequential(_conv_block(1, channels[0]), _conv_block(channels[0], channels[1]))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels[1] * _conv_length(global_dim, 2), vector_dim)
        self.skip = nn.Linear(global_dim, vector_dim, bias=False) if skip else None

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        n2 = self.convs(g.unsqueeze(1))  # (n, κ2, φ)
        out = self.fc(self.dropout(n2.flatten(1)))  # (n, d4)
        return torch.sigmoid(out) if self.skip is None else self.skip(g) + out


def difference_calculation(h_user: torch.Tensor, h_item: torch.Tensor) -> torch.Tensor:
    """DCP (Eq. 6-7): R[b, i, j] = h_user[b, i, j]·1(3x3) - h_item[b, i-1:i+2, j-1:j+2] (zero-padded).

    h_user, h_item: (B, d2, d3) -> R: (B, d2, d3, 3, 3).
    """
    padded = F.pad(h_item, (1, 1, 1, 1))  # (B, d2 + 2, d3 + 2)
    blocks = padded.unfold(1, 3, 1).unfold(2, 3, 1)  # (B, d2, d3, 3, 3)
    return h_user[..., None, None] - blocks


def cosine_distance_triplet(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Eq. 3 with d = 1 - cos: mean(d(a, p) - d(a, n)) = mean(cos(a, n) - cos(a, p)); lower is better."""
    return (F.cosine_similarity(anchor, negative) - F.cosine_similarity(anchor, positive)).mean()


def multi_negative_triplet(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    in_batch: bool = False,
    temperature: float = 0.0,
    anchor_ids: torch.Tensor | None = None,
    positive_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 3 over several negatives per triplet; lower is better.

    anchor, positive: (B, d); negatives: (K, B, d), the k-th random negative of every triplet. With
    ``in_batch`` the other triplets' positives are negatives too, except the triplet's own positive and,
    when ids are given (anchor_ids = users, positive_ids = items, (B,)), any copy of that item and any
    positive of the same anchor (a known positive is never pushed away). Per triplet, the differences
    x_n = cos(a, n) - cos(a, p) = d(a, p) - d(a, n) are averaged (τ = 0: the mean of Eq. 3, K = 1 is Eq. 3
    itself) or combined by the smooth maximum τ·log mean_n exp(x_n / τ) (τ > 0; → the max as τ → 0);
    then averaged over B.
    """
    cos_pos = F.cosine_similarity(anchor, positive)[:, None]  # (B, 1)
    cos_neg = F.cosine_similarity(anchor[None], negatives, dim=-1).T  # (B, K)
    mask = torch.ones_like(cos_neg, dtype=torch.bool)
    if in_batch and len(anchor) > 1:
        others = ~torch.eye(len(anchor), dtype=torch.bool)  # the diagonal is the own positive
        if positive_ids is not None:
            others &= positive_ids[:, None] != positive_ids[None, :]
        if anchor_ids is not None:
            others &= anchor_ids[:, None] != anchor_ids[None, :]
        cos_batch = F.normalize(anchor, dim=-1) @ F.normalize(positive, dim=-1).T  # (B, B): [i, j] = cos(a_i, p_j)
        cos_neg = torch.cat([cos_neg, cos_batch], 1)  # (B, K + B)
        mask = torch.cat([mask, others], 1)
    diff = cos_neg - cos_pos
    count = mask.sum(1)
    if temperature > 0:
        scaled = (diff / temperature).masked_fill(~mask, float("-inf"))
        per_triplet = temperature * (torch.logsumexp(scaled, 1) - torch.log(count.float()))
    else:
        per_triplet = diff.masked_fill(~mask, 0.0).sum(1) / count
    return per_triplet.mean()


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0).astype(np.float32)


def user_vectors(user_global_m: np.ndarray | None, item_m: np.ndarray, histories: list[np.ndarray], alpha: float) -> np.ndarray:
    """The served user vector (d4): norm(α·norm(m(g_u)) + (1-α)·norm(mean of norm(m_v) over the history)).

    user_global_m: (n_users, d4) = m(g_u), or None for users the model never saw (history only);
    item_m: (n_items, d4); histories: per user, item indices of the latest interacted items.
    Used by training-time evaluation and by the stream refresh alike, so both score the same way.
    """
    unit_items = normalize(item_m)
    history = np.stack([unit_items[h].mean(0) if len(h) else np.zeros(item_m.shape[1], np.float32) for h in histories])  # (n, d4)
    if user_global_m is None:
        return normalize(history)
    return normalize(alpha * normalize(user_global_m) + (1.0 - alpha) * normalize(history))


def cosine_scores(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(n_users, n_items) cosine similarities: the one preference score of training and serving."""
    return normalize(users) @ normalize(items).T


class MRLMNetwork(nn.Module):
    """GFRL + MFRL with their heads; ``losses`` returns every term of Eq. 3-17 for one batch."""

    def __init__(self, config: MRLMParams, n_users: int, n_items: int, n_clusters: dict[str, int]):
        super().__init__()
        self.global_net = GlobalNet(config.initial_dim, config.conv_channels, config.global_dim, config.dropout, config.skip_connection)
        self.user_head = nn.Linear(config.global_dim, n_users)  # Eq. 4 softmax over η users
        self.item_head = nn.Linear(config.global_dim, n_items)  # softmax over δ items
        d2, d3 = config.conv_channels[0], _conv_length(config.initial_dim, 1)
        self.compress = nn.Linear(d2 * d3 * 9, config.dcp_dim)  # Eq. 8-9: W_c, b_c
        self.verifier = nn.Linear(config.dcp_dim, 1)  # the two-class classifier of Eq. 10
        self.multimodal_net = MultimodalNet(
            config.global_dim, config.siamese_channels, config.vector_dim, config.dropout, config.skip_connection
        )
        self.modality_heads = nn.ModuleDict({name: nn.Linear(config.vector_dim, k) for name, k in n_clusters.items()})

    def losses(
        self, config: MRLMParams, weights: dict[str, float], u0, v0_pos, v0_neg, user, item_pos, item_neg, clusters_pos, clusters_neg
    ) -> dict[str, torch.Tensor]:
        """One batch: u0, v0_pos (B, d0); v0_neg (K·B, d0), K blocks of B (the k-th negative of every
        triplet); user, item_pos (B,); item_neg (K·B,); clusters_*: modality -> cluster ids of the first B."""
        batch = len(user)
        n_neg = len(item_neg) // batch
        g, h = self.global_net(torch.cat([u0, v0_pos, v0_neg]))  # ((2 + K)B, d1), (·, d2, d3)
        g_u, g_pos, g_negs = g[:batch], g[batch : 2 * batch], g[2 * batch :]
        g_neg = g_negs[:batch]
        h_u, h_pos, h_neg = h[:batch], h[batch : 2 * batch], h[2 * batch : 3 * batch]
        item_neg = item_neg[:batch]
        triplet = {
            "in_batch": config.in_batch_negatives,
            "temperature": config.triplet_temperature,
            "anchor_ids": user,
            "positive_ids": item_pos,
        }
        terms = {"g1": multi_negative_triplet(g_u, g_pos, g_negs.view(n_neg, batch, -1), **triplet)}
        terms["g2"] = (
            F.cross_entropy(self.user_head(g_u), user)
            + F.cross_entropy(self.item_head(g_pos), item_pos)
            + F.cross_entropy(self.item_head(g_neg), item_neg)
        )
        c = self.compress(torch.cat([difference_calculation(h_u, h_pos), difference_calculation(h_u, h_neg)]).flatten(1))  # (2B, dcp_dim)
        target = torch.cat([torch.ones(batch), torch.zeros(batch)])
        terms["g3"] = F.binary_cross_entropy_with_logits(self.verifier(c).squeeze(1), target)
        lambda1, lambda2 = config.lambda_triplet, config.lambda_softmax
        terms["gfrl"] = lambda1 * terms["g1"] + lambda2 * terms["g2"] + (1 - lambda1 - lambda2) * terms["g3"]
        if config.theta >= 1.0:  # U-GFRL: global vectors only
            terms["mrlm"] = terms["gfrl"]
            return terms
        m = self.multimodal_net(torch.cat([g_pos, g_negs, g_u]))  # ((2 + K)B, d4); the paper's order for K = 1 (same dropout masks)
        m_pos, m_negs, m_u = m[:batch], m[batch : (1 + n_neg) * batch], m[(1 + n_neg) * batch :]
        m_neg = m_negs[:batch]
        mfrl = torch.zeros(())
        for name, head in self.modality_heads.items():
            terms[f"m_{name}"] = F.cross_entropy(head(m_pos), clusters_pos[name]) + F.cross_entropy(
                head(m_neg), clusters_neg[name]
            )  # Eq. 15
            mfrl = mfrl + weights[name] * terms[f"m_{name}"]
        if config.serving_triplet_weight > 0:
            terms["m_triplet"] = multi_negative_triplet(m_u, m_pos, m_negs.view(n_neg, batch, -1), **triplet)
            mfrl = mfrl + config.serving_triplet_weight * terms["m_triplet"]
        terms["mfrl"] = mfrl
        terms["mrlm"] = config.theta * terms["gfrl"] + (1 - config.theta) * mfrl
        return terms


class MRLMVariants(BaseModel):
    """Research knobs of MRLM that lost on ml-100k valid, off by default (the job reads offline_jobs/experiments/mrlm.toml)."""

    in_batch_negatives: bool = Field(
        False,
        description="also use the other triplets' positive items of the batch as negatives in the triplet terms (not the own item, "
        "not the same user's positives)",
    )
    explicit_negative_share: float = Field(
        0.0, ge=0, le=1, description="share of triplets whose v- is one of the user's negative feedback items, the rest a random item"
    )


class MRLMParams(MRLMConfig, MRLMVariants):
    """MRLM's parameters: the MRLM settings, its research variants, and the Feast vector size d4 must fit."""

    feast_vector_dim: int | None = Field(
        None, ge=1, description="feast.mrlm_vector_dim: the floats a Feast MRLM view holds; None = unchecked"
    )

    @model_validator(mode="after")
    def _fits_feast(self) -> MRLMParams:
        if self.feast_vector_dim is not None and self.vector_dim != self.feast_vector_dim:
            raise ValueError(
                f"mrlm.vector_dim (d4) = {self.vector_dim} but feast.mrlm_vector_dim = {self.feast_vector_dim}: the Feast views hold "
                f"{self.feast_vector_dim} floats; set TOPICFS_MRLM__VECTOR_DIM={self.feast_vector_dim} or change both"
            )
        return self


def validate_config(config: MRLMConfig, feast_vector_dim: int | None) -> None:
    """A :class:`SettingsError` (one ``error:`` line in the CLI) for settings the model cannot honour, before the (long)
    preprocessing starts."""
    try:
        MRLM.from_config(config, feast_vector_dim=feast_vector_dim).validated_config()
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


_DEFAULTS = MRLMParams()


class MRLM(SettingsEstimator):
    """MRLM estimator (scikit-learn style): ``fit(data)`` trains GFRL + MFRL and computes the vectors.

    Parameters are the settings of the same name in :class:`topicfs.settings.MRLMConfig` that the model itself uses
    (the preprocessing and baseline settings belong to :func:`offline_jobs.mrlm_data.prepare` and the job) and the
    research variants of :class:`MRLMVariants`, defaults included; ``feast_vector_dim`` (``feast.mrlm_vector_dim``; None = unchecked) is the d4 the Feast views hold.
    :meth:`from_config` builds one from the settings; ``fit`` checks the parameters against :class:`MRLMParams`.

    Learned state: ``config_`` (the checked parameters; everything after ``fit`` reads them, so ``set_params``
    changes the next fit), ``network_``, ``user_global_`` (n_users, d1) g_u, ``item_global_`` (n_items, d1) g_v,
    ``user_multimodal_`` (n_users, d4) m(g_u), ``item_vectors_`` (n_items, d4) m_v, ``history_`` (per user,
    latest training positives), ``loss_history_`` (per epoch, mean of each loss term), ``best_epoch_``.
    """

    config_model = MRLMParams

    def __init__(
        self,
        initial_dim: int = _DEFAULTS.initial_dim,
        modality_weights: dict[str, float] = _DEFAULTS.modality_weights,
        conv_channels: tuple[int, ...] = tuple(_DEFAULTS.conv_channels),
        global_dim: int = _DEFAULTS.global_dim,
        dcp_dim: int = _DEFAULTS.dcp_dim,
        siamese_channels: tuple[int, ...] = tuple(_DEFAULTS.siamese_channels),
        vector_dim: int = _DEFAULTS.vector_dim,
        dropout: float = _DEFAULTS.dropout,
        lambda_triplet: float = _DEFAULTS.lambda_triplet,
        lambda_softmax: float = _DEFAULTS.lambda_softmax,
        theta: float = _DEFAULTS.theta,
        serving_triplet_weight: float = _DEFAULTS.serving_triplet_weight,
        skip_connection: bool = _DEFAULTS.skip_connection,
        triplet_negatives: int = _DEFAULTS.triplet_negatives,
        in_batch_negatives: bool = _DEFAULTS.in_batch_negatives,
        triplet_temperature: float = _DEFAULTS.triplet_temperature,
        explicit_negative_share: float = _DEFAULTS.explicit_negative_share,
        latest_items: int = _DEFAULTS.latest_items,
        user_global_weight: float = _DEFAULTS.user_global_weight,
        batch_size: int = _DEFAULTS.batch_size,
        learning_rate: float = _DEFAULTS.learning_rate,
        epochs: int = _DEFAULTS.epochs,
        torch_threads: int = _DEFAULTS.torch_threads,
        seed: int = _DEFAULTS.seed,
        feast_vector_dim: int | None = None,
    ):
        self.initial_dim = initial_dim
        self.modality_weights = modality_weights
        self.conv_channels = conv_channels
        self.global_dim = global_dim
        self.dcp_dim = dcp_dim
        self.siamese_channels = siamese_channels
        self.vector_dim = vector_dim
        self.dropout = dropout
        self.lambda_triplet = lambda_triplet
        self.lambda_softmax = lambda_softmax
        self.theta = theta
        self.serving_triplet_weight = serving_triplet_weight
        self.skip_connection = skip_connection
        self.triplet_negatives = triplet_negatives
        self.in_batch_negatives = in_batch_negatives
        self.triplet_temperature = triplet_temperature
        self.explicit_negative_share = explicit_negative_share
        self.latest_items = latest_items
        self.user_global_weight = user_global_weight
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.torch_threads = torch_threads
        self.seed = seed
        self.feast_vector_dim = feast_vector_dim

    def _triplets(self, data: MRLMData, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user, v+, K v-) per training positive: users, pos (n,), neg (K, n); the first v- is the user's
        negative feedback with probability ``explicit_negative_share`` (when they have any), the rest random items."""
        train = data.train
        positives = train[train["positive"]]
        users, pos = positives["user"].to_numpy(), positives["item"].to_numpy()
        neg = rng.integers(0, data.n_items, size=(self.config_.triplet_negatives, len(users)))  # (K, n)
        negatives = train[~train["positive"]].groupby("user")["item"].apply(np.asarray)
        if len(negatives) and self.config_.explicit_negative_share > 0:
            pick = rng.random(len(users)) < self.config_.explicit_negative_share
            for row in np.flatnonzero(pick):
                own = negatives.get(users[row])
                if own is not None:
                    neg[0, row] = own[rng.integers(len(own))]
        return users, pos, neg

    def fit(self, data: MRLMData, select: Callable[[MRLM], float] | None = None) -> MRLM:
        """Train for ``config.epochs``; with ``select`` (higher is better, e.g. valid Recall@50) keep the best epoch."""
        self.config_ = config = self.validated_config()
        if data.initial_users is None or data.initial_items is None:
            raise MRLMDataError("MRLMData has no initial vectors: build it with prepare(..., initial_vectors=True)")
        if not data.train["positive"].any():
            raise MRLMDataError("interactions: the training split holds no positive feedback")
        torch.set_num_threads(config.torch_threads)
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        present = {m: w for m, w in config.modality_weights.items() if m in data.clusters and w > 0}
        total = sum(present.values())
        self.modality_weights_ = {m: w / total for m, w in present.items()}  # ν renormalised to sum 1
        self.n_clusters_ = {m: int(data.clusters[m].max()) + 1 for m in self.modality_weights_}
        self.network_ = MRLMNetwork(config, data.n_users, data.n_items, self.n_clusters_)
        optimizer = torch.optim.Adam(self.network_.parameters(), lr=config.learning_rate)
        # standardised inputs: BN follows every conv, but the FM's scale varies with its training
        initial = np.concatenate([data.initial_users, data.initial_items])
        self.input_mean_, self.input_std_ = initial.mean(0), initial.std(0) + 1e-6
        u0 = torch.from_numpy((data.initial_users - self.input_mean_) / self.input_std_).float()
        v0 = torch.from_numpy((data.initial_items - self.input_mean_) / self.input_std_).float()
        clusters = {m: torch.from_numpy(data.clusters[m]) for m in self.modality_weights_}
        self.history_ = data.latest_positives(config.latest_items)
        self.loss_history_: list[dict[str, float]] = []
        best_score, best_state, self.best_epoch_ = -np.inf, None, config.epochs - 1
        started = time.monotonic()
        for epoch in range(config.epochs):
            self.network_.train()
            users, pos, neg = self._triplets(data, rng)
            order = rng.permutation(len(users))
            sums: dict[str, float] = {}
            progress = tqdm(
                range(0, len(order), config.batch_size), desc=f"MRLM epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False
            )
            for start in progress:
                batch = order[start : start + config.batch_size]
                if len(batch) < 2:  # BatchNorm needs two rows
                    continue
                user, item_pos = torch.from_numpy(users[batch]), torch.from_numpy(pos[batch])
                item_neg = torch.from_numpy(neg[:, batch].reshape(-1))  # K blocks of B
                terms = self.network_.losses(
                    config,
                    self.modality_weights_,
                    u0[user],
                    v0[item_pos],
                    v0[item_neg],
                    user,
                    item_pos,
                    item_neg,
                    {m: c[item_pos] for m, c in clusters.items()},
                    {m: c[item_neg[: len(batch)]] for m, c in clusters.items()},
                )
                optimizer.zero_grad()
                terms["mrlm"].backward()
                optimizer.step()
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + value.item() * len(batch)
                progress.set_postfix(loss=f"{terms['mrlm'].item():.4f}", refresh=False)
            self.loss_history_.append({name: value / len(order) for name, value in sums.items()})
            self._compute_vectors(u0, v0)
            score = select(self) if select is not None else 0.0
            logger.info(
                "MRLM epoch %d (%.0f s): %s%s",
                epoch,
                time.monotonic() - started,
                ", ".join(f"{k} {v:.4f}" for k, v in self.loss_history_[-1].items()),
                f"; valid {score:.4f}" if select else "",
            )
            if select is not None and score > best_score:
                best_score, self.best_epoch_ = score, epoch
                best_state = {k: v.clone() for k, v in self.network_.state_dict().items()}
        if best_state is not None:
            self.network_.load_state_dict(best_state)
            self._compute_vectors(u0, v0)
        self.best_score_ = best_score if select is not None else None
        self.data_fingerprint_ = fingerprint_arrays([data.user_ids, data.video_ids, data.initial_users, data.initial_items])
        self.user_ids_, self.video_ids_ = data.user_ids, data.video_ids
        return self

    @torch.no_grad()
    def _compute_vectors(self, u0: torch.Tensor, v0: torch.Tensor) -> None:
        self.network_.eval()
        self.user_global_ = self.network_.global_net(u0)[0]  # (n_users, d1)
        self.item_global_ = self.network_.global_net(v0)[0]  # (n_items, d1)
        self.user_multimodal_ = self.network_.multimodal_net(self.user_global_).numpy()  # (n_users, d4)
        self.item_vectors_ = self.network_.multimodal_net(self.item_global_).numpy()  # (n_items, d4)
        self.user_global_, self.item_global_ = self.user_global_.numpy(), self.item_global_.numpy()

    def user_vectors(self, histories: list[np.ndarray] | None = None, alpha: float | None = None) -> np.ndarray:
        """Served user vectors (n_users, d4) from m(g_u) and the latest items (default: training history)."""
        return user_vectors(
            self.user_multimodal_,
            self.item_vectors_,
            self.history_ if histories is None else histories,
            self.config_.user_global_weight if alpha is None else alpha,
        )

    def save(self, folder: str | Path) -> Path:
        """weights.pt + config.json (config, data fingerprint, losses) + vectors.npz (what refresh needs)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.network_.state_dict(), folder / "weights.pt")
        lengths = np.array([len(h) for h in self.history_], np.int64)
        np.savez(
            folder / "vectors.npz",
            user_ids=self.user_ids_,
            video_ids=self.video_ids_,
            user_multimodal=self.user_multimodal_,
            item_vectors=self.item_vectors_,
            history=np.concatenate(self.history_ + [np.zeros(0, np.int64)]).astype(np.int64),
            history_offsets=np.concatenate([[0], np.cumsum(lengths)]),
        )
        write_json_atomic(
            folder / "config.json",
            {
                "config": self.config_.model_dump(mode="json", include=set(self._get_param_names())),
                "data_fingerprint": self.data_fingerprint_,
                "n_clusters": self.n_clusters_,
                "modality_weights": self.modality_weights_,
                "best_epoch": self.best_epoch_,
                "loss_history": self.loss_history_,
            },
        )
        return folder


class SavedVectors:
    """What a saved MRLM needs for serving: m(g_u), m_v and the id maps (``vectors.npz`` + ``config.json``)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        if not (folder / "vectors.npz").is_file():
            raise FileNotFoundError(f"{folder}: no vectors.npz; train first (`topicfs mrlm train`)")
        with np.load(folder / "vectors.npz") as saved:
            self.user_ids, self.video_ids = saved["user_ids"], saved["video_ids"]
            self.user_multimodal, self.item_vectors = saved["user_multimodal"], saved["item_vectors"]
        self.config = MRLMConfig(**json.loads((folder / "config.json").read_text(encoding="utf-8"))["config"])
        self.user_row = {int(u): i for i, u in enumerate(self.user_ids)}
        self.item_row = {int(v): i for i, v in enumerate(self.video_ids)}

    def user_vectors(self, latest_clicks: dict[int, list[int]]) -> dict[int, np.ndarray]:
        """user_id -> served vector (d4) from their latest clicked video ids (newest first; unknown videos skipped).

        A user the model never saw gets the history-only vector; one with neither gets none.
        """
        limit = self.config.latest_items
        out: dict[int, np.ndarray] = {}
        for user_id, clicks in latest_clicks.items():
            history = np.array([self.item_row[v] for v in clicks if v in self.item_row][:limit], np.int64)
            row = self.user_row.get(int(user_id))
            if row is None and not len(history):
                continue
            globals_ = None if row is None else self.user_multimodal[row : row + 1]
            out[int(user_id)] = user_vectors(globals_, self.item_vectors, [history], self.config.user_global_weight)[0]
        return out
