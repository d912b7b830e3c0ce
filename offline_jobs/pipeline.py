"""The topic-learning job (MTL III-A): videos in, topic tables and models out.

Run it::

    topicfs topics learn                                   # synthetic catalogue made on the spot
    topicfs topics learn --dataset kuairec --data ../shared/data/kuairec
    topicfs topics learn --dataset file --data videos.parquet   # any table meeting topicfs.contracts

Steps, each a model of its own module:

1. tags -> co-occurrence graph, DeepWalk, skip-gram -> tag embeddings, ē per video  (offline_jobs.tag_graph)
2. title + cover -> f_T, f_C fine-tuned by MMoE over three tasks -> z              (offline_jobs.mmoe)
3. a = [ē/‖ē‖, z/‖z‖] -> k-means topics, τ3 assignment, 8-dim topic feature        (offline_jobs.topics)

Outputs: the four tables of :mod:`topicfs.tables` under ``paths.tables_dir`` and the three fitted
models under ``paths.models_dir`` (each with its config), so :class:`offline_jobs.inference.TopicAssigner` can give topics to
videos published later (the stream's video-published events). Beside the tables, ``video_map.parquet``
places every video on a 2-D map for the topic browser (:func:`video_map`, the paper's Fig. 4 analogue).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from offline_jobs.mmoe import MultimodalTopicEncoder
from offline_jobs.tag_graph import TagGraphEmbedder
from offline_jobs.topics import (
    TagBank,
    TopicAssignment,
    TopicModel,
    format_presence_audit,
    format_topics_per_video_report,
    impute_tag_half,
    nearest_topics,
    neighbour_tag_half,
    presence_audit,
    representation_halves,
    topic_representation,
    topics_per_video_report,
    write_topic_tables,
)
from offline_jobs.artifacts import fingerprint_arrays, utc_now, write_json_atomic
from topicfs.contracts import load_videos, write_videos
from topicfs.datasets import check_topic_count, dataset_name
from topicfs.errors import UserError
from topicfs.settings import Settings, TopicsConfig
from topicfs.tables import VIDEO_MAP

logger = logging.getLogger(__name__)

Dataset = Literal["synthetic", "kuairec", "file"]
TAG_GRAPH_DIR, MMOE_DIR, TOPICS_DIR = "tag_graph", "mmoe", "topics"
PRESENCE_AUDIT_FILE = "presence_audit.json"  # written beside the tables: do topics follow which modalities videos have?
AT_CAP_WARNING = 0.25  # share of videos at the topic cap above which the job suggests assign_rule=calibrated


@dataclass
class LoadedDataset:
    """Videos meeting the contract, and the hidden topic of each when the data is synthetic."""

    videos: pd.DataFrame
    true_topic: np.ndarray | None = None
    name: str = ""


def load_dataset(dataset: Dataset, data: Path | None, settings: Settings) -> LoadedDataset:
    """The videos of ``dataset``: made on the spot (synthetic), KuaiRec's folder, or any contract file."""
    if dataset == "synthetic":
        from topicfs.synthetic import make_catalogue

        cfg = settings.synthetic
        out_dir = data or settings.paths.artifacts_dir / "synthetic"
        catalogue = make_catalogue(
            cfg.n_videos,
            cfg.n_true_topics,
            cfg.image_size,
            cfg.with_images,
            out_dir,
            cfg.seed,
            cover_share=cfg.cover_share,
            tag_share=cfg.tag_share,
            publish_span_days=cfg.publish_span_days,
        )
        write_videos(catalogue.videos, Path(out_dir) / "videos.parquet")
        return LoadedDataset(catalogue.videos, catalogue.true_topic, "synthetic")
    if data is None:
        raise UserError(f"--data is required with --dataset {dataset}")
    if dataset == "kuairec":
        from offline_jobs.kuairec import load_kuairec

        return LoadedDataset(load_kuairec(data), None, "kuairec")
    if dataset == "file":
        return LoadedDataset(load_videos(data), None, dataset_name(Path(data)))
    raise UserError(f"unknown dataset {dataset!r}: expected synthetic, kuairec or file")


