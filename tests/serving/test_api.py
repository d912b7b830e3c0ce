"""The candidate HTTP API: the happy path, the OpenAPI spec and every error path."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient

from serving.api import create_app
from topicfs import keys
from topicfs.services import free_port
from topicfs.settings import Settings


def _settings(url: str) -> Settings:
    return Settings(redis={"url": url, "key_prefix": "api"}, serving={"n_candidates": 3, "max_candidates": 50, "redis_timeout_s": 0.5})


@pytest.fixture()
def client(redis_url):
    r = redis.Redis.from_url(redis_url)
    r.zadd(keys.queue_key("api", 1), {"10": 3.0, "11": 2.0, "12": 1.0, "13": 0.5})
    r.set(keys.video_topics_key("api", 5), "1")
    r.rpush(keys.user_clicks_key("api", 42), 5, 12)
    r.zadd(keys.popular_topics_key("api"), {"1": 9.0})
    with TestClient(create_app(_settings(redis_url))) as test_client:
        yield test_client


@pytest.mark.integration
def test_candidates_ok(client):
    response = client.get("/users/42/candidates")
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "history"
    assert [c["video_id"] for c in body["candidates"]] == [10, 11, 13]  # 12 was clicked, n defaults to N3=3
    assert body["topics"] == [{"topic_id": 1, "votes": 1.0, "n_candidates": 3}]
    assert [c["video_id"] for c in client.get("/users/42/candidates", params={"n": 1}).json()["candidates"]] == [10]
    assert client.get("/users/7/candidates").json()["source"] == "popular"
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.integration
def test_openapi_spec_documents_the_endpoint(client):
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/users/{user_id}/candidates"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"user_id", "n"}
    assert {"200", "422", "503"} <= set(operation["responses"])


@pytest.mark.integration
@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/users/abc/candidates", ["user_id", "integer", "abc"]),
        ("/users/-1/candidates", ["user_id", "greater than or equal to 0"]),
        ("/users/1/candidates?n=0", ["n", "greater than or equal to 1"]),
        ("/users/1/candidates?n=51", ["n", "less than or equal to 50"]),
        ("/users/1/candidates?n=ten", ["n", "integer", "ten"]),
        ("/users/1/candidates?n=", ["n"]),
    ],
)
def test_invalid_parameters_get_422_with_a_message(client, path, words):
    response = client.get(path)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail


@pytest.mark.integration
def test_unknown_route_is_404(client):
    assert client.get("/users/1/nothing").status_code == 404
    assert client.post("/users/1/candidates").status_code == 405


def test_redis_down_gives_503_not_500():
    app = create_app(_settings(f"redis://127.0.0.1:{free_port()}/0"))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/users/1/candidates")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "candidate store unavailable" in response.json()["detail"]
        assert "Traceback" not in response.text
        assert test_client.get("/healthz").status_code == 503


def test_unexpected_error_gives_json_500_without_traceback():
    class Broken:
        client = None

        def candidates(self, user_id, n=None):
            raise KeyError("boom")

    app = create_app(_settings("redis://127.0.0.1:1/0"), generator=Broken())
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/users/1/candidates")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error: KeyError"}


@pytest.mark.integration
def test_requests_take_the_async_one_script_path(redis_url, monkeypatch):
    """On a single Redis the endpoint awaits the asyncio generator; the synchronous one is never called."""
    from serving.candidates import CandidateGenerator

    def no_sync(self, user_id, n=None):
        raise AssertionError("the synchronous generator ran")

    r = redis.Redis.from_url(redis_url)
    r.zadd(keys.queue_key("api", 1), {"10": 3.0, "11": 2.0})
    r.zadd(keys.popular_topics_key("api"), {"1": 9.0})
    monkeypatch.setattr(CandidateGenerator, "candidates", no_sync)
    with TestClient(create_app(_settings(redis_url))) as test_client:
        response = test_client.get("/users/3/candidates")
    assert response.status_code == 200
    assert [c["video_id"] for c in response.json()["candidates"]] == [10, 11]
