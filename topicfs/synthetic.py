"""Synthetic data with known ground truth, for the demo, tests and benchmarks.

:func:`make_catalogue` draws videos from ``n_true_topics`` hidden topics. A topic decides everything a
video shows: its title words (a topic vocabulary mixed with common words), its tags (a topic tag pool
plus noise tags), its cover image (a topic colour and shape plus noise), its secondary class (= the topic)
and its primary class (= the topic's group of two). Learned topics can therefore be scored against
``true_topic`` with ARI/NMI.

Ragged modalities (issue 21): real catalogues have covers on some videos and tags on a few, mostly on older
ones. ``cover_share`` and ``tag_share`` give covers / tags to that share of videos, drawn with a probability
that falls linearly with the publish time (``presence_age_slope``: 1 = for a share <= 0.5 the oldest video has
twice the share and the newest none; 0 = independent of time), never with the topic. So which modalities a video has says when it was
published, not what it is about, and learned topics can be audited for following presence
(:func:`offline_jobs.topics.presence_audit`). The presence draws use their own random stream: titles,
topics, classes and covers' pixels are those of the same seed without the option, and ``tag_share=1`` gives
every video tags (a video the default draw left untagged gets one tag of its topic's pool).

:func:`make_click_log` draws users whose interests are a sparse mix of the hidden topics and lets them
see feed refreshes of ``videos_per_refresh`` videos; a user clicks a video with a probability that
grows with their interest in its topic and with the video's own quality. The log is returned both as
an interactions table (the offline contract) and as stream events (exposure refreshes and clicks).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from topicfs.contracts import VIDEO_COLUMNS

logger = logging.getLogger(__name__)

# Real English words tokenise into whole MiniLM tokens, so pretrained f_T sees meaningful titles.
_THEMES = [
    "football goal striker league match stadium penalty keeper coach season",
    "recipe noodles dumpling kitchen spicy soup baking chef flavour dinner",
    "puppy kitten cat dog pet cute paws grooming fluffy adoption",
    "guitar piano concert singer melody drums album band chorus lyrics",
    "makeup lipstick skincare eyeliner beauty foundation blush tutorial glow serum",
    "smartphone laptop gadget unboxing charger camera processor screen battery review",
    "hiking mountain camping trail forest lake sunrise backpack tent summit",
    "car engine racing drift motor garage tyres horsepower speed rally",
    "comedy prank joke funny sketch laugh parody blooper skit sitcom",
    "dance choreography ballet hiphop moves rhythm dancer studio routine salsa",
    "fishing boat river catch bait ocean tuna harbour sailing anchor",
    "painting sketch canvas watercolor artist brush portrait drawing gallery ink",
    "workout gym fitness squat muscle cardio yoga stretching protein trainer",
    "baby toddler parenting family newborn mother nursery lullaby stroller daughter",
    "gaming console esports player level quest controller stream boss arcade",
    "farm tractor harvest village rice garden cattle orchard soil farmer",
]
_COMMON = "the a my our new best today amazing first great little big daily top life time day video watch look".split()
_SHAPES = ("circle", "square", "stripes")


@dataclass
class SyntheticCatalogue:
    """A videos table meeting the contract, with the hidden topic of every row."""

    videos: pd.DataFrame  # columns: topicfs.contracts.VIDEO_COLUMNS
    true_topic: np.ndarray  # (n_videos,) int64, aligned with videos' rows
    quality: np.ndarray  # (n_videos,) float64 in (0, 1): the video's own appeal, drives its CTR
    has_cover: np.ndarray | None = None  # (n_videos,) bool: the video has a cover image (None: with_images=False)
    has_tags: np.ndarray | None = None  # (n_videos,) bool: the video has at least one tag


def _topic_words(n_true_topics: int, rng: np.random.Generator) -> list[list[str]]:
    words = [theme.split() for theme in _THEMES]
    syllables = ["ka", "lo", "mi", "ren", "tu", "sha", "vo", "pin", "dex", "ru", "zan", "qui"]
    while len(words) < n_true_topics:  # beyond the themes: pseudo-words, still topic-specific
        words.append(["".join(rng.choice(syllables, size=3)) for _ in range(10)])
    return words[:n_true_topics]


def _render_cover(topic: int, n_true_topics: int, size: int, rng: np.random.Generator) -> Image.Image:
    hue = topic / max(n_true_topics, 1)
    colour = np.array([np.sin(2 * np.pi * (hue + k / 3)) * 0.5 + 0.5 for k in range(3)]) * 255
    image = np.tile(colour, (size, size, 1))
    yy, xx = np.mgrid[0:size, 0:size]
    shape = _SHAPES[topic % len(_SHAPES)]
    if shape == "circle":
        mask = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    elif shape == "square":
        mask = (abs(yy - size / 2) < size / 4) & (abs(xx - size / 2) < size / 4)
    else:
        mask = (xx // max(size // 8, 1)) % 2 == 0
    image[mask] = 255 - image[mask]
    image += rng.normal(0, 25, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")


def make_catalogue(
    n_videos: int = 3000,
    n_true_topics: int = 12,
    image_size: int = 32,
    with_images: bool = True,
    out_dir: str | Path | None = None,
    seed: int = 7,
    start: pd.Timestamp | None = None,
    show_progress: bool = True,
    cover_share: float = 1.0,
    tag_share: float | None = None,
    presence_age_slope: float = 1.0,
    publish_span_days: float = 30.0,
) -> SyntheticCatalogue:
    """Draw a catalogue; cover PNGs go to ``out_dir/covers`` (required when ``with_images``).

    ``cover_share``: share of videos with a cover (1 = all, the default); ``tag_share``: share with tags (None =
    the default draw, about 80%); both drawn older-first with ``presence_age_slope`` (module docstring).
    ``publish_span_days``: videos are published uniformly over this many days from ``start``.
    """
    if with_images and out_dir is None:
        raise ValueError("make_catalogue: out_dir is required when with_images=True (cover images are files)")
    for name, share in (("cover_share", cover_share), ("tag_share", tag_share)):
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError(f"make_catalogue: {name} must be a share in [0, 1], got {share!r}")
    if not 0.0 <= presence_age_slope <= 1.0:
        raise ValueError(f"make_catalogue: presence_age_slope must be in [0, 1], got {presence_age_slope!r}")
    if publish_span_days <= 0:
        raise ValueError(f"make_catalogue: publish_span_days must be > 0, got {publish_span_days!r}")
    rng = np.random.default_rng(seed)
    words = _topic_words(n_true_topics, rng)
    tag_pools = [[f"{words[t][0]}-{j}" for j in range(8)] for t in range(n_true_topics)]
    true_topic = rng.integers(0, n_true_topics, size=n_videos)
    quality = rng.beta(2, 5, size=n_videos)
    start = start if start is not None else pd.Timestamp("2026-10-01", tz="UTC")
    publish_s = np.sort(rng.uniform(0, publish_span_days * 86400, size=n_videos))
    presence_rng = np.random.default_rng([seed, 21])  # its own stream: the draws below stay those of the seed
    with_cover = _presence(cover_share, presence_age_slope, n_videos, presence_rng)
    with_tags = _presence(tag_share, presence_age_slope, n_videos, presence_rng) if tag_share is not None else None
    cover_dir = Path(out_dir) / "covers" if out_dir is not None else None
    if with_images:
        cover_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(n_videos), desc="synthetic catalogue", disable=not show_progress):
        topic = int(true_topic[i])
        n_words = int(rng.integers(4, 9))
        title = [str(rng.choice(words[topic])) if rng.random() < 0.6 else str(rng.choice(_COMMON)) for _ in range(n_words)]
        n_tags = 0 if rng.random() < 0.2 else int(rng.integers(1, 5))
        tags = list(dict.fromkeys(str(rng.choice(tag_pools[topic])) for _ in range(n_tags)))
        if tags and rng.random() < 0.1:  # a noise tag from another topic
            tags.append(str(rng.choice(tag_pools[int(rng.integers(n_true_topics))])))
        if with_tags is not None:
            if not with_tags[i]:
                tags = []
            elif not tags:
                tags = [str(presence_rng.choice(tag_pools[topic]))]
        cover = None
        if with_images:
            image = _render_cover(topic, n_true_topics, image_size, rng)  # drawn either way: same stream
            if with_cover[i]:
                cover = str(cover_dir / f"{i}.png")
                image.save(cover)
        rows.append(
            {
                "video_id": i,
                "title": " ".join(title),
                "cover_image": cover,
                "primary_class": f"group-{topic // 2}",
                "secondary_class": f"topic-{topic}",
                "tags": tags,
                "publish_ts": start + pd.Timedelta(seconds=float(publish_s[i])),
            }
        )
    videos = pd.DataFrame(rows, columns=VIDEO_COLUMNS)
    return SyntheticCatalogue(
        videos=videos,
        true_topic=true_topic.astype(np.int64),
        quality=quality,
        has_cover=videos["cover_image"].notna().to_numpy() if with_images else None,
        has_tags=videos["tags"].map(len).gt(0).to_numpy(),
    )


def _presence(share: float, age_slope: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) bool over videos sorted by publish time: video i present with probability
    share + slope * min(share, 1 - share) * (1 - 2 q_i), q_i = i / (n - 1) its age rank (0 = oldest); the mean is
    ``share`` and the probability stays in [0, 1] (share 1: every video)."""
    q = np.arange(n) / max(n - 1, 1)
    p = share + age_slope * min(share, 1.0 - share) * (1.0 - 2.0 * q)
    return rng.random(n) < p


