"""`topicfs mrlm train` shows progress bars like the topic job: the attribute FM's epochs and each MRLM epoch's batches."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_mrlm_train_shows_progress_bars(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPICFS_") and k != "TQDM_DISABLE"}
    env.update(
        {
            "TOPICFS_PATHS__ARTIFACTS_DIR": str(tmp_path / "artifacts"),
            "TOPICFS_SYNTHETIC__N_VIDEOS": "120",
            "TOPICFS_SYNTHETIC__N_TRUE_TOPICS": "4",
            "TOPICFS_SYNTHETIC__WITH_IMAGES": "false",
            # a tiny network and large batches: seconds per epoch (the defaults train for minutes)
            "TOPICFS_MRLM__EPOCHS": "2",
            "TOPICFS_MRLM__FM_EPOCHS": "2",
            "TOPICFS_MRLM__BATCH_SIZE": "1024",
            "TOPICFS_MRLM__INITIAL_DIM": "16",
            "TOPICFS_MRLM__CONV_CHANNELS": "[4, 4, 4, 4]",
            "TOPICFS_MRLM__GLOBAL_DIM": "16",
            "TOPICFS_MRLM__DCP_DIM": "4",
            "TOPICFS_MRLM__SIAMESE_CHANNELS": "[4, 4]",
            "TOPICFS_MRLM__TRIPLET_NEGATIVES": "1",
            "TOPICFS_MRLM__VECTOR_DIM": "8",
            "TOPICFS_FEAST__MRLM_VECTOR_DIM": "8",
        }
    )
    done = subprocess.run(
        [str(VENV_BIN / "topicfs"), "mrlm", "train", "--dataset", "synthetic"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MRLM initial vectors (attribute FM): 100%" in done.stderr and "2/2 [" in done.stderr
    for epoch in (1, 2):  # each epoch's bar moves (its last refresh may be erased when the bar closes)
        assert len(re.findall(rf"MRLM epoch {epoch}/2:\s+\d+%\|", done.stderr)) >= 2, done.stderr[-2000:]
    assert "batch/s, loss=" in done.stderr or "s/batch, loss=" in done.stderr
