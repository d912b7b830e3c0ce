"""Representation evaluation as the MTL paper's Table I and Fig. 3.

Run it::

    topicfs topics evaluate --dataset kuairec --data ../shared/data/kuairec

A seeded 10% of the videos is held out; every model (tag graph, MMoE) is fitted on the other 90%.
The held-out videos are then represented five ways and clustered with k-means, K = the number of
primary (PC) or secondary (SC) classes among them, and the clusters scored with ARI and NMI:

    title only   pretrained f_T, mean-pooled, no fine-tuning
    tags only    ē (Eq. 4) from the tag graph embeddings
    cover only   f_C before fine-tuning (a given TorchScript CNN), where covers exist
    MMoE         z of the fine-tuned MMoE
    MMoE+Tag     a = [ē/‖ē‖, z/‖z‖]

and one reference row that is not a representation of the paper (``evaluation.supervised_reference``):
a supervised text classifier, char 1-2-gram TF-IDF + logistic regression, fitted on the training videos'
titles for the primary and for the secondary class; the held-out videos' class probabilities of both,
concatenated, are clustered like the rows above. It shows how much class information a model trained
directly for the classes gets out of the titles under this protocol, so a representation's score can be
read against it (docs/TABLE1.md).

Ragged modalities (issue 21): the table is also scored per modality group, on the held-out videos with / without
tags and with / without a cover (``facts["groups"]``, :func:`groups_markdown`; K = the classes in the group;
``facts["with_tags"]`` and :func:`tagged_rows` keep the tagged group). The cover-only row exists only for videos with
a cover and is scored on them (its ``n`` says how many). "MMoE (z)" and "MMoE+Tag (a)" are built as the topic job
builds them (``topics.missing_modalities``, :func:`offline_jobs.pipeline.topic_inputs`). With the paper's zero fill a
tagless video has a = [0, z/‖z‖], at cosine at most 1/√2 from every tagged video whatever its z, so on a mixed set
k-means partly separates tagged from tagless videos, which is not what Table I measures about a representation.
Under ``missing_modalities="mask"`` the MMoE+Tag row is clustered comparing each video on the halves it has
(:func:`offline_jobs.topic_metrics.cluster_scores` with ``halves``), as the topic model compares it.
The presence audit of the topics (``facts["presence_audit"]``) is printed and saved with the table.

Fig. 3's figure is the ratio of the mean distance between class centres to the mean distance of a
video to its class centre (primary classes), per representation. The command prints a Markdown table
and writes it with a PNG bar plot and a JSON of the figures under ``paths.reports_dir``.

It also reports how many topics videos get (the paper: about 4): topics are fitted (K = ``n_topics``,
τ3 = ``assign_threshold``) on a of the training videos, as ``topicfs topics learn`` does, and assigned
to the training videos and to the held-out ones (as the stream assigns videos published later).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from offline_jobs.encoders import existing_covers, pretrained_cover_embeddings, pretrained_title_embeddings
from offline_jobs.pipeline import fit_mmoe, fit_tag_graph, fitted_topic_inputs, predicted_modalities, topic_inputs, video_presence_audit
from offline_jobs.topic_metrics import cluster_scores, inter_intra_ratio
from offline_jobs.topics import TopicModel, format_presence_audit, representation_halves, topic_representation, topics_per_video_report
from topicfs.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Row:
    representation: str
    ari_pc: float
    nmi_pc: float
    ari_sc: float
    nmi_sc: float
    inter_intra: float
    n: int = 0  # videos the row was scored on (the cover-only row: those with a cover)


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) row positions; the same n, fraction and seed give the same split."""
    order = np.random.default_rng(seed).permutation(n)
    n_held = max(1, int(round(n * fraction)))
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def _mean_cluster_scores(
    features: np.ndarray, labels: np.ndarray, seed: int, runs: int, halves: list[int] | None = None
) -> tuple[float, float]:
    """(ARI, NMI) of :func:`cluster_scores`, averaged over k-means seeds seed .. seed + runs - 1."""
    scores = np.array([cluster_scores(features, labels, seed + run, halves=halves) for run in range(runs)])  # (runs, 2)
    return float(scores[:, 0].mean()), float(scores[:, 1].mean())


