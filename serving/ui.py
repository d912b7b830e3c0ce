"""The topic browser: what topics exist, what is in them, what the τ1/τ2 rule drops, and whether the stream keeps up.

Run it::

    topicfs serve ui                      # http://127.0.0.1:8050/ (serving.ui_host, serving.ui_port)

Pages (HTML drawn on the server; plots are inline SVG from :mod:`serving.ui_plots`; the one script and style sheet
ship in ``serving/ui_static``; nothing is fetched from the network):

==================  =====================================================================================================
``/``               every topic: size, live exposures / clicks / CTR, fresh share of its queue, top tags, three samples
``/topics/{t}``     the served queue in order (established / fresh), exposures-CTR plot with τ1 and τ2, recently
                    dropped videos and why, member videos with their topic weight
``/videos/{v}``     topics and weights, the 8-dim topic feature, live statistics, the Feast feature-service values
``/users/{u}``      last clicks, topic votes, candidates by topic, the ranked list with scores when a ranker is saved
``/stream``         events/s, consumer lag per partition, dead letters, push latency (the worker's Prometheus endpoint),
                    stored offsets and pending work per shard (Redis)
``/plots``          the 2-D map of videos by topic, topic sizes, topics per video, CTR per topic, Table I / Fig. 3
``/covers/{v}.png`` the video's cover as a Pillow thumbnail (a placeholder when the cover is missing)
==================  =====================================================================================================

Where each number comes from: the offline tables of the topic job under ``paths.tables_dir`` (VIDEO_TOPICS,
TOPIC_CENTROIDS, VIDEO_MAP: titles, tags, covers, map positions), the live state in Redis read through
:class:`topicfs.keys.KeyLayout` (the stream's counts, indexes and queues), Feast's online store (``feast.repo_path``),
candidate generation (:class:`serving.candidates.CandidateGenerator`) and a saved ranker (``serving.ui_ranker_dir``).
A part that is absent (no Redis, no tables, no Feast registry, no worker metrics) is named on the page; the rest
still shows.
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
import time
import urllib.request
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from html import escape
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import redis

from serving import ui_plots
from topicfs.keys import KeyLayout, decode_ids
from topicfs.redis_client import sync_client
from topicfs.settings import Settings, get_settings
from topicfs.tables import TOPIC_CENTROIDS, VIDEO_MAP, VIDEO_TOPICS

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("ui_static")
THUMBNAIL_PX = 96  # longest side of a served cover thumbnail; pages draw them at 48 px (sharp on 2x screens)
MAP_MAX_POINTS = 4000  # points drawn on the 2-D map; more videos are subsampled evenly
TOPICS_PER_PAGE = 100


# --------------------------------------------------------------------------------------------------- offline tables


class OfflineTables:
    """The topic job's tables, read once and again whenever a file changes (a new job run)."""

    def __init__(self, tables_dir: Path) -> None:
        self.tables_dir = Path(tables_dir)
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._data: TableData | None = None

    def _files(self) -> list[Path]:
        return [self.tables_dir / name for name in (VIDEO_TOPICS, TOPIC_CENTROIDS, VIDEO_MAP)]

    def get(self) -> "TableData":
        stamp = tuple(p.stat().st_mtime_ns if p.exists() else None for p in self._files())
        with self._lock:
            if self._data is None or stamp != self._stamp:
                self._data = TableData.read(self.tables_dir)
                self._stamp = stamp
            return self._data


@dataclass
class TableData:
    """Per video (index ``video_id``): title, tags, cover_image, x, y, nearest topic, topic_ids, topic_weights,
    topic_feature, n_topics; per topic: its members by weight."""

    videos: pd.DataFrame
    topic_sizes: dict[int, int]
    missing: list[str] = field(default_factory=list)  # table files that are absent

    @classmethod
    def read(cls, tables_dir: Path) -> "TableData":
        missing = [name for name in (VIDEO_TOPICS, TOPIC_CENTROIDS, VIDEO_MAP) if not (tables_dir / name).exists()]
        frame = pd.DataFrame(columns=["topic_ids", "topic_weights", "topic_feature", "n_topics"]).rename_axis("video_id")
        if VIDEO_TOPICS not in missing:
            frame = pd.read_parquet(
                tables_dir / VIDEO_TOPICS, columns=["video_id", "topic_ids", "topic_weights", "topic_feature", "n_topics"]
            ).set_index("video_id")
        if VIDEO_MAP not in missing:
            shown = pd.read_parquet(
                tables_dir / VIDEO_MAP, columns=["video_id", "x", "y", "topic_id", "title", "tags", "cover_image"]
            ).set_index("video_id")
            frame = shown.join(frame, how="outer")
        for column, default in (("title", ""), ("cover_image", None), ("topic_id", -1), ("x", np.nan), ("y", np.nan)):
            if column not in frame:
                frame[column] = default
        if "tags" not in frame:
            frame["tags"] = [[] for _ in range(len(frame))]
        frame["title"] = frame["title"].fillna("")
        sizes: dict[int, int] = {}
        if TOPIC_CENTROIDS not in missing:
            centroids = pd.read_parquet(tables_dir / TOPIC_CENTROIDS, columns=["topic_id", "n_videos"])
            sizes = {int(t): int(n) for t, n in zip(centroids["topic_id"], centroids["n_videos"])}
        return cls(frame, sizes, missing)

    @cached_property
    def members(self) -> dict[int, list[tuple[int, float]]]:
        """topic -> [(video, weight)], highest weight first."""
        if "topic_ids" not in self.videos or self.videos["topic_ids"].isna().all():
            return {}
        rows = self.videos[["topic_ids", "topic_weights"]].dropna()
        exploded = pd.DataFrame(
            {
                "video_id": np.repeat(rows.index.to_numpy(), rows["topic_ids"].map(len).to_numpy()),
                "topic_id": np.concatenate([np.asarray(t, dtype=np.int64) for t in rows["topic_ids"]]) if len(rows) else [],
                "weight": np.concatenate([np.asarray(w, dtype=np.float64) for w in rows["topic_weights"]]) if len(rows) else [],
            }
        ).sort_values(["topic_id", "weight"], ascending=[True, False])
        return {
            int(t): list(zip(group["video_id"].astype(int), group["weight"].astype(float))) for t, group in exploded.groupby("topic_id")
        }

    @cached_property
    def topic_ids(self) -> list[int]:
        return sorted(set(self.topic_sizes) | set(self.members))

    @cached_property
    def top_tags(self) -> dict[int, list[tuple[str, int]]]:
        """topic -> its five most frequent tags among its member videos."""
        tags = self.videos["tags"]
        out = {}
        for topic, members in self.members.items():
            counter: Counter[str] = Counter()
            for video_id, _ in members:
                value = tags.get(video_id)
                if value is not None and len(value):
                    counter.update(value)
            out[topic] = counter.most_common(5)
        return out

    def video(self, video_id: int) -> pd.Series | None:
        return self.videos.loc[video_id] if video_id in self.videos.index else None

    def title(self, video_id: int) -> str:
        row = self.video(video_id)
        return "" if row is None else str(row["title"])


