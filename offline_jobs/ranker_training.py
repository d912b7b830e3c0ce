"""Ranker training on a click log with point-in-time features from a Feast repo; shared by the CLI and the demo.

::

    from offline_jobs.ranker_training import train_ranker
    ranker_dir = train_ranker(clicks, settings, feature_repo="feature_repo")   # DCN with topic features

``clicks`` is the offline interactions contract (user_id, video_id, clicked 0/1, ts). Every row gets the
video's topic features as of its time from Feast's offline store (``get_historical_features``) and the
user's history before it (:func:`serving.features.user_history`), then the ranker is fitted and saved with
its config beside the weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from serving.features import FeastHistoricalFetcher, HistoricalFetcher, build_training_frame
from serving.rankers import MODELS, Ranker
from topicfs.settings import Settings

logger = logging.getLogger(__name__)


def training_frame(entity_df: pd.DataFrame, fetch_features: HistoricalFetcher | None, settings: Settings) -> pd.DataFrame:
    """:func:`serving.features.build_training_frame` with the sizes from ``settings`` (N1, history lengths, topic dim)."""
    return build_training_frame(
        entity_df,
        fetch_features,
        settings.topics.topic_feature_dim,
        recent_clicks=settings.stream.recent_clicks,
        history_videos=settings.rankers.history_videos,
        history_topics=settings.rankers.history_topics,
    )


def train_ranker(
    clicks: pd.DataFrame,
    settings: Settings,
    feature_repo: str | Path | None = None,
    *,
    model: str = "dcn",
    with_topics: bool = True,
    feature_service: str | None = None,
    out_dir: str | Path | None = None,
) -> Path:
    """Train a ranker on ``clicks`` and save it; returns its folder.

    ``feature_repo`` is the Feast repo whose offline store serves the ``video_topics`` features (needed
    with topics); ``feature_service`` names a service of it to read instead of the three topic features.
    The folder defaults to ``<models_dir>/ranker_<model>_<topic|base>``.
    """
    from topicfs.contracts import validate_interactions

    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    if with_topics and feature_repo is None:
        raise ValueError("a ranker with topic features needs feature_repo (a Feast repo serving video_topics)")
    log, _ = validate_interactions(clicks, "<click log>")
    entity = log[["user_id", "video_id", "ts", "clicked"]].rename(columns={"ts": "event_timestamp", "clicked": "label"})
    features = "topic" if with_topics else "base"
    fetcher = None
    if with_topics:
        fetcher = FeastHistoricalFetcher(feature_repo, feature_service) if feature_service else FeastHistoricalFetcher(feature_repo)
    frame = training_frame(entity, fetcher, settings)
    torch.set_num_threads(settings.rankers.torch_threads)
    ranker = Ranker.from_config(settings.rankers, model, features, settings.topics).fit(frame)
    out = Path(out_dir) if out_dir is not None else settings.paths.models_dir / f"ranker_{model}_{features}"
    ranker.save(out)
    logger.info("saved %s/%s ranker (%d parameters, %d training rows) to %s", model, features, ranker.n_parameters(), len(frame), out)
    return out
