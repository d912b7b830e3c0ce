"""Benchmark: topic k-means + threshold assignment at production scale, against scikit-learn's MiniBatchKMeans.

Target (DESIGN.md "Scaling"): 1,000,000 topic representations of 128 dims, K = 6000 topics, on a 2-core
machine in <= 30 min and <= 8 GB peak memory, fit + assign + topic features.

Data: synthetic vectors with a known two-level structure, so quality is measurable. ``n_topics / 10``
"themes" are random unit vectors; each theme has 10 sub-topic centres around it (cosine ~0.61 between
sibling centres, the way real topics come in families); each vector is a sub-topic centre plus Gaussian
noise of norm ``--noise``, then L2-normalised. Ground truth = the sub-topic. Sibling topics sit near
τ3 = 0.6 from each other's videos, so the threshold rule gives several topics per video, as in the paper.

Measured in one run, one process (the data is made once and shared):

1. ours: :class:`offline_jobs.topics.TopicModel` fit (k-means++ seeding on a sample + faiss spherical
   k-means, ``--iterations`` Lloyd steps), ``assign`` (blocked faiss inner-product top-k + τ3 rule),
   ``topic_features`` (8-dim).
2. baseline: ``sklearn.cluster.MiniBatchKMeans`` (``init="random"``, because scikit-learn's k-means++ on
   its 3K = 18,000-row init sample ran > 10 min here; ``--baseline-epochs`` passes over the data,
   ``batch_size`` 4096, ``n_init=1``, ``compute_labels=False``) and its ``predict`` (nearest centre only).

For each step: wall time, and peak resident memory of the process during the step (a background thread
samples /proc/self/statm every 50 ms; ``ru_maxrss`` gives the whole-run peak). Quality: ARI / NMI of the
nearest topic against the ground-truth sub-topics.

Run (full size: 4.7 min for ours + 0.75 min for the baseline on 2 idle cores, 2026-12-06, docs/BENCH_KMEANS.md)::

    python -m benchmarks.bench_kmeans
    python -m benchmarks.bench_kmeans --n-videos 50000 --n-topics 300      # quick check, ~1 min
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import faiss
import numpy as np
import sklearn
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from offline_jobs.topics import TopicModel, format_topics_per_video_report, normalize_rows, topics_per_video_report

logger = logging.getLogger(__name__)

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
SUBTOPICS_PER_THEME = 10


def rss_bytes() -> int:
    """Resident memory of this process now."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE_BYTES