# --------------------------------------------------------------------------------------------------- live state


@dataclass
class Stats:
    exposures: float = 0.0
    clicks: float = 0.0
    ctr: float = 0.0
    ts: float | None = None  # event time of the values, epoch seconds

    @classmethod
    def parse(cls, values) -> "Stats":
        exposures, clicks, ctr, ts = (None if v is None else float(v) for v in values)
        return cls(exposures or 0.0, clicks or 0.0, ctr if ctr is not None else ((clicks or 0.0) / exposures if exposures else 0.0), ts)


class LiveState:
    """Reads of the stream's Redis state through :class:`KeyLayout`; every read is pipelined per page."""

    def __init__(self, client, layout: KeyLayout) -> None:
        self.client = client
        self.layout = layout

    def ping(self) -> str | None:
        """None when Redis answers, else why not."""
        try:
            self.client.ping()
            return None
        except redis.RedisError as exc:
            return f"{type(exc).__name__}: {exc}"

    def _stats(self, keys: list[str]) -> list[Stats]:
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "exposures", "clicks", "ctr", "ts")
            return [Stats.parse(values) for values in pipe.execute()]

    def video_stats(self, video_ids) -> dict[int, Stats]:
        video_ids = [int(v) for v in video_ids]
        return dict(zip(video_ids, self._stats([self.layout.video_stats(v) for v in video_ids])))

    def topic_stats(self, topic_ids) -> dict[int, Stats]:
        topic_ids = [int(t) for t in topic_ids]
        return dict(zip(topic_ids, self._stats([self.layout.topic_stats(t) for t in topic_ids])))

    def queues(self, topic_ids, limit: int = -1) -> dict[int, list[int]]:
        """Each topic's served queue in order (``limit`` first videos; -1 = all)."""
        topic_ids = [int(t) for t in topic_ids]
        with self.client.pipeline(transaction=False) as pipe:
            for topic in topic_ids:
                pipe.zrevrange(self.layout.queue(topic), 0, limit)
            return {t: [int(v) for v in queue] for t, queue in zip(topic_ids, pipe.execute())}

    def queue_lengths(self, topic_ids) -> dict[int, int]:
        topic_ids = [int(t) for t in topic_ids]
        with self.client.pipeline(transaction=False) as pipe:
            for topic in topic_ids:
                pipe.zcard(self.layout.queue(topic))
            return dict(zip(topic_ids, (int(n) for n in pipe.execute())))

    def _index(self, key_of, topic_id: int) -> dict[int, float]:
        """A per-shard index (established or fresh) of one topic, merged over the shards."""
        with self.client.pipeline(transaction=False) as pipe:
            for shard in self.layout.all_shards():
                pipe.zrange(key_of(shard, topic_id), 0, -1, withscores=True)
            return {int(v): float(s) for part in pipe.execute() for v, s in part}

    def established(self, topic_id: int) -> dict[int, float]:
        """video -> CTR of the topic's established videos (≥ τ1 exposures, CTR ≥ τ2)."""
        return self._index(self.layout.established, topic_id)

    def fresh(self, topic_id: int) -> dict[int, float]:
        """video -> exposures of the topic's fresh videos (< τ1 exposures)."""
        return self._index(self.layout.fresh, topic_id)

    def fresh_in_queues(self, queues: dict[int, list[int]]) -> dict[int, int]:
        """topic -> how many videos of its served queue are fresh (found in the fresh index of the video's shard)."""
        asked: list[tuple[int, int]] = []
        with self.client.pipeline(transaction=False) as pipe:
            for topic, queue in queues.items():
                by_shard: dict[int, list[int]] = {}
                for video in queue:
                    by_shard.setdefault(self.layout.shard(video), []).append(video)
                for shard, videos in by_shard.items():
                    pipe.zmscore(self.layout.fresh(shard, topic), videos)
                    asked.append((topic, len(videos)))
            replies = pipe.execute() if asked else []
        counts = {topic: 0 for topic in queues}
        for (topic, _), scores in zip(asked, replies):
            counts[topic] += sum(score is not None for score in scores)
        return counts

    def video_topics(self, video_id: int) -> list[int]:
        return decode_ids(self.client.get(self.layout.video_topics(video_id)))

    def user(self, user_id: int, n_clicks: int) -> dict:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.lrange(self.layout.user_clicks(user_id), 0, n_clicks - 1)
            pipe.lrange(self.layout.user_click_topics(user_id), 0, n_clicks - 1)
            pipe.hgetall(self.layout.user_topic_counts(user_id))
            pipe.hgetall(self.layout.user_exposures(user_id))
            clicks, click_topics, votes, exposures = pipe.execute()
        return {
            "clicks": [int(v) for v in clicks],
            "click_topics": [decode_ids(t) for t in click_topics],
            "votes": sorted(((int(t), float(n)) for t, n in votes.items()), key=lambda tv: (-tv[1], tv[0])),
            "exposures": exposures,
        }

    def popular(self) -> list[tuple[int, float]]:
        """topic -> clicks, summed over the shards, most clicked first."""
        with self.client.pipeline(transaction=False) as pipe:
            for shard in self.layout.all_shards():
                pipe.zrange(self.layout.popular(shard), 0, -1, withscores=True)
            totals: Counter[int] = Counter()
            for part in pipe.execute():
                for topic, clicks in part:
                    totals[int(topic)] += float(clicks)
        return sorted(totals.items(), key=lambda tc: (-tc[1], tc[0]))

    def shards(self, kafka_topics: list[str]) -> list[dict]:
        """Per shard: epoch, stored offsets per (kafka topic, partition), dirty topics, pending pushes."""
        out = []
        for shard in self.layout.all_shards():
            offsets: dict[str, int] = {}
            for kafka_topic in kafka_topics:
                for key in self.client.scan_iter(match=self.layout.offset(shard, kafka_topic, 0)[:-1] + "*", count=1000):
                    name = key.decode() if isinstance(key, bytes) else key
                    offsets[f"{kafka_topic}:{name.rsplit(':', 1)[1]}"] = int(self.client.get(key) or -1)
            with self.client.pipeline(transaction=False) as pipe:
                pipe.get(self.layout.epoch(shard))
                pipe.scard(self.layout.dirty(shard))
                for entity in ("video", "topic", "user"):
                    pipe.scard(self.layout.push_pending(shard, entity))
                epoch, dirty, *pending = pipe.execute()
            out.append(
                {
                    "shard": shard,
                    "epoch": (epoch.decode() if isinstance(epoch, bytes) else epoch),
                    "offsets": dict(sorted(offsets.items())),
                    "dirty": int(dirty),
                    "pending_push": dict(zip(("video", "topic", "user"), (int(p) for p in pending))),
                }
            )
        return out


