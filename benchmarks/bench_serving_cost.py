"""Fig. 6 of the MTL paper: serving cost of a ranker with the 8-dim topic feature vs a 128-dim content embedding.

Three DCN rankers of the same size settings, trained on the same synthetic rows (one epoch; cost does not
depend on quality):

- Baseline: user, video and history IDs;
- Baseline+Topic: + the video's topic ids (8-dim ID embeddings), the user's voted topics and the 8-dim topic vector;
- Baseline+CNN: + a 128-dim content embedding vector (the paper's cover-CNN feature).

Per configuration: scoring time of one sample (the paper's "deliver one sample") and of one request of 600
candidates, model parameters, feature bytes per request, and the CPU memory torch allocates in one forward
pass (torch profiler). Increments are over the Baseline, as in Fig. 6.

Run: ``python -m benchmarks.bench_serving_cost`` (about a minute); figures go to stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import torch

from serving.features import user_history
from serving.rankers import Ranker, RankerInputs

CONFIGS = (("Baseline", "base"), ("Baseline+Topic", "topic"), ("Baseline+CNN", "content"))


def make_frame(n_rows: int, n_users: int, n_videos: int, n_topics: int, rng: np.random.Generator) -> pd.DataFrame:
    topics = [sorted(set(rng.integers(0, n_topics, rng.integers(1, 5)).tolist())) for _ in range(n_videos)]
    topic_feature = rng.standard_normal((n_videos, 8)).astype(np.float32)
    content = rng.standard_normal((n_videos, 128)).astype(np.float32)
    videos = rng.integers(0, n_videos, n_rows)
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(0, n_users, n_rows),
            "video_id": videos,
            "event_timestamp": pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.arange(n_rows), unit="s"),
            "label": (rng.random(n_rows) < 0.1).astype(np.int8),
            "topic_ids": [topics[v] for v in videos],
            "topic_weights": [[0.8] * len(topics[v]) for v in videos],
            "topic_feature": list(topic_feature[videos]),
            "content_embedding": list(content[videos]),
        }
    )
    frame["history_video_ids"], frame["history_topic_ids"], frame["history_topic_weights"] = user_history(frame, 128, 20, 8)
    return frame


def input_bytes(inputs: RankerInputs) -> int:
    return sum(a.nbytes for a in vars(inputs).values() if isinstance(a, np.ndarray))


def allocated_bytes(ranker: Ranker, inputs: RankerInputs) -> int:
    """CPU memory torch allocates while scoring ``inputs`` once (sum over ops, torch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        ranker.predict_inputs(inputs)
    return int(sum(max(e.cpu_memory_usage, 0) for e in prof.key_averages()))


def time_ms(ranker: Ranker, inputs: RankerInputs, repeats: int) -> np.ndarray:
    for _ in range(20):
        ranker.predict_inputs(inputs)
    out = []
    for _ in range(repeats):
        began = time.perf_counter()
        ranker.predict_inputs(inputs)
        out.append(time.perf_counter() - began)
    return np.asarray(out) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--candidates", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    frame = make_frame(args.rows, 500, 5000, 300, rng)
    request = frame.sample(args.candidates, random_state=args.seed).reset_index(drop=True)
    print(f"# Fig. 6 cost comparison ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)")
    print(
        f"machine: {os.cpu_count()}-core {platform.machine()}, python {platform.python_version()}, torch {torch.__version__}, 1 torch thread"
    )
    print(
        f"DCN, id_embedding_dim 16, hidden (64, 32), 2 cross layers; trained 1 epoch on {args.rows:,} synthetic rows; request = {args.candidates} candidates\n"
    )
    rows = []
    for name, features in CONFIGS:
        ranker = Ranker("dcn", features, epochs=1).fit(frame)
        one, many = ranker.inputs(request.iloc[:1]), ranker.inputs(request)
        rows.append(
            {
                "configuration": name,
                "input dim": ranker.model_.embedding.output_dim,
                "1 sample p50 (ms)": float(np.median(time_ms(ranker, one, args.repeats))),
                f"{args.candidates} candidates p50 (ms)": float(np.median(time_ms(ranker, many, args.repeats // 5))),
                "parameters (KiB)": ranker.n_parameters() * 4 / 1024,
                "features / request (KiB)": input_bytes(many) / 1024,
                "allocated / request (KiB)": allocated_bytes(ranker, many) / 1024,
            }
        )
    table = pd.DataFrame(rows).set_index("configuration")
    print(table.to_markdown(floatfmt=".3f"))
    increments = table.loc[["Baseline+Topic", "Baseline+CNN"]] - table.loc["Baseline"]
    print("\nincrements over the Baseline (Fig. 6):")
    print(increments.to_markdown(floatfmt=".3f"))
    ratio = increments.loc["Baseline+CNN"] / increments.loc["Baseline+Topic"].replace(0, np.nan)
    print("\nBaseline+CNN increment / Baseline+Topic increment (paper: about 3x):")
    print(ratio.to_frame("ratio").T.to_markdown(floatfmt=".2f"))


if __name__ == "__main__":
    main()
