"""Multimodal multi-task representation learning (MTL III-A-1, Eq. 1-2): the deep joint representation z.

    z     = [f_C(x_I), f_T(x_W)]                       (Eq. 1; f_C cover CNN, f_T title transformer)
    f^k(z) = sum_i g^k(z)_i f_i(z),  g^k = softmax     (H experts f_i, one gate g^k per task k)
    p^k   = h^k(f^k(z))                                (one tower h^k per task)
    L     = sum_k CE(y^k, p^k)                         (Eq. 2; tasks: primary class, secondary class, tags)

Training fine-tunes f_T and f_C together with the MMoE head (Adam; ``encoder_learning_rate`` for pretrained
weights, ``learning_rate`` for the head and for freshly initialised weights). A task without labels, or a
modality without data (KuaiRec has no covers), is dropped with a warning.

Missing covers (issue 21): a video without a cover has f_C = 0. ``modality_dropout`` (ModDrop, Neverova et al. 2015)
drops a training video's cover with that probability in each step, so the title path learns to stand alone;
:meth:`MultimodalTopicEncoder.encode` returns z and the tag task's predicted tags in one pass, which
:func:`offline_jobs.pipeline.topic_inputs` uses to fill or replace ē (``topics.missing_modalities``).

What we export as z (``MMoEConfig.representation``): the paper's "deep joint representation z after
fine-tuning" is ``encoder`` = [f_C(x_I), f_T(x_W)] with the fine-tuned encoders. ``experts`` exports the
gate-weighted expert mixtures [f^1(z), ..., f^N(z)] instead. On held-out KuaiRec videos ``experts``
clusters better by class (higher ARI and Fig. 3 ratio at the same NMI, docs/TABLE1.md): the mixtures are
what the task towers read, so they keep the class structure the tasks taught while [f_T] still carries
much of the pretrained model's untuned variation. So ``experts`` is the default; ``encoder`` stays
available as the paper's literal reading.

    from offline_jobs.mmoe import MultimodalTopicEncoder
    from topicfs.contracts import load_videos
    from topicfs.settings import get_settings
    videos = load_videos("videos.parquet")
    model = MultimodalTopicEncoder.from_config(get_settings().mmoe).fit(videos)   # or MultimodalTopicEncoder(epochs=1)
    z = model.transform(videos)            # (n, d) float32
    model.save("artifacts/models/mmoe")   # weights + config.json; MultimodalTopicEncoder.load(...) reads it back
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from offline_jobs.encoders import (
    CoverEncoder,
    TitleEncoder,
    VocabularyReport,
    encode_covers,
    encode_titles,
    existing_covers,
    load_covers,
    pad_batch,
    resolve_title_encoder,
)
from offline_jobs.estimator import SettingsEstimator
from topicfs.settings import MMoEConfig

logger = logging.getLogger(__name__)

Representation = Literal["encoder", "experts"]
TaskKind = Literal["multiclass", "multilabel"]
CONFIG_FILE = "config.json"
HEAD_FILE = "mmoe.pt"
COVER_FILE = "cover_encoder.pt"
TITLE_DIR = "title_encoder"
# Titles are sorted by length inside windows of this many batches: little padding, still a shuffled order.
BUCKET_BATCHES = 50


@dataclass(frozen=True)
class TaskSpec:
    """One MMoE task k: its name, kind and the M^k classes it predicts (in output order)."""

    name: str  # "primary_class", "secondary_class" or "tags"
    kind: TaskKind
    classes: list[str]


class MMoE(nn.Module):
    """H experts, one softmax gate and one tower per task (Eq. 1), over z (B, D_z)."""

    def __init__(
        self, modality_dims: Sequence[int], n_experts: int, expert_dim: int, tower_hidden: int, task_sizes: Sequence[int], dropout: float
    ):
        super().__init__()
        # One LayerNorm per modality so neither f_C nor f_T dominates the experts by its scale alone.
        self.norms = nn.ModuleList([nn.LayerNorm(d) for d in modality_dims])
        self.modality_dims = list(modality_dims)
        input_dim = sum(modality_dims)
        self.n_experts, self.expert_dim, self.n_tasks = n_experts, expert_dim, len(task_sizes)
        self.experts = nn.Sequential(nn.Linear(input_dim, n_experts * expert_dim), nn.ReLU())  # all f_i in one matmul
        self.gates = nn.Linear(input_dim, self.n_tasks * n_experts)  # all g^k in one matmul
        self.towers = nn.ModuleList(
            nn.Sequential(nn.Linear(expert_dim, tower_hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(tower_hidden, m))
            for m in task_sizes
        )

    def forward(self, z: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """z (B, D_z) -> (logits per task [(B, M^k)], gates (B, N, H), mixtures f^k(z) (B, N, E))."""
        parts = torch.split(z, self.modality_dims, dim=1)
        x = torch.cat([norm(part) for norm, part in zip(self.norms, parts)], dim=1)  # (B, D_z)
        experts = self.experts(x).view(-1, self.n_experts, self.expert_dim)  # (B, H, E)
        gates = torch.softmax(self.gates(x).view(-1, self.n_tasks, self.n_experts), dim=-1)  # (B, N, H), sums to 1 over H
        mixtures = torch.bmm(gates, experts)  # (B, N, E): f^k(z) = sum_i g^k(z)_i f_i(z)
        logits = [tower(mixtures[:, k]) for k, tower in enumerate(self.towers)]  # [(B, M^k)]
        return logits, gates, mixtures


@contextlib.contextmanager
def _torch_threads(n_threads: int | None) -> Iterator[None]:
    """Use ``n_threads`` CPU threads inside the block and restore the previous count after."""
    previous = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _titles(videos: pd.DataFrame) -> list[str]:
    return ["" if not isinstance(t, str) else t for t in videos["title"].tolist()]


def _covers(videos: pd.DataFrame) -> list[str | None]:
    if "cover_image" not in videos.columns:
        return [None] * len(videos)
    return [c if isinstance(c, str) and c != "" else None for c in videos["cover_image"].tolist()]


def _labels(videos: pd.DataFrame, column: str) -> list[str | None]:
    if column not in videos.columns:
        return [None] * len(videos)
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "" else str(v) for v in videos[column]]


def _tags(videos: pd.DataFrame) -> list[list[str]]:
    if "tags" not in videos.columns:
        return [[] for _ in range(len(videos))]
    return [[str(t) for t in tags] if isinstance(tags, (list, tuple, np.ndarray)) else [] for tags in videos["tags"]]


def data_fingerprint(videos: pd.DataFrame) -> str:
    """sha256 over what training reads (ids, titles, covers, labels, tags), so an artefact names its data."""
    digest = hashlib.sha256()
    for row in zip(
        videos["video_id"].tolist(),
        _titles(videos),
        _covers(videos),
        _labels(videos, "primary_class"),
        _labels(videos, "secondary_class"),
        _tags(videos),
    ):
        digest.update(json.dumps(row, ensure_ascii=False, default=str).encode())
    return digest.hexdigest()


def _check_videos(videos: pd.DataFrame) -> None:
    if not isinstance(videos, pd.DataFrame):
        raise TypeError(f"videos must be a pandas DataFrame meeting topicfs.contracts, got {type(videos).__name__}")
    missing = [c for c in ("video_id", "title") if c not in videos.columns]
    if missing:
        raise ValueError(f"videos: missing column(s) {', '.join(missing)} (see topicfs.contracts.VIDEO_COLUMNS)")
    if len(videos) == 0:
        raise ValueError("videos: the table is empty")


def sortish_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded epoch order: shuffle, sort by length inside windows of BUCKET_BATCHES batches, shuffle the batches.

    Titles of like length share a batch (little padding) while the order still changes every epoch.
    """
    order = rng.permutation(len(lengths))
    window = batch_size * BUCKET_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(np.asarray(lengths)[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


_DEFAULTS = MMoEConfig()


class MultimodalTopicEncoder(SettingsEstimator):
    """Learns z from titles and covers with MMoE over primary class, secondary class and tags (scikit-learn style).

    Parameters are the settings of the same name in :class:`topicfs.settings.MMoEConfig`, defaults included
    (:meth:`from_config` builds one from the settings); ``fit`` checks them against that model. Learned state:
    ``config_`` (the checked parameters the model was fitted with; everything after ``fit`` reads them, so
    ``set_params`` changes the next fit), ``tasks_`` (the tasks kept, with their classes), ``modalities_``
    ("cover", "title"), ``title_encoder_``, ``cover_encoder_``, ``mmoe_``, ``vocabulary_report_``, ``history_``
    (mean loss per task per epoch), ``training_seconds_``, ``data_fingerprint_``.
    """

    config_model = MMoEConfig

    def __init__(
        self,
        title_encoder: str = _DEFAULTS.title_encoder,
        image_encoder: Path | None = _DEFAULTS.image_encoder,
        image_size_px: int = _DEFAULTS.image_size_px,
        cnn_channels: tuple[int, ...] = tuple(_DEFAULTS.cnn_channels),
        extend_vocabulary: bool = _DEFAULTS.extend_vocabulary,
        new_token_min_count: int = _DEFAULTS.new_token_min_count,
        new_token_init: str = _DEFAULTS.new_token_init,
        max_title_tokens: int = _DEFAULTS.max_title_tokens,
        title_trainable_layers: int | None = _DEFAULTS.title_trainable_layers,
        n_experts: int = _DEFAULTS.n_experts,
        expert_dim: int = _DEFAULTS.expert_dim,
        tower_hidden: int = _DEFAULTS.tower_hidden,
        dropout: float = _DEFAULTS.dropout,
        max_tags: int = _DEFAULTS.max_tags,
        learning_rate: float = _DEFAULTS.learning_rate,
        encoder_learning_rate: float = _DEFAULTS.encoder_learning_rate,
        batch_size: int = _DEFAULTS.batch_size,
        epochs: int = _DEFAULTS.epochs,
        representation: str = _DEFAULTS.representation,
        modality_dropout: float = _DEFAULTS.modality_dropout,
        torch_threads: int | None = _DEFAULTS.torch_threads,
        seed: int = _DEFAULTS.seed,
    ):
        self.title_encoder = title_encoder
        self.image_encoder = image_encoder
        self.image_size_px = image_size_px
        self.cnn_channels = cnn_channels
        self.extend_vocabulary = extend_vocabulary
        self.new_token_min_count = new_token_min_count
        self.new_token_init = new_token_init
        self.max_title_tokens = max_title_tokens
        self.title_trainable_layers = title_trainable_layers
        self.n_experts = n_experts
        self.expert_dim = expert_dim
        self.tower_hidden = tower_hidden
        self.dropout = dropout
        self.max_tags = max_tags
        self.learning_rate = learning_rate
        self.encoder_learning_rate = encoder_learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.representation = representation
        self.modality_dropout = modality_dropout
        self.torch_threads = torch_threads
        self.seed = seed

    # ------------------------------------------------------------------------------------------ fit

    def fit(self, videos: pd.DataFrame) -> MultimodalTopicEncoder:
        """Fine-tune f_T, f_C and MMoE on ``videos`` (a table meeting topicfs.contracts) and return self."""
        self.config_ = config = self.validated_config()
        _check_videos(videos)
        started = time.perf_counter()
        with _torch_threads(config.torch_threads):
            torch.manual_seed(config.seed)
            titles, covers = _titles(videos), _covers(videos)
            self._build_encoders(titles, covers)
            self.tasks_, targets = self._build_tasks(videos)
            self.mmoe_ = MMoE(
                self._modality_dims(),
                config.n_experts,
                config.expert_dim,
                config.tower_hidden,
                [len(t.classes) for t in self.tasks_],
                config.dropout,
            )
            self._init_tag_bias(targets)
            self.history_: list[dict[str, float]] = []
            if self.tasks_:
                self._train(titles, covers, targets)
            else:
                warnings.warn("no task has labels: z is the pretrained encoders' output, not fine-tuned", stacklevel=2)
                logger.warning("MMoE: no task has labels; z stays the pretrained features")
        self.training_seconds_ = time.perf_counter() - started
        self.n_training_videos_ = len(videos)
        self.data_fingerprint_ = data_fingerprint(videos)
        logger.info("MMoE fitted on %d videos in %.1f s", len(videos), self.training_seconds_)
        return self

    def _build_encoders(self, titles: list[str], covers: list[str | None]) -> None:
        config = self.config_
        modalities = []
        has_cover = existing_covers(covers)
        if has_cover.any():
            modalities.append("cover")
            self.cover_encoder_: CoverEncoder | None = CoverEncoder(config.image_encoder, config.image_size_px, config.cnn_channels)
            logger.info("f_C: %d of %d videos have a cover file", int(has_cover.sum()), len(covers))
        else:
            self.cover_encoder_ = None
            self._drop("cover", "no video has an existing cover_image file")
        if any(t.strip() for t in titles):
            modalities.append("title")
            encoder = TitleEncoder(resolve_title_encoder(config.title_encoder), config.max_title_tokens)
            self.vocabulary_report_: VocabularyReport | None = (
                encoder.extend_vocabulary(titles, config.seed, config.new_token_min_count, config.new_token_init)
                if config.extend_vocabulary
                else None
            )
            encoder.freeze_lower_layers(config.title_trainable_layers)
            self.title_encoder_: TitleEncoder | None = encoder
        else:
            self.title_encoder_, self.vocabulary_report_ = None, None
            self._drop("title", "every title is empty")
        if not modalities:
            raise ValueError("videos have neither a non-empty title nor an existing cover image: there is nothing to learn z from")
        self.modalities_ = tuple(modalities)

    @staticmethod
    def _drop(what: str, why: str) -> None:
        message = f"MMoE: {what} dropped: {why}"
        warnings.warn(message, stacklevel=3)
        logger.warning(message)

    def _modality_dims(self) -> list[int]:
        dims = []
        if self.cover_encoder_ is not None:
            dims.append(self.cover_encoder_.output_dim)
        if self.title_encoder_ is not None:
            dims.append(self.title_encoder_.output_dim)
        return dims

    def _build_tasks(self, videos: pd.DataFrame) -> tuple[list[TaskSpec], list[np.ndarray | list[np.ndarray]]]:
        """The tasks with labels, and per task its targets: class index per video (-1 = missing) or tag indices per video."""
        tasks: list[TaskSpec] = []
        targets: list[np.ndarray | list[np.ndarray]] = []
        for column in ("primary_class", "secondary_class"):
            labels = _labels(videos, column)
            classes = sorted({label for label in labels if label is not None})
            if len(classes) < 2:
                self._drop(f"task {column}", f"{len(classes)} distinct label(s) in the data, a class task needs 2")
                continue
            index = {c: i for i, c in enumerate(classes)}
            tasks.append(TaskSpec(column, "multiclass", classes))
            targets.append(np.array([-1 if label is None else index[label] for label in labels], dtype=np.int64))
        tags = _tags(videos)
        counts = Counter(tag for video_tags in tags for tag in set(video_tags))
        # Most frequent first, ties by name: a deterministic M3 set.
        kept = [tag for tag, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: self.config_.max_tags]]
        if kept:
            index = {t: i for i, t in enumerate(kept)}
            tasks.append(TaskSpec("tags", "multilabel", kept))
            targets.append([np.array(sorted({index[t] for t in video_tags if t in index}), dtype=np.int64) for video_tags in tags])
        else:
            self._drop("task tags", "no video has a tag")
        for task, target in zip(tasks, targets):
            labelled = int((target >= 0).sum()) if task.kind == "multiclass" else sum(len(t) > 0 for t in target)
            logger.info("MMoE task %s: M=%d classes, %d of %d videos labelled", task.name, len(task.classes), labelled, len(videos))
        return tasks, targets

    def _init_tag_bias(self, targets: list) -> None:
        """Start the tag tower at the tags' prior rates so the summed BCE begins small, not at M3 * log 2."""
        for k, task in enumerate(self.tasks_):
            if task.kind != "multilabel":
                continue
            labelled = [t for t in targets[k] if len(t)]
            counts = np.bincount(np.concatenate(labelled), minlength=len(task.classes)).astype(np.float64)
            prior = np.clip(counts / max(1, len(labelled)), 1e-4, 1 - 1e-4)
            with torch.no_grad():
                self.mmoe_.towers[k][-1].bias.copy_(torch.as_tensor(np.log(prior / (1 - prior)), dtype=torch.float32))

    def _optimizer(self) -> torch.optim.Optimizer:
        config = self.config_
        pretrained, fresh = [], list(self.mmoe_.parameters())
        for encoder in (self.title_encoder_, self.cover_encoder_):
            if encoder is not None:
                pretrained += encoder.pretrained_parameters()
                fresh += encoder.new_parameters()
        groups = [{"params": fresh, "lr": config.learning_rate}]
        if pretrained:
            groups.append({"params": pretrained, "lr": config.encoder_learning_rate})
        return torch.optim.Adam(groups)

    def _loss(self, logits: list[torch.Tensor], targets: list, rows: np.ndarray) -> tuple[torch.Tensor, list[float]]:
        """Eq. 2 for one batch: sum over tasks of the task's cross-entropy, averaged over the batch's labelled videos."""
        total = logits[0].new_zeros(())
        parts: list[float] = []
        for task, output, target in zip(self.tasks_, logits, targets):
            if task.kind == "multiclass":
                y = torch.as_tensor(target[rows])  # (B,) class index, -1 = missing
                keep = y >= 0
                if not bool(keep.any()):
                    parts.append(float("nan"))
                    continue
                loss = F.cross_entropy(output[keep], y[keep])
            else:
                labelled = [i for i, r in enumerate(rows) if len(target[r])]
                if not labelled:
                    parts.append(float("nan"))
                    continue
                y = torch.zeros((len(labelled), output.shape[1]))  # (B_l, M3) binary label vectors y^3
                for j, i in enumerate(labelled):
                    y[j, target[rows[i]]] = 1.0
                # Sum over the M3 binary labels, mean over videos: Eq. 2 per video, as for the class tasks.
                loss = F.binary_cross_entropy_with_logits(output[labelled], y, reduction="sum") / len(labelled)
            total = total + loss
            parts.append(float(loss.detach()))
        return total, parts

    def _joint(
        self, title_ids: list[list[int]] | None, covers: list[str | None], rows: np.ndarray, rng: np.random.Generator | None = None
    ) -> torch.Tensor:
        """z = [f_C(x_I), f_T(x_W)] of one batch with gradients: (B, D_C + D_T).

        With ``rng`` and ``modality_dropout`` > 0 (training), each video's cover is dropped with that
        probability, i.e. encoded as the zero f_C of a video without cover (ModDrop, Neverova et al. 2015), when
        it has a title to be learned from; the title is never dropped (an empty title is not a zero f_T).
        """
        parts = []
        if self.cover_encoder_ is not None:
            images, present = load_covers([covers[i] for i in rows], self.cover_encoder_.image_size_px)
            if rng is not None and self.config_.modality_dropout > 0 and self.title_encoder_ is not None:
                dropped = torch.from_numpy(rng.random(len(rows)) < self.config_.modality_dropout)
                present = present & ~dropped
            parts.append(self.cover_encoder_(images, present))  # (B, D_C)
        if self.title_encoder_ is not None:
            ids, mask = pad_batch([title_ids[i] for i in rows], self.title_encoder_.pad_id)
            parts.append(self.title_encoder_(ids, mask))  # (B, D_T)
        return torch.cat(parts, dim=1)

    def _train(self, titles: list[str], covers: list[str | None], targets: list) -> None:
        config = self.config_
        title_ids = self.title_encoder_.tokenize(titles) if self.title_encoder_ is not None else None
        lengths = [len(ids) for ids in title_ids] if title_ids is not None else [0] * len(titles)
        optimizer = self._optimizer()
        rng = np.random.default_rng(config.seed)
        modules = [m for m in (self.title_encoder_, self.cover_encoder_, self.mmoe_) if m is not None]
        for module in modules:
            module.train()
        for epoch in range(config.epochs):
            sums, counts = np.zeros(len(self.tasks_)), np.zeros(len(self.tasks_))
            batches = sortish_batches(lengths, config.batch_size, rng)
            progress = tqdm(batches, desc=f"MMoE epoch {epoch + 1}/{config.epochs}", leave=False)
            for rows in progress:
                logits, _, _ = self.mmoe_(self._joint(title_ids, covers, rows, rng))
                loss, parts = self._loss(logits, targets, rows)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                seen = ~np.isnan(parts)
                sums[seen] += np.asarray(parts)[seen]
                counts[seen] += 1
                progress.set_postfix(loss=f"{np.nansum(parts):.3f}")
            epoch_losses = {t.name: float(s / c) if c else float("nan") for t, s, c in zip(self.tasks_, sums, counts)}
            self.history_.append(epoch_losses)
            logger.info(
                "MMoE epoch %d/%d: %s", epoch + 1, config.epochs, ", ".join(f"{name} {value:.3f}" for name, value in epoch_losses.items())
            )
        for module in modules:
            module.eval()

    # ------------------------------------------------------------------------------------ transform

    def _check_fitted(self) -> None:
        if not hasattr(self, "mmoe_"):
            raise RuntimeError("MultimodalTopicEncoder is not fitted: call fit(videos) or MultimodalTopicEncoder.load(dir)")

    def joint_features(self, videos: pd.DataFrame, batch_size: int | None = None) -> np.ndarray:
        """z = [f_C(x_I), f_T(x_W)] with the fine-tuned encoders: (n, D_C + D_T) float32."""
        self._check_fitted()
        _check_videos(videos)
        batch_size = batch_size or max(self.config_.batch_size, 128)
        parts = []
        with _torch_threads(self.config_.torch_threads):
            if self.cover_encoder_ is not None:
                parts.append(encode_covers(self.cover_encoder_, _covers(videos), batch_size))
            if self.title_encoder_ is not None:
                parts.append(encode_titles(self.title_encoder_, _titles(videos), batch_size))
        return np.concatenate(parts, axis=1)

    def transform(self, videos: pd.DataFrame, representation: Representation | None = None, batch_size: int | None = None) -> np.ndarray:
        """The deep joint representation of each video: (n, d) float32, rows in the order of ``videos``.

        ``representation`` (default: the fitted ``representation`` parameter): ``"encoder"`` -> [f_C(x_I), f_T(x_W)]
        (d = D_C + D_T); ``"experts"`` -> [f^1(z), ..., f^N(z)] (d = N * expert_dim; the encoder output
        when no task was trained).
        """
        return self.encode(videos, representation, batch_size)[0]

    def encode(
        self, videos: pd.DataFrame, representation: Representation | None = None, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(z, tag probabilities) in one pass: z as :meth:`transform`; the tag task's per-tag sigmoid (n, M3) float32
        over ``tag_classes()``, or None when there is no tag task."""
        self._check_fitted()
        representation = representation or self.config_.representation
        if representation not in ("encoder", "experts"):
            raise ValueError(f"representation must be 'encoder' or 'experts', got {representation!r}")
        z = self.joint_features(videos, batch_size)
        tag_task = next((k for k, task in enumerate(self.tasks_) if task.kind == "multilabel"), None)
        if not self.tasks_:
            return z, None
        mixtures_out, tags_out = [], []
        with _torch_threads(self.config_.torch_threads), torch.inference_mode():
            self.mmoe_.eval()
            for start in range(0, len(z), 1024):
                logits, _, mixtures = self.mmoe_(torch.from_numpy(z[start : start + 1024]))  # (b, N, E)
                mixtures_out.append(mixtures.reshape(len(mixtures), -1).numpy())
                if tag_task is not None:
                    tags_out.append(torch.sigmoid(logits[tag_task]).numpy())
        tag_probs = np.concatenate(tags_out).astype(np.float32, copy=False) if tag_task is not None else None
        if representation == "encoder":
            return z, tag_probs
        return np.concatenate(mixtures_out).astype(np.float32, copy=False), tag_probs

    def tag_classes(self) -> list[str]:
        """The tags the tag task predicts (columns of :meth:`encode`'s tag probabilities); [] without tag task."""
        self._check_fitted()
        return next((list(task.classes) for task in self.tasks_ if task.kind == "multilabel"), [])

    def fit_transform(self, videos: pd.DataFrame) -> np.ndarray:
        return self.fit(videos).transform(videos)

    def predict_proba(self, videos: pd.DataFrame) -> dict[str, np.ndarray]:
        """p^k per task name: (n, M^k) float32 (softmax for class tasks, per-tag sigmoid for tags)."""
        self._check_fitted()
        z = self.joint_features(videos)
        with _torch_threads(self.config_.torch_threads), torch.inference_mode():
            self.mmoe_.eval()
            logits, _, _ = self.mmoe_(torch.from_numpy(z))
        return {
            task.name: (torch.softmax(out, 1) if task.kind == "multiclass" else torch.sigmoid(out)).numpy()
            for task, out in zip(self.tasks_, logits)
        }

    def gate_weights(self, videos: pd.DataFrame) -> np.ndarray:
        """g^k(z) for every video and task: (n, N, H) float32, each (video, task) row sums to 1."""
        self._check_fitted()
        z = self.joint_features(videos)
        with _torch_threads(self.config_.torch_threads), torch.inference_mode():
            self.mmoe_.eval()
            _, gates, _ = self.mmoe_(torch.from_numpy(z))
        return gates.numpy()

    # ---------------------------------------------------------------------------------- save / load

    def save(self, directory: str | Path) -> Path:
        """Write weights with ``config.json`` (config, tasks, modalities, data fingerprint, training history) beside them."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.title_encoder_ is not None:
            self.title_encoder_.save(directory / TITLE_DIR)
        if self.cover_encoder_ is not None:
            self.cover_encoder_.save(directory / COVER_FILE)
        torch.save(self.mmoe_.state_dict(), directory / HEAD_FILE)
        state = {
            "config": self.config_.model_dump(mode="json"),
            "modalities": list(self.modalities_),
            "tasks": [asdict(task) for task in self.tasks_],
            "vocabulary": asdict(self.vocabulary_report_) if self.vocabulary_report_ is not None else None,
            "history": self.history_,
            "training_seconds": self.training_seconds_,
            "n_training_videos": self.n_training_videos_,
            "data_fingerprint": self.data_fingerprint_,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(state, indent=2, ensure_ascii=False))
        logger.info("MMoE saved to %s", directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> MultimodalTopicEncoder:
        """Read a model written by :meth:`save`."""
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{directory}: no {CONFIG_FILE}; not a saved MultimodalTopicEncoder")
        state = json.loads((directory / CONFIG_FILE).read_text())
        config = MMoEConfig.model_validate(state["config"])
        model = cls.from_config(config)
        model.config_ = config
        model.modalities_ = tuple(state["modalities"])
        model.tasks_ = [TaskSpec(**task) for task in state["tasks"]]
        model.vocabulary_report_ = VocabularyReport(**state["vocabulary"]) if state["vocabulary"] else None
        model.history_ = state["history"]
        model.training_seconds_ = state["training_seconds"]
        model.n_training_videos_ = state["n_training_videos"]
        model.data_fingerprint_ = state["data_fingerprint"]
        model.title_encoder_ = TitleEncoder(directory / TITLE_DIR, config.max_title_tokens) if "title" in model.modalities_ else None
        model.cover_encoder_ = None
        if "cover" in model.modalities_:
            pretrained = config.image_encoder is not None
            model.cover_encoder_ = CoverEncoder(directory / COVER_FILE if pretrained else None, config.image_size_px, config.cnn_channels)
            if not pretrained:
                model.cover_encoder_.cnn.load_state_dict(torch.load(directory / COVER_FILE, weights_only=True))
        model.mmoe_ = MMoE(
            model._modality_dims(),
            config.n_experts,
            config.expert_dim,
            config.tower_hidden,
            [len(t.classes) for t in model.tasks_],
            config.dropout,
        )
        model.mmoe_.load_state_dict(torch.load(directory / HEAD_FILE, weights_only=True))
        for module in (model.title_encoder_, model.cover_encoder_, model.mmoe_):
            if module is not None:
                module.eval()
        return model