# --------------------------------------------------------------------------------------------------- worker metrics


def parse_metrics(text: str) -> dict:
    """The stream's figures from a Prometheus text exposition: events/s, lag per partition, dead letters (by reason
    when the counter has a ``reason`` label), push latency (count, mean and the histogram's bucket bounds)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict = {"events_per_second": None, "lag": {}, "dead_letters": {}, "events": {}, "push": None, "messages": None}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "topicfs_stream_events_per_second":
                out["events_per_second"] = value
            elif name == "topicfs_stream_consumer_lag":
                out["lag"][labels.get("partition", "?")] = value
            elif name == "topicfs_stream_dead_letters_total":
                reason = labels.get("reason", "all reasons (by reason: topicfs stream dead-letters)")
                out["dead_letters"][reason] = out["dead_letters"].get(reason, 0.0) + value
            elif name == "topicfs_stream_events_total":
                out["events"][labels.get("type", "?")] = value
            elif name == "topicfs_stream_messages_total":
                out["messages"] = value
            elif name.startswith("topicfs_stream_push_latency_seconds"):
                push = out["push"] = out["push"] or {"count": 0.0, "sum": 0.0, "buckets": []}
                if name.endswith("_count"):
                    push["count"] += value
                elif name.endswith("_sum"):
                    push["sum"] += value
                elif name.endswith("_bucket"):
                    push["buckets"].append((float(labels["le"]), value))
    return out


def read_metrics(url: str, timeout_s: float = 1.0) -> tuple[dict | None, str | None]:
    """(parsed figures, None) or (None, why the endpoint could not be read)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (an operator-configured http URL)
            return parse_metrics(response.read().decode()), None
    except (OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def read_health(metrics_url: str, timeout_s: float = 1.0) -> dict | None:
    """The process's ``/health`` JSON next to its ``/metrics`` (stream.metrics.MetricsServer), or None."""
    url = metrics_url.rsplit("/metrics", 1)[0] + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (an operator-configured http URL)
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The smallest histogram bound holding at least a share ``q`` of the observations (an upper estimate)."""
    ordered = sorted(buckets)
    total = ordered[-1][1] if ordered else 0
    if not total:
        return None
    return next(bound for bound, count in ordered if count >= q * total)


# --------------------------------------------------------------------------------------------------- covers


class Covers:
    """Cover thumbnails made with Pillow from the VIDEO_MAP's ``cover_image`` paths, kept in a bounded LRU."""

    def __init__(self, max_items: int = 4096) -> None:
        self.max_items = max_items
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    @cached_property
    def placeholder(self) -> bytes:
        """A grey square with a crossed frame: the video has no readable cover."""
        from PIL import Image, ImageDraw

        image = Image.new("RGB", (THUMBNAIL_PX, THUMBNAIL_PX), (222, 222, 222))
        draw = ImageDraw.Draw(image)
        edge = THUMBNAIL_PX - 1
        draw.rectangle((0, 0, edge, edge), outline=(160, 160, 160), width=2)
        draw.line((0, 0, edge, edge), fill=(180, 180, 180), width=2)
        draw.line((0, edge, edge, 0), fill=(180, 180, 180), width=2)
        return _png(image)

    def thumbnail(self, path: str | None) -> tuple[bytes, bool]:
        """(PNG bytes, whether it is the real cover)."""
        if not path:
            return self.placeholder, False
        with self._lock:
            if path in self._cache:
                self._cache.move_to_end(path)
                return self._cache[path], True
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
                data = _png(image)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            logger.debug("cover %s unreadable: %s", path, exc)
            return self.placeholder, False
        with self._lock:
            self._cache[path] = data
            while len(self._cache) > self.max_items:
                self._cache.popitem(last=False)
        return data, True


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------- HTML helpers


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _cover(video_id: int, title: str = "", css: str = "cover") -> str:
    return (
        f'<img class="{css}" src="/covers/{int(video_id)}.png" alt="cover of video {int(video_id)}" title="{escape(title)}" loading="lazy">'
    )


def _video_link(video_id: int, title: str = "") -> str:
    label = f"{int(video_id)}" + (f" · {escape(title)}" if title else "")
    return f'<a href="/videos/{int(video_id)}">{label}</a>'


def _topic_link(topic_id: int) -> str:
    return (
        f'<a class="topic" style="border-color:{ui_plots.topic_colour(topic_id)}" href="/topics/{int(topic_id)}">topic {int(topic_id)}</a>'
    )


def _table(headers: list[str], rows: list[list[str]], css: str = "", row_attrs: list[str] | None = None) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join(
        f"<tr{(' ' + row_attrs[i]) if row_attrs else ''}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>' if rows else '<p class="empty">none</p>'


def _notice(text: str) -> str:
    return f'<p class="notice">{escape(text)}</p>'


# --------------------------------------------------------------------------------------------------- the browser


class TopicBrowser:
    """Everything the pages read, and the pages themselves (HTML strings)."""

    def __init__(self, settings: Settings, client=None) -> None:
        self.settings = settings
        self.layout = KeyLayout.from_config(settings.redis)
        self.live = LiveState(
            client if client is not None else sync_client(settings.redis, timeout_s=settings.serving.redis_timeout_s), self.layout
        )
        self.tables = OfflineTables(settings.paths.tables_dir)
        self.covers = Covers()
        self.redis_down: str | None = None  # why Redis did not answer the current page's ping
        self._feast_store = None
        self._generator = None
        self._ranking = None

    # ------------------------------------------------------------------ shared parts

    def page(self, title: str, body: str, notices: list[str] = ()) -> str:
        nav = "".join(
            f'<a href="{href}">{label}</a>' for href, label in (("/", "Topics"), ("/plots", "Plots"), ("/stream", "Stream health"))
        )
        forms = (
            '<form action="/go" method="get"><input name="user" placeholder="user id" size="8" aria-label="user id">'
            '<button>user</button></form><form action="/go" method="get"><input name="video" placeholder="video id" size="8" '
            'aria-label="video id"><button>video</button></form>'
        )
        notes = "".join(_notice(n) for n in notices)
        return (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · topic browser</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            '<link rel="stylesheet" href="/static/ui.css"></head><body>'
            f'<header><span class="brand">Topic Feature Store</span><nav>{nav}</nav>{forms}</header>'
            f"<main><h1>{escape(title)}</h1>{notes}{body}</main>"
            '<div id="hover-card" hidden><img alt=""><span></span></div><script src="/static/ui.js"></script></body></html>'
        )

    def _state(self) -> tuple["TableData", list[str]]:
        """The tables and the notices about what is absent."""
        data = self.tables.get()
        notices = []
        if data.missing:
            notices.append(f"missing offline tables under {self.tables.tables_dir}: {', '.join(data.missing)} (run `topicfs topics learn`)")
        why = self.live.ping()
        self.redis_down = why
        if why:
            notices.append(
                f"Redis at {self.settings.redis.url.split('@')[-1]} unreachable ({why}): live statistics and queues are not shown"
            )
        return data, notices

    def _status(self, stats: Stats | None, established: bool, fresh: bool) -> str:
        if established:
            return '<span class="badge established">established</span>'
        if fresh:
            return '<span class="badge fresh">fresh</span>'
        if stats is not None and stats.exposures >= self.settings.stream.min_exposures and stats.ctr < self.settings.stream.min_ctr:
            return '<span class="badge dropped">dropped</span>'
        return '<span class="badge">—</span>'

    # ------------------------------------------------------------------ topics

    SORT_KEYS = ("topic", "size", "queue", "exposures", "clicks", "ctr", "fresh")

    def topics_page(self, sort: str = "exposures", descending: bool = True, page: int = 0) -> str:
        data, notices = self._state()
        topics = data.topic_ids
        live = not self.redis_down and topics
        stats = self.live.topic_stats(topics) if live else {}
        queues = self.live.queues(topics, limit=self.settings.stream.max_queue_length - 1) if live else {}
        fresh = self.live.fresh_in_queues(queues) if live else {}
        rows = []
        for topic in topics:
            s, queue = stats.get(topic), queues.get(topic, [])
            rows.append(
                {
                    "topic": topic,
                    "size": data.topic_sizes.get(topic, len(data.members.get(topic, []))),
                    "queue": len(queue),
                    "exposures": s.exposures if s else None,
                    "clicks": s.clicks if s else None,
                    "ctr": s.ctr if s and s.exposures else None,
                    "fresh": fresh.get(topic, 0) / len(queue) if queue else None,
                    "samples": queue[:3] or [v for v, _ in data.members.get(topic, [])[:3]],
                }
            )
        sort = sort if sort in self.SORT_KEYS else "exposures"
        rows.sort(key=lambda r: (r[sort] is None, -(r[sort] or 0) if descending else (r[sort] or 0), r["topic"]))
        pages = max(math.ceil(len(rows) / TOPICS_PER_PAGE), 1)
        page = min(max(page, 0), pages - 1)
        shown = rows[page * TOPICS_PER_PAGE : (page + 1) * TOPICS_PER_PAGE]

        def header(key: str, label: str) -> str:
            desc = not (key == sort and descending)
            arrow = (" ▼" if descending else " ▲") if key == sort else ""
            return f'<a class="sort" href="/?{urlencode({"sort": key, "desc": int(desc)})}">{label}{arrow}</a>'

        headers = [
            header("topic", "topic"),
            header("size", "videos"),
            header("queue", "queue"),
            header("exposures", "exposures"),
            header("clicks", "clicks"),
            header("ctr", "CTR"),
            header("fresh", "fresh share"),
            "top tags",
            "samples",
        ]
        table_rows = []
        for r in shown:
            samples = "".join(
                f'<a class="sample" href="/videos/{v}">{_cover(v, data.title(v))}<span>{escape(data.title(v)[:40])}</span></a>'
                for v in r["samples"]
            )
            tags = ", ".join(f"{escape(t)} ({n})" for t, n in data.top_tags.get(r["topic"], []))
            table_rows.append(
                [
                    _topic_link(r["topic"]),
                    _num(r["size"]),
                    _num(r["queue"]),
                    _num(r["exposures"]),
                    _num(r["clicks"]),
                    _num(r["ctr"], 3),
                    "—" if r["fresh"] is None else f"{r['fresh']:.0%}",
                    tags,
                    f'<div class="samples">{samples}</div>',
                ]
            )
        pager = ""
        if pages > 1:
            pager = (
                '<p class="pager">'
                + " ".join(
                    f'<a href="/?{urlencode({"sort": sort, "desc": int(descending), "page": p})}"{" class=current" if p == page else ""}>{p + 1}</a>'
                    for p in range(pages)
                )
                + "</p>"
            )
        summary = (
            f"<p>{len(topics)} topics over {len(data.videos)} videos. Live figures from the stream: exposures, clicks and CTR "
            f"per topic; the fresh share is the part of the served queue with fewer than τ1 = {self.settings.stream.min_exposures} exposures "
            f"(target {self.settings.stream.fresh_share:.0%}). Click a column to sort.</p>"
        )
        return self.page("Topics", summary + _table(headers, table_rows, "topics sortable") + pager, notices)

    # ------------------------------------------------------------------ one topic

    def topic_page(self, topic_id: int, member_limit: int = 200, queue_limit: int | None = 100) -> str | None:
        data, notices = self._state()
        members = data.members.get(topic_id, [])
        live = not self.redis_down
        queue = self.live.queues([topic_id])[topic_id] if live else []
        if not members and not queue and topic_id not in data.topic_sizes:
            return None
        established = self.live.established(topic_id) if live else {}
        fresh = self.live.fresh(topic_id) if live else {}
        member_ids = [v for v, _ in members]
        known = list(dict.fromkeys(queue + member_ids + list(established) + list(fresh)))
        stats = self.live.video_stats(known) if live else {}
        topic_stats = self.live.topic_stats([topic_id]).get(topic_id) if live else None
        tau1, tau2 = self.settings.stream.min_exposures, self.settings.stream.min_ctr

        n_fresh_queue = sum(v in fresh for v in queue)
        summary = (
            f'<p class="summary">{len(members)} member videos · served queue {len(queue)} '
            f"({len(queue) - n_fresh_queue} established, {n_fresh_queue} fresh) · indexes: {len(established)} established, {len(fresh)} fresh"
            + (
                f" · {_num(topic_stats.exposures)} exposures, {_num(topic_stats.clicks)} clicks, CTR {_num(topic_stats.ctr, 3)}"
                if topic_stats
                else ""
            )
            + f" · τ1 = {tau1} exposures, τ2 = CTR {tau2:g}</p>"
        )
        tags = ", ".join(f"{escape(t)} ({n})" for t, n in data.top_tags.get(topic_id, []))
        summary += f"<p>top tags: {tags or '—'}</p>"

        in_queue = set(queue)
        points = []
        for video in known:
            s = stats.get(video)
            if s is None or s.exposures <= 0:
                continue
            kind = "established" if video in established else "fresh" if video in fresh else "dropped"
            points.append(
                ui_plots.Point(
                    max(s.exposures, 1.0),
                    s.ctr,
                    {"established": "#1f77b4", "fresh": "#2ca02c", "dropped": "#d62728"}[kind],
                    f"video {video} ({kind}{', in queue' if video in in_queue else ''}): {s.clicks:.0f}/{s.exposures:.0f}, CTR {s.ctr:.3f}",
                    css=f"pt {kind}{' queued' if video in in_queue else ''}",
                    radius=4.5 if video in in_queue else 3,
                    data={"v": video, "t": data.title(video)},
                )
            )
        plot = (
            ui_plots.scatter(
                points,
                "exposures (log scale)",
                "CTR",
                f"topic {topic_id}: exposures and CTR of its videos",
                css_class="topic-plot",
                x_log=True,
                hlines=[(tau2, f"τ2 = {tau2:g}")],
                vlines=[(tau1, f"τ1 = {tau1}")],
            )
            if points
            else '<p class="empty">no video of this topic has been shown yet</p>'
        )
        legend = (
            '<p class="legend"><span class="dot established"></span>established (≥ τ1 exposures, CTR ≥ τ2) '
            '<span class="dot fresh"></span>fresh (&lt; τ1 exposures) <span class="dot dropped"></span>dropped by τ2; '
            "larger points are in the served queue</p>"
        )

        queue_rows = []
        shown_queue = queue if queue_limit is None else queue[:queue_limit]
        for rank, video in enumerate(shown_queue, start=1):
            s = stats.get(video)
            queue_rows.append(
                [
                    str(rank),
                    _cover(video, data.title(video)),
                    _video_link(video, data.title(video)),
                    self._status(s, video in established, video in fresh),
                    _num(s.exposures if s else None),
                    _num(s.clicks if s else None),
                    _num(s.ctr if s else None, 3),
                ]
            )
        queue_attrs = [f'data-video="{v}" class="{"fresh" if v in fresh else "established"}"' for v in shown_queue]
        queue_table = _table(["rank", "cover", "video", "status", "exposures", "clicks", "CTR"], queue_rows, "queue compact", queue_attrs)
        if len(shown_queue) < len(queue):
            queue_table += (
                f'<p>the first {len(shown_queue)} of {len(queue)}: <a href="/topics/{topic_id}?queue=all">show the whole queue</a></p>'
            )

        dropped = []
        for video in known:
            s = stats.get(video)
            if video in established or video in fresh or s is None or s.exposures <= 0:
                continue
            if s.exposures >= tau1 and s.ctr < tau2:
                why = f"CTR {s.ctr:.3f} < τ2 = {tau2:g} after {s.exposures:.0f} exposures"
            else:
                why = "not in the stream's indexes of this topic (the stream assigned the video other topics)"
            dropped.append((s.ts or 0.0, video, s, why))
        dropped.sort(key=lambda row: (-row[0], row[1]))
        dropped_rows = [
            [
                _cover(v, data.title(v)),
                _video_link(v, data.title(v)),
                _num(s.exposures),
                _num(s.clicks),
                _num(s.ctr, 3),
                _when(ts),
                escape(why),
            ]
            for ts, v, s, why in dropped[:50]
        ]
        dropped_table = _table(["cover", "video", "exposures", "clicks", "CTR", "last event", "why"], dropped_rows, "dropped compact")

        member_rows = []
        for video, weight in members[:member_limit]:
            row = data.video(video)
            video_tags = ", ".join(escape(t) for t in (row["tags"] if row is not None and row["tags"] is not None else []))
            member_rows.append([_cover(video, data.title(video)), _video_link(video, data.title(video)), video_tags, f"{weight:.3f}"])
        members_table = _table(["cover", "video", "tags", "weight (cosine)"], member_rows, "members compact")
        more = f"<p>{len(members) - member_limit} more members not listed.</p>" if len(members) > member_limit else ""
        body = (
            summary + f"<section><h2>Exposures and CTR</h2>{plot}{legend}</section>"
            f"<section><h2>Served queue, in order</h2>{queue_table}</section>"
            f"<section><h2>Recently dropped videos and why</h2><p>Videos of this topic in neither index: judged after τ1 "
            f"exposures and below τ2, newest event first.</p>{dropped_table}</section>"
            f"<section><h2>Member videos (offline topic assignment, by weight)</h2>{members_table}{more}</section>"
        )
        return self.page(f"Topic {topic_id}", body, notices)

    # ------------------------------------------------------------------ one video

    def video_page(self, video_id: int) -> str | None:
        data, notices = self._state()
        row = data.video(video_id)
        live = not self.redis_down
        stats = self.live.video_stats([video_id])[video_id] if live else None
        stream_topics = self.live.video_topics(video_id) if live else []
        if row is None and not stream_topics and (stats is None or stats.ts is None):
            return None
        parts = []
        if row is not None:
            tags = ", ".join(escape(t) for t in (row["tags"] if row["tags"] is not None else []))
            parts.append(
                f'<div class="video-head"><img class="cover-large" src="/covers/{video_id}.png" width="144" height="144" alt="cover">'
                f'<div><p class="title">{escape(str(row["title"])) or "(no title)"}</p><p>tags: {tags or "—"}</p></div></div>'
            )
        topic_rows = []
        if row is not None and isinstance(row.get("topic_ids"), (list, np.ndarray)):
            for topic, weight in zip(row["topic_ids"], row["topic_weights"]):
                topic_rows.append([_topic_link(int(topic)), f"{float(weight):.3f}"])
        parts.append(
            f"<section><h2>Topics and weights</h2>{_table(['topic', 'weight (cosine)'], topic_rows, 'video-topics')}"
            f"<p>topics the stream holds for it: {', '.join(_topic_link(t) for t in stream_topics) or '—'}</p></section>"
        )
        if row is not None and isinstance(row.get("topic_feature"), (list, np.ndarray)):
            feature = [float(v) for v in row["topic_feature"]]
            parts.append(
                f"<section><h2>{len(feature)}-dim topic feature</h2>{ui_plots.vector(feature, 'topic feature')}"
                f"<p class='mono'>[{', '.join(f'{v:.4f}' for v in feature)}]</p></section>"
            )
        if stats is not None:
            parts.append(
                "<section><h2>Live statistics</h2>"
                + _table(
                    ["exposures", "clicks", "CTR", "last event"],
                    [[_num(stats.exposures), _num(stats.clicks), _num(stats.ctr, 3), _when(stats.ts)]],
                    "live",
                )
                + "</section>"
            )
        values, why = self.feast_values(video_id)
        if values is None:
            parts.append(f"<section><h2>Feast: {escape(self.settings.feast.ranker_service)}</h2>{_notice(why)}</section>")
        else:
            rows = [[escape(name), f'<span class="mono">{escape(_short(value))}</span>'] for name, value in values.items()]
            parts.append(
                f"<section><h2>Feast: feature service {escape(self.settings.feast.ranker_service)}</h2>"
                f"{_table(['feature', 'online value'], rows, 'feast')}</section>"
            )
        title = data.title(video_id)
        return self.page(f"Video {video_id}" + (f" · {title}" if title else ""), "".join(parts), notices)

    def feast_values(self, video_id: int) -> tuple[dict | None, str | None]:
        """The ranker feature service's online values of one video, or (None, why not)."""
        repo = Path(self.settings.feast.repo_path)
        if not (repo / "feature_store.yaml").exists():
            return None, f"no Feast repo at {repo}"
        try:
            if self._feast_store is None:
                from feast import FeatureStore

                self._feast_store = FeatureStore(repo_path=str(repo))
            store = self._feast_store
            service = store.get_feature_service(self.settings.feast.ranker_service)
            result = store.get_online_features(features=service, entity_rows=[{"video_id": int(video_id)}]).to_dict()
        except Exception as exc:  # Feast raises many types (no registry, no such service, store unreachable): shown, not fatal
            return None, f"Feast online read failed: {type(exc).__name__}: {str(exc)[:300]}"
        return {name: values[0] for name, values in result.items() if name != "video_id"}, None

    # ------------------------------------------------------------------ one user

    def user_page(self, user_id: int, shown_per_topic: int = 12, k: int = 20) -> str:
        data, notices = self._state()
        if self.redis_down:
            return self.page(f"User {user_id}", "", notices)
        user = self.live.user(user_id, self.settings.stream.recent_clicks)
        parts = []
        click_rows = [
            [_cover(v, data.title(v)), _video_link(v, data.title(v)), " ".join(_topic_link(t) for t in topics)]
            for v, topics in zip(user["clicks"][:20], user["click_topics"][:20] + [[]] * 20)
        ]
        total = sum(n for _, n in user["votes"]) or 1.0
        vote_rows = [[_topic_link(t), _num(n), f"{n / total:.0%}"] for t, n in user["votes"][:20]]
        parts.append(
            f'<div class="row"><section><h2>Last clicks ({len(user["clicks"])} of N1 = {self.settings.stream.recent_clicks}, newest first)</h2>'
            f"{_table(['cover', 'video', 'topics when clicked'], click_rows, 'clicks compact')}</section>"
            f"<section><h2>Topic votes</h2>{_table(['topic', 'votes', 'share'], vote_rows, 'votes')}</section></div>"
        )
        from serving.candidates import CandidateGenerator, CandidateStoreUnavailable

        try:
            self._generator = self._generator or CandidateGenerator.from_settings(self.settings)
            result = self._generator.candidates(user_id)
        except CandidateStoreUnavailable as exc:
            parts.append(f"<section><h2>Candidates</h2>{_notice(str(exc))}</section>")
            result = None
        if result is not None:
            by_topic: dict[int, list[int]] = {}
            for candidate in result.candidates:
                by_topic.setdefault(candidate.topic_id, []).append(candidate.video_id)
            blocks = []
            for share in result.topics:
                videos = by_topic.get(share.topic_id, [])
                items = "".join(
                    f'<li data-video="{v}"><a href="/videos/{v}">{_cover(v, data.title(v))}<span>{v}</span></a></li>'
                    for v in videos[:shown_per_topic]
                )
                blocks.append(
                    f'<div class="candidate-topic" data-topic="{share.topic_id}"><h3>{_topic_link(share.topic_id)} · {share.votes:g} votes · '
                    f'{share.n_candidates} drawn</h3><ol class="candidates">{items}</ol></div>'
                )
            parts.append(
                f"<section><h2>Candidates by topic ({len(result.candidates)}, source: {escape(result.source)})</h2>"
                f"{''.join(blocks) or '<p class=empty>none</p>'}</section>"
            )
        parts.append(self._ranked_section(user_id, k, data))
        return self.page(f"User {user_id}", "".join(parts), notices)

    def ranker_dir(self) -> Path | None:
        """``serving.ui_ranker_dir``, else the most recently saved ranker under ``paths.models_dir``."""
        if self.settings.serving.ui_ranker_dir is not None:
            return Path(self.settings.serving.ui_ranker_dir)
        saved = sorted(Path(self.settings.paths.models_dir).glob("ranker_*/ranker.json"), key=lambda p: p.stat().st_mtime)
        return saved[-1].parent if saved else None

    def _ranked_section(self, user_id: int, k: int, data: TableData) -> str:
        directory = self.ranker_dir()
        if directory is None:
            return f"<section><h2>Ranked</h2>{_notice(f'no saved ranker under {self.settings.paths.models_dir} (topicfs serve train), so no ranked list')}</section>"
        try:
            if self._ranking is None or self._ranking[0] != directory:
                from serving.ranking import ranking_service

                self._ranking = (
                    directory,
                    ranking_service(self.settings, directory, self.settings.feast.repo_path, self.settings.feast.ranker_service),
                )
            service = self._ranking[1]
            ranked = service.rank(user_id, k=k)
        except Exception as exc:  # a ranker that cannot serve here (missing features, wrong settings) is explained, not fatal
            return f"<section><h2>Ranked</h2>{_notice(f'ranker {directory} not served: {type(exc).__name__}: {str(exc)[:400]}')}</section>"
        ranker = service.ranker
        rows = [
            [str(i), _cover(v, data.title(v)), _video_link(v, data.title(v)), f"{s:.4f}"]
            for i, (v, s) in enumerate(zip(ranked.video_ids, ranked.scores), start=1)
        ]
        return (
            f"<section><h2>Ranked by {escape(ranker.model)} / {escape(ranker.features)}"
            f"{' + exposure history' if ranker.exposure_history else ''} ({escape(str(directory))})</h2>"
            f"{_table(['rank', 'cover', 'video', 'P(click)'], rows, 'ranked')}</section>"
        )

    # ------------------------------------------------------------------ stream health

    def metrics_urls(self) -> list[str]:
        if self.settings.serving.ui_metrics_urls:
            return list(self.settings.serving.ui_metrics_urls)
        stream = self.settings.stream
        host = "127.0.0.1" if stream.metrics_host in ("0.0.0.0", "::", "") else stream.metrics_host
        return [f"http://{host}:{port}/metrics" for port in (stream.metrics_port, stream.pusher_metrics_port) if port]

    def stream_page(self) -> str:
        _, notices = self._state()
        parts = []
        urls = self.metrics_urls()
        if not urls:
            parts.append(
                _notice(
                    "no worker metrics endpoint configured (stream.metrics_port, or serving.ui_metrics_urls): "
                    "events/s, lag, dead letters and push latency are not shown"
                )
            )
        for url in urls:
            figures, why = read_metrics(url)
            if figures is None:
                parts.append(f"<section><h2>{escape(url)}</h2>{_notice(f'not readable: {why}')}</section>")
                continue
            rows = []
            health = read_health(url)
            if health is not None:
                rows.append(["health", escape(", ".join(f"{k} {v}" for k, v in health.items()))])
                if health.get("last_push_age_s") is not None:
                    rows.append(["last Feast push", f"{health['last_push_age_s']:.1f} s ago"])
            if figures["events_per_second"] is not None or figures["events"]:
                rows += [
                    ["events/s (last 10 s)", _num(figures["events_per_second"], 1)],
                    ["events counted", ", ".join(f"{k} {_num(v)}" for k, v in sorted(figures["events"].items())) or "—"],
                    ["messages applied", _num(figures["messages"])],
                ]
            push = figures["push"]
            if push and push["count"]:
                p50, p99 = bucket_quantile(push["buckets"], 0.5), bucket_quantile(push["buckets"], 0.99)
                rows.append(
                    [
                        "Feast push latency",
                        f"{_num(push['count'])} pushes, mean {push['sum'] / push['count'] * 1000:.1f} ms, "
                        f"p50 ≤ {_num(p50 * 1000 if p50 is not None else None, 1)} ms, p99 ≤ {_num(p99 * 1000 if p99 is not None else None, 1)} ms",
                    ]
                )
            lag_rows = [
                [escape(str(p)), _num(v)]
                for p, v in sorted(figures["lag"].items(), key=lambda pv: int(pv[0]) if str(pv[0]).isdigit() else 0)
            ]
            dead_rows = [[escape(reason), _num(n)] for reason, n in sorted(figures["dead_letters"].items())]
            lag_plot = (
                ui_plots.bars(
                    [str(p) for p, _ in sorted(figures["lag"].items())],
                    [v for _, v in sorted(figures["lag"].items())],
                    "partition",
                    "messages behind",
                    "consumer lag per partition",
                    height=220,
                )
                if figures["lag"]
                else ""
            )
            worker_parts = ""
            if figures["lag"] or figures["events"] or figures["dead_letters"]:  # a worker's endpoint (a pusher's has push figures only)
                worker_parts = (
                    f"<h3>Consumer lag per partition</h3>{lag_plot}{_table(['partition', 'lag'], lag_rows, 'lag')}"
                    f"<h3>Dead letters</h3>{_table(['reason', 'messages'], dead_rows, 'dead-letters')}"
                )
            parts.append(
                f'<section class="metrics"><h2>{escape(url)}</h2>{_table(["figure", "value"], rows, "figures")}{worker_parts}</section>'
            )
        if not self.redis_down:
            shard_rows = []
            for shard in self.live.shards([self.settings.stream.events_topic, self.settings.stream.videos_topic]):
                offsets = ", ".join(f"{escape(p)} → {o}" for p, o in shard["offsets"].items()) or "—"
                pending = ", ".join(f"{e} {n}" for e, n in shard["pending_push"].items())
                shard_rows.append(
                    [
                        str(shard["shard"]),
                        escape(str(shard["epoch"] or "—")),
                        f'<span class="mono">{offsets}</span>',
                        str(shard["dirty"]),
                        pending,
                    ]
                )
            parts.append(
                "<section><h2>State in Redis, per shard</h2><p>Offsets are the last Kafka offset of each partition applied to "
                "the shard; dirty topics wait for a queue rebuild; pending ids wait for the next Feast push.</p>"
                + _table(
                    ["shard", "epoch", "applied offsets (topic:partition → offset)", "dirty topics", "pending pushes"], shard_rows, "shards"
                )
                + "</section>"
            )
        return self.page("Stream health", "".join(parts), notices)

    # ------------------------------------------------------------------ plots

    def plots_page(self) -> str:
        data, notices = self._state()
        parts = []
        videos = data.videos
        mapped = videos.dropna(subset=["x", "y"])
        if len(mapped):
            step = max(len(mapped) // MAP_MAX_POINTS, 1)
            sample = mapped.iloc[::step]
            points = [
                ui_plots.Point(
                    float(r.x),
                    float(r.y),
                    ui_plots.topic_colour(int(r.topic_id)),
                    f"video {v} · topic {int(r.topic_id)} · {r.title}",
                    css="pt",
                    radius=3,
                    data={"v": int(v), "t": f"topic {int(r.topic_id)} · {r.title}"},
                )
                for v, r in zip(sample.index, sample.itertuples())
            ]
            parts.append(
                f"<section><h2>Videos on a 2-D map, coloured by nearest topic</h2><p>{len(sample)} of {len(mapped)} videos; the topic "
                "job projects each video's topic representation a on the two directions that best separate the topics "
                f"(video_map.parquet). Hover a point for its cover.</p>{ui_plots.video_map(points, 'video map')}</section>"
            )
        else:
            parts.append(_notice(f"no {VIDEO_MAP} under {self.tables.tables_dir}: the map comes from the topic job (topicfs topics learn)"))
        topics = data.topic_ids
        if topics:
            sizes = sorted(((t, data.topic_sizes.get(t, len(data.members.get(t, [])))) for t in topics), key=lambda tn: (-tn[1], tn[0]))
            parts.append(
                "<section><h2>Topic sizes</h2>"
                + ui_plots.bars(
                    [str(t) for t, _ in sizes],
                    [n for _, n in sizes],
                    "topic (largest first)",
                    "videos",
                    "topic sizes",
                    colours=[ui_plots.topic_colour(t) for t, _ in sizes],
                    links=[f"/topics/{t}" for t, _ in sizes],
                )
                + "</section>"
            )
        if "n_topics" in videos and videos["n_topics"].notna().any():
            counts = videos["n_topics"].dropna().astype(int).value_counts().sort_index()
            mean = float(videos["n_topics"].dropna().mean())
            topics_cfg = self.settings.topics
            rule = (
                f"τ3 = {topics_cfg.assign_threshold:g}"
                if topics_cfg.assign_rule == "threshold"
                else f"τ3 calibrated for {topics_cfg.target_topics_per_video:g} topics per video"
            )
            parts.append(
                f"<section><h2>Topics per video</h2><p>mean {mean:.2f} ({rule}; the paper reports about 4)</p>"
                + ui_plots.bars(
                    [str(k) for k in counts.index], counts.tolist(), "topics of a video", "videos", "topics per video", height=260
                )
                + "</section>"
            )
        if topics and not self.redis_down:
            parts.append(self._ctr_section(data))
        parts.append(self._table1_section())
        return self.page("Plots", "".join(parts), notices)

    def _ctr_section(self, data: TableData, n_topics: int = 24) -> str:
        tau1, tau2 = self.settings.stream.min_exposures, self.settings.stream.min_ctr
        popular = [t for t, _ in self.live.popular()][:n_topics] or data.topic_ids[:n_topics]
        members = {t: [v for v, _ in data.members.get(t, [])] for t in popular}
        stats = self.live.video_stats(sorted({v for vs in members.values() for v in vs}))
        groups = [(str(t), [stats[v].ctr for v in members[t] if stats[v].exposures >= tau1]) for t in popular]
        if not any(values for _, values in groups):
            return "<section><h2>CTR per topic</h2><p class='empty'>no video has τ1 exposures yet</p></section>"
        return (
            "<section><h2>CTR of judged videos per topic</h2>"
            f"<p>Videos with at least τ1 = {tau1} exposures, in the {len(popular)} most clicked topics; the line is τ2: videos below it leave the queue.</p>"
            + ui_plots.boxes(
                groups,
                "topic (most clicked first)",
                "CTR",
                "CTR per topic",
                hlines=[(tau2, f"τ2 = {tau2:g}")],
                links=[f"/topics/{t}" for t in popular],
            )
            + "</section>"
        )

    def _table1_section(self) -> str:
        reports = sorted(Path(self.settings.paths.reports_dir).glob("*/table1.json"))
        if not reports:
            return (
                f"<section><h2>Table I / Fig. 3</h2><p class='empty'>no report under {escape(str(self.settings.paths.reports_dir))} "
                "(topicfs topics evaluate writes one)</p></section>"
            )
        parts = []
        for path in reports:
            rows = json.loads(path.read_text(encoding="utf-8")).get("rows", [])
            table_rows = [
                [
                    escape(r["representation"]),
                    f"{r['ari_pc']:.3f}",
                    f"{r['nmi_pc']:.3f}",
                    f"{r['ari_sc']:.3f}",
                    f"{r['nmi_sc']:.3f}",
                    f"{r['inter_intra']:.3f}",
                ]
                for r in rows
            ]
            labels = [r["representation"].split(" (")[0] for r in rows]
            plots = "".join(
                ui_plots.bars(
                    labels,
                    [r[m] for r in rows],
                    "representation",
                    label,
                    f"{label} ({path.parent.name})",
                    width=370,
                    height=240,
                    colours=list(ui_plots.PALETTE[: len(rows)]),
                )
                for m, label in (("nmi_pc", "NMI, primary classes"), ("inter_intra", "inter/intra distance (Fig. 3)"))
            )
            parts.append(
                f"<h3>{escape(path.parent.name)}</h3>"
                + _table(["representation", "ARI (PC)", "NMI (PC)", "ARI (SC)", "NMI (SC)", "inter/intra (Fig. 3)"], table_rows, "table1")
                + f'<div class="row">{plots}</div>'
            )
        return "<section><h2>Table I / Fig. 3</h2>" + "".join(parts) + "</section>"


def _short(value, limit: int = 160) -> str:
    if isinstance(value, float):
        text = f"{value:.4f}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(ts: float | None) -> str:
    if ts is None or ts <= 0:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + " UTC"


# --------------------------------------------------------------------------------------------------- the app


def create_ui_app(settings: Settings | None = None, browser: TopicBrowser | None = None):
    """The topic browser as an ASGI app (FastAPI)."""
    from fastapi import FastAPI, Query
    from fastapi.responses import HTMLResponse, RedirectResponse, Response
    from fastapi.staticfiles import StaticFiles

    settings = settings or get_settings()
    browser = browser or TopicBrowser(settings)
    app = FastAPI(title="Topic Feature Store: topic browser", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def not_found(what: str) -> HTMLResponse:
        return HTMLResponse(browser.page("Not found", f"<p>{escape(what)}</p>"), status_code=404)

    @app.get("/", response_class=HTMLResponse)
    def topics(sort: str = "exposures", desc: int = 1, page: int = Query(0, ge=0)) -> str:
        return browser.topics_page(sort, bool(desc), page)

    @app.get("/topics/{topic_id}", response_class=HTMLResponse)
    def topic(topic_id: int, queue: str = ""):
        html = browser.topic_page(topic_id, queue_limit=None if queue == "all" else 100)
        return not_found(f"no topic {topic_id} in the tables or in Redis") if html is None else html

    @app.get("/videos/{video_id}", response_class=HTMLResponse)
    def video(video_id: int):
        html = browser.video_page(video_id)
        return not_found(f"no video {video_id} in the tables or in Redis") if html is None else html

    @app.get("/users/{user_id}", response_class=HTMLResponse)
    def user(user_id: int) -> str:
        return browser.user_page(user_id)

    @app.get("/stream", response_class=HTMLResponse)
    def stream() -> str:
        return browser.stream_page()

    @app.get("/plots", response_class=HTMLResponse)
    def plots() -> str:
        return browser.plots_page()

    @app.get("/go")
    def go(user: str = "", video: str = ""):
        for prefix, value in (("users", user), ("videos", video)):
            if value.strip().isdigit():
                return RedirectResponse(f"/{prefix}/{int(value)}", status_code=303)
        return not_found("give a user or video id (a whole number)")

    @app.get("/covers/{video_id}.png")
    def cover(video_id: int) -> Response:
        row = browser.tables.get().video(video_id)
        path = None if row is None else row["cover_image"]
        data, real = browser.covers.thumbnail(path if isinstance(path, str) else None)
        return Response(
            data, media_type="image/png", headers={"Cache-Control": "max-age=3600", "X-Cover": "real" if real else "placeholder"}
        )

    @app.get("/healthz")
    def health() -> dict:
        return {"status": "ok", "redis": browser.live.ping() or "ok"}

    return app
