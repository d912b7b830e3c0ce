"""MRLM job: train, write the Feast tables, refresh user vectors from the click stream, evaluate, demo.

    topicfs offline mrlm train --dataset movielens           # model under <artifacts>/models/mrlm, tables under <artifacts>/tables
    topicfs offline mrlm train --dataset file --videos data/videos.parquet --interactions data/interactions.parquet
    topicfs feast register                                   # feast apply + materialize (the MRLM views included)
    topicfs offline mrlm refresh --user-id 1 --user-id 2     # latest clicks from Redis -> new user vectors -> Feast online store
    topicfs offline mrlm evaluate --dataset movielens        # Recall@N / AUC@N table of MRLM, its variants and the baselines

Tables (layouts of topicfs/tables.py): ``mrlm_item_vectors.parquet`` (video_id, item_vector = m_v, d4) and
``mrlm_user_vectors.parquet`` (user_id, user_vector, d4: the rule of offline_jobs/mrlm.py over the user's
latest training positives). The refresh recomputes a user's vector from the saved m(g_u), m_v and the
user's latest clicks as the stream keeps them (Redis list ``topicfs.keys.KeyLayout.user_clicks``, newest first).

Metrics (:func:`ranking_metrics`), per user with positives in the evaluated split, over every item the
user has no earlier interaction with (train, and valid when testing), averaged over users:
Recall@N = hits in the top N / the user's positives; AUC@N = the share of (positive, non-positive) pairs
ranked in the right order when the ranking is cut at N (items below the cut tie, ties count 1/2).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from offline_jobs.artifacts import utc_now
from offline_jobs.experiments import load_experiment
from offline_jobs.mrlm import MRLM, MRLMVariants, SavedVectors, cosine_scores, normalize, validate_config
from offline_jobs.mrlm_data import MRLMData, MRLMDataError, prepare
from topicfs import tables
from topicfs.feast_names import MRLM_ITEM_VECTORS_VIEW, MRLM_USER_VECTORS_VIEW
from topicfs.datasets import DataFiles
from topicfs.errors import UserError
from topicfs.settings import MRLMConfig, Settings

logger = logging.getLogger(__name__)

DATASETS = ("movielens", "synthetic", "file")
CUTOFFS = (10, 20, 50, 100)
SELECT_AT = 50  # valid Recall@50 picks epochs and the user-vector rule


def model_dir(settings: Settings) -> Path:
    return settings.paths.models_dir / "mrlm"


def mrlm_variants() -> dict:
    """MRLM's research variants as parameters: offline_jobs/experiments/mrlm.toml (off: they lost on ml-100k valid)."""
    return load_experiment("mrlm", MRLMVariants).model_dump()


# --- data ------------------------------------------------------------------------------------------


@dataclass
class LoadedData:
    """A dataset's tables as the MRLM preprocessing takes them."""

    videos: pd.DataFrame
    interactions: pd.DataFrame
    users: pd.DataFrame | None = None
    item_entities: pd.DataFrame | None = None
    kg: pd.DataFrame | None = None
    extra: dict = field(default_factory=dict)


def load_dataset(name: str, settings: Settings, synthetic_users: int = 600, files: DataFiles | None = None) -> LoadedData:
    """``movielens`` (ml-100k from settings.paths.movielens), ``synthetic`` (topicfs.synthetic, made on the spot) or
    ``file`` (the user's contract files in ``files``; a ``rating`` column stays a rating, judged by mrlm.rating_threshold)."""
    if name == "file":
        if files is None:
            raise UserError("--dataset file needs --videos and --interactions")
        return LoadedData(files.load_videos(), files.load_interactions(settings.mrlm.rating_threshold))
    if name == "movielens":
        from topicfs.movielens import load_ml100k

        ml = load_ml100k(settings.paths.movielens)
        return LoadedData(ml.videos, ml.interactions, ml.users, ml.item_entities, ml.kg)
    if name == "synthetic":
        from topicfs.synthetic import make_catalogue, make_click_log

        config = settings.synthetic
        out_dir = settings.paths.artifacts_dir / "synthetic_mrlm"
        catalogue = make_catalogue(
            config.n_videos, config.n_true_topics, config.image_size, config.with_images, out_dir, config.seed, show_progress=False
        )
        log = make_click_log(catalogue, n_users=synthetic_users, seed=config.seed)
        return LoadedData(catalogue.videos, log.interactions, extra={"true_topic": catalogue.true_topic})
    raise MRLMDataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


