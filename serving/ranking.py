"""Online ranking: candidates from the topic queues, their features from the online store, scores from a ranker.

One request for user u::

    CandidateGenerator.candidates(u)  ──► N3 candidates + u's last N1 clicks and their topics (already read)
    fetch_features(candidates)        ──► topic ids, weights, 8-dim topic vector per candidate (Feast online store)
    user_features(result)             ──► u's history videos and voted topics, as training computed them
    exposure history (optional)       ──► u's exposures and clicks, overall and per candidate topic (Redis hash the
                                          stream keeps with stream.user_exposure_counts), for rankers trained with them
    Ranker.predict_inputs             ──► P(click) per candidate ──► top k

:func:`demo_text` (and :func:`demo`, which prints it) shows a few users' candidates and ranked results.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.candidates import CandidateGenerator, CandidateResult, vote_topics
from serving.features import OnlineFetcher, UserExposureHistory, online_fetcher
from serving.padding import PADDING, pad_lists
from serving.rankers import Ranker, RankerInputs

logger = logging.getLogger(__name__)


@dataclass
class Ranked:
    candidates: CandidateResult
    video_ids: np.ndarray  # (k,) int64, best first
    scores: np.ndarray  # (k,) float32 P(click), same order


def user_features(result: CandidateResult, history_videos: int, history_topics: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The user's history inputs from the clicks candidate generation read: (H,) video ids, (M,) topic ids, (M,) vote shares.

    Same definition as training (:func:`serving.features.user_history`): the latest clicked videos, and the
    top topics voted by the last N1 clicks with votes / number of clicks.
    """
    videos = pad_lists([result.clicked[:history_videos]], history_videos, np.int64, PADDING)[0]
    top = vote_topics(result.clicked_topics, history_topics) if result.clicked else []
    topics = pad_lists([[t for t, _ in top]], history_topics, np.int64, PADDING)[0]
    shares = pad_lists([[votes / len(result.clicked) for _, votes in top]], history_topics, np.float32, 0.0)[0]
    return videos, topics, shares


class RankingService:
    """retrieve N3 candidates -> fetch their features (online store) -> score with the ranker -> top k."""

    def __init__(self, generator: CandidateGenerator, fetch_features: OnlineFetcher | None, ranker: Ranker):
        if ranker.features == "topic" and fetch_features is None:
            raise ValueError("a ranker with topic features needs an online feature fetcher")
        if ranker.features == "content":
            raise ValueError("the content-embedding ranker is for the Fig. 6 cost comparison only; serve a 'base' or 'topic' ranker")
        self.generator = generator
        self.fetch_features = fetch_features
        self.ranker = ranker

    def rank(self, user_id: int, k: int = 10, n_candidates: int | None = None) -> Ranked:
        result = self.generator.candidates(user_id, n_candidates)
        video_ids = np.fromiter((c.video_id for c in result.candidates), dtype=np.int64, count=len(result.candidates))
        n = len(video_ids)
        if n == 0:
            return Ranked(result, video_ids, np.zeros(0, dtype=np.float32))
        ranker = self.ranker
        history, user_topics, user_shares = user_features(result, ranker.history_videos, ranker.history_topics)
        inputs = RankerInputs(np.full(n, user_id, dtype=np.int64), video_ids, np.broadcast_to(history, (n, len(history))))
        if ranker.features == "topic":
            features = self.fetch_features(video_ids)
            inputs.topic_ids = features.topic_ids[:, : ranker.max_topics_per_video]
            inputs.topic_weights = features.topic_weights[:, : ranker.max_topics_per_video]
            inputs.topic_feature = features.topic_feature
            inputs.history_topic_ids = np.broadcast_to(user_topics, (n, len(user_topics)))
            inputs.history_topic_weights = np.broadcast_to(user_shares, (n, len(user_shares)))
        if ranker.exposure_history:
            seen = UserExposureHistory.from_hash(self.generator.exposure_history(user_id), user_id)
            inputs.user_exposures = np.full(n, seen.exposures, dtype=np.int64)
            inputs.user_clicks = np.full(n, seen.clicks, dtype=np.int64)
            if ranker.features == "topic":
                inputs.topic_exposures, inputs.topic_clicks = seen.for_topics(inputs.topic_ids)
        scores = ranker.predict_inputs(inputs)  # (n,)
        order = np.argsort(-scores, kind="stable")[:k]
        return Ranked(result, video_ids[order], scores[order].astype(np.float32))


def ranking_service(
    settings, ranker_dir: str | Path, feature_repo: str | Path | None, feature_service: str | None = None
) -> RankingService:
    """A :class:`RankingService` over the Redis in ``settings`` (a single Redis or a Redis Cluster, through
    :func:`topicfs.redis_client.sync_client` and the :class:`topicfs.keys.KeyLayout` of ``settings.redis``), a saved
    ranker and a Feast repo's online store.

    ``feature_service`` names a service of the repo holding the video_topics features (packed ones are read
    with one ``MGET``); None reads the three video_topics features through Feast's SDK.
    """
    ranker = Ranker.load(ranker_dir)
    if ranker.exposure_history and not settings.stream.user_exposure_counts:
        raise ValueError(
            f"the ranker in {ranker_dir} uses the user's exposure history (rankers.exposure_history): the stream filling this "
            "Redis must keep it (stream.user_exposure_counts = true, e.g. TOPICFS_STREAM__USER_EXPOSURE_COUNTS=true) and so must "
            "these settings"
        )
    fetcher = None
    if ranker.features == "topic":
        if feature_repo is None:
            raise ValueError(f"the ranker in {ranker_dir} uses topic features: give the Feast repo that serves them")
        fetcher = online_fetcher(feature_repo, feature_service, ranker.max_topics_per_video, settings.topics.topic_feature_dim)
    return RankingService(CandidateGenerator.from_settings(settings), fetcher, ranker)


def format_ranked(ranked: Ranked, ranker: Ranker, shown_candidates: int = 10) -> str:
    """Printable lines for one user's candidates and ranked results."""
    result = ranked.candidates
    topics = ", ".join(f"{t.topic_id} ({t.votes:g} votes, {t.n_candidates} drawn)" for t in result.topics) or "none"
    return "\n".join(
        [
            f"user {result.user_id}: {len(result.candidates)} candidates from {result.source} topics {topics}",
            "  first candidates: " + (" ".join(str(c.video_id) for c in result.candidates[:shown_candidates]) or "-"),
            f"  ranked by {ranker.model}/{ranker.features}{' + exposure history' if ranker.exposure_history else ''}: "
            + (", ".join(f"{v} ({s:.3f})" for v, s in zip(ranked.video_ids, ranked.scores)) or "-"),
        ]
    )


def demo_text(
    settings, feature_repo: str | Path | None, ranker_dir: str | Path, user_ids: list[int], k: int = 5, feature_service: str | None = None
) -> str:
    """Candidates and ranked results for ``user_ids`` as text: queues in the Redis of ``settings`` (filled by the
    stream), topic features from ``feature_repo``'s online store, the ranker saved in ``ranker_dir``."""
    service = ranking_service(settings, ranker_dir, feature_repo, feature_service)
    return "\n".join(format_ranked(service.rank(user_id, k=k), service.ranker) for user_id in user_ids)


def demo(
    settings, feature_repo: str | Path | None, ranker_dir: str | Path, user_ids: list[int], k: int = 5, feature_service: str | None = None
) -> None:
    """Print :func:`demo_text`."""
    print(demo_text(settings, feature_repo, ranker_dir, user_ids, k, feature_service))