class PeakMemory:
    """Background sampler of the process's resident memory; ``peak`` is the maximum since ``reset``."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_bytes())

    def reset(self) -> None:
        self.peak = rss_bytes()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def measured(name: str, sampler: PeakMemory, results: dict[str, dict[str, float]]) -> Iterator[None]:
    """Record wall time and peak RSS of the block under ``results[name]``."""
    sampler.reset()
    start_rss = rss_bytes()
    start = time.perf_counter()
    yield
    results[name] = {
        "seconds": time.perf_counter() - start,
        "peak_rss_gib": max(sampler.peak, rss_bytes()) / 2**30,
        "rss_before_gib": start_rss / 2**30,
    }
    print(f"  {name:<28} {results[name]['seconds']:9.1f} s   peak RSS {results[name]['peak_rss_gib']:.2f} GiB", flush=True)


def make_vectors(n: int, dim: int, n_topics: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 unit vectors and (n,) int64 ground-truth sub-topic of each (see module docstring)."""
    rng = np.random.default_rng(seed)
    n_themes = max(1, n_topics // SUBTOPICS_PER_THEME)
    themes = normalize_rows(rng.standard_normal((n_themes, dim), dtype=np.float32))  # (n_themes, dim)
    spread = 0.8  # sibling sub-topic centres end up at cosine ~ 1 / (1 + 0.8²) ≈ 0.61
    theme_of_topic = np.arange(n_topics) % n_themes
    centres = normalize_rows(
        themes[theme_of_topic] + spread * rng.standard_normal((n_topics, dim), dtype=np.float32) / np.sqrt(dim)
    )  # (n_topics, dim)
    labels = rng.integers(n_topics, size=n)
    vectors = np.empty((n, dim), dtype=np.float32)
    block = 100_000
    for start in range(0, n, block):
        part = labels[start : start + block]
        gaussian = rng.standard_normal((len(part), dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))
        vectors[start : start + block] = normalize_rows(centres[part] + gaussian)
    return vectors, labels


def quality(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "ari": float(adjusted_rand_score(truth, predicted)),
        "nmi": float(normalized_mutual_info_score(truth, predicted)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-videos", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--n-topics", type=int, default=6000, help="K, also the number of ground-truth sub-topics")
    parser.add_argument("--iterations", type=int, default=25, help="Lloyd iterations of faiss k-means (TopicsConfig default)")
    parser.add_argument("--threshold", type=float, default=0.6, help="τ3")
    parser.add_argument("--noise", type=float, default=0.5, help="norm of the Gaussian noise added to a sub-topic centre")
    parser.add_argument("--baseline-epochs", type=int, default=2, help="MiniBatchKMeans max_iter (passes over the data)")
    parser.add_argument("--baseline-batch", type=int, default=4096, help="MiniBatchKMeans batch_size")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    print(f"# bench_kmeans  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.1f}; "
        f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads), scikit-learn {sklearn.__version__}"
    )
    print(
        f"data: {args.n_videos} x {args.dim} float32, K={args.n_topics} (ground truth: {args.n_topics} sub-topics in "
        f"{max(1, args.n_topics // SUBTOPICS_PER_THEME)} themes), noise {args.noise}, seed {args.seed}"
    )
    sampler = PeakMemory()
    results: dict[str, dict[str, float]] = {}
    with measured("make data", sampler, results):
        vectors, truth = make_vectors(args.n_videos, args.dim, args.n_topics, args.noise, args.seed)

    print(
        f"ours: TopicModel(n_topics={args.n_topics}, kmeans_iterations={args.iterations}, assign_threshold={args.threshold}, max_topics_per_video=8)"
    )
    model = TopicModel(
        n_topics=args.n_topics, kmeans_iterations=args.iterations, assign_threshold=args.threshold, seed=args.seed, show_progress=False
    )
    with measured("ours: fit", sampler, results):
        model.fit(vectors)
    with measured("ours: assign", sampler, results):
        assignment = model.assign(vectors)
    with measured("ours: topic_features", sampler, results):
        model.topic_features(assignment)
    ours_total = sum(results[k]["seconds"] for k in ("ours: fit", "ours: assign", "ours: topic_features"))
    ours_peak = max(results[k]["peak_rss_gib"] for k in ("ours: fit", "ours: assign", "ours: topic_features"))
    nearest = assignment.topic_ids[assignment.offsets[:-1]]
    ours_quality = quality(truth, nearest)
    report = topics_per_video_report(assignment, args.threshold)
    print(
        f"ours total: {ours_total:.1f} s ({ours_total / 60:.1f} min), peak RSS {ours_peak:.2f} GiB; "
        f"nearest topic vs truth: ARI {ours_quality['ari']:.3f}  NMI {ours_quality['nmi']:.3f}"
    )
    print(format_topics_per_video_report(report))

    if not args.skip_baseline:
        print(
            f"baseline: MiniBatchKMeans(n_clusters={args.n_topics}, init='random', batch_size={args.baseline_batch}, "
            f"max_iter={args.baseline_epochs}, n_init=1, compute_labels=False, random_state={args.seed}) + predict"
        )
        baseline = MiniBatchKMeans(
            n_clusters=args.n_topics,
            init="random",
            batch_size=args.baseline_batch,
            max_iter=args.baseline_epochs,
            n_init=1,
            compute_labels=False,
            random_state=args.seed,
        )
        with measured("baseline: fit", sampler, results):
            baseline.fit(vectors)
        with measured("baseline: predict", sampler, results):
            baseline_labels = baseline.predict(vectors)
        base_total = results["baseline: fit"]["seconds"] + results["baseline: predict"]["seconds"]
        base_quality = quality(truth, baseline_labels)
        print(
            f"baseline total: {base_total:.1f} s ({base_total / 60:.1f} min), "
            f"peak RSS {max(results['baseline: fit']['peak_rss_gib'], results['baseline: predict']['peak_rss_gib']):.2f} GiB; "
            f"ARI {base_quality['ari']:.3f}  NMI {base_quality['nmi']:.3f} (steps run: {baseline.n_steps_})"
        )
    sampler.stop()
    print(
        f"whole-run peak RSS (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB; "
        f"load average at end {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
