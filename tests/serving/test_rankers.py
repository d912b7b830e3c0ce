"""Rankers (LR, EMLP, DCN): estimator contract, persistence, input errors, and that topic features carry signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from serving.candidates import vote_topics
from serving.features import exposure_history, user_history
from serving.rankers import MODELS, Ranker, RankerInputs, exposure_features, topic_affinity
from offline_jobs.table2 import Table2Row, time_split, to_markdown, withhold_video_ids


def _frame(n_rows: int, n_users: int, video_ids: np.ndarray, seed: int, with_content: bool = False) -> pd.DataFrame:
    """Users like one of 4 topics; a video's topic decides the click, so its topic ids carry the signal."""
    rng = np.random.default_rng(seed)
    topic_vectors = np.eye(4, 8, dtype=np.float32)
    users = rng.integers(0, n_users, n_rows)
    videos = rng.choice(video_ids, n_rows)
    video_topic = videos % 4
    liked = users % 4
    p = np.where(video_topic == liked, 0.6, 0.1)
    frame = pd.DataFrame(
        {
            "user_id": users,
            "video_id": videos,
            "event_timestamp": pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.arange(n_rows), unit="s"),
            "label": (rng.random(n_rows) < p).astype(np.int8),
            "topic_ids": [[int(t)] for t in video_topic],
            "topic_weights": [[0.9]] * n_rows,
            "topic_feature": [topic_vectors[t] for t in video_topic],
            **({"content_embedding": [rng.normal(size=128).astype(np.float32) for _ in range(n_rows)]} if with_content else {}),
        }
    )
    frame["history_video_ids"], frame["history_topic_ids"], frame["history_topic_weights"] = user_history(frame, 128, 20, 8)
    return frame


@pytest.fixture(scope="module")
def data():
    # test videos are new (ids 1000+): only topic features can tell which ones a user likes
    return _frame(3000, 40, np.arange(0, 200), seed=1), _frame(1000, 40, np.arange(1000, 1100), seed=2)


@pytest.mark.parametrize("model", MODELS)
def test_topic_features_help_on_new_videos(model, data):
    train, test = data
    auc = {}
    for features in ("base", "topic"):
        ranker = Ranker(
            model, features, epochs=10, batch_size=256, learning_rate=1e-2, cross_buckets=4099, show_progress=False, random_state=0
        )
        assert ranker.fit(train) is ranker
        proba = ranker.predict_proba(test)
        assert proba.shape == (len(test),) and np.all((proba > 0) & (proba < 1))
        auc[features] = roc_auc_score(test["label"], proba)
    assert auc["topic"] > auc["base"] + 0.1, auc


def test_same_seed_same_model_and_save_load_roundtrip(tmp_path, data):
    train, test = data
    a = Ranker("dcn", "topic", epochs=1, random_state=3, show_progress=False).fit(train)
    b = Ranker("dcn", "topic", epochs=1, random_state=3, show_progress=False).fit(train)
    np.testing.assert_allclose(a.predict_proba(test), b.predict_proba(test), rtol=1e-6)
    loaded = Ranker.load(a.save(tmp_path / "dcn"))
    np.testing.assert_allclose(loaded.predict_proba(test), a.predict_proba(test), rtol=1e-6)
    assert loaded.get_params() == a.get_params()
    assert a.loss_curve_ and a.n_parameters() > 0


def test_content_feature_set_uses_the_128_dim_vector():
    frame = _frame(500, 10, np.arange(50), seed=4, with_content=True)
    ranker = Ranker("emlp", "content", epochs=1, show_progress=False).fit(frame)
    assert ranker.dense_dim_ == 128
    with pytest.raises(ValueError, match="128"):
        ranker.predict_proba(frame.assign(content_embedding=[np.zeros(8, np.float32)] * len(frame)))


def test_input_errors_name_the_problem(data, tmp_path):
    train, _ = data
    with pytest.raises(ValueError, match="topic_feature"):
        Ranker("lr", "topic", show_progress=False).fit(train.drop(columns="topic_feature"))
    with pytest.raises(ValueError, match="model must be one of"):
        Ranker("gbdt", "base", show_progress=False).fit(train)
    with pytest.raises(RuntimeError, match="not fitted"):
        Ranker("lr", "base").predict_proba(train)
    with pytest.raises(ValueError, match="empty"):
        Ranker("lr", "base").fit(train.iloc[:0])
    with pytest.raises(FileNotFoundError, match="ranker.json"):
        Ranker.load(tmp_path)


