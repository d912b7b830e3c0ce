"""Topics: k-means over the topic representation a, threshold assignment, 8-dim topic feature (MTL III-A-3).

Steps:

1. :func:`topic_representation`: a = [ē/‖ē‖, z/‖z‖], ē from :mod:`offline_jobs.tag_graph` (Eq. 4) and z
   the MMoE joint representation. Each half is L2-normalised so tags and content weigh the same in the
   distance (the paper's reason). A half whose norm is 0 stays 0: a video without tags (ē = 0,
   ``has_tags`` False; 43% of KuaiRec) is represented by its z half alone, so it is clustered by content
   and lands near the topics whose content matches. When a modality is missing for the whole dataset,
   pass ``None`` for it and a is the other half alone (with a warning).
2. :meth:`TopicModel.fit`: spherical k-means (faiss) with K = ``n_topics`` on the row-normalised a, so
   centres are unit vectors and "nearest" means "highest cosine", the measure the paper assigns by.
   With ``center_halves`` (the default) each half first loses its mean direction over the fitted videos
   (:meth:`TopicModel.centred`: ē/‖ē‖ minus the mean of the tagged videos' ē/‖ē‖, normalised again; the same
   for z; a zero half stays zero), so cosines measure how videos differ, not the direction they all share.
   Why: skip-gram tag embeddings share one direction, the more so the fewer the tags (MovieLens' 19 genres:
   mean cosine 0.991 between two movies' ē/‖ē‖; KuaiRec's tags: 0.33), and so do the MMoE's expert outputs
   (0.80 / 0.40). A half whose rows all point one way weighs nothing in the distance and lifts every cosine
   above τ3: uncentred, MovieLens topics followed the titles alone (NMI 0.16 between a movie's nearest topic
   and its first genre; 0.52 centred) and every movie got the cap of 8 topics (docs/TABLE2.md step 10).
   Lloyd starts from k-means++ centres drawn on a sample (:func:`kmeans_plusplus_sample`). faiss trains on at most ``max_points_per_centroid`` x K sampled rows (its default 256; all rows at
   1M x K=6000), runs ``kmeans_iterations`` Lloyd steps, and is seeded.
3. :meth:`TopicModel.assign`: every topic whose centre has cosine similarity >= τ3
   (``assign_threshold``, 0.4: cosines of centred rows run lower than the paper's raw ones, for which it
   gives 0.6) with the video's centred row, and at least the nearest one, nearest first, at most
   ``max_topics_per_video`` (``assign_rule="threshold"``, the paper). With ``assign_rule="calibrated"`` τ3 is not
   given but fitted: :meth:`TopicModel.fit` sets it (``calibrated_threshold_``, :func:`calibrated_threshold`) so that the
   fitted videos get ``target_topics_per_video`` topics on average (4: the paper reports about 4), and every video,
   fitted or arriving later in the stream, is then assigned with that fixed τ3 (saved with the model). Why: a cosine
   threshold means different things in different representations. The paper's 0.6 is for raw cosines; centred ones
   run lower (0.4 here); on the ragged synthetic catalogue with predicted modalities (12 subjects, K = 60) videos sit
   at cosine 0.99 from up to 8 sibling centres of their subject and τ3 = 0.4 put 0-39% of them at the cap of 8
   depending on the seed; on KuaiRec with predicted tag halves the same τ3 put 75% at the cap, while with zero-filled
   ones it gave 3.3 topics per video (docs/TABLE1.md). The number of topics per video is what the paper states and
   what the queues and rankers depend on, so the rule fixes that and lets τ3 follow the representation. The nearest
   topic, and with it every NMI of the presence audit, is the same under both rules.
   Rows go through a faiss inner-product index over the centres in blocks of
   ``block_size``, asking each block for its top ``max_topics_per_video`` centres; only (block x K) scores
   exist at a time, never n x K. The selection rule itself is the pure :func:`select_topics`.
4. The 8-dim topic feature (paper IV-D, "8 dimensionalities in the Baseline+Topic"). Each topic owns an
   embedding of ``topic_feature_dim`` (8) numbers: the PCA projection of its centre onto the top 8
   principal axes of the K centres, L2-normalised (:func:`pca_topic_embeddings`). Why PCA: it is a
   deterministic function of the centres that keeps the directions along which topics differ most, so
   topics close in a-space get close embeddings and the feature means something before any ranker has
   trained (a ranker can start its 8-dim topic-id embedding table from it). Centring first keeps the one
   direction all centres share from taking a dimension; normalising puts every topic on the same scale.
   A video's feature (:func:`weighted_topic_features`) is the similarity-weighted mean of its topics'
   embeddings, weights = cosine similarities clipped at 0 (a negative similarity is no vote; when all
   are <= 0, which only the guaranteed nearest topic can be, the plain mean is used). It is not
   re-normalised: a short vector says the video's topics point different ways. Rankers also get the
   topic-id list itself.
5. :func:`write_topic_tables` writes the four Parquet tables of :mod:`topicfs.tables` with a JSON sidecar
   (config + data fingerprints) beside each, and :func:`topics_per_video_report` summarises how many
   topics videos get (the paper reports about 4 on average).
6. Ragged catalogues (issue 21): :func:`presence_audit` measures whether topics follow which modalities videos have
   (NMI of the nearest topic with has-cover / has-tags, topics per video and share at the cap per modality group);
   :func:`impute_tag_half` fills ē of tagless videos from a predicted tag distribution. Which a the job builds for
   videos lacking a modality is ``missing_modalities`` (kept with the model; :func:`offline_jobs.pipeline.topic_inputs`).
   With ``missing_modalities="mask"`` a stays zero-filled but nothing compares the zero half: k-means
   (:func:`masked_kmeans`), τ3 and :meth:`TopicModel.assign` score a video on the halves it has, the mean of their
   cosines with the centre's halves (a tagless video: the cosine of its z with the centre's z half).

Run it (z from the MMoE job, tags from the videos table)::

    from offline_jobs.tag_graph import TagGraphEmbedder
    from offline_jobs.topics import TopicModel, representation_halves, topic_representation, write_topic_tables, topics_per_video_report
    from topicfs.settings import get_settings

    settings = get_settings()
    embedder = TagGraphEmbedder.from_config(settings.tag_graph).fit(videos["tags"])
    e_bar, has_tags = embedder.transform(videos["tags"])          # (n, d_e), (n,)
    a = topic_representation(e_bar, z)                              # (n, d_e + d_z)
    model = TopicModel.from_config(settings.topics).fit(a, representation_halves(e_bar, z))
    assignment = model.assign(a)
    print(format_topics_per_video_report(topics_per_video_report(assignment, model.assign_threshold)))
    write_topic_tables(settings.paths.tables_dir, videos["video_id"], embedder, e_bar, has_tags,
                       model, assignment, event_timestamp=datetime.now(timezone.utc))
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from pydantic import Field
from sklearn.base import BaseEstimator
from tqdm.auto import tqdm

from offline_jobs.artifacts import fingerprint_arrays, fingerprint_table, read_json, utc_now, write_json_atomic
from offline_jobs.estimator import SettingsEstimator
from offline_jobs.tag_graph import TagGraphEmbedder
from topicfs import tables
from topicfs.settings import TopicsConfig

logger = logging.getLogger(__name__)

ARRAYS_FILE = "topic_model.npz"
META_FILE = "topic_model.json"
FORMAT_VERSION = 5  # 5: missing_modalities="mask" (centres compared on a row's halves: older code would not); 4: the tag bank of missing_modalities="neighbours"; 3: assign_rule and calibrated_threshold (older models load with the paper's "threshold" rule);
# 2: half_sizes / half_means (centring); version 1 models load as uncentred
# k-means below this many rows per centre gives unstable centres (faiss's own warning level)
MIN_ROWS_PER_TOPIC_ADVISED = 39
# a modality pattern with fewer fitted rows keeps the overall calibrated τ3 (missing_modalities="mask")
MIN_ROWS_PER_PATTERN = 30


def _as_matrix(name: str, values: Any) -> np.ndarray:
    """A finite 2-D float32 array, or a ValueError naming the input and the first bad row."""
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x features), got shape {array.shape}")
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{name}: {len(bad)} row(s) hold NaN or infinity, first at row {int(bad[0])}")
    return array


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm, float32; all-zero rows stay zero (they have no direction)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (n, 1)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _bounds(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """[(start, stop)] column ranges of consecutive parts of the given widths."""
    stops = np.cumsum(sizes)
    return [(int(stop - size), int(stop)) for size, stop in zip(sizes, stops)]


def _normalise_rows_in_place(x: np.ndarray) -> np.ndarray:
    """Divide the rows of the float32 array (or column slice) x by their L2 norms, in place; all-zero rows stay zero.
    Returns the (n,) mask of non-zero rows."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # (n,), no (n, D) temporary
    nonzero = norms > 0
    x /= np.where(nonzero, norms, 1.0).astype(np.float32)[:, None]
    return nonzero


