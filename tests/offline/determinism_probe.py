"""Train small models and print a sha256 of everything they learned, one JSON line per model.

Run as ``python -m tests.offline.determinism_probe <title-model-folder> <work-folder> [model ...]`` (models:
mmoe, topics, mrlm, ugfrl, rankers; default all). tests/offline/test_determinism.py runs it in two fresh
interpreters (different ``PYTHONHASHSEED``) and requires identical digests: same seed and thread count, same bits.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(np.asarray(array))
        h.update(str(array.dtype).encode() + str(array.shape).encode())
        h.update(array.tobytes())
    return h.hexdigest()


def state_digest(module: torch.nn.Module) -> str:
    return digest(*[value.detach().cpu().numpy() for _, value in sorted(module.state_dict().items())])


def probe_mmoe_and_topics(title_model: Path, work: Path, models: set[str]) -> dict[str, str]:
    from offline_jobs.pipeline import run_topic_job
    from topicfs.settings import MMoEConfig, Settings, TagGraphConfig, TopicsConfig
    from topicfs.synthetic import make_catalogue

    catalogue = make_catalogue(
        n_videos=60,
        n_true_topics=3,
        image_size=16,
        out_dir=work / "catalogue",
        seed=2,
        show_progress=False,
        cover_share=0.5,
        tag_share=0.4,
    )
    settings = Settings(
        mmoe=MMoEConfig(
            title_encoder=str(title_model),
            n_experts=3,
            expert_dim=8,
            tower_hidden=8,
            batch_size=8,
            epochs=1,
            image_size_px=16,
            cnn_channels=[4, 8],
            title_trainable_layers=1,
            seed=5,
            torch_threads=1,
            new_token_init="skipgram",
            modality_dropout=0.5,
        ),
        tag_graph=TagGraphConfig(walk_length=10, walks_per_tag=2, embedding_dim=8, epochs=1, workers=1),
        topics=TopicsConfig(n_topics=4, kmeans_iterations=5, missing_modalities="predict"),
    )
    result = run_topic_job(catalogue.videos, settings, write=False)
    out = {}
    mmoe = result.models.mmoe
    if "mmoe" in models:
        parts = [state_digest(mmoe.mmoe_), state_digest(mmoe.title_encoder_), state_digest(mmoe.cover_encoder_)]
        out["mmoe"] = digest(np.frombuffer("".join(parts).encode(), np.uint8), mmoe.transform(catalogue.videos))
    if "topics" in models:
        a = result.assignment
        out["topics"] = digest(
            result.models.tag_graph.embeddings_, result.models.topics.cluster_centers_, a.offsets, a.topic_ids, a.weights
        )
    return out


def probe_mrlm(models: set[str]) -> dict[str, str]:
    from offline_jobs.mrlm import MRLM
    from offline_jobs.mrlm_data import prepare
    from offline_jobs.mrlm_job import demo_config
    from topicfs.settings import Settings
    from topicfs.synthetic import make_catalogue, make_click_log

    catalogue = make_catalogue(n_videos=60, n_true_topics=4, with_images=False, seed=3, show_progress=False)
    log = make_click_log(catalogue, n_users=16, n_days=2, seed=4)
    config = demo_config(Settings().mrlm).model_copy(update={"vector_dim": 16, "torch_threads": 1, "fm_epochs": 2, "epochs": 2})
    data = prepare(catalogue.videos, log.interactions, config)
    out = {}
    if "mrlm" in models:
        model = MRLM.from_config(config).fit(data)
        out["mrlm"] = digest(data.initial_users, data.initial_items, *data.clusters.values(), model.item_vectors_, model.user_vectors())
    if "ugfrl" in models:
        model = MRLM.from_config(config, theta=1.0).fit(data)
        out["ugfrl"] = digest(model.user_global_, model.item_global_)
    return out


def probe_rankers() -> dict[str, str]:
    from serving.rankers import MODELS, Ranker
    from tests.serving.test_rankers import _frame

    train, test = _frame(600, 12, np.arange(0, 60), seed=1), _frame(200, 12, np.arange(60, 90), seed=2)
    out = {}
    for model in MODELS:
        ranker = Ranker(model, "topic", epochs=1, batch_size=128, cross_buckets=1031, show_progress=False, random_state=3).fit(train)
        out[f"ranker_{model}"] = digest(ranker.predict_proba(test))
    return out


def main(argv: list[str]) -> None:
    title_model, work = Path(argv[0]), Path(argv[1])
    models = set(argv[2:]) or {"mmoe", "topics", "mrlm", "ugfrl", "rankers"}
    torch.set_num_threads(1)
    out: dict[str, str] = {}
    if models & {"mmoe", "topics"}:
        out |= probe_mmoe_and_topics(title_model, work, models)
    if models & {"mrlm", "ugfrl"}:
        out |= probe_mrlm(models)
    if "rankers" in models:
        out |= probe_rankers()
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