def prepare_loaded(loaded: LoadedData, config: MRLMConfig) -> MRLMData:
    return prepare(loaded.videos, loaded.interactions, config, users=loaded.users, item_entities=loaded.item_entities, kg=loaded.kg)


# --- metrics ---------------------------------------------------------------------------------------


def _by_user(frame: pd.DataFrame, n_users: int, positive_only: bool) -> list[np.ndarray]:
    rows = frame[frame["positive"]] if positive_only else frame
    grouped = rows.groupby("user")["item"].apply(lambda items: np.unique(items.to_numpy()))
    empty = np.zeros(0, np.int64)
    return [grouped.get(user, empty) for user in range(n_users)]


@dataclass
class EvaluationSplit:
    """Per user: items not to rank (earlier interactions) and the positives to find."""

    exclude: list[np.ndarray]
    truth: list[np.ndarray]


def evaluation_split(data: MRLMData, split: str) -> EvaluationSplit:
    """``valid``: exclude train, find valid positives; ``test``: exclude train + valid, find test positives."""
    seen = data.train if split == "valid" else pd.concat([data.train, data.valid])
    target = data.valid if split == "valid" else data.test
    exclude = _by_user(seen, data.n_users, positive_only=False)
    truth = [np.setdiff1d(t, e) for t, e in zip(_by_user(target, data.n_users, positive_only=True), exclude)]
    return EvaluationSplit(exclude, truth)


def ranking_metrics(scores: np.ndarray, split: EvaluationSplit, cutoffs: Sequence[int] = CUTOFFS) -> dict[str, float]:
    """Mean Recall@N and AUC@N over users with positives; scores: (n_users, n_items), higher = better."""
    n_items = scores.shape[1]
    largest = min(max(cutoffs), n_items)
    sums = {f"{kind}@{n}": 0.0 for n in cutoffs for kind in ("Recall", "AUC")}
    counted = 0
    for user, truth in enumerate(split.truth):
        if not len(truth):
            continue
        row = scores[user].astype(np.float64)  # a copy: excluded items go to -inf
        row[split.exclude[user]] = -np.inf
        candidates = n_items - len(split.exclude[user])
        negatives = candidates - len(truth)
        if negatives <= 0:
            continue
        top = np.argpartition(-row, largest - 1)[:largest]
        top = top[np.argsort(-row[top], kind="stable")]
        hit = np.isin(top, truth)
        counted += 1
        for n in cutoffs:
            flags = hit[:n]
            hits = int(flags.sum())
            negatives_above = np.arange(len(flags)) - (np.cumsum(flags) - flags)  # at each position
            ordered = float((negatives - negatives_above[flags]).sum())
            ties = (len(truth) - hits) * 0.5 * (negatives - (len(flags) - hits))
            sums[f"Recall@{n}"] += hits / len(truth)
            sums[f"AUC@{n}"] += (ordered + ties) / (len(truth) * negatives)
    if counted == 0:
        raise MRLMDataError("evaluation: no user has a positive in the evaluated split")
    return {name: value / counted for name, value in sums.items()}


# --- baselines -------------------------------------------------------------------------------------


def popularity_scores(data: MRLMData) -> np.ndarray:
    """Every user gets the items ranked by training positives, (n_users, n_items)."""
    counts = np.bincount(data.train.loc[data.train["positive"], "item"], minlength=data.n_items).astype(np.float32)
    return np.broadcast_to(counts, (data.n_users, data.n_items))