def _scores(name: str, features: np.ndarray, held: pd.DataFrame, seed: int, runs: int = 1, halves: list[int] | None = None) -> Row:
    pc = held["primary_class"].notna().to_numpy()
    sc = held["secondary_class"].notna().to_numpy()
    ari_pc, nmi_pc = _mean_cluster_scores(features[pc], held["primary_class"].to_numpy()[pc], seed, runs, halves)
    try:  # a small group may hold too few videos for K = its secondary classes: those two cells are then NaN
        ari_sc, nmi_sc = (
            _mean_cluster_scores(features[sc], held["secondary_class"].to_numpy()[sc], seed, runs, halves)
            if sc.sum() > 2
            else (np.nan, np.nan)
        )
    except ValueError:
        ari_sc, nmi_sc = np.nan, np.nan
    ratio = inter_intra_ratio(features[pc], held["primary_class"].to_numpy()[pc])
    return Row(name, ari_pc, nmi_pc, ari_sc, nmi_sc, ratio, len(held))


def _score_rows(
    features: list[tuple[str, np.ndarray, np.ndarray]],
    held: pd.DataFrame,
    subset: np.ndarray,
    seed: int,
    runs: int = 1,
    masked: dict[str, list[int]] | None = None,
) -> list[Row]:
    """Every representation scored on the held-out videos in ``subset`` where it exists (its mask), each cell the mean
    over ``runs`` k-means seeds; a representation with too few videos there for K = their classes is left out with a
    warning. ``masked``: representation -> the widths of its halves, clustered on the halves each video has
    (``topics.missing_modalities="mask"``, :func:`offline_jobs.topic_metrics.cluster_scores`)."""
    rows = []
    for name, values, exists in features:
        keep = subset & exists
        if not keep.any():
            continue
        try:
            rows.append(_scores(name, values[keep], held[keep].reset_index(drop=True), seed, runs, (masked or {}).get(name)))
        except ValueError as error:
            logger.warning("Table I row %r skipped on %d videos: %s", name, int(keep.sum()), error)
    return rows


REFERENCE_ROW = "reference: char n-gram LR on titles (supervised)"


