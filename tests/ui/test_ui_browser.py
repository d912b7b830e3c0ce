"""The topic browser in a real headless Chromium, against real tables, a real Redis state written by the stream's own
code, Feast registered and a saved ranker: what each page shows, in what order, and that no page logs an error."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pandas as pd
import pytest
import redis

from topicfs.keys import KeyLayout

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _busiest_topic(settings) -> tuple[int, list[int]]:
    """The topic with the longest served queue, and that queue in served order (read straight from Redis)."""
    layout = KeyLayout.from_config(settings.redis)
    client = redis.Redis.from_url(settings.redis.url)
    queues = {t: [int(v) for v in client.zrevrange(layout.queue(t), 0, -1)] for t in range(6)}
    topic = max(queues, key=lambda t: (len(queues[t]), -t))
    return topic, queues[topic]


def _index(settings, kind: str, topic: int) -> set[int]:
    layout = KeyLayout.from_config(settings.redis)
    client = redis.Redis.from_url(settings.redis.url)
    key_of = layout.established if kind == "established" else layout.fresh
    return {int(v) for shard in layout.all_shards() for v in client.zrange(key_of(shard, topic), 0, -1)}


def test_topic_page_shows_the_queue_in_served_order_with_tau_lines(ui_state, ui_server, chromium):
    settings = ui_state["settings"]
    topic, queue = _busiest_topic(settings)
    assert len(queue) >= 5, "the stream state should give this topic a real queue"
    fresh, established = _index(settings, "fresh", topic), _index(settings, "established", topic)
    visit = chromium.visit(
        f"{ui_server.url}/topics/{topic}",
        expressions={
            "rows": "Array.from(document.querySelectorAll('table.queue tbody tr')).map(r => [Number(r.dataset.video), r.className, r.cells[3].innerText])",
            "plot": "document.querySelector('svg.topic-plot').textContent",
            "tau2_y": "(() => { const l = Array.from(document.querySelectorAll('svg.topic-plot line.threshold')); return l.map(x => [x.getAttribute('y1'), x.getAttribute('y2')]); })()",
            "points": "document.querySelectorAll('svg.topic-plot circle.pt').length",
        },
    )
    assert visit.errors == []
    rows = visit.values["rows"]
    assert [video for video, _, _ in rows] == queue[:100], "the page lists the served queue in ZREVRANGE order"
    for video, css, status in rows:
        assert status == ("fresh" if video in fresh else "established"), (video, status)
        assert video in fresh or video in established
    assert f"τ2 = {settings.stream.min_ctr:g}" in visit.values["plot"]
    assert f"τ1 = {settings.stream.min_exposures}" in visit.values["plot"]
    horizontal = [y1 for y1, y2 in visit.values["tau2_y"] if y1 == y2]
    assert len(horizontal) == 1, "exactly one horizontal threshold line: τ2"
    assert visit.values["points"] > 0
    assert f"Topic {topic}" in visit.text and "Recently dropped videos and why" in visit.text


def test_dropped_videos_are_those_judged_below_tau2(ui_state, ui_server, chromium):
    """Every video the page lists as dropped has ≥ τ1 exposures and CTR < τ2 in Redis, and is in neither index."""
    settings = ui_state["settings"]
    layout = KeyLayout.from_config(settings.redis)
    client = redis.Redis.from_url(settings.redis.url)
    checked = 0
    for topic in range(6):
        visit = chromium.visit(
            f"{ui_server.url}/topics/{topic}",
            expressions={
                "dropped": "Array.from(document.querySelectorAll('table.dropped tbody tr')).map(r => parseInt(r.cells[1].innerText))"
            },
        )
        assert visit.errors == []
        indexed = _index(settings, "fresh", topic) | _index(settings, "established", topic)
        for video in visit.values["dropped"]:
            exposures, ctr = (float(x) for x in client.hmget(layout.video_stats(video), "exposures", "ctr"))
            assert video not in indexed
            assert exposures >= settings.stream.min_exposures and ctr < settings.stream.min_ctr
            checked += 1
    assert checked > 0, "the click log should make the stream drop some videos"


def test_topics_page_lists_every_topic_sorts_and_shows_covers(ui_state, ui_server, chromium):
    visit = chromium.visit(
        f"{ui_server.url}/?sort=ctr&desc=1",
        expressions={
            "topics": "Array.from(document.querySelectorAll('table.topics tbody tr')).map(r => r.cells[0].innerText)",
            "ctr": "Array.from(document.querySelectorAll('table.topics tbody tr')).map(r => r.cells[5].innerText)",
            "images": "Array.from(document.images).filter(i => i.closest('main')).map(i => [i.getAttribute('src'), i.naturalWidth])",
        },
    )
    assert visit.errors == []
    assert sorted(visit.values["topics"]) == sorted(f"topic {t}" for t in range(6))
    ctrs = [float(c) for c in visit.values["ctr"] if c != "—"]
    assert ctrs == sorted(ctrs, reverse=True) and ctrs
    assert visit.values["images"] and [src for src, width in visit.values["images"] if width == 0] == [], "every thumbnail decoded"
    assert "fresh share" in visit.text and "top tags" in visit.text


def test_covers_are_thumbnails_and_a_missing_cover_gets_the_placeholder(ui_state, ui_server):
    from io import BytesIO

    from PIL import Image

    with urllib.request.urlopen(f"{ui_server.url}/covers/1.png") as response:
        assert response.headers["X-Cover"] == "real"
        real = Image.open(BytesIO(response.read()))
    source = Image.open(ui_state["catalogue"].videos.set_index("video_id").loc[1, "cover_image"])
    assert real.size == source.size  # 16 px covers stay 16 px: a thumbnail never enlarges
    with urllib.request.urlopen(f"{ui_server.url}/covers/3.png") as response:
        assert response.headers["X-Cover"] == "placeholder"
        assert Image.open(BytesIO(response.read())).size == (96, 96)


def test_user_page_shows_candidates_by_topic_and_ranked_scores(ui_state, ui_server, chromium):
    from serving.candidates import CandidateGenerator
    from serving.ranking import ranking_service

    settings = ui_state["settings"]
    user = int(ui_state["log"].interactions.query("clicked == 1")["user_id"].iloc[0])
    expected = CandidateGenerator.from_settings(settings).candidates(user)
    ranked = ranking_service(settings, ui_state["ranker_dir"], settings.feast.repo_path, settings.feast.ranker_service).rank(user, k=20)
    visit = chromium.visit(
        f"{ui_server.url}/users/{user}",
        expressions={
            "topics": "Array.from(document.querySelectorAll('.candidate-topic')).map(d => Number(d.dataset.topic))",
            "first": "Array.from(document.querySelectorAll('.candidate-topic')).map(d => Array.from(d.querySelectorAll('li')).map(l => Number(l.dataset.video)))",
            "ranked": "Array.from(document.querySelectorAll('table.ranked tbody tr')).map(r => [parseInt(r.cells[2].innerText), Number(r.cells[3].innerText)])",
        },
    )
    assert visit.errors == []
    assert visit.values["topics"] == [t.topic_id for t in expected.topics]
    for topic, shown in zip(visit.values["topics"], visit.values["first"]):
        assert shown == [c.video_id for c in expected.candidates if c.topic_id == topic][:12]
    assert [v for v, _ in visit.values["ranked"]] == ranked.video_ids.tolist()
    assert [s for _, s in visit.values["ranked"]] == pytest.approx(ranked.scores.tolist(), abs=1e-4)
    assert "Topic votes" in visit.text and "Last clicks" in visit.text


def test_video_page_shows_topics_feature_and_feast_values(ui_state, ui_server, chromium):
    settings = ui_state["settings"]
    row = pd.read_parquet(settings.paths.tables_dir / "video_topics.parquet").set_index("video_id").loc[7]
    visit = chromium.visit(
        f"{ui_server.url}/videos/7",
        expressions={
            "topics": "Array.from(document.querySelectorAll('table.video-topics tbody tr')).map(r => [r.cells[0].innerText, Number(r.cells[1].innerText)])",
            "feast": "Array.from(document.querySelectorAll('table.feast tbody tr')).map(r => r.cells[0].innerText)",
        },
    )
    assert visit.errors == []
    assert [t for t, _ in visit.values["topics"]] == [f"topic {t}" for t in row["topic_ids"]]
    assert [w for _, w in visit.values["topics"]] == pytest.approx([float(w) for w in row["topic_weights"]], abs=1e-3)
    assert {"topic_ids", "topic_weights", "topic_feature"} <= set(visit.values["feast"])
    assert f"{len(row['topic_feature'])}-dim topic feature" in visit.text and "Live statistics" in visit.text


def test_stream_page_reads_the_worker_metrics_and_the_shards(ui_state, ui_server, chromium):
    visit = chromium.visit(
        f"{ui_server.url}/stream",
        expressions={
            "lag": "Array.from(document.querySelectorAll('table.lag tbody tr')).map(r => [r.cells[0].innerText, r.cells[1].innerText])",
            "offsets": "document.querySelector('table.shards').innerText",
            "dead": "Array.from(document.querySelectorAll('table.dead-letters tbody tr')).map(r => [r.cells[0].innerText, r.cells[1].innerText])",
        },
    )
    assert visit.errors == []
    assert visit.values["lag"] == [["0", "17"], ["1", "0"], ["2", "240"], ["3", "5"]]
    assert "Feast push latency" in visit.text and "3 pushes" in visit.text and "last Feast push" in visit.text
    assert "events/s (last 10 s)" in visit.text
    dead = visit.values["dead"]
    assert dead == [["unknown video", "3"]], dead  # dead letters by reason, as the worker counts them
    offsets = ui_state["applied"]["offsets"]
    topic = ui_state["settings"].stream.events_topic
    for partition, next_offset in enumerate(offsets):
        assert f"{topic}:{partition} → {next_offset - 1}" in visit.values["offsets"]


def test_plots_page_draws_the_map_with_hover_thumbnails(ui_state, ui_server, chromium):
    visit = chromium.visit(
        f"{ui_server.url}/plots",
        actions="document.querySelector('svg.video-map circle[data-v]').dispatchEvent(new MouseEvent('mouseover', {bubbles: true, clientX: 50, clientY: 50}))",
        expressions={
            "points": "document.querySelectorAll('svg.video-map circle[data-v]').length",
            "card_hidden": "document.getElementById('hover-card').hidden",
            "card_src": "document.querySelector('#hover-card img').getAttribute('src')",
            "first": "document.querySelector('svg.video-map circle[data-v]').dataset.v",
            "plots": "Array.from(document.querySelectorAll('svg.plot')).map(s => s.getAttribute('aria-label'))",
        },
    )
    assert visit.errors == []
    assert visit.values["points"] == 240
    assert visit.values["card_hidden"] is False and visit.values["card_src"] == f"/covers/{visit.values['first']}.png"
    assert {"video map", "topic sizes", "topics per video", "CTR per topic"} <= set(visit.values["plots"])


def test_serve_ui_refuses_a_busy_port_with_one_line(ui_state, ui_server):
    port = ui_server.url.rsplit(":", 1)[1]
    import os

    from conftest import TOPICFS

    done = subprocess.run(
        [str(TOPICFS), "serve", "ui", "--port", port],
        env={**os.environ, **ui_state["environment"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: the topic browser cannot listen on") and "Traceback" not in done.stderr


def test_video_map_table_places_each_topic_apart(ui_state):
    """The map saved by the topic job: one row per video, nearest topic as in VIDEO_TOPICS, and videos closer to
    their own topic's mean position than to the other topics' (what makes it readable)."""
    import numpy as np

    settings = ui_state["settings"]
    video_map = pd.read_parquet(settings.paths.tables_dir / "video_map.parquet")
    topics = pd.read_parquet(settings.paths.tables_dir / "video_topics.parquet")
    assert video_map["video_id"].tolist() == topics["video_id"].tolist()
    assert video_map["topic_id"].tolist() == [int(ids[0]) for ids in topics["topic_ids"]]
    positions = video_map[["x", "y"]].to_numpy()
    centres = {t: positions[video_map["topic_id"] == t].mean(axis=0) for t in video_map["topic_id"].unique()}
    own = np.array([np.linalg.norm(p - centres[t]) for p, t in zip(positions, video_map["topic_id"])])
    nearest_other = np.array(
        [min(np.linalg.norm(p - c) for u, c in centres.items() if u != t) for p, t in zip(positions, video_map["topic_id"])]
    )
    assert (own < nearest_other).mean() > 0.8
    assert json.loads((settings.paths.tables_dir / "video_map.json").read_text())["rows"] == len(video_map)
