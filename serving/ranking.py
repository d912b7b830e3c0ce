"""Online ranking: candidates from the topic queues, their features from the online store, scores from a ranker."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import redis

from serving.candidates import CandidateGenerator, CandidateResult
from serving.features import OnlineFetcher, fill_missing_features
from serving.rankers import Ranker

logger = logging.getLogger(__name__)


@dataclass
class Ranked:
    candidates: CandidateResult
    video_ids: np.ndarray  # (k,) int64, best first
    scores: np.ndarray  # (k,) float32 P(click), same order


class RankingService:
    """retrieve N3 candidates -> fetch their features (online store) -> score with the ranker -> top k."""

    def __init__(self, generator: CandidateGenerator, fetch_features: OnlineFetcher | None, ranker: Ranker, topic_feature_dim: int = 8):
        if ranker.features == "topic" and fetch_features is None:
            raise ValueError("a ranker with topic features needs an online feature fetcher")
        if ranker.features == "content":
            raise ValueError("the content-embedding ranker is for the Fig. 6 cost comparison only; serve a 'base' or 'topic' ranker")
        self.generator = generator
        self.fetch_features = fetch_features
        self.ranker = ranker
        self.topic_feature_dim = topic_feature_dim

    def rank(self, user_id: int, k: int = 10, n_candidates: int | None = None) -> Ranked:
        result = self.generator.candidates(user_id, n_candidates)
        video_ids = np.fromiter((c.video_id for c in result.candidates), dtype=np.int64, count=len(result.candidates))
        if len(video_ids) == 0:
            return Ranked(result, video_ids, np.zeros(0, dtype=np.float32))
        frame = pd.DataFrame({"user_id": np.full(len(video_ids), user_id, dtype=np.int64), "video_id": video_ids})
        if self.ranker.features == "topic":
            features = self.fetch_features(video_ids.tolist())
            frame = fill_missing_features(
                frame.assign(**{c: features[c].to_numpy() for c in ("topic_ids", "topic_weights", "topic_feature")}), self.topic_feature_dim
            )
        scores = self.ranker.predict_proba(frame)  # (n,)
        order = np.argsort(-scores, kind="stable")[:k]
        return Ranked(result, video_ids[order], scores[order].astype(np.float32))


def demo(redis_url: str, ranker_dir: str, feature_repo: str | None, user_ids: list[int], settings, k: int = 5) -> None:
    """Print the candidates and the ranked results for a few users (queues filled by the stream, a trained ranker)."""
    from serving.features import FeastOnlineFetcher

    serving_config = settings.serving
    client = redis.Redis.from_url(redis_url, socket_timeout=serving_config.redis_timeout_s, socket_connect_timeout=serving_config.redis_timeout_s)
    generator = CandidateGenerator(
        client, settings.redis.key_prefix, serving_config.recent_clicks, serving_config.topics_per_user, serving_config.n_candidates
    )
    ranker = Ranker.load(ranker_dir)
    fetcher = FeastOnlineFetcher(feature_repo) if ranker.features == "topic" else None
    service = RankingService(generator, fetcher, ranker, settings.topics.topic_feature_dim)
    for user_id in user_ids:
        ranked = service.rank(user_id, k=k)
        result = ranked.candidates
        topics = ", ".join(f"{t.topic_id} ({t.votes:g} votes, {t.n_candidates} drawn)" for t in result.topics) or "none"
        print(f"user {user_id}: {len(result.candidates)} candidates from {result.source} topics {topics}")
        print("  first candidates: " + " ".join(str(c.video_id) for c in result.candidates[:10]))
        print(f"  ranked by {ranker.model}/{ranker.features}: " + ", ".join(f"{v} ({s:.3f})" for v, s in zip(ranked.video_ids, ranked.scores)))
