"""Clustering metrics of the MTL paper's Table I and Fig. 3, as plain functions over arrays.

Table I clusters held-out videos with k-means (K = number of classes) and scores the clusters against
the classes with ARI and NMI; Fig. 3 compares how far apart classes lie with how tight they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from offline_jobs.topics import masked_kmeans


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero (a video with nothing to show)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x, dtype=np.float32), where=norms > 0).astype(np.float32)


def cluster_scores(
    features: np.ndarray, labels: np.ndarray, seed: int = 0, n_init: int = 4, halves: Sequence[int] | None = None
) -> tuple[float, float]:
    """k-means with K = number of distinct labels on L2-normalised features; returns (ARI, NMI) against labels.

    ``halves`` (widths adding up to the columns): the features are parts of which a row may lack some (all zero), e.g.
    a = [ē/‖ē‖, z/‖z‖] of a tagless video; each part is L2-normalised and k-means compares a row on the parts it has
    (:func:`offline_jobs.topics.masked_kmeans`, Euclidean, ``n_init`` runs, at most 300 Lloyd steps as scikit-learn's);
    on rows that have every part it is the k-means of the default path."""
    if len(features) != len(labels):
        raise ValueError(f"cluster_scores: {len(features)} feature rows but {len(labels)} labels")
    _, label_ids = np.unique(labels, return_inverse=True)
    k = int(label_ids.max()) + 1
    if k < 2 or len(features) <= k:
        raise ValueError(f"cluster_scores: need more rows ({len(features)}) than classes ({k}) and at least 2 classes")
    if halves is None:
        clusters = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(l2_normalise(features))
    else:
        stops = np.cumsum(halves)
        units = np.concatenate([l2_normalise(features[:, stop - width : stop]) for width, stop in zip(halves, stops)], axis=1)
        rng = np.random.default_rng(seed)
        _, clusters, _ = masked_kmeans(units, halves, k, rng, spherical=False, max_iter=300, n_init=n_init, sample_size=len(units))
    return float(adjusted_rand_score(label_ids, clusters)), float(normalized_mutual_info_score(label_ids, clusters))


def inter_intra_ratio(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean distance between class centres over mean distance of a video to its class centre (Fig. 3).

    Higher is better: classes far apart and tight. Computed on L2-normalised features so that
    representations of different sizes and scales compare.
    """
    x = l2_normalise(features)
    classes, label_ids = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("inter_intra_ratio: need at least 2 classes")
    centres = np.stack([x[label_ids == c].mean(axis=0) for c in range(len(classes))])  # (C, d)
    intra = float(np.linalg.norm(x - centres[label_ids], axis=1).mean())
    diff = centres[:, None, :] - centres[None, :, :]  # (C, C, d)
    pair = np.linalg.norm(diff, axis=2)[np.triu_indices(len(classes), k=1)]
    return float(pair.mean() / intra) if intra > 0 else float("inf")
