"""Ranker reads: the packed fast path vs Feast's SDK, same run, same data.

Writes 100k synthetic videos' offline tables, registers and materializes the feature repo into a
private Redis, pushes live stats for every video, then times requests of 600 random candidates
for the full ``ranker_v1`` feature service:

- fast path: ``PackedFeatureClient.read(ids)`` (one round trip, decoded into NumPy arrays);
- baseline: ``FeatureStore.get_online_features(ranker_v1, {"video_id": ids}).to_dict()``.

Run: ``python -m benchmarks.bench_online_read [--videos 100000 --candidates 600 --requests 300]``.
Figures go to stdout and to docs/benchmarks/feast.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


def _list_column(values: np.ndarray, lengths: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=arrow_type))


def write_tables(folder: Path, n_videos: int, tag_dim: int, topic_dim: int, max_topics: int, seed: int) -> None:
    """Synthetic video-topic and video-tag-embedding tables with the layouts of topicfs/tables.py."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.arange(1, n_videos + 1, dtype=np.int64)
    at = pa.array(
        np.full(n_videos, np.datetime64(datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=1), "us")),
        pa.timestamp("us", tz="UTC"),
    )
    counts = rng.integers(1, max_topics + 1, n_videos)
    total = int(counts.sum())
    pq.write_table(
        pa.table(
            {
                "video_id": ids,
                "topic_ids": _list_column(rng.integers(0, 6000, total), counts, pa.int64()),
                "topic_weights": _list_column(rng.random(total, dtype=np.float32), counts, pa.float32()),
                "topic_feature": _list_column(
                    rng.standard_normal(n_videos * topic_dim).astype(np.float32), np.full(n_videos, topic_dim), pa.float32()
                ),
                "n_topics": counts.astype(np.int64),
                "event_timestamp": at,
                "created": at,
            }
        ),
        folder / "video_topics.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "video_id": ids,
                "video_tag_embedding": _list_column(
                    rng.standard_normal(n_videos * tag_dim).astype(np.float32), np.full(n_videos, tag_dim), pa.float32()
                ),
                "has_tags": np.ones(n_videos, dtype=bool),
                "event_timestamp": at,
                "created": at,
            }
        ),
        folder / "video_tag_embeddings.parquet",
    )
    tags = [f"tag{i}" for i in range(100)]
    pq.write_table(
        pa.table(
            {
                "tag": tags,
                "tag_embedding": _list_column(rng.standard_normal(100 * tag_dim).astype(np.float32), np.full(100, tag_dim), pa.float32()),
                "event_timestamp": at[:100],
                "created": at[:100],
            }
        ),
        folder / "tag_embeddings.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "topic_id": np.arange(60, dtype=np.int64),
                "centroid": _list_column(rng.standard_normal(60 * 16).astype(np.float32), np.full(60, 16), pa.float32()),
                "topic_embedding": _list_column(
                    rng.standard_normal(60 * topic_dim).astype(np.float32), np.full(60, topic_dim), pa.float32()
                ),
                "n_videos": np.full(60, n_videos // 60, dtype=np.int64),
                "event_timestamp": at[:60],
                "created": at[:60],
            }
        ),
        folder / "topic_centroids.parquet",
    )


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--candidates", type=int, default=600)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks" / "feast.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from topicfs.services import LocalRedis

    redis_server = LocalRedis.start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-online-read-"))
    try:
        repo = workdir / "feature_repo"
        shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
        # The settings object reads these; the benchmark only points them at its own data and Redis.
        os.environ.update(
            TOPICFS_PATHS__ARTIFACTS_DIR=str(workdir / "artifacts"),
            TOPICFS_REDIS__URL=redis_server.url,
            TOPICFS_FEAST__REPO_PATH=str(repo),
        )
        from topicfs.settings import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        write_tables(
            settings.paths.tables_dir,
            args.videos,
            settings.tag_graph.embedding_dim,
            settings.topics.topic_feature_dim,
            settings.topics.max_topics_per_video,
            args.seed,
        )

        from topicfs import feast_names as names
        from topicfs.feature_client import PackedFeatureClient, push_stats
        from topicfs.feature_registry import load_store, register_and_materialize

        started = time.perf_counter()
        register_and_materialize(settings)
        register_s = time.perf_counter() - started
        store = load_store(settings)

        rng = np.random.default_rng(args.seed)
        ids = np.arange(1, args.videos + 1, dtype=np.int64)
        push_batch = 5000
        push_times = []
        now = pd.Timestamp.now(tz="UTC")
        for start in range(0, args.videos, push_batch):
            chunk = ids[start : start + push_batch]
            exposures = rng.integers(0, 1000, len(chunk))
            clicks = rng.binomial(exposures, 0.08)
            frame = pd.DataFrame(
                {
                    "video_id": chunk,
                    "exposures": exposures,
                    "clicks": clicks,
                    "ctr": (clicks / np.maximum(exposures, 1)).astype(np.float32),
                    "event_timestamp": now,
                }
            )
            began = time.perf_counter()
            push_stats(store, names.VIDEO_STATS_PUSH, frame)
            push_times.append(time.perf_counter() - began)

        service = store.get_feature_service(names.RANKER_V1)
        client = PackedFeatureClient(store, names.RANKER_V1)
        check = rng.choice(ids, args.candidates, replace=False)
        if client.read(check).to_dict() != store.get_online_features(service, {"video_id": check.tolist()}).to_dict():
            raise SystemExit("fast path and get_online_features disagree: benchmark aborted")

        fast_s: list[float] = []
        sdk_s: list[float] = []
        warmup = 10
        for request in range(args.requests + warmup):
            candidates = rng.choice(ids, args.candidates, replace=False)
            began = time.perf_counter()
            batch = client.read(candidates)
            fast_elapsed = time.perf_counter() - began
            began = time.perf_counter()
            store.get_online_features(service, {"video_id": candidates.tolist()}).to_dict()
            sdk_elapsed = time.perf_counter() - began
            if request >= warmup:
                fast_s.append(fast_elapsed)
                sdk_s.append(sdk_elapsed)
        matrix_shape = batch.to_matrix().shape

        fast_p50, fast_p99 = percentile_ms(fast_s, 50), percentile_ms(fast_s, 99)
        sdk_p50, sdk_p99 = percentile_ms(sdk_s, 50), percentile_ms(sdk_s, 99)
        push_ms = percentile_ms(push_times, 50)
        lines = [
            "# Feast online reads (feast)",
            "",
            f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
            "- machine: 2-core x86_64, 24 GiB, no GPU (shared with other jobs while measured)",
            f"- python {platform.python_version()}, feast {__import__('feast').__version__}, private redis-server on loopback",
            "- command: `python -m benchmarks.bench_online_read"
            + (
                f" --videos {args.videos} --candidates {args.candidates} --requests {args.requests}`"
                if args.videos != 100_000 or args.candidates != 600 or args.requests != 300
                else "`"
            ),
            f"- data: {args.videos:,} videos; feature service `ranker_v1` = video_topics (topic_ids, topic_weights, topic_feature[8], n_topics)"
            f" + video_tag_embeddings (video_tag_embedding[{settings.tag_graph.embedding_dim}], has_tags) + video_stats (exposures, clicks, ctr);"
            f" one request = {args.candidates} random candidates, {args.requests} requests after {warmup} warm-up, both paths on the same candidates",
            f"- packed record: {client.layout.record_size} bytes per video; ranker matrix per request {matrix_shape}",
            "",
            "| path | p50 ms | p99 ms |",
            "|---|---:|---:|",
            f"| fast path: `PackedFeatureClient.read` (one HGET+MGET round trip, NumPy decode) | {fast_p50:.2f} | {fast_p99:.2f} |",
            f"| baseline: `FeatureStore.get_online_features(ranker_v1).to_dict()` | {sdk_p50:.2f} | {sdk_p99:.2f} |",
            "",
            f"- speed-up at p50: {sdk_p50 / fast_p50:.1f}x (target >= 5x); fast-path p99 {fast_p99:.2f} ms (target <= 10 ms)",
            "- values checked identical (`to_dict()` of both paths) on one request before timing",
            f"- register + materialize of {args.videos:,} videos: {register_s:.1f} s;"
            f" push of {push_batch:,} video-stats rows (Feast hashes + packed records): p50 {push_ms:.0f} ms",
            "",
        ]
        text = "\n".join(lines)
        print(text)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    finally:
        redis_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
