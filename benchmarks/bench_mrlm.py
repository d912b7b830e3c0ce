"""Benchmark: MRLM training time on MovieLens-100k, against BPR-MF training in the same run.

Target (issue 6): MRLM training on ml-100k in <= 15 min on a 2-core machine, with the settings'
MRLM config (``TOPICFS_MRLM__*``) and torch on ``mrlm.torch_threads`` threads (default 1: the other
core stays free).

Measured in one process on the same prepared data (ml-100k, ratings >= 4 positive, random 70/20/10):

1. preprocessing: feedback + split + TF-IDF/SVD, multi-hot, one-hot, knowledge-base features +
   per-modality k-means + the structured-attribute FM (initial vectors u0, v0);
2. MRLM: GFRL + MFRL for ``mrlm.epochs`` epochs, the valid Recall@50 evaluated after each epoch (it picks
   the kept epoch), final vectors computed;
3. baseline: BPR-MF (``mrlm.bpr_dim`` factors, ``mrlm.bpr_epochs`` epochs, same per-epoch validation).

Printed: seconds of each step, seconds per MRLM epoch, valid Recall@50 of both, and whether the total
(preprocessing + MRLM) meets the 15-minute target.

Run::

    python -m benchmarks.bench_mrlm
"""

from __future__ import annotations

import logging
import platform
import time

import torch

from offline_jobs.mrlm import MRLM, cosine_scores
from offline_jobs.mrlm_job import BPRMF, evaluation_split, load_dataset, mrlm_variants, prepare_loaded, ranking_metrics
from topicfs.settings import get_settings

TARGET_S = 15 * 60


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    settings = get_settings()
    config = settings.mrlm
    torch.set_num_threads(config.torch_threads)
    loaded = load_dataset("movielens", settings)
    started = time.monotonic()
    data = prepare_loaded(loaded, config)
    preprocessing = time.monotonic() - started
    valid = evaluation_split(data, "valid")

    def recall(scores) -> float:
        return ranking_metrics(scores, valid, (50,))["Recall@50"]

    started = time.monotonic()
    model = MRLM.from_config(config, feast_vector_dim=settings.feast.mrlm_vector_dim, **mrlm_variants()).fit(
        data, lambda m: recall(cosine_scores(m.user_vectors(), m.item_vectors_))
    )
    mrlm_s = time.monotonic() - started
    started = time.monotonic()
    bpr = BPRMF(config.bpr_dim, config.bpr_epochs, random_state=config.seed).fit(data, recall)
    bpr_s = time.monotonic() - started
    total = preprocessing + mrlm_s
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}")
    print(f"ml-100k: {data.n_users} users, {data.n_items} items, {int(data.train['positive'].sum())} training positives")
    print(f"preprocessing (features, k-means, FM d0={config.initial_dim}): {preprocessing:.1f} s")
    print(
        f"MRLM training ({config.epochs} epochs, B={config.batch_size}): {mrlm_s:.1f} s = {mrlm_s / config.epochs:.1f} s/epoch; "
        f"valid Recall@50 {model.best_score_:.4f} (epoch {model.best_epoch_ + 1})"
    )
    print(
        f"baseline BPR-MF training ({config.bpr_epochs} epochs, {config.bpr_dim} factors): {bpr_s:.1f} s; valid Recall@50 {recall(bpr.scores_):.4f}"
    )
    print(
        f"preprocessing + MRLM: {total:.1f} s = {total / 60:.1f} min; target {TARGET_S / 60:.0f} min: {'met' if total <= TARGET_S else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
