"""`topicfs mrlm ...`: train MRLM user/item vectors, refresh user vectors from the click stream, evaluate."""

from __future__ import annotations

from pathlib import Path

import typer

from topicfs.settings import get_settings

app = typer.Typer(help="MRLM user and item vectors (GFRL + MFRL), trained offline and served through Feast.", no_args_is_help=True)

DATASET_HELP = "movielens (ml-100k from TOPICFS_PATHS__MOVIELENS) or synthetic (topicfs.synthetic, made on the spot)"


def _dataset(name: str) -> str:
    from offline_jobs.mrlm_job import DATASETS

    if name not in DATASETS:
        raise typer.BadParameter(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}", param_hint="--dataset")
    return name


@app.command("train")
def train(dataset: str = typer.Option("movielens", help=DATASET_HELP, callback=_dataset)) -> None:
    """Preprocess, train MRLM (best epoch by valid Recall@50), save the model and write the two MRLM tables."""
    from offline_jobs.mrlm_job import load_dataset
    from offline_jobs.mrlm_job import train as train_job

    settings = get_settings()
    result = train_job(settings, load_dataset(dataset, settings))
    typer.echo(f"{result.data.n_users} users, {result.data.n_items} items; seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    typer.echo(f"model {result.model_dir}; best epoch {result.model.best_epoch_ + 1}")
    for path in result.tables.values():
        typer.echo(f"wrote {path}")


@app.command("refresh")
def refresh(user_id: list[int] = typer.Option(..., "--user-id", help="user to refresh (repeat the option)")) -> None:
    """Read the users' latest clicks from the stream's Redis lists, recompute their vectors, write them to Feast online."""
    from offline_jobs.mrlm_job import read_recent_clicks, refresh_user_vectors

    settings = get_settings()
    written = refresh_user_vectors(settings, read_recent_clicks(settings, user_id))
    typer.echo(f"refreshed {len(written)} of {len(user_id)} users in the online store")


@app.command("evaluate")
def evaluate(
    dataset: str = typer.Option("movielens", help=DATASET_HELP, callback=_dataset),
    out: Path | None = typer.Option(None, help="Markdown report file (default: <artifacts>/reports/mrlm_<dataset>.md)"),
) -> None:
    """Recall@N / AUC@N (N = 10, 20, 50, 100) of MRLM, U-GFRL, BPR-MF and popularity on one random 70/20/10 split."""
    from offline_jobs.mrlm_job import evaluate as evaluate_job

    typer.echo(evaluate_job(dataset, get_settings(), out))
