"""`topicfs topics ...`: learn topics, evaluate representations (Table I / Fig. 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from topicfs.settings import get_settings

app = typer.Typer(help="Offline topic learning (MTL III-A): tag graph embeddings, MMoE over title and cover, k-means topics.", no_args_is_help=True)

DATASET_HELP = "synthetic (made on the spot), kuairec (KuaiRec's folder in --data) or file (a videos table meeting the contract in --data)"


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
    dataset: str = typer.Option("synthetic", help=DATASET_HELP),
    data: Path | None = typer.Option(None, help="input path for kuairec/file (for synthetic: where covers are written)"),
) -> None:
    """Learn topics and write the video-topic, tag-embedding, video-tag-embedding and topic-centroid tables plus the models."""
    from offline_jobs.pipeline import load_dataset, run_topic_job
    from offline_jobs.topics import format_topics_per_video_report

    settings = get_settings()
    loaded = load_dataset(dataset, data, settings)  # type: ignore[arg-type]
    result = run_topic_job(loaded.videos, settings)
    typer.echo(f"{len(loaded.videos)} videos, {settings.topics.n_topics} topics; seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    typer.echo(format_topics_per_video_report(result.report))
    if loaded.true_topic is not None:
        a, _, _ = result.models.representation(loaded.videos)
        first = result.assignment.topic_ids[result.assignment.offsets[:-1]]
        scores = truth_scores(first, a, loaded.true_topic, settings.evaluation.seed)
        typer.echo("against the synthetic ground truth: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    for name, path in result.tables.items():
        typer.echo(f"wrote {path}")


@app.command("evaluate")
def evaluate(
    dataset: str = typer.Option("synthetic", help=DATASET_HELP),
    data: Path | None = typer.Option(None, help="input path for kuairec/file"),
    out: Path | None = typer.Option(None, help="report folder (default: <artifacts>/reports/<dataset>)"),
) -> None:
    """Table I and Fig. 3 on a held-out 10%: ARI/NMI of k-means (K = #classes) per representation; Markdown + PNG."""
    from offline_jobs.evaluate_topics import evaluate_representations, markdown_table, tagged_markdown, write_report
    from offline_jobs.pipeline import load_dataset
    from offline_jobs.topics import format_topics_per_video_report

    settings = get_settings()
    loaded = load_dataset(dataset, data, settings)  # type: ignore[arg-type]
    rows, facts = evaluate_representations(loaded.videos, settings)
    title = f"Table I on {loaded.name}: {facts['n_held_out']} held-out videos, models fitted on {facts['n_train']}"
    paths = write_report(rows, facts, out or settings.paths.reports_dir / loaded.name, title)
    typer.echo(title)
    typer.echo(markdown_table(rows))
    if tagged := tagged_markdown(facts):
        typer.echo(tagged)
    for part, report in facts["topics_per_video"].items():
        typer.echo(f"topics per video ({part} videos, K={settings.topics.n_topics}, τ3={settings.topics.assign_threshold}):")
        typer.echo(format_topics_per_video_report(report))
    typer.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in facts["seconds"].items()))
    typer.echo(f"wrote {paths['markdown']}, {paths['plot']}")