class BPRMF:
    """Matrix factorisation with the BPR loss (Rendle et al. 2009), random negatives; the best valid epoch is kept."""

    def __init__(
        self, dim: int = 64, epochs: int = 40, learning_rate: float = 5e-3, l2: float = 1e-4, batch_size: int = 1024, random_state: int = 0
    ):
        self.dim = dim
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.l2 = l2
        self.batch_size = batch_size
        self.random_state = random_state

    def fit(self, data: MRLMData, select: Callable[[np.ndarray], float] | None = None) -> BPRMF:
        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        users_table, items_table = nn.Embedding(data.n_users, self.dim), nn.Embedding(data.n_items, self.dim)
        for table in (users_table, items_table):
            nn.init.normal_(table.weight, std=0.1)
        optimizer = torch.optim.Adam([users_table.weight, items_table.weight], lr=self.learning_rate)
        positives = data.train[data.train["positive"]]
        users, items = positives["user"].to_numpy(), positives["item"].to_numpy()
        best, self.best_epoch_ = -np.inf, self.epochs - 1
        self.scores_ = None
        for epoch in range(self.epochs):
            order = rng.permutation(len(users))
            negatives = rng.integers(0, data.n_items, size=len(users))
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                u = users_table(torch.from_numpy(users[batch]))  # (b, dim)
                p, n = items_table(torch.from_numpy(items[batch])), items_table(torch.from_numpy(negatives[batch]))
                loss = (
                    -nn.functional.logsigmoid((u * (p - n)).sum(1)).mean()
                    + self.l2 * (u.square().sum(1) + p.square().sum(1) + n.square().sum(1)).mean()
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            scores = (users_table.weight @ items_table.weight.T).detach().numpy()
            score = select(scores) if select is not None else float(epoch)
            if score > best:
                best, self.best_epoch_, self.scores_ = score, epoch, scores
        return self


# --- evaluation ------------------------------------------------------------------------------------


def _global_cosine(model: MRLM) -> np.ndarray:
    return cosine_scores(model.user_global_, model.item_global_)


def scoring_rules(model: MRLM) -> dict[str, Callable[[], np.ndarray]]:
    """The alternatives to the served d4 rule that we tried (not servable at d4: they need g, d1 = 300)."""
    unit_items = normalize(model.item_vectors_)
    history_mean = np.stack([unit_items[h].mean(0) if len(h) else np.zeros(unit_items.shape[1], np.float32) for h in model.history_])
    return {
        "cos(g_u, g_v), d1": lambda: _global_cosine(model),
        # the paper's literal concatenation, made well defined by giving items [g_v, m_v] too (d1 + d4)
        "paper concat [g_u, latest m] · [g_v, m_v]": lambda: cosine_scores(
            np.hstack([normalize(model.user_global_), normalize(history_mean)]), np.hstack([normalize(model.item_global_), unit_items])
        ),
    }


MODELS = ("Popularity", "BPR-MF", "U-GFRL", "MRLM")  # the keys of EvaluationResult.test, in table order


@dataclass
class EvaluationResult:
    """One seed's evaluation: test metrics per model (keys :data:`MODELS`), the valid figures the choices
    were made on, the chosen α and epochs, seconds, and the Markdown report of the run."""

    dataset: str
    seed: int
    sizes: dict[str, int]
    test: dict[str, dict[str, float]]
    valid: dict[str, float]
    alpha: float
    epochs: dict[str, int]
    seconds: dict[str, float]
    report: str

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "report"}


