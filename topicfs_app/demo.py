"""The README's first command, ``topicfs demo``: every stage of the system end to end on embedded defaults.

1. a synthetic catalogue (titles, tags, rendered covers, known topics) and a click log of users with known
   topic interests (``settings.synthetic``), both made on the spot;
2. offline topic learning (tag graph → DeepWalk → skip-gram, MiniLM + cover CNN fine-tuned by MMoE,
   k-means topics with the τ3 assignment, the 8-dim topic feature), scored against the true topics;
3. MRLM user and item vectors trained on the same click log;
4. Feast: ``feast apply`` + materialize of ``feature_repo/`` into Redis, then one packed ranker read;
5. the stream: the embedded Kafka broker and a Faust worker consume the same users' feed refreshes and
   clicks, keep exposure/click/CTR counts and the τ1/τ2-pruned topic queues live in Redis, and push the
   fresh statistics into Feast's online store;
6. a DCN ranker with topic features and the users' exposure history trained on the click log (point-in-time
   features from Feast), then a few users' candidates from their top topics' queues ranked by it with online
   features and the exposure counts the stream of step 5 kept, and their top videos by MRLM cosine read from Feast.

Everything it starts (Redis when none answers at ``redis.url``, the broker, the worker) it stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack

import pandas as pd

from topicfs.settings import Settings
from topicfs.tables import CLICKS

logger = logging.getLogger(__name__)


def write_click_log(interactions: pd.DataFrame, settings: Settings) -> str:
    """The click log as the ``CLICKS`` offline table (one row per exposure; ``event_timestamp`` = ``ts``)."""
    path = settings.paths.tables_dir / CLICKS
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = interactions[["user_id", "video_id", "clicked", "ts"]].copy()
    frame["event_timestamp"] = frame["ts"]
    frame.to_parquet(path, index=False)
    return str(path)


def run_demo(
    settings: Settings, echo: Callable[[str], None] = print, n_users_shown: int = 3, stream_messages: int = 20000, serve: bool = False
) -> None:
    """Run the six stages in order, printing what each produced; end with the topic browser's address, and with
    ``serve`` keep the browser serving the demo's state until Ctrl-C (then stop what the demo started)."""
    from feast import FeatureStore
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from offline_jobs.mrlm_job import run_mrlm_demo, top_videos_from_feast
    from offline_jobs.pipeline import load_dataset, run_topic_job
    from offline_jobs.topics import format_topics_per_video_report
    from serving.candidates import CandidateGenerator
    from serving.features import UserExposureHistory
    from serving.ranking import demo_text
    from offline_jobs.ranker_training import train_ranker
    from stream import synthetic_stream as stream_users
    from stream.demo import run_demo_stream
    from topicfs.feature_client import PackedFeatureClient
    from topicfs.feature_registry import format_ranker_read, register_and_materialize, sample_video_ids
    from topicfs.services import ensure_redis
    from topicfs.synthetic import make_catalogue, make_click_log

    started = time.perf_counter()
    settings = settings.model_copy(deep=True)
    settings.stream.user_exposure_counts = True  # step 5's stream keeps the users' exposure history ...
    settings.rankers.exposure_history = True  # ... which step 6's ranker is trained with and served (Table II's feature set)
    with ExitStack() as stack:
        local_redis = ensure_redis(settings.redis.url)
        if local_redis is not None:
            stack.callback(local_redis.stop)
            echo(f"[redis] started a memory-only redis-server at {settings.redis.url}")

        echo("[1/6] synthetic catalogue and click log")
        loaded = load_dataset("synthetic", None, settings)
        catalogue_videos = loaded.videos
        syn = settings.synthetic
        # same seed, same true topics and qualities as the catalogue above (covers are not needed for the clicks)
        catalogue = make_catalogue(syn.n_videos, syn.n_true_topics, with_images=False, seed=syn.seed, show_progress=False)
        log = make_click_log(catalogue, n_users=stream_users.USERS, n_days=stream_users.DAYS, seed=stream_users.SEED)  # the stream's users
        clicks_path = write_click_log(log.interactions, settings)
        echo(
            f"      {len(catalogue_videos)} videos ({syn.n_true_topics} true topics), {len(log.interactions)} exposures, "
            f"{int(log.interactions['clicked'].sum())} clicks -> {clicks_path}"
        )

        echo("[2/6] offline topic learning (tag graph + MMoE + k-means)")
        result = run_topic_job(catalogue_videos, settings)
        echo("      seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
        echo("      " + format_topics_per_video_report(result.report).replace("\n", "\n      "))
        nearest = result.assignment.topic_ids[result.assignment.offsets[:-1]]  # (n,) each video's nearest topic
        echo(
            f"      nearest learned topic against the {syn.n_true_topics} true topics: "
            f"ARI {adjusted_rand_score(loaded.true_topic, nearest):.3f}, NMI {normalized_mutual_info_score(loaded.true_topic, nearest):.3f} "
            f"({settings.topics.n_topics} learned topics may split a true one: NMI tolerates that, ARI less)"
        )

        echo("[3/6] MRLM user and item vectors on the same click log (GFRL triplets + MFRL siamese)")
        echo("      " + run_mrlm_demo(settings, catalogue_videos, log.interactions, list(range(n_users_shown))).replace("\n", "\n      "))

        echo("[4/6] Feast: apply feature_repo/ and materialize into Redis")
        report = register_and_materialize(settings)
        echo("      " + report.summary().replace("\n", "\n      "))
        store = FeatureStore(repo_path=str(settings.feast.repo_path))
        ranker_client = PackedFeatureClient(store, settings.feast.ranker_service)
        echo("      " + format_ranker_read(ranker_client.read(sample_video_ids(settings, store, 1))).replace("\n", "\n      "))

        echo("[5/6] stream: embedded Kafka + Faust worker over the users' refreshes and clicks")
        stream_settings = settings.model_copy(deep=True)
        stream_settings.stream.feast_repo_path = settings.feast.repo_path
        summary = run_demo_stream(stream_settings, settings.paths.tables_dir, stream_messages)
        echo("      " + summary["text"].replace("\n", "\n      "))

        echo("[6/6] downstream: a DCN ranker with topic features, candidates from the users' top topics, ranked")
        ranker_dir = train_ranker(log.interactions, settings, settings.feast.repo_path, model="dcn", with_topics=True)
        echo(
            f"      trained DCN with topic features (point-in-time from Feast's offline store) and the users' exposure history -> {ranker_dir}"
        )
        users = list(range(n_users_shown))
        ranked = demo_text(settings, settings.feast.repo_path, ranker_dir, users, k=5, feature_service=settings.feast.ranker_service)
        echo("      " + ranked.replace("\n", "\n      "))
        generator = CandidateGenerator.from_settings(settings)
        for user_id in users:
            seen = UserExposureHistory.from_hash(generator.exposure_history(user_id), user_id)
            echo(
                f"      user {user_id}: exposure history kept by the stream: {seen.exposures} exposures, {seen.clicks} clicks, "
                f"{len(seen.topic_exposures)} topics shown"
            )
        for user_id, best in top_videos_from_feast(settings, users, k=5, store=store).items():
            echo(f"      user {user_id}: top videos by MRLM cosine (vectors from Feast): " + ", ".join(f"{v} ({c:.3f})" for v, c in best))
        stats = PackedFeatureClient(store, settings.feast.ranker_service).read(
            [c.video_id for c in generator.candidates(users[0]).candidates[:2]]
        )
        echo("      live statistics pushed by the stream, read through Feast:")
        echo("      " + format_ranker_read(stats).replace("\n", "\n      "))
        echo(f"demo finished in {time.perf_counter() - started:.0f} s")
        address = f"http://{settings.serving.ui_host}:{settings.serving.ui_port}/"
        if serve:
            serve_browser(settings, echo)
        elif local_redis is None:
            echo(f"topic browser of this state: `topicfs serve ui` serves it at {address}")
        else:
            echo(f"topic browser: `topicfs demo --serve` keeps this state (in a Redis the demo started) and serves it at {address}")


def serve_browser(settings: Settings, echo: Callable[[str], None]) -> None:
    """Serve the topic browser on ``serving.ui_host:ui_port`` until Ctrl-C, printing its address once it listens."""
    import uvicorn

    from serving.ui import create_ui_app

    class Announcing(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:
                echo(
                    f"topic browser at http://{settings.serving.ui_host}:{settings.serving.ui_port}/ (Ctrl-C stops it and the demo's services)"
                )

    config = uvicorn.Config(create_ui_app(settings), host=settings.serving.ui_host, port=settings.serving.ui_port, log_level="warning")
    Announcing(config).run()
