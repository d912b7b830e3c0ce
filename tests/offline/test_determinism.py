"""Same seed and thread count, same bits (issue 21): MMoE, the topic job, MRLM, U-GFRL and the three rankers trained
in two fresh interpreters with different hash seeds give identical weights and outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.offline.test_encoders import tiny_title_model  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["mmoe", "topics", "mrlm", "ugfrl", "rankers"]


def test_training_is_bit_for_bit_reproducible_across_processes(tmp_path, tiny_title_model):  # noqa: F811
    runs = []
    for hash_seed in ("1", "2"):  # both at once: the test's wall time is one run's
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1"}
        work = tmp_path / hash_seed
        work.mkdir()
        runs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.offline.determinism_probe", str(tiny_title_model), str(work), *MODELS],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    digests = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-3000:]
        digests.append(json.loads(stdout.strip().splitlines()[-1]))
    first, second = digests
    assert set(first) == {"mmoe", "topics", "mrlm", "ugfrl", "ranker_lr", "ranker_emlp", "ranker_dcn"}
    assert first == second, {k: (first[k], second[k]) for k in first if first[k] != second[k]}
