"""The README's "Your own data" walk-through, command by command, as a user runs it: subprocesses in a project
folder of their own, on contract files made here that look nothing like the synthetic generator's — free-text
titles with years and punctuation, release dates from 1920 to last month, covers on a third of the videos, tags
on a sixth, some videos without any class — and settings made small through TOPICFS_* variables.

Checked: the topic tables, the Feast values, the stream's per-video counts in Redis equal to the log's, the
candidates, the ranked lists; and Table II and MRLM by their documented commands on the same files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.integration]

GENRES = ["western", "musical", "documentary", "cooking", "science fiction", "cartoon"]
WORDS = {
    "western": ["Sheriff", "Dust", "Outlaw", "Canyon", "Rider"],
    "musical": ["Song", "Dance", "Broadway", "Melody", "Stage"],
    "documentary": ["Inside", "History", "Nature", "Ocean", "Truth"],
    "cooking": ["Pasta", "Bread", "Spice", "Kitchen", "Soup"],
    "science fiction": ["Galaxy", "Robot", "Planet", "Warp", "Alien"],
    "cartoon": ["Bunny", "Duck", "Toon", "Cat", "Mouse"],
}
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200), (200, 40, 200)]
N_VIDEOS, N_USERS = 180, 50
SMALL = {  # seconds, not minutes, on 2 shared cores
    "TOPICFS_TOPICS__N_TOPICS": "10",
    "TOPICFS_MMOE__EPOCHS": "1",
    "TOPICFS_MMOE__BATCH_SIZE": "32",
    "TOPICFS_MMOE__IMAGE_SIZE_PX": "16",
    "TOPICFS_MMOE__TITLE_TRAINABLE_LAYERS": "1",
    "TOPICFS_MMOE__TORCH_THREADS": "1",
    "TOPICFS_TAG_GRAPH__WALK_LENGTH": "20",
    "TOPICFS_TAG_GRAPH__WALKS_PER_TAG": "3",
    "TOPICFS_TAG_GRAPH__EMBEDDING_DIM": "16",
    "TOPICFS_RANKERS__EPOCHS": "1",
    "TOPICFS_RANKERS__LOGISTIC_EPOCHS": "1",
    "TOPICFS_MRLM__EPOCHS": "1",
    "TOPICFS_MRLM__FM_EPOCHS": "2",
    "TOPICFS_MRLM__BPR_EPOCHS": "2",
    "TOPICFS_MRLM__INITIAL_DIM": "16",
    "TOPICFS_MRLM__GLOBAL_DIM": "32",
    "TOPICFS_MRLM__DCP_DIM": "8",
    "TOPICFS_MRLM__TEXT_SVD_DIM": "8",
    "TOPICFS_MRLM__CONV_CHANNELS": "[4, 4, 4, 4]",
    "TOPICFS_MRLM__SIAMESE_CHANNELS": "[4, 4]",
    "TOPICFS_MRLM__VECTOR_DIM": "16",
    "TOPICFS_FEAST__MRLM_VECTOR_DIM": "16",
    "TOPICFS_MRLM__N_CLUSTERS": '{"title": 6, "tags": 4, "categories": 6, "image": 4}',
}


def make_contract_files(folder: Path, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """data/videos.parquet (+ covers/) and data/interactions.csv under ``folder``, meeting the contracts."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    data = folder / "data"
    (data / "covers").mkdir(parents=True)
    today = pd.Timestamp.now(tz="UTC").floor("D")
    first, last = pd.Timestamp("1920-01-01", tz="UTC"), today - pd.Timedelta(days=30)
    rows = []
    for i in range(N_VIDEOS):
        genre_index = i % len(GENRES)
        genre = GENRES[genre_index]
        published = first + (last - first) * float(rng.random())
        a, b = rng.choice(WORDS[genre], 2, replace=False)
        title = [f"{a} & {b} ({published.year})", f"“{a}!” — {b}, part {i % 4 + 1}", f"{a}: the {b.lower()}? ({published.year}, restored)"][
            i % 3
        ]
        cover = None
        if i % 3 == 0:  # covers on a third
            pixels = np.clip(np.array(COLOURS[genre_index]) + rng.normal(0, 25, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(data / "covers" / f"{i}.png")
            cover = f"covers/{i}.png"
        no_class = i % 10 == 7  # some videos without any class
        rows.append(
            {
                "video_id": 1000 + i,
                "title": title,
                "cover_image": cover,
                "primary_class": None if no_class else genre,
                "secondary_class": None if no_class or i % 2 else f"{published.year // 10 * 10}s",
                "tags": [genre.replace(" ", "-"), str(rng.choice(WORDS[genre])).lower()] if i % 6 == 0 else [],  # tags on a sixth
                "publish_ts": published,
            }
        )
    videos = pd.DataFrame(rows)
    videos.to_parquet(data / "videos.parquet", index=False)

    start = today - pd.Timedelta(days=9)
    log = []
    for user in range(N_USERS):
        liked = user % len(GENRES)
        for _ in range(36):
            video = int(rng.integers(N_VIDEOS))
            clicked = rng.random() < (0.6 if video % len(GENRES) == liked else 0.08)
            ts = start + pd.Timedelta(seconds=float(rng.uniform(0, 9 * 86400)))
            log.append({"user_id": user, "video_id": 1000 + video, "clicked": int(clicked), "ts": ts.isoformat()})
    interactions = pd.DataFrame(log).sort_values("ts", kind="stable")
    interactions.to_csv(data / "interactions.csv", index=False)
    return videos, interactions


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's project folder: the contract files and a copy of the Feast repo."""
    folder = tmp_path_factory.mktemp("my-project")
    videos, interactions = make_contract_files(folder)
    shutil.copytree(ROOT / "feature_repo", folder / "feature_repo", ignore=shutil.ignore_patterns("data", "__pycache__"))
    return {"folder": folder, "videos": videos, "interactions": interactions}


def environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPICFS_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(SMALL)
    env.update(extra)
    return env


def topicfs(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "topicfs_app.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"topicfs {' '.join(args)} -> {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


def test_walkthrough_own_catalogue_and_click_log(project, redis_url):
    """catalogue + click log -> topics -> Feast -> stream produce into Kafka -> worker -> candidates and ranked lists."""
    import redis as redis_lib

    from stream.broker import EmbeddedBroker
    from topicfs.keys import KeyLayout
    from topicfs.settings import RedisConfig

    folder, videos, log = project["folder"], project["videos"], project["interactions"]
    name = f"own{uuid.uuid4().hex[:6]}"
    broker = EmbeddedBroker.start()
    try:
        env = environment(
            {
                "TOPICFS_REDIS__URL": redis_url,
                "TOPICFS_REDIS__KEY_PREFIX": name,
                "TOPICFS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "TOPICFS_KAFKA__EMBEDDED": "false",
                "TOPICFS_FEAST__REPO_PATH": "feature_repo",  # relative: the project folder, for the CLI and the worker alike
                "TOPICFS_STREAM__FEAST_REPO_PATH": "feature_repo",
                "TOPICFS_STREAM__APP_ID": f"{name}-workers",
                "TOPICFS_STREAM__EVENTS_TOPIC": f"{name}.events",
                "TOPICFS_STREAM__VIDEOS_TOPIC": f"{name}.videos",
                "TOPICFS_STREAM__DEAD_LETTER_TOPIC": f"{name}.dead-letter",
                "TOPICFS_STREAM__PARTITIONS": "2",
                "TOPICFS_STREAM__REBALANCE_TIMEOUT_S": "2",
                "TOPICFS_STREAM__SESSION_TIMEOUT_S": "6",
            }
        )

        # 1. topics from the catalogue
        out = topicfs(["topics", "learn", "--dataset", "file", "--data", "data/videos.parquet"], folder, env)
        assert f"{N_VIDEOS} videos, 10 topics" in out
        tables = folder / "artifacts" / "tables"
        video_topics = pd.read_parquet(tables / "video_topics.parquet")
        assert sorted(video_topics["video_id"]) == sorted(videos["video_id"])
        assert video_topics["n_topics"].gt(0).mean() > 0.5
        published = video_topics.set_index("video_id")["event_timestamp"]
        assert published.min() < pd.Timestamp("1930-01-01", tz="UTC")  # release dates before 1970 kept as they are

        # 2. Feast: apply + materialize into Redis
        out = topicfs(["feast", "register", "--read", "0"], folder, env)
        feast_values = read_feast(folder, env, [int(v) for v in video_topics["video_id"][:5]])
        for video_id, topic_ids in zip(video_topics["video_id"][:5], video_topics["topic_ids"][:5]):
            assert list(feast_values[int(video_id)]) == list(topic_ids)

        # 3. the worker, then the click log into Kafka
        worker = subprocess.Popen(
            [sys.executable, "-m", "topicfs_app.cli", "stream", "worker"],
            cwd=folder,
            env=env,
            stdout=open(folder / "worker.log", "w"),
            stderr=subprocess.STDOUT,
        )
        try:
            out = topicfs(["stream", "produce", "--interactions", "data/interactions.csv"], folder, env)
            sent = json.loads(out.strip().splitlines()[-1])
            assert sent["rows"] == len(log) and sent["click_messages"] == int(log["clicked"].sum())

            # 4. the stream's per-video counts equal the log's
            expected = log.groupby("video_id").agg(exposures=("clicked", "size"), clicks=("clicked", "sum"))
            layout = KeyLayout.from_config(RedisConfig(url=redis_url, key_prefix=name))
            client = redis_lib.Redis.from_url(redis_url)
            deadline = time.monotonic() + 240
            while True:
                counts = {int(v): client.hmget(layout.video_stats(int(v)), "exposures", "clicks") for v in expected.index}
                total = sum(int(e or 0) for e, _ in counts.values())
                if total == expected["exposures"].sum() or time.monotonic() > deadline:
                    break
                assert worker.poll() is None, (folder / "worker.log").read_text()[-5000:]
                time.sleep(1)
            got = pd.DataFrame({v: {"exposures": int(e or 0), "clicks": int(c or 0)} for v, (e, c) in counts.items()}).T
            pd.testing.assert_frame_equal(got.sort_index(), expected.astype("int64").sort_index(), check_names=False)

            # 5. the live statistics reach Feast through the worker's pusher (its repo path was relative)
            busiest = int(expected["exposures"].idxmax())
            deadline = time.monotonic() + 60
            while read_feast_stats(folder, env, busiest) != int(expected.loc[busiest, "exposures"]) and time.monotonic() < deadline:
                time.sleep(1)
            assert read_feast_stats(folder, env, busiest) == int(expected.loc[busiest, "exposures"])
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)

        # 6. candidates from the user's top topics
        user = int(log[log["clicked"] == 1]["user_id"].iloc[0])
        result = json.loads(topicfs(["serve", "candidates", str(user), "--n", "20"], folder, env).strip().splitlines()[-1])
        assert result["candidates"], result
        user_topics = {t["topic_id"] for t in result["topics"]}
        assert {topic for _, topic in result["candidates"]} <= user_topics

        # 7. a ranker on the click log (point-in-time topic features from the Feast repo), then ranked lists
        out = topicfs(["offline", "train-ranker", "--clicks", "data/interactions.csv", "--feature-repo", "feature_repo"], folder, env)
        ranker = folder / "artifacts" / "models" / "ranker_dcn_topic"
        assert ranker.is_dir(), out
        out = topicfs(
            ["serve", "demo", "--ranker", str(ranker), "--feature-repo", "feature_repo", "--user", str(user), "--k", "3"], folder, env
        )
        assert f"user {user}" in out
    finally:
        broker.stop()


def read_feast(folder: Path, env: dict[str, str], video_ids: list[int]) -> dict[int, list[int]]:
    code = (
        "import json, sys; from feast import FeatureStore; from topicfs.settings import get_settings; "
        "store = FeatureStore(repo_path=str(get_settings().feast.repo_path)); "
        f"rows = store.get_online_features(features=['video_topics:topic_ids'], entity_rows=[{{'video_id': v}} for v in {video_ids}]).to_dict(); "
        "print(json.dumps(dict(zip(rows['video_id'], rows['topic_ids']))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        env=env | {"TOPICFS_FEAST__REPO_PATH": str(folder / "feature_repo")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {int(k): v for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def read_feast_stats(folder: Path, env: dict[str, str], video_id: int) -> int | None:
    code = (
        "from feast import FeatureStore; from topicfs.settings import get_settings; "
        "store = FeatureStore(repo_path=str(get_settings().feast.repo_path)); "
        f"print(store.get_online_features(features=['video_stats:exposures'], entity_rows=[{{'video_id': {video_id}}}]).to_dict()['exposures'][0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        env=env | {"TOPICFS_FEAST__REPO_PATH": str(folder / "feature_repo")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    value = result.stdout.strip().splitlines()[-1]
    return None if value == "None" else int(value)


def test_table2_on_contract_files(project):
    """`topicfs offline table2 --dataset file ...` prints the table; the report is named after the data folder."""
    folder = project["folder"]
    out = topicfs(
        ["offline", "table2", "--dataset", "file", "--videos", "data/videos.parquet", "--interactions", "data/interactions.csv"],
        folder,
        environment({"TOPICFS_PATHS__ARTIFACTS_DIR": "table2-artifacts"}),
    )
    print(out)
    lines = [line for line in out.splitlines() if line.startswith("| data |")]
    assert [line.split("|")[2].strip() for line in lines] == ["LR", "EMLP", "DCN"]
    for line in lines:
        auc_without, auc_with = (float(line.split("|")[i]) for i in (3, 4))
        assert 0 < auc_without < 100 and 0 < auc_with < 100
    assert (folder / "table2-artifacts" / "reports" / "table2_data" / "table2.md").is_file()


def test_mrlm_on_contract_files(project):
    """`topicfs offline mrlm train` and `evaluate` with --dataset file: tables written, the metrics table printed."""
    folder = project["folder"]
    env = environment({"TOPICFS_PATHS__ARTIFACTS_DIR": "mrlm-artifacts"})
    files = ["--dataset", "file", "--videos", "data/videos.parquet", "--interactions", "data/interactions.csv"]
    out = topicfs(["offline", "mrlm", "train", *files], folder, env)
    users = pd.read_parquet(folder / "mrlm-artifacts" / "tables" / "mrlm_user_vectors.parquet")
    assert len(users) == N_USERS and len(users["user_vector"].iloc[0]) == 16, out
    out = topicfs(["offline", "mrlm", "evaluate", *files], folder, env)
    print(out)
    assert "### MRLM on data:" in out and "| Popularity |" in out and "| BPR-MF |" in out
    assert (folder / "mrlm-artifacts" / "reports" / "mrlm_data" / "mrlm.md").is_file()
