"""Benchmark (issues 2 and 21): Table I over several MMoE seeds and ``topics.missing_modalities`` modes, plus topics
per video under each assignment rule.

For every seed in ``--seeds`` (``mmoe.seed``; split, tag graph and k-means seeds stay the settings') and every mode in
``--modes`` it runs :func:`offline_jobs.evaluate_topics.evaluate_representations`, the code of
``topicfs topics evaluate``, with one torch thread:

- ``zero``: the paper (``missing_modalities=zero``, ``mmoe.modality_dropout=0``);
- ``mask``: ``missing_modalities=mask`` (zero's a; k-means and τ3 compare a tagless video on its z half alone, the
  Table I row of a too), ``mmoe.modality_dropout=0``;
- ``impute``: ``missing_modalities=impute`` (real tags' ē where a video has tags, ē predicted by the MMoE tag task only
  for tagless videos), ``mmoe.modality_dropout=0``;
- ``neighbours``: ``missing_modalities=neighbours`` (tagless videos' ē from the tagged training videos nearest in z),
  ``mmoe.modality_dropout=0``;
- ``predict``: ``missing_modalities=predict`` with ``mmoe.modality_dropout`` = ``--dropout``.

When the videos have no cover files (KuaiRec) cover dropout does nothing, so the modes share one fitted MMoE per seed
(z is the same; the second mode then costs the tag graph and the clustering only) and the supervised reference row,
which depends on neither mode, is fitted once per seed. The topic models the runs fit are re-scored under every
assignment rule in ``--rules`` (``name=json`` of :class:`offline_jobs.topics.TopicModel` parameters, e.g.
``calibrated='{"assign_rule": "calibrated"}'``): topics per video and the presence audit, train and held-out videos.

Writes one JSON per run (``<out-dir>/table1_<name>_<mode>_seed<S>.json``: Table I rows, the run's facts, the rules'
figures, sha256 of the run's a of the train and held-out videos) and prints mean ± std (ddof 1) over the seeds.
``--merge FILES`` prints the table of earlier runs; ``--kmeans-spread FILES`` how much a cell of their dumped a moves
with the k-means seed alone; ``--recluster FILES --cluster-runs N`` scores their z and a cells again from the dumps, N
k-means runs per cell (``<file>_runs<N>.json``).

    TOPICFS_MMOE__TORCH_THREADS=1 nice -n 10 python -m benchmarks.bench_table1_seeds --data ../shared/data/kuairec \\
        --seeds 17 18 19 --modes zero predict --out-dir docs/benchmarks
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch

import offline_jobs.evaluate_topics as evaluate_topics
from offline_jobs.encoders import existing_covers
from offline_jobs.evaluate_topics import holdout_split
from offline_jobs.pipeline import video_presence_audit
from offline_jobs.topics import TopicModel, topics_per_video_report
from topicfs.settings import Settings, get_settings

logger = logging.getLogger(__name__)
CELLS = ("ari_pc", "nmi_pc", "ari_sc", "nmi_sc")


class _RecordingTopicModel(TopicModel):
    """The evaluation's TopicModel, keeping the a's it assigned (train first, then held-out) for the rule re-scoring."""

    last: _RecordingTopicModel | None = None

    def fit(self, a, halves=None, predicted_modalities=(), tag_bank=None):
        type(self).last, self.assigned_ = self, []
        return super().fit(a, halves, predicted_modalities, tag_bank)

    def assign(self, a):
        self.assigned_.append(np.asarray(a))
        return super().assign(a)


def rule_figures(model: TopicModel, parts: dict, rules: dict[str, dict]) -> dict[str, dict]:
    """Per rule: topics per video and presence audit of the train and held-out videos under that rule."""
    out = {}
    for name, params in rules.items():
        scored = copy.copy(model).set_params(**params)  # the fitted centres, another rule
        if scored.assign_rule == "calibrated":
            scored.calibrate(parts["train"][1])  # τ3 from the training videos, as fit() sets it under that rule
        figures = {}
        for part, (videos, a, has_tags) in parts.items():
            assignment = scored.assign(a)
            figures[part] = {
                "topics_per_video": topics_per_video_report(assignment, scored.video_thresholds(a)),
                "presence_audit": video_presence_audit(videos, has_tags, assignment, scored.max_topics_per_video),
            }
        out[name] = {"params": params, **figures}
    return out


def dump_parts(videos, settings: Settings, dump: Path) -> tuple[TopicModel, dict]:
    """The saved topic model of a run and {part: (videos, a, has_tags)} for the train and held-out videos."""
    train_idx, held_idx = holdout_split(len(videos), settings.evaluation.holdout_fraction, settings.evaluation.seed)
    arrays = np.load(dump / "a.npz")
    parts = {}
    for part, idx in (("train", train_idx), ("held_out", held_idx)):
        frame = videos.iloc[idx].reset_index(drop=True)
        parts[part] = (frame, arrays[part], frame["tags"].map(len).gt(0).to_numpy())
    return TopicModel.load(dump / "topics"), parts


def run(videos, settings: Settings, seed: int, mode: str, dropout: float, reference: bool, dump: Path) -> dict:
    config = settings.model_copy(
        update={
            "mmoe": settings.mmoe.model_copy(
                update={"seed": seed, "torch_threads": 1, "modality_dropout": dropout if mode == "predict" else 0.0}
            ),
            "topics": settings.topics.model_copy(update={"missing_modalities": mode}),
            "evaluation": settings.evaluation.model_copy(update={"supervised_reference": reference}),
        }
    )
    started = time.perf_counter()
    rows, facts = evaluate_topics.evaluate_representations(videos, config)
    model = _RecordingTopicModel.last
    dump.mkdir(parents=True, exist_ok=True)
    model.save(dump / "topics")
    np.savez(dump / "a.npz", train=model.assigned_[0], held_out=model.assigned_[1])
    parts = zip(("a_train", "a_held_out"), model.assigned_)
    digests = {part: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for part, a in parts}
    return {
        "seed": seed,
        "mode": mode,
        "dropout": dropout if mode == "predict" else 0.0,
        "rows": [r.__dict__ for r in rows],
        "facts": facts,
        "seconds": time.perf_counter() - started,
        "digests": digests,
    }


def kmeans_spread(videos, settings: Settings, paths: list[Path], seeds: int) -> str:
    """How much one Table I cell moves with the k-means seed alone: per run, the dumped held-out a (MMoE+Tag; a mask
    run's clustered on the halves each video has, as its table) clustered with ``seeds`` seeds, ARI and NMI against the
    primary class, mean ± std (ddof 1). For a mask run also its z half with scikit-learn's k-means (the table's z row)
    and with :func:`offline_jobs.topics.masked_kmeans` (one half): what the clustering code alone moves a cell."""
    from offline_jobs.topic_metrics import cluster_scores

    lines = []
    for path in paths:
        result = json.loads(path.read_text())
        model, parts = dump_parts(videos, settings, Path(result["dump"]))
        held, a, _ = parts["held_out"]
        labelled = held["primary_class"].notna().to_numpy()
        labels = held["primary_class"].to_numpy()[labelled]
        halves = model.half_sizes_ if result["mode"] == "mask" else None
        variants = {"a": (a[labelled], halves)}
        if halves is not None:
            z = a[labelled][:, halves[0] :]
            variants.update({"z, scikit-learn": (z, None), "z, masked_kmeans": (z, [z.shape[1]])})
        for name, (features, parts_of) in variants.items():
            scores = np.array([cluster_scores(features, labels, seed, halves=parts_of) for seed in range(seeds)])
            mean, std = scores.mean(axis=0), scores.std(axis=0, ddof=1)
            lines.append(
                f"{path.name}: {name} over {seeds} k-means seeds: ARI (PC) {mean[0]:.4f} ± {std[0]:.4f}, "
                f"NMI (PC) {mean[1]:.4f} ± {std[1]:.4f}"
            )
    return "\n".join(lines)


def recluster(videos, settings: Settings, paths: list[Path], runs: int) -> list[dict]:
    """Earlier runs with their MMoE (z) and MMoE+Tag (a) cells scored again from the dumped held-out a, on all held-out
    videos and per tag group, each cell the mean of ``runs`` k-means runs (seeds ``evaluation.seed`` ..): more runs per
    cell without training again. a is clustered as the run's mode clusters it (mask: on the halves each video has)."""
    out = []
    for path in paths:
        result = json.loads(path.read_text())
        model, parts = dump_parts(videos, settings, Path(result["dump"]))
        held, a, _ = parts["held_out"]
        halves = model.half_sizes_
        z = a[:, halves[0] :]
        has_tags = np.einsum("ij,ij->i", a[:, : halves[0]], a[:, : halves[0]]) > 0  # ē present: the run's has_tags
        everyone = np.ones(len(held), dtype=bool)
        features = [("MMoE (z)", z, everyone), ("MMoE+Tag (a)", a, everyone)]
        masked = {"MMoE+Tag (a)": halves} if result["mode"] == "mask" else {}
        seed = settings.evaluation.seed
        fresh = {row.representation: row.__dict__ for row in evaluate_topics._score_rows(features, held, everyone, seed, runs, masked)}
        result["rows"] = [fresh.get(row["representation"], row) for row in result["rows"]]
        for group, subset in (("with tags", has_tags), ("without tags", ~has_tags)):
            if group in result["facts"].get("groups", {}):
                scored = {
                    row.representation: row.__dict__ for row in evaluate_topics._score_rows(features, held, subset, seed, runs, masked)
                }
                table = result["facts"]["groups"][group]
                table["rows"] = [scored.get(row["representation"], row) for row in table["rows"]]
        result["facts"]["cluster_runs"] = runs
        out.append(result)
    return out