@dataclass
class SyntheticClickLog:
    """Feed refreshes and clicks of users with known topic interests."""

    interactions: pd.DataFrame  # user_id, video_id, clicked, ts, request_id: one row per exposure
    user_interests: np.ndarray  # (n_users, n_true_topics) float64, rows sum to 1

    def events(self) -> Iterator[dict]:
        """Stream messages in time order: one exposure message per refresh, then one click message per click.

        Exposure: ``{"type": "exposure", "event_id", "user_id", "request_id", "video_ids", "ts"}``;
        click: ``{"type": "click", "event_id", "user_id", "video_id", "ts"}``; ``ts`` in epoch seconds.
        """
        log = self.interactions
        ts_s = log["ts"].astype("int64").to_numpy() / 1e9 if len(log) else np.array([])
        event_id = 0
        for (request_id, user_id), index in log.groupby(["request_id", "user_id"], sort=False).indices.items():
            shown = log.iloc[index]
            first_ts = float(ts_s[index[0]])
            yield {
                "type": "exposure",
                "event_id": f"e{event_id}",
                "user_id": int(user_id),
                "request_id": str(request_id),
                "video_ids": [int(v) for v in shown["video_id"]],
                "ts": first_ts,
            }
            event_id += 1
            for position, row in enumerate(shown.itertuples(index=False)):
                if row.clicked:
                    yield {
                        "type": "click",
                        "event_id": f"e{event_id}",
                        "user_id": int(user_id),
                        "video_id": int(row.video_id),
                        "ts": first_ts + 1.0 + position,
                    }
                    event_id += 1