def _unit_halves(a: np.ndarray, sizes: Sequence[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """A float32 copy of a with each half row-normalised, and per half the (n,) mask of rows where it is non-zero."""
    x = np.array(a, dtype=np.float32, copy=True)
    return x, [_normalise_rows_in_place(x[:, start:stop]) for start, stop in _bounds(sizes)]


def impute_tag_half(
    e_bar: np.ndarray, has_tags: np.ndarray, tag_probs: np.ndarray, tag_embeddings: np.ndarray, tag_weights: np.ndarray | None = None
) -> np.ndarray:
    """ē with the rows of videos without tags filled from a predicted tag distribution (issue 21).

    A zero tag half tells k-means "this video has no tags", which says when or where it was published, not what it
    is about; so tagless videos get ē_i = Σ_j p_ij w_j e_j / Σ_j p_ij w_j, the expectation of Eq. 4 under the tag
    task's predicted tags (cross-modal imputation of a missing modality, as in Ma et al. 2021 "SMIL" and Tran et
    al. 2017 "Missing modalities imputation via cascaded residual autoencoder", here with the prediction the MMoE
    already makes). ``tag_probs`` (n, T) the predicted probability of each tag (columns = rows of
    ``tag_embeddings`` (T, d)); ``tag_weights`` (T,) the tag weights of Eq. 4 (idf; None = 1). Rows with tags and
    rows whose predicted mass is 0 are returned unchanged. Returns a new (n, d) float32 array.
    """
    e_bar = np.array(_as_matrix("e_bar", e_bar), copy=True)
    has_tags = np.asarray(has_tags, dtype=bool)
    probs = np.asarray(tag_probs, dtype=np.float64)
    if probs.shape != (len(e_bar), len(tag_embeddings)) or has_tags.shape != (len(e_bar),):
        raise ValueError(
            f"impute_tag_half: tag_probs {probs.shape} must be (n={len(e_bar)}, T={len(tag_embeddings)}) and has_tags ({len(e_bar)},)"
        )
    missing = ~has_tags
    if not missing.any() or not len(tag_embeddings):
        return e_bar
    weighted = probs[missing] * (1.0 if tag_weights is None else np.asarray(tag_weights, dtype=np.float64)[None, :])  # (m, T)
    mass = weighted.sum(axis=1, keepdims=True)  # (m, 1)
    filled = np.divide(
        weighted @ np.asarray(tag_embeddings, dtype=np.float64), mass, out=np.zeros((len(weighted), e_bar.shape[1])), where=mass > 0
    )
    e_bar[missing] = filled.astype(np.float32)
    return e_bar


class TagBank:
    """(z, ē) of the tagged fitted videos, unit rows float32, that :func:`neighbour_tag_half` looks tagless videos up
    in (``missing_modalities="neighbours"``); the faiss index over z is built once, on first use, so a worker that
    assigns one video at a time does not copy the bank per video. Kept with the topic model (``tag_bank_``)."""

    def __init__(self, z: np.ndarray, e: np.ndarray) -> None:
        self.z, self.e = np.ascontiguousarray(_as_matrix("tag bank z", z)), np.ascontiguousarray(_as_matrix("tag bank ē", e))
        if len(self.z) != len(self.e):
            raise ValueError(f"TagBank: z has {len(self.z)} rows and ē {len(self.e)}; one row per tagged video in both")
        self._index: faiss.Index | None = None

    @classmethod
    def from_videos(cls, e_bar: np.ndarray, has_tags: np.ndarray, z: np.ndarray, max_rows: int, seed: int = 0) -> TagBank:
        """The bank of the videos with tags: their z and ē row-normalised (rows whose z or ē is zero left out). More
        than ``max_rows`` tagged videos: a seeded sample of that many, in their original order."""
        e_bar, z = _as_matrix("e_bar", e_bar), _as_matrix("z", z)
        has_tags = np.asarray(has_tags, dtype=bool)
        if len(z) != len(e_bar) or has_tags.shape != (len(e_bar),):
            raise ValueError(f"TagBank: e_bar {e_bar.shape}, z {z.shape} and has_tags {has_tags.shape} must have the same rows")
        unit_z, unit_e = normalize_rows(z), normalize_rows(e_bar)
        rows = np.flatnonzero(has_tags & (np.linalg.norm(unit_z, axis=1) > 0) & (np.linalg.norm(unit_e, axis=1) > 0))
        if len(rows) > max_rows:
            rows = np.sort(np.random.default_rng(seed).choice(rows, size=int(max_rows), replace=False))
        return cls(unit_z[rows], unit_e[rows])

    def __len__(self) -> int:
        return len(self.z)

    def index(self) -> faiss.Index:
        """Inner-product index over the bank's z (unit rows: inner product = cosine), built on first use."""
        if self._index is None:
            self._index = faiss.IndexFlatIP(self.z.shape[1])
            self._index.add(self.z)
        return self._index

    def __getstate__(self) -> dict:  # the faiss index is rebuilt after a copy or pickle
        return {"z": self.z, "e": self.e, "_index": None}


def neighbour_tag_half(
    e_bar: np.ndarray, has_tags: np.ndarray, z: np.ndarray, bank: TagBank, k: int, max_block_values: int = 1 << 23
) -> np.ndarray:
    """ē with the rows of videos without tags filled from the tagged videos nearest to them in z (issue 21).

    A tagless video gets ē_i = Σ_j w_ij ē_j / Σ_j w_ij over its ``k`` nearest rows of the bank (:class:`TagBank`:
    the fitted videos that have tags, by the cosine of z), w_ij = that cosine clipped at 0 (the plain mean when all
    are <= 0). Unlike the tag task's expected tag vector (:func:`impute_tag_half`), which puts every tagless video
    near the mean tag, a neighbour's ē is a real video's tags, so tagless videos about different things get
    different ē: the kNN imputation of a missing modality from one every video has (Troyanskaya et al. 2001,
    "Missing value estimation methods for DNA microarrays"). Rows with tags and rows with a zero z are returned
    unchanged. Looked up in blocks of at most ``max_block_values`` gathered numbers (rows x k x d_e; 64 MB in float64).
    Returns a new (n, d_e) float32 array."""
    e_bar = np.array(_as_matrix("e_bar", e_bar), copy=True)
    z = _as_matrix("z", z)
    has_tags = np.asarray(has_tags, dtype=bool)
    if len(z) != len(e_bar) or has_tags.shape != (len(e_bar),):
        raise ValueError(f"neighbour_tag_half: e_bar {e_bar.shape}, z {z.shape} and has_tags {has_tags.shape} must have the same rows")
    if bank.z.shape[1] != z.shape[1] or bank.e.shape[1] != e_bar.shape[1]:
        raise ValueError(
            f"neighbour_tag_half: the bank is {bank.z.shape[1]} + {bank.e.shape[1]} wide, z and ē {z.shape[1]} + {e_bar.shape[1]}"
        )
    missing = np.flatnonzero(~has_tags & (np.linalg.norm(z, axis=1) > 0))
    if not len(missing) or not len(bank):
        return e_bar
    k = int(min(k, len(bank)))
    block = max(1, int(max_block_values) // (k * e_bar.shape[1]))
    index = bank.index()
    for start in range(0, len(missing), block):
        rows = missing[start : start + block]
        sims, ids = index.search(np.ascontiguousarray(normalize_rows(z[rows])), k)  # (b, k) each, nearest first
        weights = np.clip(sims.astype(np.float64), 0.0, None)
        total = weights.sum(axis=1, keepdims=True)
        weights = np.where(total > 0, weights / np.where(total > 0, total, 1.0), 1.0 / k)  # (b, k)
        e_bar[rows] = np.einsum("bk,bkd->bd", weights, bank.e[ids].astype(np.float64)).astype(np.float32)
    return e_bar


def representation_halves(e_bar: np.ndarray | None, z: np.ndarray | None) -> list[int]:
    """Widths of the halves :func:`topic_representation` puts in a (a missing modality has none): ``halves`` of
    :meth:`TopicModel.fit`."""
    return [int(np.shape(part)[1]) for part in (e_bar, z) if part is not None]


def topic_representation(e_bar: np.ndarray | None, z: np.ndarray | None) -> np.ndarray:
    """a = [ē/‖ē‖, z/‖z‖] (n, d_e + d_z) float32; a zero half stays zero; ``None`` drops a modality."""
    if e_bar is None and z is None:
        raise ValueError("topic_representation needs at least one of e_bar (tag representation) and z (MMoE representation)")
    halves = []
    for name, part in (("e_bar", e_bar), ("z", z)):
        if part is None:
            logger.warning("topic representation: %s is missing for every video; a is built from the other half only", name)
            continue
        halves.append(normalize_rows(_as_matrix(name, part)))
    if len(halves) == 2 and halves[0].shape[0] != halves[1].shape[0]:
        raise ValueError(f"e_bar has {halves[0].shape[0]} rows but z has {halves[1].shape[0]}: one row per video in both")
    return np.concatenate(halves, axis=1)


@dataclass(frozen=True)
class TopicAssignment:
    """Topics of n videos as a ragged array (CSR layout): video i owns positions offsets[i]:offsets[i+1].

    ``topic_ids`` (nnz,) int64 nearest first within each video; ``weights`` (nnz,) float32 the cosine
    similarities in the same order. One flat array instead of n small ones keeps 1M videos cheap.
    """

    offsets: np.ndarray  # (n + 1,) int64
    topic_ids: np.ndarray  # (nnz,) int64
    weights: np.ndarray  # (nnz,) float32

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        """(n,) int64 topics per video."""
        return np.diff(self.offsets)

    def video(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Topic ids and weights of video i."""
        start, end = self.offsets[i], self.offsets[i + 1]
        return self.topic_ids[start:end], self.weights[start:end]

    def to_lists(self) -> tuple[list[list[int]], list[list[float]]]:
        """Plain Python lists (ids, weights), one per video, for small outputs and JSON."""
        bounds = self.offsets[1:-1]
        return (
            [part.tolist() for part in np.split(self.topic_ids, bounds)],
            [part.tolist() for part in np.split(self.weights, bounds)],
        )

    @classmethod
    def concatenate(cls, parts: Sequence[TopicAssignment]) -> TopicAssignment:
        """Videos of ``parts`` one after another."""
        if not parts:
            return cls(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
        counts = np.concatenate([part.counts for part in parts])
        return cls(
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            np.concatenate([part.topic_ids for part in parts]).astype(np.int64),
            np.concatenate([part.weights for part in parts]).astype(np.float32),
        )


def select_topics(candidate_ids: np.ndarray, candidate_sims: np.ndarray, threshold: float | np.ndarray, max_topics: int) -> TopicAssignment:
    """The assignment rule over each video's candidate topics.

    ``candidate_ids`` (n, k) int and ``candidate_sims`` (n, k) cosine similarities, in any order; ids < 0
    are padding and ignored; a repeated id counts once with its highest similarity. For each video the
    result holds every candidate with similarity >= ``threshold`` (compared in float64; one τ3, or (n,) one per
    video), and always the most similar one, sorted by similarity descending (ties: smaller id first), at most
    ``max_topics``. A video with no valid candidate gets no topic.
    """
    candidate_ids = np.asarray(candidate_ids)
    candidate_sims = np.asarray(candidate_sims)
    if candidate_ids.shape != candidate_sims.shape or candidate_ids.ndim != 2:
        raise ValueError(f"candidate_ids {candidate_ids.shape} and candidate_sims {candidate_sims.shape} must be equal 2-D shapes")
    if max_topics < 1:
        raise ValueError(f"max_topics must be >= 1, got {max_topics}")
    n, k = candidate_ids.shape
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (n,))  # (n,)
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    ids = candidate_ids.reshape(-1).astype(np.int64)
    sims = candidate_sims.reshape(-1).astype(np.float64)
    valid = ids >= 0
    if np.isnan(sims[valid]).any():
        raise ValueError("candidate_sims holds NaN for a valid candidate")
    rows, ids, sims = rows[valid], ids[valid], sims[valid]

    # one entry per (video, topic): the highest similarity
    order = np.lexsort((-sims, ids, rows))
    rows, ids, sims = rows[order], ids[order], sims[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (ids[1:] != ids[:-1])
    rows, ids, sims = rows[first], ids[first], sims[first]

    # per video: similarity descending, ties by id
    order = np.lexsort((ids, -sims, rows))
    rows, ids, sims = rows[order], ids[order], sims[order]
    per_video = np.bincount(rows, minlength=n)
    rank = np.arange(len(rows)) - np.repeat(np.cumsum(per_video) - per_video, per_video)
    keep = (rank == 0) | ((sims >= thresholds[rows]) & (rank < max_topics))
    counts = np.bincount(rows[keep], minlength=n)
    return TopicAssignment(
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        topic_ids=ids[keep],
        weights=sims[keep].astype(np.float32),
    )


def calibrated_threshold(nearest_sims: np.ndarray, target: float) -> float:
    """τ3 under which :func:`select_topics` gives videos ``target`` topics on average (``assign_rule="calibrated"``).

    ``nearest_sims`` (n, k): each video's k highest cosines to the centres, in descending order (k = the cap
    ``max_topics_per_video``, or K when there are fewer centres). Under the threshold rule video i gets its nearest
    topic plus every other of its k with cosine >= τ3, so the mean is 1 + #{columns 2..k >= τ3} / n and τ3 is the m-th
    largest of those values, m = round((target - 1) n): the one threshold whose mean is closest to ``target`` (ties
    can add a few). m = 0 gives a value above every cosine (the nearest topic only); m at least the number of values
    gives -1 (every video its k nearest). Returns a float (compare in float64 as :func:`select_topics` does).
    """
    sims = np.asarray(nearest_sims, dtype=np.float64)
    if sims.ndim != 2 or not len(sims):
        raise ValueError(f"calibrated_threshold needs the nearest cosines of at least one video as (n, k), got shape {sims.shape}")
    if not target >= 1:
        raise ValueError(f"target topics per video must be >= 1 (every video gets its nearest topic), got {target!r}")
    rest = sims[:, 1:].reshape(-1)  # every video's 2nd..k-th nearest
    m = int(round((float(target) - 1.0) * len(sims)))
    if m <= 0 or not len(rest):
        return float(sims.max()) + 1e-6
    if m >= len(rest):
        return -1.0
    return float(np.partition(rest, len(rest) - m)[len(rest) - m])


def pca_topic_embeddings(centers: np.ndarray, dim: int) -> np.ndarray:
    """(K, dim) float32: each centre projected on the top ``dim`` principal axes of the centres, L2-normalised.

    Deterministic: axes come from an SVD and each axis's sign is fixed so its largest-magnitude entry is
    positive (as scikit-learn's ``svd_flip``). When the centres span fewer than ``dim`` directions (K <= dim,
    or a small a), the missing coordinates are 0.
    """
    centers = np.asarray(centers, dtype=np.float64)
    centred = centers - centers.mean(axis=0, keepdims=True)  # (K, D)
    _, singular_values, axes = np.linalg.svd(centred, full_matrices=False)  # axes (min(K, D), D)
    tolerance = singular_values[0] * 1e-6 if len(singular_values) and singular_values[0] > 0 else np.inf
    n_axes = int(min(dim, np.sum(singular_values > tolerance)))
    axes = axes[:n_axes]
    signs = np.sign(axes[np.arange(n_axes), np.argmax(np.abs(axes), axis=1)])
    axes = axes * signs[:, None]
    embeddings = np.zeros((len(centers), dim), dtype=np.float64)
    embeddings[:, :n_axes] = centred @ axes.T  # (K, n_axes)
    if n_axes < dim:
        logger.warning(
            "topic embeddings: the %d centres span only %d direction(s); %d of %d dims are 0", len(centers), n_axes, dim - n_axes, dim
        )
    return normalize_rows(embeddings.astype(np.float32))


def kmeans_plusplus_sample(
    x: np.ndarray, n_clusters: int, sample_size: int, rng: np.random.Generator, show_progress: bool = True
) -> np.ndarray:
    """(n_clusters, D) float32 starting centres: greedy k-means++ on a random sample of ``sample_size`` rows.

    faiss starts from K random rows, which on well-separated data often puts two centres in one cluster
    and none in another (a local minimum Lloyd steps cannot leave). k-means++ (D² sampling, greedy with
    2 + ln K trials per centre, as scikit-learn) avoids that; running it on a sample of a few rows per
    centre keeps its K sequential steps cheap at 1M rows and K = 6000.
    """
    n = len(x)
    sample = x[np.sort(rng.choice(n, size=min(n, sample_size), replace=False))].astype(np.float32)  # (m, D)
    squared_norms = np.einsum("ij,ij->i", sample, sample)  # (m,)
    n_trials = 2 + int(np.log(n_clusters))
    chosen = np.empty(n_clusters, dtype=np.int64)
    chosen[0] = rng.integers(len(sample))
    closest = np.maximum(squared_norms + squared_norms[chosen[0]] - 2.0 * sample @ sample[chosen[0]], 0.0)  # (m,) D²
    for i in tqdm(range(1, n_clusters), desc="k-means++ seeding", unit="centre", disable=not show_progress or n_clusters < 1000):
        cumulative = np.cumsum(closest, dtype=np.float64)
        if cumulative[-1] <= 0:  # fewer distinct rows than centres: any row will do
            chosen[i] = rng.integers(len(sample))
            continue
        trials = np.searchsorted(cumulative, rng.random(n_trials) * cumulative[-1], side="right")
        trials = np.minimum(trials, len(sample) - 1)
        distances = squared_norms[:, None] + squared_norms[trials][None, :] - 2.0 * sample @ sample[trials].T  # (m, trials)
        candidate_closest = np.minimum(closest[:, None], np.maximum(distances, 0.0))  # (m, trials)
        best = int(np.argmin(candidate_closest.sum(axis=0)))
        chosen[i] = trials[best]
        closest = candidate_closest[:, best]
    return sample[chosen]


def _half_presence(x: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """(n, H) bool: which halves of each row of x are non-zero."""
    return np.stack([np.einsum("ij,ij->i", x[:, start:stop], x[:, start:stop]) > 0 for start, stop in _bounds(sizes)], axis=1)


def _pattern_keys(x: np.ndarray, sizes: Sequence[int]) -> tuple[list[str], np.ndarray]:
    """Each row's modality pattern, "1" / "0" per half present / missing in the order of a (e.g. "01": z without ē):
    (the distinct patterns, (n,) int64 each row's index into them)."""
    present = _half_presence(x, sizes)  # (n, H)
    codes = present.astype(np.int64) @ (1 << np.arange(present.shape[1], dtype=np.int64))  # (n,)
    unique, inverse = np.unique(codes, return_inverse=True)
    patterns = ["".join("1" if unique_code >> h & 1 else "0" for h in range(present.shape[1])) for unique_code in unique]
    return patterns, inverse.reshape(-1)


def masked_kmeans(
    units: np.ndarray,
    sizes: Sequence[int],
    n_clusters: int,
    rng: np.random.Generator,
    *,
    spherical: bool,
    max_iter: int,
    n_init: int = 1,
    sample_size: int = 10_000,
    max_block_values: int = 1 << 22,
) -> tuple[np.ndarray, np.ndarray, float]:
    """k-means over rows some of whose halves are missing, comparing each row on the halves it has (issue 21).

    ``units`` (n, D): every half of a row unit-length (a row's present halves) or all zero (missing); every row has at
    least one half. A row i with present halves P_i is compared with centre k on those halves only, each weighing
    w_i = 1 / |P_i|: ``spherical`` (unit centre halves ĉ_kh): similarity w_i Σ_{h in P_i} u_ih · ĉ_kh, the mean
    cosine over the halves it has; else (centre halves c_kh, means) squared distance w_i Σ_{h in P_i} ‖u_ih - c_kh‖².
    A centre half is the w-weighted mean (spherical: normalised) of its members' halves that exist, so a missing half
    neither pulls a centre towards 0 nor makes rows without it similar to one another: the partial distance strategy
    of Hathaway & Bezdek 2001 ("Fuzzy c-means clustering of incomplete data") and Wagstaff 2004 ("Clustering with
    missing values: no imputation required"), against zero-filling, under which rows without a half cluster by that.
    On complete rows the Euclidean variant is Lloyd's k-means on [u_1, .., u_H] / √H (scikit-learn's objective); the
    spherical one keeps each centre half unit, where faiss's spherical k-means normalises the whole centre.

    Seeding: greedy k-means++ (:func:`kmeans_plusplus_sample`) on rows that have every half, so every centre starts
    with all of them (on all rows when fewer than ``n_clusters`` are complete; a centre half still zero then is filled
    by the first update that sees a member with it). A centre left without members keeps its place. Lloyd stops when
    no row changes centre or after ``max_iter`` steps; the best of ``n_init`` runs (objective) is returned.
    Scores exist for at most ``max_block_values`` (rows x K) at a time.

    Returns (centres (K, D) float32, labels (n,) int64, objective: the sum of similarities (spherical) or of squared
    distances, over rows).
    """
    units = np.ascontiguousarray(units, dtype=np.float32)
    sizes = [int(size) for size in sizes]
    present = _half_presence(units, sizes)  # (n, H)
    if not present.any(axis=1).all():
        raise ValueError("masked_kmeans: every row needs at least one non-zero half")
    weights = 1.0 / present.sum(axis=1)  # (n,) w_i
    complete = present.all(axis=1)
    pool = units[complete] if complete.sum() >= n_clusters else units
    block = max(1, int(max_block_values) // int(n_clusters))
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(int(n_init)):
        centres = kmeans_plusplus_sample(pool, int(n_clusters), int(sample_size), rng, show_progress=False)  # (K, D)
        labels = np.full(len(units), -1, dtype=np.int64)
        for _ in range(int(max_iter)):
            new_labels, objective = _masked_nearest(units, present, weights, centres, sizes, spherical, block)
            if np.array_equal(new_labels, labels):
                break
            labels = new_labels
            one_hot = sp.csr_matrix((weights, (labels, np.arange(len(units)))), shape=(int(n_clusters), len(units)))  # (K, n)
            sums = np.asarray(one_hot @ units, dtype=np.float64)  # (K, D): absent halves are 0, so each half sums its owners
            counts = np.asarray(one_hot @ present.astype(np.float64))  # (K, H) weighted members that have the half
            for h, (start, stop) in enumerate(_bounds(sizes)):
                half = sums[:, start:stop]
                if spherical:
                    norms = np.linalg.norm(half, axis=1)
                    update = norms > 0
                    centres[update, start:stop] = (half[update] / norms[update, None]).astype(np.float32)
                else:
                    update = counts[:, h] > 0
                    centres[update, start:stop] = (half[update] / counts[update, h, None]).astype(np.float32)
        else:  # max_iter steps without converging: the labels and objective of the last centres
            labels, objective = _masked_nearest(units, present, weights, centres, sizes, spherical, block)
        better = best is None or (objective > best[2] if spherical else objective < best[2])
        if better:
            best = (centres, labels, objective)
    assert best is not None
    return best


def _masked_nearest(
    units: np.ndarray, present: np.ndarray, weights: np.ndarray, centres: np.ndarray, sizes: Sequence[int], spherical: bool, block: int
) -> tuple[np.ndarray, float]:
    """Each row's nearest centre under :func:`masked_kmeans`'s measure, and the objective."""
    labels = np.empty(len(units), dtype=np.int64)
    half_norms = np.stack([np.einsum("ij,ij->i", centres[:, a:b], centres[:, a:b]) for a, b in _bounds(sizes)], axis=1)  # (K, H)
    objective = 0.0
    for start in range(0, len(units), block):
        dots = units[start : start + block] @ centres.T  # (b, K) Σ_h u_ih · c_kh over the halves row i has
        if spherical:
            labels[start : start + block] = np.argmax(dots, axis=1)
            best = dots[np.arange(len(dots)), labels[start : start + block]]
            objective += float(np.dot(weights[start : start + block], best))
        else:
            # w_i Σ_{h in P_i} (1 - 2 u_ih · c_kh + ‖c_kh‖²) = 1 + w_i (Σ_{h in P_i} ‖c_kh‖² - 2 dots)
            cost = present[start : start + block].astype(np.float32) @ half_norms.T - 2.0 * dots  # (b, K)
            labels[start : start + block] = np.argmin(cost, axis=1)
            best = cost[np.arange(len(cost)), labels[start : start + block]]
            objective += float(np.sum(1.0 + weights[start : start + block] * best))
    return labels, objective


def weighted_topic_features(assignment: TopicAssignment, topic_embeddings: np.ndarray) -> np.ndarray:
    """(n, f) float32: per video, the similarity-weighted mean of its topics' embeddings (K, f).

    Weights are the similarities clipped at 0, uniform when they are all 0; a video without topics gets
    zeros. See the module docstring for why.
    """
    n, n_topics = len(assignment), len(topic_embeddings)
    if len(assignment.topic_ids) and (assignment.topic_ids.min() < 0 or assignment.topic_ids.max() >= n_topics):
        raise ValueError(f"assignment holds topic ids outside 0..{n_topics - 1}")
    weights = np.clip(assignment.weights.astype(np.float64), 0.0, None)  # (nnz,)
    rows = np.repeat(np.arange(n), assignment.counts)  # (nnz,) video of each entry
    weights[np.bincount(rows, weights=weights, minlength=n)[rows] <= 0] = 1.0
    totals = np.bincount(rows, weights=weights, minlength=n)  # (n,)
    weighting = sp.csr_matrix((weights, assignment.topic_ids, assignment.offsets), shape=(n, n_topics))  # (n, K)
    summed = weighting @ np.asarray(topic_embeddings, dtype=np.float64)  # (n, f)
    features = np.divide(summed, totals[:, None], out=np.zeros_like(summed), where=totals[:, None] > 0)
    return features.astype(np.float32)


class TopicModelParams(TopicsConfig):
    """TopicModel's parameters: the topic settings, and bounds on memory and time that are no setting."""

    block_size: int = Field(65536, ge=1, description="rows of a scored at once by assign")
    max_points_per_centroid: int = Field(256, ge=1, description="faiss's k-means training sample cap per centre")
    init_sample_per_topic: int = Field(3, ge=1, description="k-means++ seeding sample: this many rows per topic, at least 10,000")


_DEFAULTS = TopicModelParams()


class TopicModel(SettingsEstimator):
    """K topics by spherical k-means on a; threshold assignment; per-topic 8-dim embeddings.

    Parameters mirror :class:`topicfs.settings.TopicsConfig`, defaults included; ``block_size`` (rows scored at once by
    :meth:`assign`) and ``max_points_per_centroid`` (faiss's training sample cap per centre) bound memory
    and time; ``init_sample_per_topic`` sets the k-means++ seeding sample (that many rows per topic, at least
    10,000). Learned state after :meth:`fit`:

    - ``cluster_centers_``: (K, D) float32 unit vectors, the topics
    - ``topic_embeddings_``: (K, topic_feature_dim) float32, see :func:`pca_topic_embeddings`
    - ``objective_``: float, faiss's final objective (sum of cosine similarities to the centres)
    - ``half_sizes_``: the widths of a's halves (``halves`` of :meth:`fit`; one half = all of a by default);
      ``half_means_``: (D,) float32 their mean directions, removed by :meth:`centred` (zeros without ``center_halves``)
    - ``n_features_in_``: D; ``data_fingerprint_``: fingerprint of the a that ``fit`` saw
    """

    def __init__(
        self,
        n_topics: int = _DEFAULTS.n_topics,
        assign_threshold: float = _DEFAULTS.assign_threshold,
        assign_rule: str = _DEFAULTS.assign_rule,
        target_topics_per_video: float = _DEFAULTS.target_topics_per_video,
        max_topics_per_video: int = _DEFAULTS.max_topics_per_video,
        topic_feature_dim: int = _DEFAULTS.topic_feature_dim,
        kmeans_iterations: int = _DEFAULTS.kmeans_iterations,
        seed: int = _DEFAULTS.seed,
        center_halves: bool = _DEFAULTS.center_halves,
        missing_modalities: str = _DEFAULTS.missing_modalities,
        complete_share: float = _DEFAULTS.complete_share,
        neighbours: int = _DEFAULTS.neighbours,
        neighbour_bank_size: int = _DEFAULTS.neighbour_bank_size,
        block_size: int = _DEFAULTS.block_size,
        max_points_per_centroid: int = _DEFAULTS.max_points_per_centroid,
        init_sample_per_topic: int = _DEFAULTS.init_sample_per_topic,
        show_progress: bool = True,
    ):
        self.n_topics = n_topics
        self.assign_threshold = assign_threshold
        self.assign_rule = assign_rule
        self.target_topics_per_video = target_topics_per_video
        self.max_topics_per_video = max_topics_per_video
        self.topic_feature_dim = topic_feature_dim
        self.kmeans_iterations = kmeans_iterations
        self.seed = seed
        self.center_halves = center_halves
        # how the pipeline builds a for videos lacking a modality (offline_jobs.pipeline.topic_inputs); kept with the model
        self.missing_modalities = missing_modalities
        self.complete_share = complete_share
        self.neighbours = neighbours
        self.neighbour_bank_size = neighbour_bank_size
        self.block_size = block_size
        self.max_points_per_centroid = max_points_per_centroid
        self.init_sample_per_topic = init_sample_per_topic
        self.show_progress = show_progress

    config_model = TopicModelParams

    def fit(
        self,
        a: np.ndarray,
        halves: Sequence[int] | None = None,
        predicted_modalities: Sequence[str] = (),
        tag_bank: TagBank | None = None,
    ) -> TopicModel:
        """Spherical k-means on the rows of a (n, D); all-zero rows are left out. Returns self.

        ``halves``: the widths of the parts of a centred separately (:func:`representation_halves` gives them for
        [ē/‖ē‖, z/‖z‖]); None = a is one part. ``predicted_modalities``: the modalities a was built without, from the
        models' predictions (``missing_modalities="predict"``, :func:`offline_jobs.pipeline.topic_inputs`); kept as
        ``predicted_modalities_`` so videos assigned later are represented the same way. ``tag_bank``: the
        :class:`TagBank` of the tagged fitted videos that filled ē of the tagless ones (``missing_modalities="neighbours"``);
        kept as ``tag_bank_`` for the same reason.
        """
        self.validated_config()
        self.predicted_modalities_ = sorted(str(m) for m in predicted_modalities)
        self.tag_bank_ = tag_bank
        a = _as_matrix("a", a)
        sizes = [int(a.shape[1])] if halves is None else [int(h) for h in halves]
        if any(h < 1 for h in sizes) or sum(sizes) != a.shape[1]:
            raise ValueError(f"TopicModel.fit: halves {list(sizes)} must be positive widths adding up to a's {a.shape[1]} columns")
        self.half_sizes_ = sizes
        self.half_means_ = np.zeros(a.shape[1], dtype=np.float32)
        if self.center_halves:
            x, present = _unit_halves(a, sizes)
            for (start, stop), rows in zip(_bounds(sizes), present):
                # rows without this half are zero in x, so the column sums are the sums over the rows that have it
                self.half_means_[start:stop] = x[:, start:stop].sum(axis=0, dtype=np.float64) / max(int(rows.sum()), 1)
            self._centre_in_place(x, present)
        else:
            x = self.centred(a)  # half_means_ are 0: the rows normalised (mask: each half first)
        nonzero = np.linalg.norm(x, axis=1) > 0
        if not nonzero.all():
            logger.warning(
                "topic k-means: %d of %d rows of a are all zero (no tags and no z) and are left out", int((~nonzero).sum()), len(x)
            )
            x = x[nonzero]
        if len(x) < self.n_topics:
            raise ValueError(f"TopicModel.fit: {len(x)} non-zero rows cannot make n_topics={self.n_topics} topics (K); lower n_topics")
        if len(x) < MIN_ROWS_PER_TOPIC_ADVISED * self.n_topics:
            logger.warning(
                "topic k-means: %d rows for %d topics (< %d per topic); centres may be unstable",
                len(x),
                self.n_topics,
                MIN_ROWS_PER_TOPIC_ADVISED,
            )
        x = np.ascontiguousarray(x)
        rng = np.random.default_rng(self.seed)
        sample_size = max(int(self.init_sample_per_topic) * int(self.n_topics), 10_000)
        if self.missing_modalities == "mask":
            self._fit_masked(x, rng, sample_size)
        else:
            self._fit_faiss(x, rng, sample_size)
        self.topic_embeddings_ = pca_topic_embeddings(self.cluster_centers_, int(self.topic_feature_dim))  # (K, 8)
        self.n_features_in_ = int(a.shape[1])
        self.data_fingerprint_ = fingerprint_arrays([a])
        self.calibrated_threshold_, self.pattern_thresholds_ = (
            self._calibrate_centred(x) if self.assign_rule == "calibrated" else (None, {})
        )
        return self

    def _fit_faiss(self, x: np.ndarray, rng: np.random.Generator, sample_size: int) -> None:
        """faiss's spherical k-means on the centred rows x, from k-means++ centres."""
        kmeans = faiss.Kmeans(
            x.shape[1],
            int(self.n_topics),
            niter=int(self.kmeans_iterations),
            seed=int(self.seed),
            spherical=True,  # unit centres: nearest centre = highest cosine, the assignment measure
            max_points_per_centroid=int(self.max_points_per_centroid),
            min_points_per_centroid=1,  # the advice above is logged once, faiss's own print is noise
            verbose=bool(self.show_progress),
        )
        logger.info("topic k-means: %d rows x %d dims, K=%d, %d iterations", x.shape[0], x.shape[1], self.n_topics, self.kmeans_iterations)
        initial_centers = kmeans_plusplus_sample(x, int(self.n_topics), sample_size, rng, bool(self.show_progress))  # (K, D)
        kmeans.train(x, init_centroids=initial_centers)
        self.cluster_centers_ = normalize_rows(kmeans.centroids)  # (K, D)
        self.objective_ = float(kmeans.obj[-1]) if len(kmeans.obj) else float("nan")

    def _fit_masked(self, x: np.ndarray, rng: np.random.Generator, sample_size: int) -> None:
        """``missing_modalities="mask"``: :func:`masked_kmeans` (spherical) on the centred rows x, each compared on the
        halves it has, on faiss's training sample (at most ``max_points_per_centroid`` x K rows). The centres are kept
        as [ĉ_1, .., ĉ_H] / √H, unit vectors when every half has members; :meth:`_score_scale` turns faiss's inner
        products with them into the mean cosine over a row's halves."""
        n_sample = int(self.max_points_per_centroid) * int(self.n_topics)
        if len(x) > n_sample:
            x = x[np.sort(rng.choice(len(x), size=n_sample, replace=False))]
        units, _ = _unit_halves(x, self.half_sizes_)
        logger.info(
            "topic k-means (masked): %d rows x %d dims, K=%d, <= %d iterations", *units.shape, self.n_topics, self.kmeans_iterations
        )
        centres, _, objective = masked_kmeans(
            units, self.half_sizes_, int(self.n_topics), rng, spherical=True, max_iter=int(self.kmeans_iterations), sample_size=sample_size
        )
        self.cluster_centers_ = (centres / np.sqrt(len(self.half_sizes_))).astype(np.float32)  # (K, D)
        self.objective_ = objective

    def _centre_index(self) -> faiss.Index:
        """Inner-product index over the centres as rows are scored against them (see :meth:`_score_scale`)."""
        centres = self.cluster_centers_
        if self.missing_modalities == "mask":
            centres = np.ascontiguousarray(centres * np.float32(np.sqrt(len(self.half_sizes_))))  # per-half unit
        index = faiss.IndexFlatIP(centres.shape[1])
        index.add(centres)
        return index

    def _score_scale(self, x: np.ndarray) -> np.ndarray | float:
        """Factor from the index's inner products with the centred rows x to their similarities: 1, or under
        ``missing_modalities="mask"`` 1 / √|P_i| (P_i the halves row i has; its halves are 1 / √|P_i| long in x), which
        makes them w_i Σ_{h in P_i} u_ih · ĉ_kh, the mean cosine over the halves the video has."""
        if self.missing_modalities != "mask":
            return 1.0
        return (1.0 / np.sqrt(np.maximum(_half_presence(x, self.half_sizes_).sum(axis=1), 1)))[:, None].astype(np.float32)

    def calibrate(self, a: np.ndarray) -> TopicModel:
        """Set ``calibrated_threshold_`` (and ``pattern_thresholds_``) from the rows of a (:func:`calibrated_threshold` of
        their nearest cosines), as :meth:`fit` does under ``assign_rule="calibrated"``; e.g. to assign a model fitted
        under another rule with this one. Returns self."""
        self._check_fitted()
        x = self.centred(_as_matrix("a", a))
        self.calibrated_threshold_, self.pattern_thresholds_ = self._calibrate_centred(x[np.linalg.norm(x, axis=1) > 0])
        return self

    def _calibrate_centred(self, x: np.ndarray) -> tuple[float, dict[str, float]]:
        """τ3 for ``target_topics_per_video`` from centred, non-zero rows x; under ``missing_modalities="mask"`` also one
        τ3 per modality pattern (which halves a row has, :func:`_pattern_keys`) with at least
        ``MIN_ROWS_PER_PATTERN`` rows. Why per pattern: a video is scored by the mean of the cosines of the halves it
        has, and a mean of two cosines spreads less than one, so a single τ3 gives videos with one half more topics
        (KuaiRec held out: 4.99 without tags, 3.12 with, docs/TABLE1.md); per pattern each group gets the target on average."""
        index = self._centre_index()
        k = int(min(self.max_topics_per_video, len(self.cluster_centers_)))
        step = int(self.block_size)
        nearest = np.concatenate(
            [index.search(np.ascontiguousarray(x[i : i + step]), k)[0] * self._score_scale(x[i : i + step]) for i in range(0, len(x), step)]
        )
        target = float(self.target_topics_per_video)
        threshold = calibrated_threshold(nearest, target)
        logger.info("topic assignment: τ3 calibrated to %.4f for %.2f topics per video", threshold, target)
        per_pattern = {}
        if self.missing_modalities == "mask":
            patterns, of_row = _pattern_keys(x, self.half_sizes_)
            for i, pattern in enumerate(patterns):
                rows = of_row == i
                if rows.sum() >= MIN_ROWS_PER_PATTERN:
                    per_pattern[pattern] = calibrated_threshold(nearest[rows], target)
            logger.info("topic assignment: τ3 per modality pattern (halves present) %s", per_pattern)
        return threshold, per_pattern

    def _row_thresholds(self, x: np.ndarray) -> float | np.ndarray:
        """τ3 of each centred row of x: :attr:`assignment_threshold`, or its pattern's τ3 when one was calibrated."""
        patterns = getattr(self, "pattern_thresholds_", {})
        if self.assign_rule != "calibrated" or not patterns:
            return self.assignment_threshold
        keys, of_row = _pattern_keys(x, self.half_sizes_)
        overall = self.assignment_threshold
        return np.array([patterns.get(key, overall) for key in keys], dtype=np.float64)[of_row]

    def video_thresholds(self, a: np.ndarray) -> float | np.ndarray:
        """τ3 as :meth:`assign` applies it to the rows of a: one float, or under ``missing_modalities="mask"`` with a
        calibrated τ3 per modality pattern (n,) one per video."""
        self._check_fitted()
        return self._row_thresholds(self.centred(_as_matrix("a", a)))

    @property
    def assignment_threshold(self) -> float:
        """τ3 as :meth:`assign` applies it: ``assign_threshold`` under the paper's rule, ``calibrated_threshold_`` under
        ``assign_rule="calibrated"``."""
        if self.assign_rule == "threshold":
            return float(self.assign_threshold)
        if self.assign_rule != "calibrated":
            raise ValueError(f"TopicModel: assign_rule must be 'threshold' or 'calibrated', got {self.assign_rule!r}")
        if getattr(self, "calibrated_threshold_", None) is None:
            raise RuntimeError("TopicModel: assign_rule='calibrated' but no τ3 was calibrated: fit() under that rule, or calibrate(a)")
        return float(self.calibrated_threshold_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("TopicModel is not fitted: call fit() or TopicModel.load() first")

    def centred(self, a: np.ndarray) -> np.ndarray:
        """The rows of a as the model compares them, (n, D) float32 unit rows (zero rows stay zero): each half
        row-normalised, its mean direction ``half_means_`` removed and normalised again, then the whole row
        normalised. A half that is zero in a row stays zero (a video without tags); so does one that equals the
        mean direction exactly, which says nothing that sets the video apart."""
        if not np.any(self.half_means_):
            if self.missing_modalities != "mask":
                return normalize_rows(a)
            x, _ = _unit_halves(a, self.half_sizes_)  # mask scores each half as a unit vector, whatever a's halves are
            _normalise_rows_in_place(x)
            return x
        x, present = _unit_halves(a, self.half_sizes_)
        self._centre_in_place(x, present)
        return x

    def _centre_in_place(self, x: np.ndarray, present: list[np.ndarray]) -> None:
        """x from :func:`_unit_halves` -> :meth:`centred`'s rows, without another (n, D) array (1M x 128 is 0.5 GB)."""
        for (start, stop), rows in zip(_bounds(self.half_sizes_), present):
            half = x[:, start:stop]
            half -= self.half_means_[start:stop]
            _normalise_rows_in_place(half)
            half[~rows] = 0.0
        _normalise_rows_in_place(x)

    def assign(self, a: np.ndarray) -> TopicAssignment:
        """Topics of every row of a (n, D) by :func:`select_topics`, scored in blocks with faiss.

        Rows that are all zero (no tags and no z) get no topic: they have no direction to compare.
        """
        self._check_fitted()
        a = _as_matrix("a", a)
        if a.shape[1] != self.n_features_in_:
            raise ValueError(f"a has {a.shape[1]} columns but the topics were fitted on {self.n_features_in_}")
        index = self._centre_index()
        k = int(min(self.max_topics_per_video, len(self.cluster_centers_)))
        parts = []
        starts = range(0, len(a), int(self.block_size))
        for start in tqdm(starts, desc="assign topics", unit="block", disable=not self.show_progress or len(starts) < 2):
            block = self.centred(a[start : start + self.block_size])  # (b, D) unit rows
            sims, ids = index.search(np.ascontiguousarray(block), k)  # (b, k) each, nearest first
            sims *= self._score_scale(block)
            ids[np.linalg.norm(block, axis=1) == 0] = -1
            parts.append(select_topics(ids, sims, self._row_thresholds(block), int(self.max_topics_per_video)))
        assignment = TopicAssignment.concatenate(parts)
        n_empty = int((assignment.counts == 0).sum())
        if n_empty:
            logger.warning("topic assignment: %d of %d videos have an all-zero a and got no topic", n_empty, len(assignment))
        return assignment

    def topic_features(self, assignment: TopicAssignment) -> np.ndarray:
        """(n, topic_feature_dim) float32 video topic features, see :func:`weighted_topic_features`."""
        self._check_fitted()
        return weighted_topic_features(assignment, self.topic_embeddings_)

    def save(self, directory: str | Path) -> Path:
        """Write centres, topic embeddings and config to ``directory``."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        bank = getattr(self, "tag_bank_", None)
        np.savez(
            directory / ARRAYS_FILE,
            cluster_centers=self.cluster_centers_,
            topic_embeddings=self.topic_embeddings_,
            half_means=self.half_means_,
            **({} if bank is None else {"tag_bank_z": bank.z, "tag_bank_e": bank.e}),
        )
        write_json_atomic(
            directory / META_FILE,
            {
                "format_version": FORMAT_VERSION,
                "estimator": type(self).__name__,
                "config": {k: v for k, v in self.get_params().items() if k != "show_progress"},
                "data_fingerprint": self.data_fingerprint_,
                "n_features_in": self.n_features_in_,
                "half_sizes": self.half_sizes_,
                "predicted_modalities": self.predicted_modalities_,
                "calibrated_threshold": getattr(self, "calibrated_threshold_", None),
                "pattern_thresholds": getattr(self, "pattern_thresholds_", {}),
                "objective": self.objective_,
                "versions": {"faiss": faiss.__version__, "numpy": np.__version__},
            },
        )
        logger.info("saved topic model (K=%d) to %s", len(self.cluster_centers_), directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TopicModel:
        """Read a model written by :meth:`save`."""
        directory = Path(directory)
        meta = read_json(directory / META_FILE)
        version = meta.get("format_version")
        if version not in (1, 2, 3, 4, FORMAT_VERSION):
            raise ValueError(f"{directory / META_FILE}: format_version {version!r}, expected {FORMAT_VERSION} (or 1 to 4)")
        config = dict(meta["config"])
        if version == 1:  # saved before centring existed: compared raw cosines
            config.update(center_halves=False)
        if version in (1, 2):  # saved before assign_rule existed: the paper's threshold rule, whatever today's default
            config.update(assign_rule="threshold")
        model = cls(**config)
        n_features = int(meta["n_features_in"])
        with np.load(directory / ARRAYS_FILE) as arrays:
            model.cluster_centers_ = arrays["cluster_centers"]
            model.topic_embeddings_ = arrays["topic_embeddings"]
            model.half_means_ = arrays["half_means"] if "half_means" in arrays else np.zeros(n_features, np.float32)
            model.tag_bank_ = TagBank(arrays["tag_bank_z"], arrays["tag_bank_e"]) if "tag_bank_z" in arrays else None
        model.half_sizes_ = [int(h) for h in meta.get("half_sizes", [n_features])]
        model.predicted_modalities_ = list(meta.get("predicted_modalities", []))
        model.calibrated_threshold_ = meta.get("calibrated_threshold")
        model.pattern_thresholds_ = {str(k): float(v) for k, v in meta.get("pattern_thresholds", {}).items()}
        model.n_features_in_ = n_features
        model.objective_ = float(meta["objective"])
        model.data_fingerprint_ = meta["data_fingerprint"]
        return model


def topics_per_video_report(assignment: TopicAssignment, assign_threshold: float | np.ndarray) -> dict[str, Any]:
    """How many topics videos got: mean, median, histogram, and how many got only the forced nearest topic.

    ``forced_nearest_only`` counts videos whose single topic is below τ3 (given only because every
    video gets its nearest topic). The paper reports about 4 topics per video on average. ``assign_threshold``: τ3, or
    (n,) one per video (:meth:`TopicModel.video_thresholds`); the report's ``assign_threshold`` is then their mean.
    """
    counts = assignment.counts
    first = assignment.offsets[:-1][counts > 0]
    thresholds = np.broadcast_to(np.asarray(assign_threshold, dtype=np.float64), (len(counts),))
    below = assignment.weights[first].astype(np.float64) < thresholds[counts > 0]
    values, frequencies = np.unique(counts, return_counts=True)
    return {
        "n_videos": int(len(counts)),
        "mean_topics_per_video": float(counts.mean()) if len(counts) else 0.0,
        "median_topics_per_video": float(np.median(counts)) if len(counts) else 0.0,
        "max_topics_per_video": int(counts.max()) if len(counts) else 0,
        "histogram": {int(v): int(f) for v, f in zip(values, frequencies)},
        "videos_without_topic": int((counts == 0).sum()),
        "forced_nearest_only": int(below.sum()),
        "assign_threshold": float(assign_threshold) if np.ndim(assign_threshold) == 0 else float(np.mean(assign_threshold)),
        "mean_weight": float(assignment.weights.mean()) if len(assignment.weights) else 0.0,
    }


def format_topics_per_video_report(report: dict[str, Any]) -> str:
    """The report as a few readable lines with a text histogram."""
    n = max(report["n_videos"], 1)
    lines = [
        f"videos: {report['n_videos']}  mean topics/video: {report['mean_topics_per_video']:.2f} (paper: about 4)  "
        f"median: {report['median_topics_per_video']:.1f}  max: {report['max_topics_per_video']}",
        f"only the forced nearest topic (below τ3 = {report.get('assign_threshold', float('nan')):.3f}): {report['forced_nearest_only']}  "
        f"without topic: {report['videos_without_topic']}",
        "topics  videos",
    ]
    for value, frequency in report["histogram"].items():
        lines.append(f"{value:>6}  {frequency:>7}  {'#' * round(40 * frequency / n)}")
    return "\n".join(lines)


def nearest_topics(assignment: TopicAssignment) -> np.ndarray:
    """(n,) int64 the nearest topic of every video, -1 for a video without topic."""
    first = np.full(len(assignment), -1, dtype=np.int64)
    has = assignment.counts > 0
    first[has] = assignment.topic_ids[assignment.offsets[:-1][has]]
    return first


def presence_audit(
    assignment: TopicAssignment,
    max_topics_per_video: int,
    presence: dict[str, np.ndarray | None],
    labels: dict[str, np.ndarray | None] | None = None,
) -> dict[str, Any]:
    """Do topics follow which modalities a video has (issue 21)?

    ``presence``: name -> (n,) bool, e.g. {"cover": has_cover, "tags": has_tags}; ``labels``: name -> (n,) labels
    (classes, the synthetic true topic; None or missing values are left out of that label's NMI). Returns

    - ``nmi``: NMI(nearest topic, has <modality>) per presence flag (0 = the nearest topic says nothing about it;
      a flag that is the same for every video is skipped) and NMI(nearest topic, label) per label;
    - ``groups``: per group (all videos, with / without each modality): n, mean topics per video and the share of
      videos at the cap ``max_topics_per_video``.
    """
    from sklearn.metrics import normalized_mutual_info_score

    nearest = nearest_topics(assignment)
    counts = assignment.counts
    nmi: dict[str, float] = {}
    groups: dict[str, dict[str, float]] = {}

    def group(name: str, mask: np.ndarray) -> None:
        if mask.any():
            groups[name] = {
                "n": int(mask.sum()),
                "mean_topics": float(counts[mask].mean()),
                "at_cap": float((counts[mask] >= max_topics_per_video).mean()),
            }

    group("all", np.ones(len(counts), dtype=bool))
    for name, flags in presence.items():
        if flags is None:
            continue
        flags = np.asarray(flags, dtype=bool)
        if len(flags) != len(counts):
            raise ValueError(f"presence_audit: {name} has {len(flags)} flags for {len(counts)} videos")
        group(f"with {name}", flags)
        group(f"without {name}", ~flags)
        if 0 < flags.sum() < len(flags):
            nmi[f"has {name}"] = float(normalized_mutual_info_score(flags, nearest))
    for name, values in (labels or {}).items():
        if values is None:
            continue
        values = pd.Series(np.asarray(values, dtype=object))
        known = values.notna().to_numpy()
        if values[known].nunique() >= 2:
            nmi[name] = float(normalized_mutual_info_score(values[known].astype(str).to_numpy(), nearest[known]))
    return {"nmi": nmi, "groups": groups, "max_topics_per_video": int(max_topics_per_video)}


def format_presence_audit(audit: dict[str, Any]) -> str:
    """The audit as a few readable lines."""
    lines = ["presence audit: NMI(nearest topic, x) — " + ", ".join(f"{k} {v:.3f}" for k, v in audit["nmi"].items())]
    lines.append(f"{'videos':<16} {'n':>7} {'topics/video':>13} {'at cap ' + str(audit['max_topics_per_video']):>9}")
    for name, g in audit["groups"].items():
        lines.append(f"{name:<16} {g['n']:>7} {g['mean_topics']:>13.2f} {100 * g['at_cap']:>8.1f}%")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Parquet tables (layouts in topicfs/tables.py)

TIMESTAMP = pa.timestamp("us", tz="UTC")


def _utc_timestamps(value: Any, n: int, name: str) -> pa.Array:
    """``n`` UTC timestamps from one timezone-aware time or a sequence of n of them."""
    if isinstance(value, (datetime, pd.Timestamp, str)):
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware (UTC), got naive {stamp}")
        microseconds = stamp.tz_convert("UTC").value // 1000  # ns -> us
        return pa.array(np.full(n, microseconds, dtype=np.int64), type=pa.int64()).cast(TIMESTAMP)
    stamps = pd.DatetimeIndex(pd.to_datetime(pd.Series(value)))
    if len(stamps) != n:
        raise ValueError(f"{name}: {len(stamps)} timestamps for {n} rows")
    if stamps.tz is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive timestamps")
    return pa.array(stamps.tz_convert("UTC").as_unit("us"), type=TIMESTAMP)


def _list_offsets(offsets: np.ndarray) -> pa.Array:
    """int32 list offsets (what Feast maps to Array types); past 2**31 values a table must be written in parts."""
    if len(offsets) and offsets[-1] >= 2**31:
        raise ValueError(f"{offsets[-1]} list values exceed one Parquet list column (2**31 - 1); write the videos in parts")
    return pa.array(np.asarray(offsets, dtype=np.int32), type=pa.int32())


def _fixed_lists(matrix: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """(n, d) -> list<value_type> with n lists of d values."""
    n, d = matrix.shape
    offsets = np.arange(0, n * d + 1, d, dtype=np.int64) if d else np.zeros(n + 1, dtype=np.int64)
    return pa.ListArray.from_arrays(_list_offsets(offsets), pa.array(np.ascontiguousarray(matrix).reshape(-1), type=value_type))


def _ragged_lists(offsets: np.ndarray, values: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """CSR (offsets, values) -> list<value_type>."""
    return pa.ListArray.from_arrays(_list_offsets(offsets), pa.array(values, type=value_type))


def _video_ids(video_ids: Any, n: int) -> np.ndarray:
    ids = np.asarray(video_ids)
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(f"video_ids: expected {n} ids (one per row), got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"video_ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if len(np.unique(ids)) != n:
        raise ValueError("video_ids: each video must appear once (duplicates found)")
    return ids


def _write_table(out_dir: Path, file_name: str, table: pa.Table, config: dict[str, Any], fingerprints: dict[str, str]) -> Path:
    """Parquet written atomically plus ``<stem>.json`` beside it (config, fingerprints, schema)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / file_name
    with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".parquet.tmp", delete=False) as handle:
        tmp_name = handle.name
    pq.write_table(table, tmp_name)
    os.replace(tmp_name, path)
    table_fingerprint = fingerprint_table(table.drop_columns(["created"]))
    write_json_atomic(
        path.with_suffix(".json"),
        {
            "table": file_name,
            "rows": table.num_rows,
            "schema": {field.name: str(field.type) for field in table.schema},
            "config": config,
            "data_fingerprints": {**fingerprints, "table_values": table_fingerprint},
            "created": table.column("created")[0].as_py().isoformat() if table.num_rows else utc_now().isoformat(),
        },
    )
    logger.info("wrote %s (%d rows)", path, table.num_rows)
    return path


def _estimator_config(estimator: BaseEstimator) -> dict[str, Any]:
    return {k: v for k, v in estimator.get_params().items() if k != "show_progress"}


def write_tag_embeddings(out_dir: str | Path, embedder: TagGraphEmbedder, event_timestamp: Any, created: datetime | None = None) -> Path:
    """TAG_EMBEDDINGS: tag | tag_embedding list<float32> | event_timestamp | created."""
    embedder._check_fitted()
    n = len(embedder.tags_)
    created = created or utc_now()
    table = pa.table(
        {
            "tag": pa.array(embedder.tags_, type=pa.string()),
            "tag_embedding": _fixed_lists(embedder.embeddings_.astype(np.float32), pa.float32()),
            "event_timestamp": _utc_timestamps(event_timestamp, n, "event_timestamp"),
            "created": _utc_timestamps(created, n, "created"),
        }
    )
    return _write_table(
        Path(out_dir),
        tables.TAG_EMBEDDINGS,
        table,
        {"tag_graph": _estimator_config(embedder)},
        {"tag_graph_fit": embedder.data_fingerprint_},
    )


def write_video_tag_embeddings(
    out_dir: str | Path,
    video_ids: Any,
    e_bar: np.ndarray,
    has_tags: np.ndarray,
    event_timestamp: Any,
    embedder: TagGraphEmbedder,
    created: datetime | None = None,
) -> Path:
    """VIDEO_TAG_EMBEDDINGS: video_id | video_tag_embedding list<float32> (ē) | has_tags | event_timestamp | created."""
    e_bar = _as_matrix("e_bar", e_bar)
    n = len(e_bar)
    has_tags = np.asarray(has_tags, dtype=bool)
    if has_tags.shape != (n,):
        raise ValueError(f"has_tags: expected {n} flags, got shape {has_tags.shape}")
    created = created or utc_now()
    table = pa.table(
        {
            "video_id": pa.array(_video_ids(video_ids, n), type=pa.int64()),
            "video_tag_embedding": _fixed_lists(e_bar, pa.float32()),
            "has_tags": pa.array(has_tags, type=pa.bool_()),
            "event_timestamp": _utc_timestamps(event_timestamp, n, "event_timestamp"),
            "created": _utc_timestamps(created, n, "created"),
        }
    )
    return _write_table(
        Path(out_dir),
        tables.VIDEO_TAG_EMBEDDINGS,
        table,
        {"tag_graph": _estimator_config(embedder)},
        {"tag_graph_fit": embedder.data_fingerprint_},
    )


def write_video_topics(
    out_dir: str | Path,
    video_ids: Any,
    model: TopicModel,
    assignment: TopicAssignment,
    event_timestamp: Any,
    created: datetime | None = None,
) -> Path:
    """VIDEO_TOPICS: video_id | topic_ids list<int64> | topic_weights list<float32> | topic_feature list<float32>[8]
    | n_topics int64 | event_timestamp | created."""
    n = len(assignment)
    features = model.topic_features(assignment)  # (n, 8)
    created = created or utc_now()
    table = pa.table(
        {
            "video_id": pa.array(_video_ids(video_ids, n), type=pa.int64()),
            "topic_ids": _ragged_lists(assignment.offsets, assignment.topic_ids.astype(np.int64), pa.int64()),
            "topic_weights": _ragged_lists(assignment.offsets, assignment.weights.astype(np.float32), pa.float32()),
            "topic_feature": _fixed_lists(features, pa.float32()),
            "n_topics": pa.array(assignment.counts.astype(np.int64), type=pa.int64()),
            "event_timestamp": _utc_timestamps(event_timestamp, n, "event_timestamp"),
            "created": _utc_timestamps(created, n, "created"),
        }
    )
    return _write_table(
        Path(out_dir), tables.VIDEO_TOPICS, table, {"topics": _estimator_config(model)}, {"topics_fit": model.data_fingerprint_}
    )


def write_topic_centroids(
    out_dir: str | Path, model: TopicModel, assignment: TopicAssignment, event_timestamp: Any, created: datetime | None = None
) -> Path:
    """TOPIC_CENTROIDS: topic_id | centroid list<float32> | topic_embedding list<float32>[8] | n_videos int64
    | event_timestamp | created. ``n_videos`` counts the videos whose topic list holds the topic (its queue size)."""
    model._check_fitted()
    n_topics = len(model.cluster_centers_)
    created = created or utc_now()
    table = pa.table(
        {
            "topic_id": pa.array(np.arange(n_topics, dtype=np.int64), type=pa.int64()),
            "centroid": _fixed_lists(model.cluster_centers_.astype(np.float32), pa.float32()),
            "topic_embedding": _fixed_lists(model.topic_embeddings_.astype(np.float32), pa.float32()),
            "n_videos": pa.array(np.bincount(assignment.topic_ids, minlength=n_topics).astype(np.int64), type=pa.int64()),
            "event_timestamp": _utc_timestamps(event_timestamp, n_topics, "event_timestamp"),
            "created": _utc_timestamps(created, n_topics, "created"),
        }
    )
    return _write_table(
        Path(out_dir), tables.TOPIC_CENTROIDS, table, {"topics": _estimator_config(model)}, {"topics_fit": model.data_fingerprint_}
    )


def write_topic_tables(
    out_dir: str | Path,
    video_ids: Any,
    embedder: TagGraphEmbedder,
    e_bar: np.ndarray,
    has_tags: np.ndarray,
    model: TopicModel,
    assignment: TopicAssignment,
    event_timestamp: Any,
    video_event_timestamps: Any | None = None,
) -> dict[str, Path]:
    """Write VIDEO_TOPICS, TAG_EMBEDDINGS, VIDEO_TAG_EMBEDDINGS and TOPIC_CENTROIDS under ``out_dir``.

    ``event_timestamp`` (timezone-aware) stamps the tag and topic tables, and the video tables unless
    ``video_event_timestamps`` gives one time per video (e.g. ``publish_ts``). Every table shares one
    ``created`` time. Returns {table file name: path}.
    """
    created = utc_now()
    per_video = event_timestamp if video_event_timestamps is None else video_event_timestamps
    paths = [
        write_video_topics(out_dir, video_ids, model, assignment, per_video, created),
        write_tag_embeddings(out_dir, embedder, event_timestamp, created),
        write_video_tag_embeddings(out_dir, video_ids, e_bar, has_tags, per_video, embedder, created),
        write_topic_centroids(out_dir, model, assignment, event_timestamp, created),
    ]
    return {path.name: path for path in paths}
