"""MRLM vectors through Feast: a tiny synthetic run writes the tables, registration materializes them, the
online store gives back the trained vectors float32-exact; a refresh from the stream's Redis click lists
rewrites a user's online vector; the demo ranking from Feast equals the trained one."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from feast_tables import MRLM_DIM, make_tables, point_env
from offline_jobs.mrlm import SavedVectors, cosine_scores
from offline_jobs.mrlm_job import model_dir, read_recent_clicks, refresh_user_vectors, run_mrlm_demo, top_videos_from_feast
from topicfs import feast_names as names
from topicfs.feature_registry import load_store, register_and_materialize
from topicfs.keys import KeyLayout
from topicfs.settings import get_settings
from topicfs.synthetic import make_catalogue, make_click_log

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory, redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    root = tmp_path_factory.mktemp("mrlm_feast")
    with pytest.MonkeyPatch.context() as monkeypatch:
        point_env(monkeypatch, root, redis_server.url)
        monkeypatch.setenv("TOPICFS_MRLM__VECTOR_DIM", str(MRLM_DIM))
        get_settings.cache_clear()
        make_tables(root / "artifacts" / "tables")  # the other views' tables; the MRLM ones are overwritten below
        catalogue = make_catalogue(n_videos=60, n_true_topics=4, with_images=False, seed=5, show_progress=False)
        log = make_click_log(catalogue, n_users=16, n_days=2, seed=6)
        summary = run_mrlm_demo(get_settings(), catalogue.videos, log.interactions, user_ids=[0, 1, 999], k=3)
        register_and_materialize(get_settings())
        yield {
            "summary": summary,
            "saved": SavedVectors(model_dir(get_settings())),
            "store": load_store(get_settings()),
            "url": redis_server.url,
        }
    get_settings.cache_clear()


def _online(store, view: str, feature: str, key: str, ids) -> dict[int, list[float]]:
    rows = store.get_online_features(features=[f"{view}:{feature}"], entity_rows=[{key: int(i)} for i in ids]).to_dict()
    return dict(zip(rows[key], rows[feature]))


def test_online_vectors_equal_the_trained_ones_float32_exact(trained):
    saved, store = trained["saved"], trained["store"]
    items = _online(store, names.MRLM_ITEM_VECTORS_VIEW, "item_vector", "video_id", saved.video_ids)
    for row, video_id in enumerate(saved.video_ids):
        assert np.array_equal(np.array(items[int(video_id)], np.float32), saved.item_vectors[row])
    import pyarrow.parquet as pq

    table = pq.read_table(get_settings().paths.tables_dir / "mrlm_user_vectors.parquet").to_pandas()
    users = _online(store, names.MRLM_USER_VECTORS_VIEW, "user_vector", "user_id", table["user_id"])
    assert len(table) == 16
    for user_id, vector in zip(table["user_id"], table["user_vector"]):
        assert np.array_equal(np.array(users[int(user_id)], np.float32), np.asarray(vector, np.float32))
    assert "user 999: no interactions" in trained["summary"]


def test_refresh_from_the_stream_click_list_rewrites_the_online_vector(trained):
    saved, store = trained["saved"], trained["store"]
    settings = get_settings()
    client = redis.Redis.from_url(trained["url"])
    clicks = [int(v) for v in saved.video_ids[[5, 9, 11]]]  # newest first, as the stream keeps the list
    key = KeyLayout.from_config(settings.redis).user_clicks(3)
    client.delete(key)
    client.rpush(key, *clicks)
    client.close()
    recent = read_recent_clicks(settings, [3, 4242])
    assert recent == {3: clicks, 4242: []}
    written = refresh_user_vectors(settings, recent, store=store)
    assert written["user_id"].tolist() == [3]  # 4242: neither a trained vector nor a known click
    expected = saved.user_vectors({3: clicks})[3]
    online = _online(store, names.MRLM_USER_VECTORS_VIEW, "user_vector", "user_id", [3])
    assert np.array_equal(np.array(online[3], np.float32), expected)


def test_top_videos_from_feast_rank_by_the_trained_cosine(trained):
    saved, store = trained["saved"], trained["store"]
    users = _online(store, names.MRLM_USER_VECTORS_VIEW, "user_vector", "user_id", [0, 1])
    top = top_videos_from_feast(get_settings(), [0, 1, 999], k=3, store=store)
    assert set(top) == {0, 1}
    for user_id in (0, 1):
        scores = cosine_scores(np.array([users[user_id]], np.float32), saved.item_vectors)[0]
        best = np.argsort(-scores, kind="stable")[:3]
        assert [v for v, _ in top[user_id]] == [int(saved.video_ids[i]) for i in best]
        np.testing.assert_allclose([s for _, s in top[user_id]], scores[best], atol=1e-6)