def evaluate_once(
    dataset: str,
    settings: Settings,
    alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    files: DataFiles | None = None,
) -> EvaluationResult:
    """Train MRLM, U-GFRL and the baselines on one split (seed ``settings.mrlm.seed``: split, k-means, FM, BPR-MF,
    U-GFRL and MRLM); test metrics per model and a Markdown report.

    α (the user-vector blend) is picked on valid among ``alphas``; epochs by valid Recall@50; test is read once.
    ``files``: the user's contract files of ``dataset="file"``; the report is named after ``files.name``.
    """
    config = settings.mrlm
    validate_config(config, settings.feast.mrlm_vector_dim)
    variants = mrlm_variants()
    torch.set_num_threads(config.torch_threads)
    started = time.monotonic()
    data = prepare_loaded(load_dataset(dataset, settings, files=files), config)
    valid, test = evaluation_split(data, "valid"), evaluation_split(data, "test")
    dataset = files.name if dataset == "file" and files is not None else dataset
    seconds: dict[str, float] = {"preprocessing": time.monotonic() - started}

    def valid_recall(scores: np.ndarray) -> float:
        return ranking_metrics(scores, valid, (SELECT_AT,))[f"Recall@{SELECT_AT}"]

    rows: dict[str, dict[str, float]] = {}
    valid_rows: dict[str, float] = {}
    rows["Popularity"] = ranking_metrics(popularity_scores(data), test)
    valid_rows["Popularity"] = valid_recall(popularity_scores(data))
    tick = time.monotonic()
    bpr = BPRMF(config.bpr_dim, config.bpr_epochs, random_state=config.seed).fit(data, valid_recall)
    seconds["BPR-MF"] = time.monotonic() - tick
    rows["BPR-MF"] = ranking_metrics(bpr.scores_, test)
    valid_rows["BPR-MF"] = valid_recall(bpr.scores_)

    tick = time.monotonic()
    ugfrl = MRLM.from_config(config, theta=1.0, **variants).fit(data, lambda m: valid_recall(_global_cosine(m)))
    seconds["U-GFRL"] = time.monotonic() - tick
    rows["U-GFRL"] = ranking_metrics(_global_cosine(ugfrl), test)
    valid_rows["U-GFRL"] = valid_recall(_global_cosine(ugfrl))

    tick = time.monotonic()
    model = MRLM.from_config(config, feast_vector_dim=settings.feast.mrlm_vector_dim, **variants).fit(
        data, lambda m: valid_recall(cosine_scores(m.user_vectors(), m.item_vectors_))
    )
    seconds["MRLM"] = time.monotonic() - tick
    alpha_valid = {
        alpha: valid_recall(cosine_scores(model.user_vectors(alpha=alpha), model.item_vectors_))
        for alpha in sorted({*alphas, config.user_global_weight})
    }
    best_alpha = max(alpha_valid, key=alpha_valid.get)
    rows["MRLM"] = ranking_metrics(cosine_scores(model.user_vectors(alpha=best_alpha), model.item_vectors_), test)
    valid_rows["MRLM"] = alpha_valid[best_alpha]
    rules = {f"MRLM, {name}": valid_recall(rule()) for name, rule in scoring_rules(model).items()}
    labels = {"U-GFRL": "U-GFRL (global vectors only)", "MRLM": f"MRLM (served d4 rule, α={best_alpha:g})"}
    lines = [
        f"### MRLM on {dataset}: {data.n_users} users, {data.n_items} items, {len(data.train)}/{len(data.valid)}/{len(data.test)} train/valid/test interactions (seed {config.seed})",
        "",
        f"Modalities (k-means clusters): {', '.join(f'{m} {k}' for m, k in model.n_clusters_.items())}. "
        f"Epochs kept (valid Recall@{SELECT_AT}): MRLM {model.best_epoch_ + 1}/{config.epochs}, U-GFRL {ugfrl.best_epoch_ + 1}/{config.epochs}, BPR-MF {bpr.best_epoch_ + 1}/{config.bpr_epochs}.",
        "",
        "Test split:",
        "",
        "| model | " + " | ".join(f"Recall@{n}" for n in CUTOFFS) + " | " + " | ".join(f"AUC@{n}" for n in CUTOFFS) + " |",
        "|---|" + "---|" * (2 * len(CUTOFFS)),
    ]
    for name, metrics in rows.items():
        lines.append(
            f"| {labels.get(name, name)} | "
            + " | ".join(f"{metrics[f'Recall@{n}']:.4f}" for n in CUTOFFS)
            + " | "
            + " | ".join(f"{metrics[f'AUC@{n}']:.4f}" for n in CUTOFFS)
            + " |"
        )
    lines += [
        "",
        f"Validation split, Recall@{SELECT_AT} (what the choices were made on):",
        "",
        f"| variant | valid Recall@{SELECT_AT} |",
        "|---|---|",
    ]
    lines += [
        f"| MRLM, served d4 rule with α={alpha:g} (α=1: m(g_u) only, α=0: latest items only) | {value:.4f} |"
        for alpha, value in alpha_valid.items()
    ]
    lines += [f"| {labels.get(name, name)} | {value:.4f} |" for name, value in valid_rows.items() if name in ("BPR-MF", "U-GFRL")]
    lines += [f"| {name} | {value:.4f} |" for name, value in rules.items()]
    lines += ["", "Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + f" (torch threads {config.torch_threads})."]
    return EvaluationResult(
        dataset=dataset,
        seed=config.seed,
        sizes={"users": data.n_users, "items": data.n_items, "train": len(data.train), "valid": len(data.valid), "test": len(data.test)},
        test=rows,
        valid={**valid_rows, **rules},
        alpha=float(best_alpha),
        epochs={"MRLM": model.best_epoch_ + 1, "U-GFRL": ugfrl.best_epoch_ + 1, "BPR-MF": bpr.best_epoch_ + 1},
        seconds=seconds,
        report="\n".join(lines) + "\n",
    )


def evaluate(
    dataset: str,
    settings: Settings,
    out: Path | None = None,
    alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    files: DataFiles | None = None,
) -> str:
    """:func:`evaluate_once` with the report written to ``out`` (default <reports_dir>/mrlm_<dataset>.md); returns the report."""
    result = evaluate_once(dataset, settings, alphas, files)
    out = out or settings.paths.reports_dir / f"mrlm_{result.dataset}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.report, encoding="utf-8")
    return result.report


# --- several seeds ---------------------------------------------------------------------------------


def seed_summary(results: Sequence[EvaluationResult]) -> dict[str, dict[str, dict[str, float]]]:
    """model -> metric -> {"mean", "std"} over the runs; std is the sample std (ddof 1), NaN for one run."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for model in MODELS:
        summary[model] = {}
        for metric in results[0].test[model]:
            values = np.array([r.test[model][metric] for r in results], np.float64)
            std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            summary[model][metric] = {"mean": float(values.mean()), "std": std}
    return summary


def verdict(a: dict[str, float], b: dict[str, float]) -> str:
    """``above`` when mean a − mean b exceeds both stds, ``below`` when mean b − mean a does, else ``not established``
    (also for one run: no std)."""
    gap, spread = a["mean"] - b["mean"], max(a["std"], b["std"])
    if not np.isfinite(spread):
        return "not established"
    return "above" if gap > spread else "below" if -gap > spread else "not established"


def verdicts(summary: dict[str, dict[str, dict[str, float]]], cutoffs: Sequence[int] = CUTOFFS) -> dict[str, dict[str, str]]:
    """MRLM against each baseline at every Recall@N: ``above`` / ``below`` / ``not established`` (see :func:`verdict`)."""
    return {
        baseline: {f"Recall@{n}": verdict(summary["MRLM"][f"Recall@{n}"], summary[baseline][f"Recall@{n}"]) for n in cutoffs}
        for baseline in MODELS
        if baseline != "MRLM"
    }


def _pm(value: dict[str, float]) -> str:
    return f"{value['mean']:.4f} ± {value['std']:.4f}"


def seeds_report(results: Sequence[EvaluationResult]) -> str:
    """Per-seed test Recall@N rows, mean ± std (ddof 1) of every model and metric, and MRLM's verdicts."""
    summary = seed_summary(results)
    first = results[0]
    seeds = ", ".join(str(r.seed) for r in results)
    recalls = [f"Recall@{n}" for n in CUTOFFS]
    lines = [
        f"### MRLM on {first.dataset} over {len(results)} seeds ({seeds}): {first.sizes['users']} users, {first.sizes['items']} items",
        "",
        "Per seed, test split (α: the served rule's blend picked on valid; epochs kept MRLM / U-GFRL / BPR-MF):",
        "",
        "| seed | model | " + " | ".join(recalls) + " | α | epochs |",
        "|---|---|" + "---:|" * len(recalls) + "---|---|",
    ]
    for r in results:
        epochs = f"{r.epochs['MRLM']} / {r.epochs['U-GFRL']} / {r.epochs['BPR-MF']}"
        for model in MODELS:
            extra = f"{r.alpha:g} | {epochs}" if model == "MRLM" else " | "
            lines.append(f"| {r.seed} | {model} | " + " | ".join(f"{r.test[model][m]:.4f}" for m in recalls) + f" | {extra} |")
    lines += [
        "",
        f"Mean ± std (sample std, ddof 1) over {len(results)} seeds, test split:",
        "",
        "| model | " + " | ".join(recalls) + " |",
        "|---|" + "---:|" * len(recalls),
    ]
    lines += [f"| {model} | " + " | ".join(_pm(summary[model][m]) for m in recalls) + " |" for model in MODELS]
    aucs = [f"AUC@{n}" for n in CUTOFFS]
    lines += ["", "| model | " + " | ".join(aucs) + " |", "|---|" + "---:|" * len(aucs)]
    lines += [f"| {model} | " + " | ".join(_pm(summary[model][m]) for m in aucs) + " |" for model in MODELS]
    lines += [
        "",
        "MRLM against each baseline (above / below: the gap of the means exceeds both stds; else not established):",
        "",
        "| baseline | " + " | ".join(recalls) + " |",
        "|---|" + "---|" * len(recalls),
    ]
    lines += [f"| {baseline} | " + " | ".join(row[m] for m in recalls) + " |" for baseline, row in verdicts(summary).items()]
    total = sum(sum(r.seconds.values()) for r in results)
    lines += ["", f"Seconds: {total:.0f} in all ({', '.join(f'seed {r.seed} {sum(r.seconds.values()):.0f}' for r in results)})."]
    return "\n".join(lines) + "\n"


def evaluate_seeds(
    dataset: str,
    settings: Settings,
    n_seeds: int,
    out: Path,
    alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    files: DataFiles | None = None,
    on_seed: Callable[[EvaluationResult], None] | None = None,
) -> tuple[str, list[EvaluationResult]]:
    """:func:`evaluate_once` for seeds mrlm.seed, mrlm.seed + 1, ..., one after the other.

    Writes each seed's report and JSON as it finishes (``<out stem>_seed<S>.md`` / ``.json`` beside ``out``), then the
    summary report to ``out`` and ``<out stem>_seeds.json`` (per-seed results, mean ± std, verdicts). Returns the summary
    report and the per-seed results; ``on_seed`` is called after each seed.
    """
    from offline_jobs.artifacts import write_json_atomic

    if n_seeds < 1:
        raise UserError(f"--seeds {n_seeds}: give at least 1")
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in range(settings.mrlm.seed, settings.mrlm.seed + n_seeds):
        seeded = settings.model_copy(update={"mrlm": settings.mrlm.model_copy(update={"seed": seed})})
        result = evaluate_once(dataset, seeded, alphas, files)
        (out.parent / f"{out.stem}_seed{seed}.md").write_text(result.report, encoding="utf-8")
        write_json_atomic(out.parent / f"{out.stem}_seed{seed}.json", {"torch_threads": settings.mrlm.torch_threads, **result.to_json()})
        results.append(result)
        if on_seed is not None:
            on_seed(result)
    report = seeds_report(results)
    summary = seed_summary(results)
    write_json_atomic(
        out.parent / f"{out.stem}_seeds.json",
        {
            "dataset": results[0].dataset,
            "seeds": [r.seed for r in results],
            "torch_threads": settings.mrlm.torch_threads,
            "summary": {
                m: {k: {s: (v if np.isfinite(v) else None) for s, v in x.items()} for k, x in row.items()} for m, row in summary.items()
            },
            "verdicts": verdicts(summary),
            "runs": [r.to_json() for r in results],
        },
    )
    out.write_text(report, encoding="utf-8")
    return report, results


# --- training and the Feast tables -----------------------------------------------------------------


def _vector_table(key: str, ids: np.ndarray, column: str, vectors: np.ndarray, now) -> pa.Table:
    return pa.table(
        {
            key: pa.array(ids.astype(np.int64), pa.int64()),
            column: pa.array(list(vectors.astype(np.float32)), pa.list_(pa.float32())),
            "event_timestamp": pa.array([now] * len(ids), pa.timestamp("us", tz="UTC")),
            "created": pa.array([now] * len(ids), pa.timestamp("us", tz="UTC")),
        }
    )


def write_tables(model: MRLM, settings: Settings) -> dict[str, Path]:
    """mrlm_item_vectors.parquet and mrlm_user_vectors.parquet under settings.paths.tables_dir."""
    folder = settings.paths.tables_dir
    folder.mkdir(parents=True, exist_ok=True)
    now = utc_now().replace(microsecond=0)
    written = {
        tables.MRLM_ITEM_VECTORS: _vector_table("video_id", model.video_ids_, "item_vector", model.item_vectors_, now),
        tables.MRLM_USER_VECTORS: _vector_table("user_id", model.user_ids_, "user_vector", model.user_vectors(), now),
    }
    paths = {}
    for name, table in written.items():
        pq.write_table(table, folder / name)
        paths[name] = folder / name
    return paths


@dataclass
class TrainResult:
    model: MRLM
    data: MRLMData
    tables: dict[str, Path]
    model_dir: Path
    seconds: dict[str, float]


def train(settings: Settings, loaded: LoadedData, config: MRLMConfig | None = None) -> TrainResult:
    """Preprocess, fit MRLM (best epoch by valid Recall@50), save the model and write both tables."""
    config = config or settings.mrlm
    validate_config(config, settings.feast.mrlm_vector_dim)
    variants = mrlm_variants()
    torch.set_num_threads(config.torch_threads)
    started = time.monotonic()
    data = prepare_loaded(loaded, config)
    prepared = time.monotonic()
    valid = evaluation_split(data, "valid")
    has_valid = any(len(t) for t in valid.truth)
    select = (
        (lambda m: ranking_metrics(cosine_scores(m.user_vectors(), m.item_vectors_), valid, (SELECT_AT,))[f"Recall@{SELECT_AT}"])
        if has_valid
        else None
    )
    model = MRLM.from_config(config, feast_vector_dim=settings.feast.mrlm_vector_dim, **variants).fit(data, select)
    fitted = time.monotonic()
    folder = model.save(model_dir(settings))
    paths = write_tables(model, settings)
    seconds = {"preprocessing": prepared - started, "training": fitted - prepared, "writing": time.monotonic() - fitted}
    return TrainResult(model, data, paths, folder, seconds)


# --- refresh from the click stream -----------------------------------------------------------------


def require_trained_model(settings: Settings) -> Path:
    """The saved MRLM's folder; a :class:`UserError` saying to train first when there is none."""
    folder = model_dir(settings)
    if not (folder / "vectors.npz").is_file():
        raise UserError(
            f"no trained MRLM model in {folder}: run `topicfs offline mrlm train` first (with the same TOPICFS_PATHS__ARTIFACTS_DIR)"
        )
    return folder


def read_recent_clicks(settings: Settings, user_ids: Sequence[int]) -> dict[int, list[int]]:
    """Each user's latest clicked video ids, newest first, from the stream's Redis lists."""
    from topicfs.keys import KeyLayout
    from topicfs.redis_client import sync_client

    limit = settings.mrlm.latest_items
    keys = KeyLayout.from_config(settings.redis)
    client = sync_client(settings.redis)
    try:
        pipe = client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.lrange(keys.user_clicks(int(user_id)), 0, limit - 1)
        from serving.candidates import parse_id

        clicks = {}
        for user_id, raw in zip(user_ids, pipe.execute()):
            ids = [parse_id(v) for v in raw]
            if None in ids:  # a corrupt entry is skipped, as candidate generation skips it
                logger.warning("user %s: skipped %d click list entries that are not video ids", user_id, ids.count(None))
            clicks[int(user_id)] = [v for v in ids if v is not None]
        return clicks
    finally:
        client.close()


def refresh_user_vectors(settings: Settings, latest_clicks: dict[int, list[int]], store=None) -> pd.DataFrame:
    """Recompute the given users' vectors from the saved model and their latest clicked video ids
    (newest first) and write them to Feast's online store (``mrlm_user_vectors`` view).

    Returns the rows written (user_id, user_vector, event_timestamp); users with neither a trained
    global vector nor a known clicked video are left as they are.
    """
    from topicfs.feature_registry import load_store

    saved = SavedVectors(require_trained_model(settings))
    validate_config(saved.config, settings.feast.mrlm_vector_dim)
    vectors = saved.user_vectors(latest_clicks)
    now = pd.Timestamp(utc_now())
    frame = pd.DataFrame(
        {
            "user_id": np.array(list(vectors), np.int64),
            "user_vector": [v.astype(np.float32) for v in vectors.values()],
            "event_timestamp": [now] * len(vectors),
            "created": [now] * len(vectors),
        }
    )
    if len(frame):
        (store or load_store(settings)).write_to_online_store(MRLM_USER_VECTORS_VIEW, frame)
    return frame


# --- serving helpers the demo calls ----------------------------------------------------------------


def top_videos_from_feast(settings: Settings, user_ids: Sequence[int], k: int, store=None) -> dict[int, list[tuple[int, float]]]:
    """Top ``k`` videos per user by cosine(user_vector, item_vector), both read from Feast's online store.

    The candidate videos are those of the offline item table (``mrlm_item_vectors.parquet``); users or
    videos without an online vector are skipped. Returns user_id -> [(video_id, cosine), ...], best first.
    Call after ``register_and_materialize`` (or ``topicfs feast register``).
    """
    from topicfs.feature_registry import load_store

    store = store or load_store(settings)
    path = settings.paths.tables_dir / tables.MRLM_ITEM_VECTORS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no MRLM item table; run `topicfs mrlm train` (or run_mrlm_demo) first")
    video_ids = pq.read_table(path, columns=["video_id"])["video_id"].to_numpy()
    items = store.get_online_features(
        features=[f"{MRLM_ITEM_VECTORS_VIEW}:item_vector"], entity_rows=[{"video_id": int(v)} for v in video_ids]
    ).to_dict()
    users = store.get_online_features(
        features=[f"{MRLM_USER_VECTORS_VIEW}:user_vector"], entity_rows=[{"user_id": int(u)} for u in user_ids]
    ).to_dict()
    known = [(int(v), vec) for v, vec in zip(items["video_id"], items["item_vector"]) if vec]
    if not known:
        return {}
    item_ids = np.array([v for v, _ in known])
    item_matrix = np.array([vec for _, vec in known], np.float32)  # (n_items, d4)
    result: dict[int, list[tuple[int, float]]] = {}
    for user_id, vector in zip(users["user_id"], users["user_vector"]):
        if not vector:
            continue
        scores = cosine_scores(np.array([vector], np.float32), item_matrix)[0]
        best = np.argsort(-scores, kind="stable")[:k]
        result[int(user_id)] = [(int(item_ids[i]), float(scores[i])) for i in best]
    return result


def demo_config(config: MRLMConfig) -> MRLMConfig:
    """A small MRLM for demo-sized data: seconds on one core."""
    return config.model_copy(
        update={
            "initial_dim": 32,
            "conv_channels": [8, 8, 8, 8],
            "global_dim": 64,
            "dcp_dim": 16,
            "siamese_channels": [8, 8],
            "epochs": 3,
            "fm_epochs": 3,
            "text_svd_dim": 16,
        }
    )


def run_mrlm_demo(settings: Settings, videos: pd.DataFrame, interactions: pd.DataFrame, user_ids: Sequence[int], k: int = 5) -> str:
    """Train a small MRLM on the demo's videos and interactions, write the two MRLM tables, and return a
    text summary with each listed user's top ``k`` videos by the trained vectors (cosine).

    interactions: user_id, video_id, ts and ``clicked`` (0/1) or ``rating``. Run feature registration
    afterwards so the vectors reach the online store; :func:`top_videos_from_feast` then ranks from Feast.
    """
    result = train(settings, LoadedData(videos, interactions), demo_config(settings.mrlm))
    model = result.model
    scores = cosine_scores(model.user_vectors(), model.item_vectors_)
    row_of = {int(u): i for i, u in enumerate(model.user_ids_)}
    lines = [
        f"MRLM: {result.data.n_users} users, {result.data.n_items} videos, modalities {', '.join(model.n_clusters_)}; "
        f"trained in {result.seconds['training']:.1f} s; tables {', '.join(str(p) for p in result.tables.values())}"
    ]
    for user_id in user_ids:
        row = row_of.get(int(user_id))
        if row is None:
            lines.append(f"  user {user_id}: no interactions, no MRLM vector")
            continue
        best = np.argsort(-scores[row], kind="stable")[:k]
        lines.append(f"  user {user_id}: " + ", ".join(f"{int(model.video_ids_[i])} ({scores[row, i]:.3f})" for i in best))
    return "\n".join(lines)
