"""MMoE on KuaiRec: training time and Table I clustering quality of z on held-out videos.

    python -m benchmarks.mmoe_kuairec [--data ../shared/data/kuairec] [--epochs 3] [--threads 2]

Trains :class:`offline_jobs.mmoe.MultimodalTopicEncoder` on 90% of KuaiRec's videos, then clusters the
held-out 10% with k-means (K = number of primary / secondary classes among them; the split and scores
of ``topicfs topics evaluate``) and prints ARI and NMI against the
classes for: the baseline (title only: pretrained f_T, mean-pooled, no fine-tuning), z = [f_T] after
fine-tuning ("encoder"), and the gate-weighted expert mixtures ("experts"). KuaiRec has no covers, so
f_C is dropped with a warning. Results go to stdout and, with --write, to docs/benchmarks/mmoe.md.
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from offline_jobs.encoders import pretrained_title_embeddings
from offline_jobs.evaluate_topics import holdout_split
from offline_jobs.kuairec import load_kuairec
from offline_jobs.mmoe import MultimodalTopicEncoder
from offline_jobs.topic_metrics import cluster_scores
from topicfs.settings import get_settings

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/kuairec", help="KuaiRec folder or kuairec_caption_category.csv")
    parser.add_argument("--epochs", type=int, default=None, help="override mmoe.epochs")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks/mmoe.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    settings = get_settings()
    config = settings.mmoe.model_copy(update={"torch_threads": args.threads})
    if args.epochs is not None:
        config = config.model_copy(update={"epochs": args.epochs})
    evaluation = settings.evaluation
    videos = load_kuairec(args.data)
    # the split and the scores of Table I (offline_jobs.evaluate_topics): K = classes among the held-out videos
    train_rows, held_rows = holdout_split(len(videos), evaluation.holdout_fraction, evaluation.seed)
    train, held = videos.iloc[train_rows].reset_index(drop=True), videos.iloc[held_rows].reset_index(drop=True)
    n_primary = held["primary_class"].nunique()
    n_secondary = held["secondary_class"].nunique()

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    baseline = pretrained_title_embeddings(held["title"].tolist(), config)
    baseline_seconds = time.perf_counter() - started

    started = time.perf_counter()
    model = MultimodalTopicEncoder.from_config(config).fit(train)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    representations = {
        "title only, pretrained f_T (baseline)": baseline,
        "z = encoder [f_T] fine-tuned": model.transform(held, "encoder"),
        "z = experts [f^1..f^N]": model.transform(held, "experts"),
    }
    transform_seconds = (time.perf_counter() - started) / 2
    started = time.perf_counter()
    model.transform(videos)
    transform_all_seconds = time.perf_counter() - started

    rows = []
    primary, secondary = held["primary_class"].notna().to_numpy(), held["secondary_class"].notna().to_numpy()
    for name, vectors in representations.items():
        ari_p, nmi_p = cluster_scores(vectors[primary], held["primary_class"].to_numpy()[primary], evaluation.seed)
        ari_s, nmi_s = cluster_scores(vectors[secondary], held["secondary_class"].to_numpy()[secondary], evaluation.seed)
        rows.append((name, vectors.shape[1], ari_p, nmi_p, ari_s, nmi_s))
    vocabulary = model.vocabulary_report_
    held_unk_before = held_unk_after = float("nan")
    if model.title_encoder_ is not None:
        held_unk_after = model.title_encoder_.unk_rate(held["title"].tolist())
        from offline_jobs.encoders import TitleEncoder, resolve_title_encoder

        held_unk_before = TitleEncoder(resolve_title_encoder(config.title_encoder), config.max_title_tokens).unk_rate(
            held["title"].tolist()
        )

    lines = [
        "# MMoE (mmoe): KuaiRec training time and held-out clustering",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: 2-core x86_64, 24 GiB, no GPU ({platform.processor() or platform.machine()}), torch threads {args.threads}",
        f"- command: `python -m benchmarks.mmoe_kuairec --threads {args.threads}"
        + (f" --epochs {args.epochs}" if args.epochs else "")
        + "`",
        f"- data: KuaiRec, {len(videos)} videos; train {len(train)}, held out {len(held)} (seed {evaluation.seed}); "
        f"K = {n_primary} primary / {n_secondary} secondary classes; no covers (f_C dropped)",
        f"- config: epochs {config.epochs}, batch {config.batch_size}, lr {config.learning_rate} / encoder lr {config.encoder_learning_rate}, "
        f"max_title_tokens {config.max_title_tokens}, title_trainable_layers {config.title_trainable_layers}, H {config.n_experts}, "
        f"expert_dim {config.expert_dim}, max_tags {config.max_tags}",
        f"- vocabulary extension: +{vocabulary.added_tokens if vocabulary else 0} tokens; [UNK] rate train "
        f"{100 * vocabulary.unk_rate_before if vocabulary else float('nan'):.1f}% -> {100 * vocabulary.unk_rate_after if vocabulary else float('nan'):.1f}%, "
        f"held-out {100 * held_unk_before:.1f}% -> {100 * held_unk_after:.1f}%",
        f"- time: fit {fit_seconds:.0f} s on {len(train)} videos; transform {transform_seconds:.1f} s per {len(held)} held-out videos, "
        f"{transform_all_seconds:.0f} s for all {len(videos)}; baseline embedding {baseline_seconds:.1f} s",
        "- loss per epoch: " + "; ".join(", ".join(f"{k} {v:.3f}" for k, v in epoch.items()) for epoch in model.history_),
        "",
        "| representation | dim | ARI primary | NMI primary | ARI secondary | NMI secondary |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {name} | {dim} | {a:.3f} | {b:.3f} | {c:.3f} | {d:.3f} |" for name, dim, a, b, c, d in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        out = Path("docs/benchmarks/mmoe.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


if __name__ == "__main__":
    main()
