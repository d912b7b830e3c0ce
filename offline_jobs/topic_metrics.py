"""Clustering metrics of the MTL paper's Table I and Fig. 3, as plain functions over arrays.

Table I clusters held-out videos with k-means (K = number of classes) and scores the clusters against
the classes with ARI and NMI; Fig. 3 compares how far apart classes lie with how tight they are.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero (a video with nothing to show)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x, dtype=np.float32), where=norms > 0).astype(np.float32)


def cluster_scores(features: np.ndarray, labels: np.ndarray, seed: int = 0, n_init: int = 4) -> tuple[float, float]:
    """k-means with K = number of distinct labels on L2-normalised features; returns (ARI, NMI) against labels."""
    if len(features) != len(labels):
        raise ValueError(f"cluster_scores: {len(features)} feature rows but {len(labels)} labels")
    _, label_ids = np.unique(labels, return_inverse=True)
    k = int(label_ids.max()) + 1
    if k < 2 or len(features) <= k:
        raise ValueError(f"cluster_scores: need more rows ({len(features)}) than classes ({k}) and at least 2 classes")
    clusters = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(l2_normalise(features))
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
