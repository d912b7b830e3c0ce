"""Benchmark (issue 21): do topics follow content or which modalities a video has? Ragged vs complete synthetic catalogue.

For each seed the synthetic catalogue (:func:`topicfs.synthetic.make_catalogue`) is drawn twice with the same titles,
topics and covers' pixels:

- ``complete``: a cover and tags on every video;
- ``ragged``: covers on ``--cover-share`` (30%) and tags on ``--tag-share`` (15%) of the videos, older videos first
  (publish times spread over ten years), so presence follows the publish year, not the topic.

On each, the topic job's models are fitted as ``topicfs topics learn`` fits them (tag graph, MMoE, k-means with the
settings' K and τ3) for every method named in ``--methods``:

- ``paper``: zero-filled missing halves (``topics.missing_modalities=zero``), no cover dropout (``mmoe.modality_dropout=0``);
- ``mask`` / ``mask+drop``: ē as ``paper``'s, but k-means and τ3 compare a tagless video on its z half alone, and
  z of every video is computed without covers (``missing_modalities=mask``), without / with cover dropout in training;
- ``impute``: tagless videos' ē from the MMoE tag task, covers where present (``missing_modalities=impute``);
- ``neighbours`` / ``neighbours+drop``: tagless videos' ē from the tagged videos nearest in z, covers where present
  (``missing_modalities=neighbours``), without / with cover dropout;
- ``predict``: ragged modalities through the models only (``missing_modalities=predict``), no cover dropout;
- ``predict+drop``: the same with cover dropout ``--dropout`` in MMoE training (the defaults when it is 0.5).

and scored with :func:`offline_jobs.topics.presence_audit`: NMI(nearest topic, has cover / has tags / true topic),
topics per video by modality group and the share at the cap. With ``--rules`` every method's fitted topics are also
assigned under other assignment rules (``<method> <rule>``: same centres, same nearest topic, another rule for the
rest; ``assign_rule="calibrated"`` sets τ3 on the fitted videos, as ``fit`` does). Seeds change the catalogue, the
MMoE, tag-graph and k-means seeds together. Prints one line per run and a mean ± std table, and writes all of it as
JSON (``--out``).

Run (docs/TABLE1.md; ~25 min of CPU for 3 seeds x 2 catalogues x 2 methods at 2,000 videos)::

    nice -n 10 python -m benchmarks.bench_topics_ragged --seeds 0 1 2 --methods paper predict+drop \
        --rules 'calibrated={"assign_rule": "calibrated"}' --out artifacts/bench_topics_ragged.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from offline_jobs.mmoe import MultimodalTopicEncoder
from offline_jobs.pipeline import fit_tag_graph, fitted_topic_inputs, predicted_modalities, video_presence_audit
from offline_jobs.topics import TopicModel, representation_halves, topic_representation
from topicfs.settings import Settings
from topicfs.synthetic import make_catalogue

METHODS = {
    "paper": (False, "zero"),
    "mask": (False, "mask"),
    "mask+drop": (True, "mask"),
    "impute": (False, "impute"),
    "neighbours": (False, "neighbours"),
    "neighbours+drop": (True, "neighbours"),
    "predict": (False, "predict"),
    "predict+drop": (True, "predict"),
}


def run_catalogue(
    videos, true_topic, settings: Settings, methods: list[str], dropout: float, rules: dict[str, dict] | None = None
) -> dict[str, dict]:
    """Fit the models once per MMoE variant and score every method on this catalogue; each of ``rules`` (name ->
    TopicModel parameters, e.g. {"assign_rule": "calibrated"}) re-assigns the same fitted topics as ``<method> <name>``."""
    out: dict[str, dict] = {}
    tag_graph = fit_tag_graph(videos, settings)
    encoders: dict[bool, MultimodalTopicEncoder] = {}
    for method in methods:
        use_dropout, mode = METHODS[method]
        started = time.perf_counter()
        if use_dropout not in encoders:
            modality_dropout = dropout if use_dropout else 0.0
            encoders[use_dropout] = MultimodalTopicEncoder.from_config(settings.mmoe, modality_dropout=modality_dropout).fit(videos)
        mmoe = encoders[use_dropout]
        predicted = predicted_modalities(tag_graph, mmoe, videos, settings.topics.complete_share, mode)
        topics_config = settings.topics.model_copy(update={"missing_modalities": mode})
        e_bar, has_tags, z, bank = fitted_topic_inputs(tag_graph, mmoe, videos, topics_config, predicted)
        a = topic_representation(e_bar, z)
        topics = TopicModel.from_config(topics_config, show_progress=False)
        assignment = topics.fit(a, representation_halves(e_bar, z), predicted, bank).assign(a)
        variants = {method: assignment}
        for name, params in (rules or {}).items():
            scored = copy.copy(topics).set_params(**params)  # same centres, another rule
            if scored.assign_rule == "calibrated":
                scored.calibrate(a)  # τ3 from the fitted videos, as fit() sets it under that rule
            variants[f"{method} {name}"] = scored.assign(a)
        seconds = time.perf_counter() - started
        for key, assigned in variants.items():
            labels = {"true topic": true_topic}
            out[key] = video_presence_audit(videos, has_tags, assigned, settings.topics.max_topics_per_video, labels) | {"seconds": seconds}
    return out


def summary_row(runs: list[dict]) -> dict[str, tuple[float, float]]:
    """mean and std over seeds of the figures the acceptance reads."""
    figures: dict[str, list[float]] = {}
    for audit in runs:
        for name, value in audit["nmi"].items():
            figures.setdefault(f"NMI {name}", []).append(value)
        for group, g in audit["groups"].items():
            figures.setdefault(f"topics/video {group}", []).append(g["mean_topics"])
            figures.setdefault(f"at cap {group}", []).append(g["at_cap"])
    return {name: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0) for name, v in figures.items()}


def print_summary(runs: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean ± std (ddof 1) over the seeds per catalogue and method, printed as a Markdown table (one column each)."""
    summary = {}
    for name in dict.fromkeys(r["catalogue"] for r in runs):
        for method in dict.fromkeys(r["method"] for r in runs):
            audits = [r["audit"] for r in runs if r["catalogue"] == name and r["method"] == method]
            if audits:
                summary[f"{name}/{method}"] = summary_row(audits)
    keys = sorted({k for row in summary.values() for k in row})
    n_seeds = len({r["seed"] for r in runs})
    print(f"\n| figure (mean ± std over {n_seeds} seeds) | " + " | ".join(summary) + " |")
    print("|---|" + "---:|" * len(summary))
    for key in keys:
        cells = [f"{row[key][0]:.3f} ± {row[key][1]:.3f}" if key in row else "" for row in summary.values()]
        print(f"| {key} | " + " | ".join(cells) + " |")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-videos", type=int, default=2000)
    parser.add_argument("--cover-share", type=float, default=0.3)
    parser.add_argument("--tag-share", type=float, default=0.15)
    parser.add_argument("--methods", nargs="+", default=["paper", "predict+drop"], choices=sorted(METHODS))
    parser.add_argument("--dropout", type=float, default=0.5, help="cover dropout of the moddrop / both methods")
    parser.add_argument("--catalogues", nargs="+", default=["complete", "ragged"], choices=["complete", "ragged"])
    parser.add_argument("--epochs", type=int, default=None, help="MMoE epochs (default: the settings')")
    parser.add_argument(
        "--rules",
        nargs="*",
        default=[],
        help='also assign the fitted topics under these rules, name=json TopicModel parameters, e.g. calibrated=\'{"assign_rule": "calibrated"}\'',
    )
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench_topics_ragged.json"))
    parser.add_argument("--merge", type=Path, nargs="+", help="no run: merge these JSON outputs (one per seed) and print the table")
    args = parser.parse_args()
    rules = {name: json.loads(params) for name, _, params in (item.partition("=") for item in args.rules)}
    if args.merge:
        runs = [run for path in args.merge for run in json.loads(path.read_text())["runs"]]
        print_summary(runs)
        return
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    base = Settings()
    results: dict = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": f"{platform.machine()} {platform.processor()} python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": [],
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            settings = base.model_copy(
                update={
                    "mmoe": base.mmoe.model_copy(
                        update={"seed": base.mmoe.seed + seed, "torch_threads": 1, **({"epochs": args.epochs} if args.epochs else {})}
                    ),
                    "tag_graph": base.tag_graph.model_copy(update={"seed": base.tag_graph.seed + seed, "workers": 1}),
                    "topics": base.topics.model_copy(update={"seed": base.topics.seed + seed}),
                }
            )
            for name in args.catalogues:
                shares = (
                    {"cover_share": 1.0, "tag_share": 1.0}
                    if name == "complete"
                    else {"cover_share": args.cover_share, "tag_share": args.tag_share}
                )
                catalogue = make_catalogue(
                    args.n_videos,
                    base.synthetic.n_true_topics,
                    base.synthetic.image_size,
                    True,
                    Path(folder) / f"{seed}-{name}",
                    seed,
                    show_progress=False,
                    publish_span_days=3650,
                    **shares,
                )
                for method, audit in run_catalogue(
                    catalogue.videos, catalogue.true_topic, settings, args.methods, args.dropout, rules
                ).items():
                    results["runs"].append({"seed": seed, "catalogue": name, "method": method, "audit": audit})
                    nmi = ", ".join(f"{k} {v:.3f}" for k, v in audit["nmi"].items())
                    groups = ", ".join(f"{k} {g['mean_topics']:.2f} ({100 * g['at_cap']:.0f}% cap)" for k, g in audit["groups"].items())
                    print(f"seed {seed} {name:<8} {method:<7} NMI: {nmi} | topics/video: {groups} | {audit['seconds']:.0f} s", flush=True)
    results["seconds"] = time.perf_counter() - started
    results["summary"] = print_summary(results["runs"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"{len(results['runs'])} runs in {results['seconds']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