def summary(runs: list[dict]) -> str:
    """Markdown: mean ± std over seeds of the four Table I cells per mode and representation (all held-out videos)."""
    lines = [f"| mode | representation | {' | '.join(CELLS)} |", "|---|---|" + "---:|" * len(CELLS)]
    for mode in dict.fromkeys(r["mode"] for r in runs):
        chosen = [r for r in runs if r["mode"] == mode]
        for name in dict.fromkeys(row["representation"] for r in chosen for row in r["rows"]):
            values = {c: [row[c] for r in chosen for row in r["rows"] if row["representation"] == name] for c in CELLS}
            cells = [f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}" for v in values.values()]
            lines.append(f"| {mode} | {name} (n seeds {len(values['nmi_pc'])}) | {' | '.join(cells)} |")
    # MMoE+Tag against MMoE of the same run (same z, same held-out videos): the seed's own variance cancels
    for mode in dict.fromkeys(r["mode"] for r in runs):
        gaps = []
        for r in (r for r in runs if r["mode"] == mode):
            rows = {row["representation"]: row for row in r["rows"]}
            if "MMoE+Tag (a)" in rows and "MMoE (z)" in rows:
                gaps.append([rows["MMoE+Tag (a)"][c] - rows["MMoE (z)"][c] for c in CELLS])
        if gaps:
            mean, std = np.mean(gaps, axis=0), (np.std(gaps, axis=0, ddof=1) if len(gaps) > 1 else np.zeros(len(CELLS)))
            cells = ", ".join(f"{c} {m:+.4f} ± {d:.4f}" for c, m, d in zip(CELLS, mean, std))
            lines.append(f"MMoE+Tag - MMoE, same run, {mode} (n {len(gaps)}): {cells}")
    rules = dict.fromkeys(name for r in runs for name in r.get("rules", {}))
    for mode in dict.fromkeys(r["mode"] for r in runs):
        for rule in rules:
            for part in ("train", "held_out"):
                figures = [r["rules"][rule][part] for r in runs if r["mode"] == mode and rule in r.get("rules", {})]
                if not figures:
                    continue
                mean = [f["topics_per_video"]["mean_topics_per_video"] for f in figures]
                cap = [f["presence_audit"]["groups"]["all"]["at_cap"] for f in figures]
                lines.append(
                    f"topics per video, {mode}, rule {rule}, {part}: {np.mean(mean):.2f} ± {np.std(mean, ddof=1) if len(mean) > 1 else 0:.2f}, "
                    f"at the cap {100 * np.mean(cap):.1f}% ± {100 * (np.std(cap, ddof=1) if len(cap) > 1 else 0):.1f}"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/kuairec"), help="KuaiRec folder")
    parser.add_argument("--name", default="kuairec")
    parser.add_argument("--seeds", type=int, nargs="+", default=[17, 18, 19])
    parser.add_argument("--modes", nargs="+", default=["zero", "predict"], choices=["zero", "mask", "impute", "neighbours", "predict"])
    parser.add_argument("--dropout", type=float, default=0.5, help="mmoe.modality_dropout of the predict mode")
    parser.add_argument("--cluster-runs", type=int, default=None, help="evaluation.cluster_runs: k-means seeds each cell averages")
    parser.add_argument("--rules", nargs="*", default=[], help="name=json TopicModel parameters to re-score topics under")
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts/bench_table1"), help="one JSON per run")
    parser.add_argument("--dump-dir", type=Path, default=Path("artifacts/bench_table1/models"), help="each run's topic model and a")
    parser.add_argument("--merge", type=Path, nargs="+", help="no run: print the table of these JSON outputs")
    parser.add_argument("--rescore", type=Path, nargs="+", help="no run: re-score these JSON outputs' dumped topics under --rules")
    parser.add_argument(
        "--kmeans-spread",
        type=Path,
        nargs="+",
        help="no run: for these JSON outputs, ARI and NMI (PC) of their dumped held-out a over --spread-seeds k-means seeds",
    )
    parser.add_argument("--spread-seeds", type=int, default=20, help="k-means seeds of --kmeans-spread (seeds 0 ..)")
    parser.add_argument(
        "--recluster",
        type=Path,
        nargs="+",
        help="no run: score these JSON outputs' z and a cells again from their dumps with --cluster-runs runs per cell; "
        "writes <name>_runs<N>.json beside each",
    )
    args = parser.parse_args()
    if args.merge:
        print(summary([json.loads(path.read_text()) for path in args.merge]))
        return
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    rules = {}
    for item in args.rules:
        name, _, params = item.partition("=")
        rules[name] = json.loads(params)
    from offline_jobs.kuairec import load_kuairec

    videos = load_kuairec(args.data)
    settings = get_settings()
    if args.cluster_runs is not None:
        settings = settings.model_copy(update={"evaluation": settings.evaluation.model_copy(update={"cluster_runs": args.cluster_runs})})
    if args.kmeans_spread:
        print(kmeans_spread(videos, settings, args.kmeans_spread, args.spread_seeds))
        return
    if args.recluster:
        runs = recluster(videos, settings, args.recluster, settings.evaluation.cluster_runs)
        for path, result in zip(args.recluster, runs):
            path.with_name(f"{path.stem}_runs{settings.evaluation.cluster_runs}.json").write_text(
                json.dumps(result, indent=1, default=float)
            )
        print(summary(runs))
        return
    if args.rescore:
        runs = []
        for path in args.rescore:
            result = json.loads(path.read_text())
            result["rules"] = {**result.get("rules", {}), **rule_figures(*dump_parts(videos, settings, Path(result["dump"])), rules)}
            path.write_text(json.dumps(result, indent=1, default=float))
            runs.append(result)
        print(summary(runs))
        return
    shared_mmoe = not existing_covers(videos["cover_image"].tolist()).any()
    fitted: dict[int, object] = {}
    original_fit_mmoe = evaluate_topics.fit_mmoe

    def fit_mmoe(train, config: Settings):
        if not shared_mmoe:
            return original_fit_mmoe(train, config)
        if config.mmoe.seed not in fitted:  # without covers, modality dropout is a no-op: one MMoE per seed
            fitted[config.mmoe.seed] = original_fit_mmoe(train, config)
        return fitted[config.mmoe.seed]

    evaluate_topics.fit_mmoe = fit_mmoe
    evaluate_topics.TopicModel = _RecordingTopicModel
    args.out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        for i, mode in enumerate(args.modes):
            dump = args.dump_dir / f"{args.name}_{mode}_seed{seed}"
            result = run(videos, settings, seed, mode, args.dropout, reference=i == 0, dump=dump)
            result["dump"] = str(dump)
            if rules:
                result["rules"] = rule_figures(*dump_parts(videos, settings, dump), rules)
            result.update(
                machine=f"{platform.machine()} python {platform.python_version()}", date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            )
            path = args.out_dir / f"table1_{args.name}_{mode}_seed{seed}.json"
            path.write_text(json.dumps(result, indent=1, default=float))
            cells = {row["representation"]: [round(row[c], 3) for c in CELLS] for row in result["rows"]}
            print(f"seed {seed} {mode}: {cells} ({result['seconds']:.0f} s) -> {path}", flush=True)
            runs.append(result)
        fitted.clear()
    print(summary(runs))


if __name__ == "__main__":
    main()
