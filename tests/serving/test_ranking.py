"""Training on a click log through a Feast repo, then serving: candidates from Redis, features from the online store, scores."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from serving.features import VIDEO_TOPICS_SERVICE, FeastOnlineFetcher, PackedOnlineFetcher, make_video_topics_repo, user_history
from serving.ranking import demo_text, ranking_service
from serving.rankers import Ranker
from offline_jobs.ranker_training import train_ranker
from topicfs import keys
from topicfs.keys import KeyLayout
from topicfs.redis_client import sync_client
from topicfs.settings import RedisConfig, Settings

PREFIX = "rk"
N_VIDEOS, N_TOPICS = 40, 4


def _video_topics(path) -> pd.DataFrame:
    ids = np.arange(1, N_VIDEOS + 1)
    at = pd.Timestamp("2026-01-01", tz="UTC")
    table = pd.DataFrame(
        {
            "video_id": ids.astype(np.int64),
            "topic_ids": [np.array([v % N_TOPICS, (v + 1) % N_TOPICS], dtype=np.int64) for v in ids],
            "topic_weights": [np.array([0.9, 0.61], dtype=np.float32)] * N_VIDEOS,
            "topic_feature": [np.eye(8, dtype=np.float32)[v % N_TOPICS] for v in ids],
            "event_timestamp": at,
            "created": at,
        }
    )
    table.to_parquet(path, index=False)
    return table


def _clicks(seed: int = 3) -> pd.DataFrame:
    """Users like the topic user_id % 4; videos of it are clicked far more often."""
    rng = np.random.default_rng(seed)
    n = 3000
    users = rng.integers(0, 20, n)
    videos = rng.integers(1, N_VIDEOS + 1, n)
    p = np.where(videos % N_TOPICS == users % N_TOPICS, 0.6, 0.05)
    ts = pd.Timestamp("2026-01-02", tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 86400 * 3, n)), unit="s")
    return pd.DataFrame({"user_id": users, "video_id": videos, "clicked": (rng.random(n) < p).astype(np.int8), "ts": ts})


@pytest.fixture()
def served(redis_url, tmp_path):
    """A Feast repo over the table, materialised into the private Redis, a trained DCN and a hand-built queue state."""
    table = _video_topics(tmp_path / "video_topics.parquet")
    repo = make_video_topics_repo(tmp_path / "repo", tmp_path / "video_topics.parquet", redis_url=redis_url)
    from feast import FeatureStore

    FeatureStore(repo_path=str(repo)).materialize(datetime(2025, 12, 1, tzinfo=timezone.utc), datetime(2026, 2, 1, tzinfo=timezone.utc))
    settings = Settings(
        redis={"url": redis_url, "key_prefix": PREFIX}, rankers={"epochs": 2}, paths={"artifacts_dir": tmp_path / "artifacts"}
    )
    ranker_dir = train_ranker(_clicks(), settings, repo, out_dir=tmp_path / "dcn")

    _write_queue_state(redis.Redis.from_url(redis_url), KeyLayout.from_config(settings.redis), table)
    return settings, repo, ranker_dir, table


def _write_queue_state(client, layout: KeyLayout, table: pd.DataFrame) -> None:
    for topic in range(N_TOPICS):
        members = [v for v in range(1, N_VIDEOS + 1) if v % N_TOPICS == topic]
        client.zadd(layout.queue(topic), {str(v): float(100 - v) for v in members})
    for row in table.itertuples():
        client.set(layout.video_topics(row.video_id), keys.encode_ids(row.topic_ids))
    client.rpush(layout.user_clicks(1), 5, 9, 13, 2)  # newest first: topics [1, 2], [1, 2], [1, 2], [2, 3]


def _offline_rows_of_user_1(table: pd.DataFrame, drawn: list[int]) -> pd.DataFrame:
    """Training's rows for user 1 (clicks of the ``served`` state) and the ``drawn`` videos: topic features from the
    table, the history as :func:`user_history` computes it."""
    features = table.set_index("video_id").loc[drawn]
    clicks_at_request = pd.DataFrame(
        {
            "user_id": 1,
            "video_id": [2, 13, 9, 5, 0],
            "label": [1, 1, 1, 1, 0],
            "topic_ids": [[2, 3], [1, 2], [1, 2], [1, 2], []],
            "event_timestamp": pd.to_datetime([1, 2, 3, 4, 5], unit="s", utc=True),
        }
    )
    history, topics, shares = (column[-1] for column in user_history(clicks_at_request, 128, 20, 8))
    return pd.DataFrame(
        {
            "user_id": 1,
            "video_id": drawn,
            "history_video_ids": [history] * len(drawn),
            "topic_ids": list(features["topic_ids"]),
            "topic_weights": list(features["topic_weights"]),
            "topic_feature": list(features["topic_feature"]),
            "history_topic_ids": [topics] * len(drawn),
            "history_topic_weights": [shares] * len(drawn),
        }
    )


@pytest.mark.integration
def test_train_ranker_saves_a_dcn_with_topic_features(served):
    settings, _, ranker_dir, _ = served
    ranker = Ranker.load(ranker_dir)
    assert (ranker.model, ranker.features) == ("dcn", "topic")
    assert ranker_dir.name == "dcn" and (ranker_dir / "ranker.pt").exists()
    assert set(ranker.topic_vocabulary_) == set(range(N_TOPICS))


@pytest.mark.integration
def test_ranking_scores_candidates_with_online_features_as_training_would(served):
    settings, repo, ranker_dir, table = served
    service = ranking_service(settings, ranker_dir, repo, VIDEO_TOPICS_SERVICE)
    assert isinstance(service.fetch_features, PackedOnlineFetcher)
    ranked = service.rank(1, k=5, n_candidates=12)
    drawn = [c.video_id for c in ranked.candidates.candidates]
    assert len(drawn) == 12 and not {5, 9, 13, 2} & set(drawn)
    assert len(ranked.video_ids) == 5 and set(ranked.video_ids) <= set(drawn)
    assert np.all(np.diff(ranked.scores) <= 0)

    # the same rows scored offline: features from the table, the history as training computes it
    expected = service.ranker.predict_proba(_offline_rows_of_user_1(table, drawn))
    order = np.argsort(-expected, kind="stable")[:5]
    np.testing.assert_array_equal(ranked.video_ids, np.asarray(drawn)[order])
    np.testing.assert_allclose(ranked.scores, expected[order], rtol=1e-5)


@pytest.mark.integration
def test_ranking_reads_candidates_and_exposures_from_a_redis_cluster(served, redis_cluster):
    """The same queue state on a 3-master cluster (5 shards): the ranking service, built from the settings, reads it
    through the cluster client and ranks exactly as on the single Redis."""
    settings, repo, ranker_dir, table = served
    for node in redis_cluster.nodes:
        redis.Redis.from_url(node.url).flushall()
    cluster = settings.model_copy(update={"redis": RedisConfig(url=redis_cluster.url, key_prefix=PREFIX, cluster=True, shards=5)})
    client = sync_client(cluster.redis)
    _write_queue_state(client, KeyLayout.from_config(cluster.redis), table)
    on_cluster = ranking_service(cluster, ranker_dir, repo, VIDEO_TOPICS_SERVICE)
    assert not on_cluster.generator.server_side
    on_single = ranking_service(settings, ranker_dir, repo, VIDEO_TOPICS_SERVICE)
    ranked, expected = on_cluster.rank(1, k=5, n_candidates=12), on_single.rank(1, k=5, n_candidates=12)
    assert ranked.candidates == expected.candidates
    np.testing.assert_array_equal(ranked.video_ids, expected.video_ids)
    np.testing.assert_allclose(ranked.scores, expected.scores)
    client.hset(KeyLayout.from_config(cluster.redis).user_exposures(1), mapping={"e": 4, "c": 1})
    assert on_cluster.generator.exposure_history(1) == {b"e": b"4", b"c": b"1"}
    client.close()


@pytest.mark.integration
def test_packed_and_sdk_online_reads_agree(served):
    _, repo, _, _ = served
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    ids = [3, 40, 999, 7]  # 999 has no features online
    packed, sdk = PackedOnlineFetcher(store, VIDEO_TOPICS_SERVICE)(ids), FeastOnlineFetcher(store)(ids)
    for name in ("topic_ids", "topic_weights", "topic_feature"):
        np.testing.assert_allclose(getattr(packed, name), getattr(sdk, name), rtol=1e-6)
    assert packed.topic_ids[2].tolist() == [-1] * 8 and not packed.topic_feature[2].any()


@pytest.mark.integration
def test_demo_text_shows_candidates_and_ranked_results(served):
    settings, repo, ranker_dir, _ = served
    text = demo_text(settings, repo, ranker_dir, [1, 77], k=3, feature_service=VIDEO_TOPICS_SERVICE)
    lines = text.splitlines()
    assert lines[0].startswith("user 1: ") and "from history topics 2 (4 votes, " in lines[0]
    assert lines[2].startswith("  ranked by dcn/topic: ") and lines[2].count("(") == 3
    assert lines[3].startswith("user 77: ") and "popular" not in lines[3]  # no history and no popular topics: none


def test_train_ranker_needs_a_feature_repo_for_topics(tmp_path):
    with pytest.raises(ValueError, match="feature_repo"):
        train_ranker(_clicks(), Settings(), None)
    with pytest.raises(ValueError, match="model must be one of"):
        train_ranker(_clicks(), Settings(), tmp_path, model="gbdt")


def test_video_topics_repo_under_a_relative_folder(tmp_path, monkeypatch):
    """`topicfs serve table2` puts its private repo under the relative reports folder: Feast must find the registry."""
    monkeypatch.chdir(tmp_path)
    _video_topics(tmp_path / "video_topics.parquet")
    repo = make_video_topics_repo(Path("reports") / "table2" / "feature_repo", "video_topics.parquet")
    assert repo.is_absolute() and (repo / "registry.db").exists()
    from feast import FeatureStore

    assert [view.name for view in FeatureStore(repo_path=str(repo)).list_feature_views()] == ["video_topics"]


@pytest.mark.integration
def test_a_ranker_trained_with_the_exposure_history_is_served_the_streams_counts(served, tmp_path):
    settings, repo, _, table = served
    trained = settings.model_copy(update={"rankers": settings.rankers.model_copy(update={"exposure_history": True})})
    ranker_dir = train_ranker(_clicks(), trained, repo, out_dir=tmp_path / "dcn_exposures")
    with pytest.raises(ValueError, match="user_exposure_counts"):
        ranking_service(trained, ranker_dir, repo, VIDEO_TOPICS_SERVICE)

    serving = trained.model_copy(update={"stream": trained.stream.model_copy(update={"user_exposure_counts": True})})
    client = redis.Redis.from_url(settings.redis.url)
    # what a stream with user_exposure_counts wrote for user 1; one corrupt field is skipped, the rest still serve
    layout = KeyLayout.from_config(settings.redis)
    client.hset(layout.user_exposures(1), mapping={"e": 40, "c": 9, "e:1": 12, "c:1": 7, "e:2": 30, "c:2": 2, "e:3": 5, "bogus": "x"})
    service = ranking_service(serving, ranker_dir, repo, VIDEO_TOPICS_SERVICE)
    ranked = service.rank(1, k=12, n_candidates=12)
    drawn = [c.video_id for c in ranked.candidates.candidates]
    assert len(drawn) == 12

    features = table.set_index("video_id").loc[drawn]
    per_topic = {1: (12, 7), 2: (30, 2), 3: (5, 0)}
    offline = _offline_rows_of_user_1(table, drawn).assign(
        user_exposures=40,
        user_clicks=9,
        topic_exposures=[[per_topic.get(int(t), (0, 0))[0] for t in ts] for ts in features["topic_ids"]],
        topic_clicks=[[per_topic.get(int(t), (0, 0))[1] for t in ts] for ts in features["topic_ids"]],
    )
    expected = service.ranker.predict_proba(offline)
    order = np.argsort(-expected, kind="stable")
    np.testing.assert_array_equal(ranked.video_ids, np.asarray(drawn)[order])
    np.testing.assert_allclose(ranked.scores, expected[order], rtol=1e-5)

    # a user the stream never saw: zero counts, as training gives a user's first row
    client.delete(layout.user_exposures(1))
    unseen = service.rank(1, k=12, n_candidates=12)
    zeros = offline.assign(
        user_exposures=0,
        user_clicks=0,
        topic_exposures=[[0] * len(t) for t in features["topic_ids"]],
        topic_clicks=[[0] * len(t) for t in features["topic_ids"]],
    )
    np.testing.assert_allclose(np.sort(unseen.scores), np.sort(service.ranker.predict_proba(zeros)), rtol=1e-5)