def supervised_reference_features(train: pd.DataFrame, held: pd.DataFrame, seed: int) -> np.ndarray | None:
    """[p(primary | title), p(secondary | title)] of the held-out videos: (n_held, M1 + M2) float32.

    Char 1-2-grams (``char_wb``, seen in >= 2 training titles, sublinear tf, idf), one multinomial logistic
    regression (C = 5) per class column, fitted on the training videos with that label. A column with fewer
    than two classes among the training videos is left out; None when both are.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from offline_jobs.mmoe import _titles as titles  # the titles MMoE reads: missing ones as ""

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    try:
        x_train = vectorizer.fit_transform(titles(train))
    except ValueError:  # no n-gram in two training titles
        logger.warning("supervised reference row skipped: the training titles share no character n-gram")
        return None
    x_held = vectorizer.transform(titles(held))
    parts = []
    for column in ("primary_class", "secondary_class"):
        labelled = train[column].notna().to_numpy()
        if train.loc[labelled, column].nunique() < 2:
            continue
        model = LogisticRegression(C=5.0, max_iter=1000, random_state=seed)
        parts.append(model.fit(x_train[labelled], train.loc[labelled, column].astype(str)).predict_proba(x_held))
    return np.concatenate(parts, axis=1).astype(np.float32) if parts else None


def evaluate_representations(videos: pd.DataFrame, settings: Settings) -> tuple[list[Row], dict]:
    """Fit on 90%, score the five representations of the held-out 10%. Returns rows and run facts."""
    cfg = settings.evaluation
    job_start = time.perf_counter()
    train_idx, held_idx = holdout_split(len(videos), cfg.holdout_fraction, cfg.seed)
    train, held = videos.iloc[train_idx].reset_index(drop=True), videos.iloc[held_idx].reset_index(drop=True)
    if held["primary_class"].notna().sum() < 3:
        raise ValueError("evaluation needs primary classes on the held-out videos; this dataset has none")
    facts: dict = {"n_train": len(train), "n_held_out": len(held), "cluster_runs": cfg.cluster_runs, "seconds": {}}
    start = time.perf_counter()
    tag_graph = fit_tag_graph(train, settings)
    facts["seconds"]["tag_graph"] = time.perf_counter() - start
    start = time.perf_counter()
    mmoe = fit_mmoe(train, settings)
    facts["seconds"]["mmoe"] = time.perf_counter() - start
    e_bar, has_tags = tag_graph.transform(held["tags"].tolist())
    facts["held_out_with_tags"] = float(has_tags.mean())
    features: list[tuple[str, np.ndarray]] = [
        ("title only (pretrained f_T)", pretrained_title_embeddings(held["title"].tolist(), settings.mmoe)),
        ("tags only (ē)", e_bar),
    ]
    covers = existing_covers(held["cover_image"].tolist())
    facts["held_out_with_cover"] = float(covers.mean())
    if covers.any() and settings.mmoe.image_encoder is not None:
        # scored on the held-out videos that have a cover (its n is printed in the table)
        features.append(("cover only (pretrained f_C)", pretrained_cover_embeddings(held["cover_image"].tolist(), settings.mmoe)))
    elif covers.any():
        logger.warning("cover-only row skipped: it needs a pretrained f_C (mmoe.image_encoder)")
    topics_cfg = settings.topics
    mode = topics_cfg.missing_modalities
    predicted = predicted_modalities(tag_graph, mmoe, train, topics_cfg.complete_share, mode)
    facts["missing_modalities"], facts["predicted_modalities"] = mode, predicted
    # the fitted (training) videos' inputs first: under "neighbours" their tagged videos fill the held-out ē
    start = time.perf_counter()
    e_bar_train, has_tags_train, z_train, bank = fitted_topic_inputs(tag_graph, mmoe, train, topics_cfg, predicted)
    facts["seconds"]["train_inputs"] = time.perf_counter() - start  # ē and z of the training videos (before: in "topics")
    e_bar_a, _, z = topic_inputs(tag_graph, mmoe, held, mode, predicted, bank, topics_cfg.neighbours)
    masked_rows = {}
    if z is not None:
        features += [("MMoE (z)", z), ("MMoE+Tag (a)", topic_representation(e_bar_a, z))]
        if mode == "mask":  # a tagless video is compared on its z half alone, as the topic model compares it
            masked_rows["MMoE+Tag (a)"] = representation_halves(e_bar_a, z)
    if cfg.supervised_reference:
        start = time.perf_counter()
        reference = supervised_reference_features(train, held, cfg.seed)
        if reference is not None:
            features.append((REFERENCE_ROW, reference))
        facts["seconds"]["supervised_reference"] = time.perf_counter() - start
    everyone = np.ones(len(held), dtype=bool)
    masked = [(name, values, covers if name.startswith("cover only") else everyone) for name, values in features]
    rows = _score_rows(masked, held, everyone, cfg.seed, cfg.cluster_runs, masked_rows)
    # The same table per modality group (issue 21): a representation must not score well only where a modality exists.
    facts["groups"] = {}
    for group, subset in (("with tags", has_tags), ("without tags", ~has_tags), ("with cover", covers), ("without cover", ~covers)):
        if 0 < subset.sum() < len(held):
            facts["groups"][group] = {
                "n_videos": int(subset.sum()),
                "rows": [asdict(r) for r in _score_rows(masked, held, subset, cfg.seed, cfg.cluster_runs, masked_rows)],
            }
    if "with tags" in facts["groups"]:
        facts["with_tags"] = facts["groups"]["with tags"]
    start = time.perf_counter()
    a_train = topic_representation(e_bar_train, z_train)
    topics = TopicModel.from_config(topics_cfg, show_progress=False).fit(
        a_train, representation_halves(e_bar_train, z_train), predicted, bank
    )
    threshold, cap = topics.assignment_threshold, topics_cfg.max_topics_per_video  # τ3 as given, or as calibrated at fit
    facts["assign_rule"], facts["assign_threshold"] = topics_cfg.assign_rule, threshold
    facts["pattern_thresholds"] = topics.pattern_thresholds_  # mask + calibrated: τ3 per modality pattern, else {}
    a_held = topic_representation(e_bar_a, z)
    train_assignment, held_assignment = topics.assign(a_train), topics.assign(a_held)
    facts["topics_per_video"] = {
        "train": topics_per_video_report(train_assignment, topics.video_thresholds(a_train)),
        "held_out": topics_per_video_report(held_assignment, topics.video_thresholds(a_held)),
    }
    facts["presence_audit"] = {
        "train": video_presence_audit(train, has_tags_train, train_assignment, cap),
        "held_out": video_presence_audit(held, has_tags, held_assignment, cap),
    }
    facts["seconds"]["topics"] = time.perf_counter() - start
    facts["seconds"]["total"] = time.perf_counter() - job_start
    return rows, facts


def tagged_rows(facts: dict) -> list[Row]:
    """The rows of the table on the held-out videos with tags (``facts["with_tags"]``), [] when there is none."""
    return [Row(**row) for row in facts.get("with_tags", {}).get("rows", [])]


def groups_markdown(facts: dict) -> str:
    """The table per modality group (``facts["groups"]``: with / without tags, with / without a cover), each with its
    heading line, as the report and the CLI print them; "" when every held-out video has the same modalities."""
    parts = []
    for group, table in facts.get("groups", {}).items():
        parts.append(f"The same on the {table['n_videos']} held-out videos {group}:\n\n{markdown_table([Row(**r) for r in table['rows']])}")
    return "\n\n".join(parts)


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| representation | n | ARI (PC) | NMI (PC) | ARI (SC) | NMI (SC) | inter/intra (Fig. 3) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.representation} | {r.n} | {r.ari_pc:.3f} | {r.nmi_pc:.3f} | {r.ari_sc:.3f} | {r.nmi_sc:.3f} | {r.inter_intra:.3f} |"
        )
    return "\n".join(lines)


def write_report(rows: list[Row], facts: dict, out_dir: Path, title: str) -> dict[str, Path]:
    """Markdown, JSON and a PNG bar plot of the rows under ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "table1.md", "json": out_dir / "table1.json", "plot": out_dir / "table1.png"}
    lines = [f"# {title}", "", markdown_table(rows), ""]
    if groups := groups_markdown(facts):
        lines += [groups, ""]
    for part, audit in facts.get("presence_audit", {}).items():
        lines += [f"{part} videos, {format_presence_audit(audit)}".replace("\n", "\n    "), ""]
    for part, report in facts.get("topics_per_video", {}).items():
        histogram = ", ".join(f"{k}: {v}" for k, v in report["histogram"].items())
        lines.append(
            f"- topics per video, {part} videos: mean {report['mean_topics_per_video']:.2f}, "
            f"median {report['median_topics_per_video']:.1f} (histogram topics: videos — {histogram})"
        )
    paths["markdown"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths["json"].write_text(json.dumps({"rows": [r.__dict__ for r in rows], "facts": facts}, indent=2, default=float), encoding="utf-8")
    metrics = ["ari_pc", "nmi_pc", "ari_sc", "nmi_sc", "inter_intra"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4))
    for ax, metric in zip(axes, metrics):
        ax.bar(range(len(rows)), [getattr(r, metric) for r in rows], color=plt.cm.tab10(np.arange(len(rows))))
        ax.set_xticks(range(len(rows)), [r.representation.split(" (")[0] for r in rows], rotation=45, ha="right")
        ax.set_title(metric.replace("_", " ").upper() if metric != "inter_intra" else "inter/intra distance (Fig. 3)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(paths["plot"], dpi=100)
    plt.close(fig)
    return paths