def test_unseen_ids_and_videos_without_topics_are_scored():
    train = _frame(500, 10, np.arange(20), seed=5)
    ranker = Ranker("dcn", "topic", epochs=1, show_progress=False).fit(train)
    cold = pd.DataFrame(
        {
            "user_id": [999],
            "video_id": [12345],
            "history_video_ids": [[]],
            "topic_ids": [[]],
            "topic_weights": [[]],
            "topic_feature": [[0.0] * 8],
            "history_topic_ids": [[]],
            "history_topic_weights": [[]],
        }
    )
    assert np.isfinite(ranker.predict_proba(cold)).all()


def test_time_split_moves_the_cut_by_whole_days():
    ts = pd.to_datetime(["2026-01-01 05:00", "2026-01-01 07:00", "2026-01-02 01:00", "2026-01-02 09:00", "2026-01-03 10:00"], utc=True)
    frame = pd.DataFrame({"event_timestamp": ts, "label": [0, 1, 0, 1, 1]})
    train, test = time_split(frame, test_days=1, min_test_fraction=0.1)
    assert len(train) == 4 and len(test) == 1
    train, test = time_split(frame, test_days=1, min_test_fraction=0.5)  # one day is 20% < 50%: two days
    assert len(train) == 2 and len(test) == 3
    with pytest.raises(ValueError, match="at least 2"):
        time_split(frame.iloc[:2], 1, 0.1)


def test_withheld_test_videos_are_new_to_the_rankers_and_keep_their_features():
    train = pd.DataFrame({"video_id": [1, 2, 3, 2], "label": [0, 1, 0, 1]})
    test = pd.DataFrame({"video_id": [2, 7, 2, 3], "topic_ids": [[4], [5], [4], [6]], "label": [1, 0, 0, 1]})
    withheld = withhold_video_ids(train, test)
    assert not set(withheld["video_id"]) & set(train["video_id"])  # no test video keeps an id seen in training
    assert withheld["video_id"].iloc[0] == withheld["video_id"].iloc[2] != withheld["video_id"].iloc[3]  # one fresh id per video
    assert withheld["video_id"].nunique() == test["video_id"].nunique()
    assert withheld["topic_ids"].tolist() == test["topic_ids"].tolist() and withheld["label"].tolist() == test["label"].tolist()
    assert test["video_id"].tolist() == [2, 7, 2, 3]  # the input is not modified
    assert withhold_video_ids(train, test.iloc[:0]).empty


def test_markdown_table():
    text = to_markdown([Table2Row("synthetic", "dcn", 0.8, 0.8123, 10, 5, 1)])
    assert "| synthetic | DCN | 80.00 | 81.23 | +1.23 | 10 | 5 | 1 |" in text


def test_user_history_sees_only_earlier_clicks_and_votes_like_candidate_generation():
    ts = pd.to_datetime(["2026-01-01 00:00", "2026-01-01 00:01", "2026-01-01 00:01", "2026-01-01 00:02", "2026-01-01 00:03"], utc=True)
    frame = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 1],
            "video_id": [10, 11, 12, 13, 14],
            "event_timestamp": ts,
            "label": [1, 1, 1, 0, 1],
            "topic_ids": [[5, 6], [6], [7, 7], [5], [8]],
        }
    )
    videos, topics, shares = user_history(frame, recent_clicks=2, history_videos=5, history_topics=3)
    assert videos[0] == [] and topics[0] == []  # nothing before the first row
    assert videos[1] == videos[2] == [10]  # rows of one refresh do not see each other's clicks
    # at 00:02 the last N1 = 2 clicks are 11 and 12 (10 fell out of the window): one vote each for 6 and 7
    assert videos[3] == [12, 11]
    clicked_topics = [[7, 7], [6]]  # newest first, as the Redis click list holds them
    assert list(zip(topics[3], shares[3])) == [(t, v / 2) for t, v in vote_topics(clicked_topics, 3)]
    assert topics[4] == topics[3]  # the non-click at 00:02 changes nothing