@dataclass
class TopicModels:
    """The three fitted models of the job."""

    tag_graph: TagGraphEmbedder
    mmoe: MultimodalTopicEncoder | None
    topics: TopicModel

    def representation(self, videos: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(a, ē, z) of ``videos``; z is None when MMoE was dropped (no titles, covers or labels)."""
        topics = self.topics
        e_bar, _, z = topic_inputs(
            self.tag_graph, self.mmoe, videos, topics.missing_modalities, topics.predicted_modalities_, topics.tag_bank_, topics.neighbours
        )
        return topic_representation(e_bar, z), e_bar, z

    def save(self, models_dir: Path) -> None:
        self.tag_graph.save(models_dir / TAG_GRAPH_DIR)
        if self.mmoe is not None:
            self.mmoe.save(models_dir / MMOE_DIR)
        self.topics.save(models_dir / TOPICS_DIR)

    @classmethod
    def load(cls, models_dir: Path) -> "TopicModels":
        models_dir = Path(models_dir)
        if not (models_dir / TOPICS_DIR).exists():
            raise FileNotFoundError(f"{models_dir}: no trained topic models (run `topicfs topics learn` first)")
        mmoe = MultimodalTopicEncoder.load(models_dir / MMOE_DIR) if (models_dir / MMOE_DIR).exists() else None
        return cls(TagGraphEmbedder.load(models_dir / TAG_GRAPH_DIR), mmoe, TopicModel.load(models_dir / TOPICS_DIR))


def predicted_modalities(
    tag_graph: TagGraphEmbedder,
    mmoe: MultimodalTopicEncoder | None,
    videos: pd.DataFrame,
    complete_share: float,
    missing_modalities: str = "predict",
) -> list[str]:
    """The ragged modalities of ``videos`` that ``missing_modalities`` replaces by the models' predictions. Under
    "predict": "tags" when fewer than ``complete_share`` of the videos have a known tag and the MMoE has a tag task;
    "cover" when fewer have a cover file and the MMoE reads covers and titles (z is then computed from the title
    alone). Under "mask" only "cover": the tag half is masked, but a cover is inside z, where there is no half to
    mask. Other modes: none."""
    from offline_jobs.encoders import existing_covers

    if mmoe is None or missing_modalities not in ("predict", "mask"):
        return []
    out = []
    _, has_tags = tag_graph.transform(videos["tags"].tolist())
    if missing_modalities == "predict" and has_tags.mean() < complete_share and mmoe.tag_classes():
        out.append("tags")
    if (
        "cover" in mmoe.modalities_
        and "title" in mmoe.modalities_
        and existing_covers(videos["cover_image"].tolist()).mean() < complete_share
    ):
        out.append("cover")
    return out


def topic_inputs(
    tag_graph: TagGraphEmbedder,
    mmoe: MultimodalTopicEncoder | None,
    videos: pd.DataFrame,
    missing_modalities: str = "zero",
    predicted: Sequence[str] = (),
    bank: TagBank | None = None,
    neighbours: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(ē, has_tags, z) of ``videos``, the inputs of a = [ē/‖ē‖, z/‖z‖] (``topics.missing_modalities``, issue 21):

    - ``"zero"`` (the paper): ē from the tags (Eq. 4), zero without a known tag; z with a zero f_C without a cover.
    - ``"mask"``: the inputs of ``"zero"``; the topic model then compares a video on the halves of a it has
      (:func:`offline_jobs.topics.masked_kmeans`), so the zero ē of a tagless video is "missing", not a direction.
      With "cover" in ``predicted`` z is computed without any cover, as under ``"predict"``.
    - ``"impute"``: as ``"zero"``, but videos without a known tag get ē from the MMoE tag task's predicted tags
      (:func:`offline_jobs.topics.impute_tag_half`).
    - ``"neighbours"``: as ``"zero"``, but videos without a known tag get the mean ē of the ``neighbours`` tagged
      videos nearest in z among ``bank`` (:func:`offline_jobs.topics.neighbour_tag_half`; the bank of the fitted
      videos, :func:`fitted_topic_inputs` builds it and the topic model keeps it).
    - ``"predict"``: as ``"impute"``, and the modalities in ``predicted`` (:func:`predicted_modalities` of the fitted
      videos) enter through the models only: with "tags", every video's ē is the tag task's prediction; with "cover",
      z is computed without any cover. A video then has the same kind of a whatever it has, so k-means cannot split
      videos by presence; the covers and tags still shaped z and the tag task through training.

    ``has_tags`` says which videos have a known tag, whatever ē holds. z is None without MMoE.
    """
    e_bar, has_tags = tag_graph.transform(videos["tags"].tolist())
    if mmoe is None:
        return e_bar, has_tags, None
    predict = set(predicted) if missing_modalities in ("predict", "mask") else set()
    z, tag_probs = mmoe.encode(videos.assign(cover_image=None) if "cover" in predict else videos)
    if missing_modalities == "neighbours":
        if bank is None:
            raise ValueError("topic_inputs: missing_modalities='neighbours' needs the tag bank of the fitted videos (fitted_topic_inputs)")
        return neighbour_tag_half(e_bar, has_tags, z, bank, neighbours), has_tags, z
    if missing_modalities in ("impute", "predict") and tag_probs is not None:
        fill = np.zeros(len(has_tags), dtype=bool) if "tags" in predict else has_tags
        index = tag_graph.tag_index_
        columns = [(j, index[tag]) for j, tag in enumerate(mmoe.tag_classes()) if tag in index]
        if columns and not fill.all():
            task_cols, graph_rows = (np.array(c) for c in zip(*columns))
            e_bar = impute_tag_half(
                e_bar, fill, tag_probs[:, task_cols], tag_graph.embeddings_[graph_rows], tag_graph.tag_weights()[graph_rows]
            )
    return e_bar, has_tags, z


def fitted_topic_inputs(
    tag_graph: TagGraphEmbedder,
    mmoe: MultimodalTopicEncoder | None,
    videos: pd.DataFrame,
    topics: TopicsConfig,
    predicted: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, TagBank | None]:
    """:func:`topic_inputs` of the videos a topic model is fitted on, and the tag bank (z, ē of the tagged ones,
    :class:`offline_jobs.topics.TagBank`) that fills the tagless videos' ē under ``missing_modalities="neighbours"``
    (None otherwise): the model keeps it so videos assigned later are filled from the same videos."""
    if topics.missing_modalities != "neighbours" or mmoe is None:
        if topics.missing_modalities == "neighbours":
            logger.warning("missing_modalities=neighbours: no MMoE (z) to find neighbours by; tagless videos keep a zero ē")
        return (*topic_inputs(tag_graph, mmoe, videos, topics.missing_modalities, predicted), None)
    e_bar, has_tags, z = topic_inputs(tag_graph, mmoe, videos, "zero")
    bank = TagBank.from_videos(e_bar, has_tags, z, topics.neighbour_bank_size, topics.seed)
    if not len(bank):
        logger.warning("missing_modalities=neighbours: no fitted video has tags; tagless videos keep a zero ē")
    return neighbour_tag_half(e_bar, has_tags, z, bank, topics.neighbours), has_tags, z, bank


def fit_tag_graph(videos: pd.DataFrame, settings: Settings) -> TagGraphEmbedder:
    return TagGraphEmbedder.from_config(settings.tag_graph).fit(videos["tags"].tolist())


def fit_mmoe(videos: pd.DataFrame, settings: Settings) -> MultimodalTopicEncoder | None:
    """MMoE over titles and covers; None (with a warning) when the videos have nothing it can learn from."""
    has_text = videos["title"].fillna("").str.len().gt(0).any()
    has_covers = videos["cover_image"].notna().any()
    has_labels = videos["primary_class"].notna().any() or videos["secondary_class"].notna().any() or videos["tags"].map(len).gt(0).any()
    if not (has_text or has_covers) or not has_labels:
        logger.warning("MMoE dropped: the videos have no titles/covers or no class/tag labels; topics use tags only")
        return None
    return MultimodalTopicEncoder.from_config(settings.mmoe).fit(videos)


@dataclass
class TopicJobResult:
    models: TopicModels
    assignment: TopicAssignment
    tables: dict[str, Path]
    report: dict = field(default_factory=dict)
    # wall seconds per stage: tag_graph (graph, DeepWalk, skip-gram), mmoe (fine-tuning), representation (ē and z
    # of every video), topics (k-means fit + τ3 assignment), write (models + tables; only when written)
    seconds: dict[str, float] = field(default_factory=dict)


def run_topic_job(videos: pd.DataFrame, settings: Settings, write: bool = True) -> TopicJobResult:
    """Fit the three models on ``videos``, assign topics, write tables and models (when ``write``)."""
    check_topic_count(len(videos), settings.topics.n_topics)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    tag_graph = fit_tag_graph(videos, settings)
    seconds["tag_graph"] = time.perf_counter() - start
    start = time.perf_counter()
    mmoe = fit_mmoe(videos, settings)
    seconds["mmoe"] = time.perf_counter() - start
    start = time.perf_counter()
    predicted = predicted_modalities(tag_graph, mmoe, videos, settings.topics.complete_share, settings.topics.missing_modalities)
    e_bar, has_tags, z, bank = fitted_topic_inputs(tag_graph, mmoe, videos, settings.topics, predicted)
    a = topic_representation(e_bar, z)
    seconds["representation"] = time.perf_counter() - start
    start = time.perf_counter()
    topics = TopicModel.from_config(settings.topics).fit(a, representation_halves(e_bar, z), predicted, bank)
    assignment = topics.assign(a)
    seconds["topics"] = time.perf_counter() - start
    models = TopicModels(tag_graph, mmoe, topics)
    report = topics_per_video_report(assignment, topics.video_thresholds(a))  # τ3 as given, or as calibrated at fit
    logger.info("topics per video:\n%s", format_topics_per_video_report(report))
    report["presence_audit"] = video_presence_audit(videos, has_tags, assignment, settings.topics.max_topics_per_video)
    logger.info("%s", format_presence_audit(report["presence_audit"]))
    at_cap = report["presence_audit"]["groups"]["all"]["at_cap"]
    if settings.topics.assign_rule == "threshold" and at_cap > AT_CAP_WARNING:
        logger.warning(
            "topics: %.0f%% of the videos got the cap of %d topics at τ3=%g; TOPICFS_TOPICS__ASSIGN_RULE=calibrated sets τ3 for "
            "topics.target_topics_per_video (%g) instead (docs/TABLE1.md)",
            100 * at_cap,
            settings.topics.max_topics_per_video,
            settings.topics.assign_threshold,
            settings.topics.target_topics_per_video,
        )
    tables: dict[str, Path] = {}
    start = time.perf_counter()
    if write:
        models.save(settings.paths.models_dir)
        tables = write_topic_tables(
            settings.paths.tables_dir,
            videos["video_id"].to_numpy(),
            tag_graph,
            e_bar,
            has_tags,
            topics,
            assignment,
            event_timestamp=pd.Timestamp.now(tz="UTC"),
            video_event_timestamps=videos["publish_ts"],
        )
        tables[VIDEO_MAP] = write_video_map(settings.paths.tables_dir, videos, video_map(topics, a, assignment), assignment)
        audit_path = Path(settings.paths.tables_dir) / PRESENCE_AUDIT_FILE
        write_json_atomic(audit_path, report["presence_audit"])
        tables[PRESENCE_AUDIT_FILE] = audit_path
        seconds["write"] = time.perf_counter() - start
    return TopicJobResult(models, assignment, tables, report, seconds)


def video_map(
    model: TopicModel, a: np.ndarray, assignment: TopicAssignment, max_fit_rows: int = 50_000, block_rows: int = 100_000
) -> np.ndarray:
    """(n, 2) float32 map positions of the videos: the rows of a as the topic model compares them (centred, unit),
    projected on the two directions that best separate the videos' nearest topics (linear discriminant analysis,
    fitted on at most ``max_fit_rows`` videos spread evenly over the table). Linear, so it costs one (n, D) x (D, 2)
    product and places a video published later where the same formula puts it; t-SNE would separate topics more
    but costs minutes per 100k videos and has no transform. Videos without a topic (all-zero a) sit at (0, 0).
    With fewer than three topics among the videos the two directions are the centred rows' principal axes."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    nearest = nearest_topics(assignment)
    has_topic = nearest >= 0
    fit_rows = np.flatnonzero(has_topic)
    if len(fit_rows) > max_fit_rows:
        fit_rows = fit_rows[np.linspace(0, len(fit_rows) - 1, max_fit_rows).astype(np.int64)]
    x_fit = model.centred(a[fit_rows])  # (m, D)
    if len(np.unique(nearest[fit_rows])) >= 3:
        projection = LinearDiscriminantAnalysis(n_components=2, solver="eigen", shrinkage="auto").fit(x_fit, nearest[fit_rows])
    else:
        projection = PCA(n_components=2, random_state=0).fit(x_fit)
    positions = np.zeros((len(a), 2), dtype=np.float32)
    for start in range(0, len(a), block_rows):
        rows = slice(start, start + block_rows)
        positions[rows] = projection.transform(model.centred(a[rows]))[:, :2]
    positions[~has_topic] = 0.0
    return positions


def write_video_map(out_dir: Path, videos: pd.DataFrame, positions: np.ndarray, assignment: TopicAssignment) -> Path:
    """VIDEO_MAP: video_id | x, y float32 (:func:`video_map`) | topic_id int64 (nearest, -1 = none) | title | tags |
    cover_image (absolute path, or null) | created; with a JSON sidecar (rows, fingerprint)."""
    nearest = nearest_topics(assignment)
    covers = [None if not isinstance(c, str) or not c else str(Path(c).resolve()) for c in videos["cover_image"]]
    frame = pd.DataFrame(
        {
            "video_id": videos["video_id"].to_numpy(dtype=np.int64),
            "x": positions[:, 0],
            "y": positions[:, 1],
            "topic_id": nearest,
            "title": videos["title"].fillna("").astype(str).to_numpy(),
            "tags": [list(t) for t in videos["tags"]],
            "cover_image": covers,
            "created": utc_now(),
        }
    )
    path = Path(out_dir) / VIDEO_MAP
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    write_json_atomic(
        path.with_suffix(".json"),
        {
            "table": VIDEO_MAP,
            "rows": len(frame),
            "projection": "linear discriminants of the nearest topic",
            "data_fingerprints": {"positions": fingerprint_arrays([positions])},
        },
    )
    return path


def video_presence_audit(
    videos: pd.DataFrame, has_tags: np.ndarray, assignment: TopicAssignment, max_topics: int, labels: dict[str, np.ndarray] | None = None
) -> dict:
    """:func:`offline_jobs.topics.presence_audit` of a topic run: presence of a cover file and of known tags; NMI with
    the primary and secondary class where the videos have them, and with any extra ``labels`` (e.g. the true topic)."""
    from offline_jobs.encoders import existing_covers

    covers = existing_covers(videos["cover_image"].tolist()) if "cover_image" in videos.columns else None
    classes = {c.replace("_", " "): videos[c].to_numpy() for c in ("primary_class", "secondary_class") if c in videos.columns}
    return presence_audit(assignment, max_topics, {"cover": covers, "tags": has_tags}, {**classes, **(labels or {})})


def learn_topics(videos: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Run the job on ``videos`` and return the VIDEO_TOPICS rows (video_id, topic_ids, topic_weights, topic_feature, n_topics)."""
    result = run_topic_job(videos, settings, write=True)
    return pd.read_parquet(result.tables["video_topics.parquet"]).drop(columns=["event_timestamp", "created"])
