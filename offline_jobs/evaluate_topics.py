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

When only some held-out videos have tags, the table is also scored on those alone (``facts["with_tags"]``,
:func:`tagged_rows`; K = the classes among them): a video without tags has a = [0, z/‖z‖], at cosine at most
1/√2 from every tagged video whatever its z, so on a mixed set k-means partly separates tagged from tagless
videos, which is not what Table I measures about a representation.

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

from offline_jobs.encoders import pretrained_cover_embeddings, pretrained_title_embeddings
from offline_jobs.pipeline import fit_mmoe, fit_tag_graph
from offline_jobs.topic_metrics import cluster_scores, inter_intra_ratio
from offline_jobs.topics import TopicModel, representation_halves, topic_representation, topics_per_video_report
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


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) row positions; the same n, fraction and seed give the same split."""
    order = np.random.default_rng(seed).permutation(n)
    n_held = max(1, int(round(n * fraction)))
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def _scores(name: str, features: np.ndarray, held: pd.DataFrame, seed: int) -> Row:
    pc = held["primary_class"].notna().to_numpy()
    sc = held["secondary_class"].notna().to_numpy()
    ari_pc, nmi_pc = cluster_scores(features[pc], held["primary_class"].to_numpy()[pc], seed)
    ari_sc, nmi_sc = cluster_scores(features[sc], held["secondary_class"].to_numpy()[sc], seed) if sc.sum() > 2 else (np.nan, np.nan)
    ratio = inter_intra_ratio(features[pc], held["primary_class"].to_numpy()[pc])
    return Row(name, ari_pc, nmi_pc, ari_sc, nmi_sc, ratio)


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
    facts: dict = {"n_train": len(train), "n_held_out": len(held), "seconds": {}}
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
    covers = held["cover_image"].notna().to_numpy()
    if covers.all() and settings.mmoe.image_encoder is not None:
        features.append(("cover only (pretrained f_C)", pretrained_cover_embeddings(held["cover_image"].tolist(), settings.mmoe)))
    elif covers.any():
        logger.warning("cover-only column skipped: it needs a pretrained f_C (mmoe.image_encoder) and covers on every held-out video")
    z = mmoe.transform(held) if mmoe is not None else None
    if z is not None:
        features += [("MMoE (z)", z), ("MMoE+Tag (a)", topic_representation(e_bar, z))]
    if cfg.supervised_reference:
        start = time.perf_counter()
        reference = supervised_reference_features(train, held, cfg.seed)
        if reference is not None:
            features.append((REFERENCE_ROW, reference))
        facts["seconds"]["supervised_reference"] = time.perf_counter() - start
    rows = [_scores(name, values, held, cfg.seed) for name, values in features]
    if 0 < has_tags.sum() < len(held):
        # The same table on the held-out videos that have tags: there a = [ē/‖ē‖, z/‖z‖] has both halves, while a
        # tagless video's a = [0, z/‖z‖] is at cosine <= 1/√2 from every tagged one, whatever its z (docs/TABLE1.md).
        tagged = held[has_tags].reset_index(drop=True)
        try:
            facts["with_tags"] = {
                "n_videos": int(has_tags.sum()),
                "rows": [asdict(_scores(name, values[has_tags], tagged, cfg.seed)) for name, values in features],
            }
        except ValueError as error:  # too few tagged videos for K = their classes
            logger.warning("Table I on the videos with tags skipped: %s", error)
    start = time.perf_counter()
    e_bar_train, _ = tag_graph.transform(train["tags"].tolist())
    z_train = mmoe.transform(train) if mmoe is not None else None
    a_train = topic_representation(e_bar_train, z_train)
    topics = TopicModel.from_config(settings.topics, show_progress=False).fit(a_train, representation_halves(e_bar_train, z_train))
    threshold = settings.topics.assign_threshold
    facts["topics_per_video"] = {
        "train": topics_per_video_report(topics.assign(a_train), threshold),
        "held_out": topics_per_video_report(topics.assign(topic_representation(e_bar, z)), threshold),
    }
    facts["seconds"]["topics"] = time.perf_counter() - start
    facts["seconds"]["total"] = time.perf_counter() - job_start
    return rows, facts


def tagged_rows(facts: dict) -> list[Row]:
    """The rows of the table on the held-out videos with tags (``facts["with_tags"]``), [] when there is none."""
    return [Row(**row) for row in facts.get("with_tags", {}).get("rows", [])]


def tagged_markdown(facts: dict) -> str:
    """That table with its heading line, as the report and the CLI print it; "" when there is none."""
    rows = tagged_rows(facts)
    if not rows:
        return ""
    return f"The same on the {facts['with_tags']['n_videos']} held-out videos that have tags:\n\n{markdown_table(rows)}"


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| representation | ARI (PC) | NMI (PC) | ARI (SC) | NMI (SC) | inter/intra (Fig. 3) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.representation} | {r.ari_pc:.3f} | {r.nmi_pc:.3f} | {r.ari_sc:.3f} | {r.nmi_sc:.3f} | {r.inter_intra:.3f} |")
    return "\n".join(lines)


def write_report(rows: list[Row], facts: dict, out_dir: Path, title: str) -> dict[str, Path]:
    """Markdown, JSON and a PNG bar plot of the rows under ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "table1.md", "json": out_dir / "table1.json", "plot": out_dir / "table1.png"}
    lines = [f"# {title}", "", markdown_table(rows), ""]
    if tagged := tagged_markdown(facts):
        lines += [tagged, ""]
    for part, report in facts.get("topics_per_video", {}).items():
        histogram = ", ".join(f"{k}: {v}" for k, v in report["histogram"].items())
        lines.append(f"- topics per video, {part} videos: mean {report['mean_topics_per_video']:.2f}, "
                     f"median {report['median_topics_per_video']:.1f} (histogram topics: videos — {histogram})")
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
