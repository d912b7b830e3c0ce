"""`topicfs offline mrlm evaluate --seeds N`: each seed reruns the split and every model, the summary is the mean and
sample std (ddof 1) of the per-seed figures, and a verdict needs the gap of the means above both stds.
Hand-made results for the arithmetic; a tiny synthetic configuration (seconds per seed on one core) end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from offline_jobs.mrlm_job import MODELS, EvaluationResult, evaluate_once, evaluate_seeds, seed_summary, seeds_report, verdict, verdicts
from topicfs.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def made_result(seed: int, recall50: dict[str, float]) -> EvaluationResult:
    test = {model: {"Recall@50": value, "AUC@50": value / 2} for model, value in recall50.items()}
    return EvaluationResult("made", seed, {"users": 3, "items": 4}, test, {}, 0.5, {"MRLM": 1, "U-GFRL": 1, "BPR-MF": 1}, {"x": 1.0}, "")


def test_summary_is_mean_and_sample_std_and_verdicts_need_the_gap_above_both_stds():
    runs = [
        {"Popularity": 0.30, "BPR-MF": 0.50, "U-GFRL": 0.58, "MRLM": 0.50},
        {"Popularity": 0.35, "BPR-MF": 0.52, "U-GFRL": 0.57, "MRLM": 0.60},
        {"Popularity": 0.40, "BPR-MF": 0.54, "U-GFRL": 0.59, "MRLM": 0.70},
    ]
    results = [made_result(seed, run) for seed, run in zip((5, 6, 7), runs)]
    summary = seed_summary(results)
    assert summary["MRLM"]["Recall@50"] == pytest.approx({"mean": 0.60, "std": 0.10})  # ddof 1, not 0.0816 (ddof 0)
    assert summary["Popularity"]["Recall@50"] == pytest.approx({"mean": 0.35, "std": 0.05})
    assert summary["BPR-MF"]["AUC@50"] == pytest.approx({"mean": 0.26, "std": 0.01})
    # gap 0.25 > max(0.10, 0.05); gap 0.08 < 0.10 (MRLM's own spread); gap 0.02 < 0.10
    assert verdicts(summary, (50,)) == {
        "Popularity": {"Recall@50": "above"},
        "BPR-MF": {"Recall@50": "not established"},
        "U-GFRL": {"Recall@50": "not established"},
    }
    assert verdict({"mean": 0.3, "std": 0.01}, {"mean": 0.5, "std": 0.02}) == "below"
    assert verdict({"mean": 0.6, "std": float("nan")}, {"mean": 0.1, "std": float("nan")}) == "not established"  # one run


def test_seeds_evaluate_every_model_per_seed_and_aggregate_the_saved_runs(tmp_path):
    settings = Settings().model_copy(
        update={
            "paths": Settings().paths.model_copy(update={"artifacts_dir": tmp_path / "artifacts"}),
            "synthetic": Settings().synthetic.model_copy(update={"n_videos": 60, "n_true_topics": 3, "with_images": False}),
            "feast": Settings().feast.model_copy(update={"mrlm_vector_dim": 8}),
            "mrlm": Settings().mrlm.model_copy(
                update={
                    "seed": 11,
                    "epochs": 1,
                    "fm_epochs": 1,
                    "bpr_epochs": 2,
                    "batch_size": 1024,
                    "initial_dim": 16,
                    "conv_channels": [4, 4, 4, 4],
                    "global_dim": 16,
                    "dcp_dim": 4,
                    "siamese_channels": [4, 4],
                    "triplet_negatives": 1,
                    "vector_dim": 8,
                    "text_svd_dim": 8,
                    "torch_threads": 1,
                }
            ),
        }
    )
    out = tmp_path / "report" / "mrlm.md"
    seen = []
    report, results = evaluate_seeds("synthetic", settings, 2, out, alphas=(0.0, 1.0), on_seed=lambda r: seen.append(r.seed))
    assert seen == [11, 12] and [r.seed for r in results] == [11, 12]

    saved = json.loads((out.parent / "mrlm_seeds.json").read_text(encoding="utf-8"))
    runs = [json.loads((out.parent / f"mrlm_seed{seed}.json").read_text(encoding="utf-8")) for seed in (11, 12)]
    assert saved["seeds"] == [11, 12] and [r["seed"] for r in runs] == [11, 12]
    for model in MODELS:
        for metric, got in saved["summary"][model].items():
            values = [run["test"][model][metric] for run in runs]
            assert got["mean"] == pytest.approx(np.mean(values), abs=1e-12), (model, metric)
            assert got["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12), (model, metric)
    assert saved["verdicts"] == verdicts(seed_summary(results))
    # the seed reaches the split and the models: the two seeds differ, and seed 12 alone gives seed 12's figures again
    assert runs[0]["test"] != runs[1]["test"]
    again = evaluate_once("synthetic", settings.model_copy(update={"mrlm": settings.mrlm.model_copy(update={"seed": 12})}), (0.0, 1.0))
    assert again.test == results[1].test
    assert out.read_text(encoding="utf-8") == report == seeds_report(results)
    mrlm50 = saved["summary"]["MRLM"]["Recall@50"]
    assert "| MRLM | " in report and f"{mrlm50['mean']:.4f} ± {mrlm50['std']:.4f}" in report


def test_seeds_below_one_is_one_error_line(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOPICFS_")}
    environ["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "topicfs_app.cli", "offline", "mrlm", "evaluate", "--dataset", "synthetic", "--seeds", "0"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "--seeds" in lines[0], done.stderr