def test_topic_affinity_is_the_vote_share_of_the_video_topics():
    inputs = RankerInputs(
        user_id=np.zeros(2, np.int64),
        video_id=np.zeros(2, np.int64),
        history_video_ids=np.full((2, 1), -1),
        topic_ids=np.array([[3, 4], [9, -1]]),
        topic_weights=np.array([[0.5, 0.5], [1.0, 0.0]], np.float32),
        history_topic_ids=np.array([[3, 7], [3, 7]]),
        history_topic_weights=np.array([[0.6, 0.4], [0.6, 0.4]], np.float32),
    )
    np.testing.assert_allclose(topic_affinity(inputs), [0.3, 0.0], rtol=1e-6)


def test_exposure_history_counts_only_earlier_rows_per_user_and_topic():
    ts = pd.to_datetime(["2026-01-01 00:00", "2026-01-01 00:01", "2026-01-01 00:01", "2026-01-01 00:02", "2026-01-01 00:00"], utc=True)
    frame = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2],
            "event_timestamp": ts,
            "label": [1, 0, 1, 1, 0],
            "topic_ids": [[5, 6], [6], [7, 5], [5, 6], [5]],
        }
    )
    exposures, clicks, topic_exposures, topic_clicks = exposure_history(frame)
    assert exposures.tolist() == [0, 1, 1, 3, 0] and clicks.tolist() == [0, 1, 1, 2, 0]
    assert topic_exposures[0] == [0, 0] and topic_exposures[4] == [0]  # nothing before, and user 2 never sees user 1
    # rows of one refresh (00:01) see the 00:00 row only, not each other
    assert topic_exposures[1] == [1] and topic_clicks[1] == [1]
    assert topic_exposures[2] == [0, 1] and topic_clicks[2] == [0, 1]
    # at 00:02: topic 5 was shown at 00:00 and 00:01 (clicked both), topic 6 at 00:00 (click) and 00:01 (no click)
    assert topic_exposures[3] == [2, 2] and topic_clicks[3] == [2, 1]


def test_exposure_features_shrink_topic_rates_towards_the_user_rate():
    inputs = RankerInputs(
        user_id=np.zeros(2, np.int64),
        video_id=np.zeros(2, np.int64),
        history_video_ids=np.full((2, 1), -1),
        topic_ids=np.array([[3, 4], [-1, -1]]),
        topic_weights=np.array([[0.75, 0.25], [0.0, 0.0]], np.float32),
        user_exposures=np.array([8, 0]),
        user_clicks=np.array([4, 0]),
        topic_exposures=np.array([[3, 0], [0, 0]]),
        topic_clicks=np.array([[3, 0], [0, 0]]),
    )
    features = exposure_features(inputs, with_topics=True, prior_strength=1.0)
    rate = 5 / 10  # (4 + 1) / (8 + 2)
    topic_rate = 0.75 * (3 + rate) / (3 + 1) + 0.25 * rate  # topic 4 was never shown: the user's rate
    np.testing.assert_allclose(features[0], [rate, np.log1p(8) / 5, topic_rate, topic_rate - rate, 0.75 * np.log1p(3) / 5], rtol=1e-6)
    np.testing.assert_allclose(features[1], [0.5, 0.0, 0.5, 0.0, 0.0], atol=1e-7)  # no history, no topics
    assert exposure_features(inputs, with_topics=False, prior_strength=1.0).shape == (2, 2)


@pytest.mark.parametrize("features", ["base", "topic"])
def test_ranker_with_exposure_history_needs_the_counts(features):
    frame = _frame(400, 10, np.arange(30), seed=6)
    frame["user_exposures"], frame["user_clicks"], frame["topic_exposures"], frame["topic_clicks"] = exposure_history(frame)
    ranker = Ranker("dcn", features, exposure_history=True, epochs=1, show_progress=False).fit(frame)
    assert ranker.dense_dim_ == (2 if features == "base" else 8 + 1 + 5)
    assert np.isfinite(ranker.predict_proba(frame)).all()
    with pytest.raises(ValueError, match="user_exposures"):
        ranker.predict_inputs(RankerInputs.from_frame(frame, features, 20, 8, 8))
