"""Ragged id and weight lists as fixed-width arrays, shared by feature assembly and the rankers (numpy only, no torch)."""

from __future__ import annotations

import numpy as np

PADDING = -1  # raw id of an empty list slot in serving.rankers.RankerInputs and serving.features.VideoTopicFeatures


def pad_lists(values, width: int, dtype, fill) -> np.ndarray:
    """A column of lists -> (N, width) array, cut at ``width``, padded with ``fill``."""
    out = np.full((len(values), width), fill, dtype=dtype)
    for row, value in enumerate(values):
        if value is not None and len(value):
            k = min(len(value), width)
            out[row, :k] = np.asarray(value[:k], dtype=dtype)
    return out