def make_click_log(
    catalogue: SyntheticCatalogue,
    n_users: int = 500,
    n_days: int = 7,
    refreshes_per_user_per_day: int = 4,
    videos_per_refresh: int = 10,
    interest_concentration: float = 0.3,
    interest_share: float = 0.5,
    seed: int = 11,
    start: pd.Timestamp | None = None,
) -> SyntheticClickLog:
    """Simulate feed refreshes; half of a refresh comes from the user's interest topics, half at random.

    Click probability: ``sigmoid(-4 + 3.5 * sqrt(interest[topic]) + 1.5 * quality)`` — about 3% on videos
    of topics a user ignores, 20-40% on their main topic, about 10% overall.
    """
    rng = np.random.default_rng(seed)
    n_topics = int(catalogue.true_topic.max()) + 1
    interests = rng.dirichlet(np.full(n_topics, interest_concentration), size=n_users)
    by_topic = [np.flatnonzero(catalogue.true_topic == t) for t in range(n_topics)]
    n_videos = len(catalogue.true_topic)
    start = start if start is not None else pd.Timestamp("2026-11-01", tz="UTC")
    total = n_users * n_days * refreshes_per_user_per_day
    users = np.repeat(np.arange(n_users), n_days * refreshes_per_user_per_day)
    days = np.tile(np.repeat(np.arange(n_days), refreshes_per_user_per_day), n_users)
    refresh_ts = start.value / 1e9 + days * 86400.0 + rng.uniform(0, 86400 - 100, size=total)
    # choose the videos of every refresh: from interest topics or uniformly at random
    from_interest = rng.random((total, videos_per_refresh)) < interest_share
    topic_draw = np.array([rng.choice(n_topics, size=videos_per_refresh, p=interests[u]) for u in users])
    shown = rng.integers(0, n_videos, size=(total, videos_per_refresh))
    for t in range(n_topics):
        if len(by_topic[t]) == 0:
            continue
        mask = from_interest & (topic_draw == t)
        shown[mask] = rng.choice(by_topic[t], size=int(mask.sum()))
    video_topic = catalogue.true_topic[shown]
    affinity = np.sqrt(interests[users[:, None], video_topic])
    logit = -4.0 + 3.5 * affinity + 1.5 * catalogue.quality[shown]
    clicked = rng.random(shown.shape) < 1.0 / (1.0 + np.exp(-logit))
    order = np.argsort(refresh_ts, kind="stable")
    rows = {
        "user_id": np.repeat(users[order], videos_per_refresh),
        "video_id": shown[order].ravel(),
        "clicked": clicked[order].ravel().astype(np.int8),
        "ts": pd.to_datetime(np.repeat(refresh_ts[order], videos_per_refresh), unit="s", utc=True),
        "request_id": np.repeat([f"r{i}" for i in order], videos_per_refresh),
    }
    interactions = pd.DataFrame(rows)
    # a refresh's videos can repeat when a topic pool is small: keep the first showing only
    interactions = interactions.drop_duplicates(["request_id", "video_id"]).reset_index(drop=True)
    return SyntheticClickLog(interactions=interactions, user_interests=interests)
