"""`topicfs offline mrlm ...`: train MRLM user/item vectors, refresh user vectors from the click stream, evaluate."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from topicfs.datasets import InteractionsOption, NameOption, OnErrorChoice, OnErrorOption, VideosOption, data_files, report_dir
from topicfs.settings import get_settings

app = typer.Typer(help="MRLM user and item vectors (GFRL + MFRL), trained offline and served through Feast.", no_args_is_help=True)

DATASET_HELP = (
    "movielens (ml-100k from TOPICFS_PATHS__MOVIELENS), synthetic (topicfs.synthetic, made on the spot) or file (--videos, --interactions)"
)


class MRLMDataset(str, Enum):
    movielens = "movielens"
    synthetic = "synthetic"
    file = "file"


DatasetOption = Annotated[MRLMDataset, typer.Option(help=DATASET_HELP)]


def _files(dataset: MRLMDataset, videos: Path | None, interactions: Path | None, on_error: OnErrorChoice, name: str | None):
    return data_files(videos, interactions, name=name, on_error=on_error) if dataset is MRLMDataset.file else None


@app.command("train")
def train(
    dataset: DatasetOption = MRLMDataset.movielens,
    videos: VideosOption = None,
    interactions: InteractionsOption = None,
    on_error: OnErrorOption = OnErrorChoice.raise_,
) -> None:
    """Preprocess, train MRLM (best epoch by valid Recall@50), save the model and write the two MRLM tables."""
    settings = get_settings()
    files = _files(dataset, videos, interactions, on_error, None)

    from offline_jobs.mrlm_job import load_dataset
    from offline_jobs.mrlm_job import train as train_job

    result = train_job(settings, load_dataset(dataset.value, settings, files=files))
    typer.echo(
        f"{result.data.n_users} users, {result.data.n_items} items; seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items())
    )
    typer.echo(f"model {result.model_dir}; best epoch {result.model.best_epoch_ + 1}")
    for path in result.tables.values():
        typer.echo(f"wrote {path}")


@app.command("refresh")
def refresh(user_id: list[int] = typer.Option(..., "--user-id", help="user to refresh (repeat the option)")) -> None:
    """Read the users' latest clicks from the stream's Redis lists, recompute their vectors, write them to Feast online."""
    from offline_jobs.mrlm_job import read_recent_clicks, refresh_user_vectors, require_trained_model

    settings = get_settings()
    require_trained_model(settings)
    written = refresh_user_vectors(settings, read_recent_clicks(settings, user_id))
    typer.echo(f"refreshed {len(written)} of {len(user_id)} users in the online store")


@app.command("evaluate")
def evaluate(
    dataset: DatasetOption = MRLMDataset.movielens,
    videos: VideosOption = None,
    interactions: InteractionsOption = None,
    on_error: OnErrorOption = OnErrorChoice.raise_,
    name: NameOption = None,
    out: Path | None = typer.Option(None, help="Markdown report file (default: <reports_dir>/mrlm_<name>/mrlm.md)"),
    seeds: int = typer.Option(
        1,
        min=1,
        help="run seeds mrlm.seed, mrlm.seed + 1, ... one after the other (split, k-means, FM, BPR-MF, U-GFRL, MRLM); "
        "print each seed's table, then mean ± std (ddof 1) per model and cut-off; per-seed and summary JSON beside --out",
    ),
) -> None:
    """Recall@N / AUC@N (N = 10, 20, 50, 100) of MRLM, U-GFRL, BPR-MF and popularity on a random 70/20/10 split (--seeds: several)."""
    settings = get_settings()
    files = _files(dataset, videos, interactions, on_error, name)
    label, sources = (files.name, files.sources()) if files is not None else (dataset.value, {"dataset": dataset.value})
    out = out or report_dir(settings.paths.reports_dir, f"mrlm_{label}", sources) / "mrlm.md"

    if seeds > 1:
        from offline_jobs.mrlm_job import evaluate_seeds

        report, _ = evaluate_seeds(dataset.value, settings, seeds, out, files=files, on_seed=lambda result: typer.echo(result.report))
        typer.echo(report)
        typer.echo(f"wrote {out} and {out.parent / (out.stem + '_seeds.json')} (per seed: {out.stem}_seed<S>.md / .json)")
        return

    from offline_jobs.mrlm_job import evaluate as evaluate_job

    typer.echo(evaluate_job(dataset.value, settings, out, files=files))
