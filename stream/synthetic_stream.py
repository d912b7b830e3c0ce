"""The synthetic click stream of the demo, tests and benchmark: catalogue + users with known topic interests."""

from __future__ import annotations

from collections.abc import Iterator

from stream.replay import video_published_events
from topicfs.settings import Settings
from topicfs.synthetic import make_catalogue, make_click_log


# The synthetic users of the stream by default (the demo trains its offline models on the same people).
USERS, DAYS, SEED = 500, 7, 11


def synthetic_stream(
    settings: Settings, n_users: int = USERS, n_days: int = DAYS, refreshes_per_user_per_day: int = 4, seed: int = SEED
) -> tuple[Iterator[dict], Iterator[dict]]:
    """(video-published messages carrying each video's true topic, exposure/click messages in time order)."""
    synthetic = settings.synthetic
    catalogue = make_catalogue(
        n_videos=synthetic.n_videos, n_true_topics=synthetic.n_true_topics, with_images=False, seed=synthetic.seed, show_progress=False
    )
    log = make_click_log(catalogue, n_users=n_users, n_days=n_days, refreshes_per_user_per_day=refreshes_per_user_per_day, seed=seed)
    topics = {int(video_id): [int(topic)] for video_id, topic in zip(catalogue.videos["video_id"], catalogue.true_topic)}
    publish_ts = float(catalogue.videos["publish_ts"].min().timestamp())
    return video_published_events(topics, publish_ts), log.events()
