"""`topicfs topics ...`: learn topics, evaluate representations (Table I / Fig. 3)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import pandas as pd
import typer

from topicfs.datasets import NameOption, OnErrorChoice, OnErrorOption, check_topic_count
from topicfs.errors import UserError
from topicfs.settings import Settings, get_settings

app = typer.Typer(
    help="Offline topic learning (MTL III-A): tag graph embeddings, MMoE over title and cover, k-means topics.", no_args_is_help=True
)

DATASET_HELP = "synthetic (made on the spot), kuairec (KuaiRec's folder in --data) or file (a videos table meeting the contract in --data)"


class TopicDataset(str, Enum):
    synthetic = "synthetic"
    kuairec = "kuairec"
    file = "file"


DatasetOption = Annotated[TopicDataset, typer.Option(help=DATASET_HELP)]
DataOption = Annotated[
    Optional[Path],
    typer.Option(
        "--data",
        "--videos",
        help="the videos file (Parquet/CSV) for file, KuaiRec's folder for kuairec; for synthetic: where covers are written",
    ),
]


@dataclass
class TopicData:
    videos: pd.DataFrame
    true_topic: np.ndarray | None  # synthetic only
    name: str  # in report paths
    sources: dict[str, str | None]  # what the reports were made from (topicfs.datasets.report_dir)


def load_topic_videos(
    dataset: TopicDataset, data: Path | None, settings: Settings, on_error: OnErrorChoice = OnErrorChoice.raise_, name: str | None = None
) -> TopicData:
    """The videos of ``dataset``, read and checked before the heavy model libraries load."""
    if dataset is TopicDataset.synthetic:
        from offline_jobs.pipeline import load_dataset

        loaded = load_dataset("synthetic", data, settings)
        result = TopicData(loaded.videos, loaded.true_topic, name or loaded.name, {"dataset": "synthetic"})
    elif data is None:
        raise UserError(
            f"--dataset {dataset.value} needs --data: "
            + ("the videos file (Parquet or CSV)" if dataset is TopicDataset.file else "KuaiRec's folder")
        )
    elif dataset is TopicDataset.kuairec:
        from offline_jobs.kuairec import load_kuairec

        result = TopicData(load_kuairec(data, on_error.value), None, name or "kuairec", {"kuairec": str(data.absolute())})
    else:
        from topicfs.datasets import data_files

        files = data_files(data, None, name=name, on_error=on_error, need_interactions=False)
        result = TopicData(files.load_videos(), None, files.name, files.sources())
    check_topic_count(len(result.videos), settings.topics.n_topics)
    return result


def truth_scores(first_topic: np.ndarray, a: np.ndarray, true_topic: np.ndarray, seed: int) -> dict[str, float]:
    """How well learned topics recover the synthetic ground truth: the nearest learned topic against the true one
    (K topics may split a true topic, which NMI tolerates better than ARI), and k-means with K = #true topics on a."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from offline_jobs.topic_metrics import cluster_scores

    ari_k, nmi_k = cluster_scores(a, true_topic, seed)
    return {
        "nearest_topic_ari": float(adjusted_rand_score(true_topic, first_topic)),
        "nearest_topic_nmi": float(normalized_mutual_info_score(true_topic, first_topic)),
        "kmeans_true_k_ari": ari_k,
        "kmeans_true_k_nmi": nmi_k,
    }


@app.command("learn")
def learn(
    dataset: DatasetOption = TopicDataset.synthetic,
    data: DataOption = None,
    on_error: OnErrorOption = OnErrorChoice.raise_,
    name: NameOption = None,
) -> None:
    """Learn topics and write the video-topic, tag-embedding, video-tag-embedding and topic-centroid tables plus the models."""
    settings = get_settings()
    loaded = load_topic_videos(dataset, data, settings, on_error, name)
    videos, true_topic = loaded.videos, loaded.true_topic

    from offline_jobs.pipeline import run_topic_job
    from offline_jobs.topics import format_presence_audit, format_topics_per_video_report

    result = run_topic_job(videos, settings)
    typer.echo(
        f"{len(videos)} videos, {settings.topics.n_topics} topics; seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items())
    )
    typer.echo(format_topics_per_video_report(result.report))
    typer.echo(format_presence_audit(result.report["presence_audit"]))
    if true_topic is not None:
        a, _, _ = result.models.representation(videos)
        first = result.assignment.topic_ids[result.assignment.offsets[:-1]]
        scores = truth_scores(first, a, true_topic, settings.evaluation.seed)
        typer.echo("against the synthetic ground truth: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    for name, path in result.tables.items():
        typer.echo(f"wrote {path}")


@app.command("evaluate")
def evaluate(
    dataset: DatasetOption = TopicDataset.synthetic,
    data: DataOption = None,
    on_error: OnErrorOption = OnErrorChoice.raise_,
    name: NameOption = None,
    out: Path | None = typer.Option(None, help="report folder (default: <artifacts>/reports/<name>)"),
) -> None:
    """Table I and Fig. 3 on a held-out 10%: ARI/NMI of k-means (K = #classes) per representation; Markdown + PNG."""
    from topicfs.datasets import report_dir

    settings = get_settings()
    loaded = load_topic_videos(dataset, data, settings, on_error, name)
    folder = out or report_dir(settings.paths.reports_dir, loaded.name, loaded.sources)

    from offline_jobs.evaluate_topics import evaluate_representations, groups_markdown, markdown_table, write_report
    from offline_jobs.topics import format_presence_audit, format_topics_per_video_report

    rows, facts = evaluate_representations(loaded.videos, settings)
    title = f"Table I on {loaded.name}: {facts['n_held_out']} held-out videos, models fitted on {facts['n_train']}"
    paths = write_report(rows, facts, folder, title)
    typer.echo(title)
    typer.echo(markdown_table(rows))
    if groups := groups_markdown(facts):
        typer.echo(groups)
    for part, report in facts["topics_per_video"].items():
        typer.echo(
            f"topics per video ({part} videos, K={settings.topics.n_topics}, τ3={facts['assign_threshold']:.3f}, rule {facts['assign_rule']}):"
        )
        typer.echo(format_topics_per_video_report(report))
    for part, audit in facts["presence_audit"].items():
        typer.echo(f"{part} videos, {format_presence_audit(audit)}")
    typer.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in facts["seconds"].items()))
    typer.echo(f"wrote {paths['markdown']}, {paths['plot']}")
