"""MRLM data preprocessing (seed 003, section 3.1): feedback, the 70/20/10 split, initial vectors, cluster ids.

What comes out of :func:`prepare` for a videos table and an interactions table:

- feedback: every interaction is positive (``clicked == 1``, or ``rating >= rating_threshold``) or
  negative (an exposure without click, a low rating); the split is random, 70/20/10 as in the paper;
- initial vectors u0, v0 (d0): the paper uses xDeepFM over the structured attributes. We train a compact
  factorisation machine instead (:class:`StructuredFM`): one embedding per attribute value (user id,
  age band, gender, occupation; video id, primary class, secondary class, tags), a user is the sum of
  its fields' embeddings, a video likewise, and the FM's user-video interaction <u, v> + b_v is fitted
  with BPR on the training positives. Its last coordinate carries b_v (users get 1 there), so
  u0 · v0 is exactly the FM score. The CIN part of xDeepFM is left out: with one or two fields per side
  it adds little and costs a lot on a CPU;
- cluster ids, one per modality present (a modality with no data is dropped):
  ``title`` (TF-IDF of words and TF-IDF of character 3-5-grams, each reduced by truncated SVD; no
  transformer, to keep preprocessing to seconds), ``tags`` (multi-hot), ``categories`` (one-hot
  primary and secondary class), ``knowledge`` (the KB4Rec entity's (relation, tail) pairs and relations,
  TF-IDF + SVD; ml-100k.link / ml-100k.kg) and ``image`` (a 12x12 RGB thumbnail and a colour
  histogram of the cover). The paper clusters with multiple-kernel k-means; we run k-means on the
  concatenation of the per-kernel blocks, each row-normalised and scaled by 1/sqrt(#blocks), which is
  k-means with equally weighted linear kernels (MKKM with fixed, uniform kernel weights).

    from offline_jobs.mrlm_data import prepare
    from topicfs.movielens import load_ml100k
    from topicfs.settings import get_settings
    ml = load_ml100k(get_settings().paths.movielens)
    data = prepare(ml.videos, ml.interactions, get_settings().mrlm, users=ml.users, item_entities=ml.item_entities, kg=ml.kg)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from topicfs.errors import UserError
from topicfs.settings import MRLMConfig

logger = logging.getLogger(__name__)

MODALITIES = ("title", "tags", "categories", "knowledge", "image")


class MRLMDataError(UserError, ValueError):
    """Bad MRLM input, in one line naming the table and field."""


@dataclass
class MRLMData:
    """Everything the MRLM model trains on, with users and videos re-indexed 0..n-1."""

    user_ids: np.ndarray  # (n_users,) int64: original user_id of each user index
    video_ids: np.ndarray  # (n_items,) int64: original video_id of each item index
    train: pd.DataFrame  # user, item (indices), positive bool, ts
    valid: pd.DataFrame
    test: pd.DataFrame
    user_fields: dict[str, np.ndarray]  # field -> (n_users,) int64 codes
    item_fields: dict[str, np.ndarray]  # field -> (n_items,) int64 codes
    item_tags: list[list[int]]  # tag codes of each item
    clusters: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (n_items,) int64 cluster id
    initial_users: np.ndarray | None = None  # (n_users, d0) float32: u0
    initial_items: np.ndarray | None = None  # (n_items, d0) float32: v0

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.video_ids)

    def latest_positives(self, limit: int) -> list[np.ndarray]:
        """Each user's latest ``limit`` training positives (item indices, newest first)."""
        positives = self.train[self.train["positive"]].sort_values("ts", ascending=False, kind="stable")
        grouped = positives.groupby("user")["item"].apply(lambda items: items.to_numpy()[:limit])
        empty = np.zeros(0, np.int64)
        return [grouped.get(user, empty) for user in range(self.n_users)]


def feedback(interactions: pd.DataFrame, rating_threshold: float) -> pd.DataFrame:
    """user_id, video_id, positive, ts from an interactions table (``clicked`` 0/1 or ``rating``)."""
    if len(interactions) == 0:
        raise MRLMDataError("interactions: the table is empty; MRLM needs positive feedback to train on")
    for column in ("user_id", "video_id", "ts"):
        if column not in interactions.columns:
            raise MRLMDataError(f"interactions: missing column {column!r}")
    if "clicked" in interactions.columns:
        positive = interactions["clicked"].astype(int) == 1
    elif "rating" in interactions.columns:
        positive = interactions["rating"].astype(float) >= rating_threshold
    else:
        raise MRLMDataError("interactions: needs a 'clicked' (0/1) or a 'rating' column")
    frame = pd.DataFrame(
        {
            "user_id": interactions["user_id"].astype(np.int64),
            "video_id": interactions["video_id"].astype(np.int64),
            "positive": positive.to_numpy(),
            "ts": interactions["ts"],
        }
    )
    if not frame["positive"].any():
        raise MRLMDataError("interactions: no positive feedback (no click, no rating >= threshold)")
    return frame


def split(frame: pd.DataFrame, fractions: list[float], seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Random train / valid / test split of the interactions (the paper's 70/20/10)."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise MRLMDataError(f"mrlm.split_fractions must sum to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(len(frame))
    cut_train = int(round(fractions[0] * len(frame)))
    cut_valid = cut_train + int(round(fractions[1] * len(frame)))
    parts = order[:cut_train], order[cut_train:cut_valid], order[cut_valid:]
    return tuple(frame.iloc[np.sort(part)].reset_index(drop=True) for part in parts)  # type: ignore[return-value]


def _codes(values: pd.Series) -> np.ndarray:
    """Integer codes of a categorical column, missing values as one extra code."""
    return pd.factorize(values.astype("string").fillna("<missing>"))[0].astype(np.int64)


def _user_fields(user_ids: np.ndarray, users: pd.DataFrame | None) -> dict[str, np.ndarray]:
    fields = {"user_id": np.arange(len(user_ids), dtype=np.int64)}
    if users is not None and len(users):
        table = users.drop_duplicates("user_id").set_index("user_id").reindex(user_ids)
        if "age" in table.columns:
            age = pd.to_numeric(table["age"], errors="coerce")
            fields["age_band"] = _codes(pd.cut(age, [0, 18, 25, 35, 45, 50, 56, 200], right=False).astype("string"))
        for column in ("gender", "occupation"):
            if column in table.columns:
                fields[column] = _codes(table[column])
    return fields


def _item_fields(videos: pd.DataFrame) -> tuple[dict[str, np.ndarray], list[list[int]]]:
    fields = {"video_id": np.arange(len(videos), dtype=np.int64)}
    for column in ("primary_class", "secondary_class"):
        fields[column] = _codes(videos[column])
    vocabulary: dict[str, int] = {}
    tags = [[vocabulary.setdefault(str(tag), len(vocabulary)) for tag in (row if row is not None else [])] for row in videos["tags"]]
    return fields, tags


# --- initial vectors: the structured-attribute FM -------------------------------------------------


class _FieldSum(nn.Module):
    """Sum of one embedding per field value (tags: mean of the tag embeddings), (n, d)."""

    def __init__(self, cardinalities: dict[str, int], dim: int, with_tags: int = 0):
        super().__init__()
        self.tables = nn.ModuleDict({name: nn.Embedding(size, dim) for name, size in cardinalities.items()})
        self.tags = nn.EmbeddingBag(with_tags, dim, mode="mean") if with_tags else None
        for module in [*self.tables.values(), *([self.tags] if self.tags is not None else [])]:
            nn.init.normal_(module.weight, std=0.05)

    def forward(
        self, codes: dict[str, torch.Tensor], index: torch.Tensor, tag_bags: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        total = sum(table(codes[name][index]) for name, table in self.tables.items())  # (n, d)
        if self.tags is not None and tag_bags is not None:
            flat, offsets = tag_bags
            total = total + self.tags(flat, offsets)[index]
        return total


class StructuredFM:
    """Two-sided factorisation machine over the structured attributes, fitted with BPR (scikit-learn style).

    score(u, v) = <Σ_f e_f(u), Σ_g e_g(v)> + b_v. ``transform`` gives u0 = [U, 1] and v0 = [V, b_v], both
    ``dim`` wide, so u0 · v0 is the score.
    """

    def __init__(
        self,
        dim: int = 250,
        epochs: int = 10,
        learning_rate: float = 5e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 1024,
        random_state: int = 0,
    ):
        self.dim = dim
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.random_state = random_state

    def _tag_bags(self, item_tags: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        # items without tags get the embedding of one "no tag" code (the last)
        rows = [tags if tags else [self.n_tags_ - 1] for tags in item_tags]
        flat = torch.tensor([t for row in rows for t in row], dtype=torch.long)
        offsets = torch.tensor(np.cumsum([0] + [len(row) for row in rows[:-1]]), dtype=torch.long)
        return flat, offsets

    def fit(self, data: MRLMData) -> StructuredFM:
        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        self.n_tags_ = max((t for row in data.item_tags for t in row), default=-1) + 2
        self.user_codes_ = {k: torch.from_numpy(v) for k, v in data.user_fields.items()}
        self.item_codes_ = {k: torch.from_numpy(v) for k, v in data.item_fields.items()}
        self.tag_bags_ = self._tag_bags(data.item_tags)
        self.users_ = _FieldSum({k: int(v.max()) + 1 for k, v in data.user_fields.items()}, self.dim - 1)
        self.items_ = _FieldSum({k: int(v.max()) + 1 for k, v in data.item_fields.items()}, self.dim - 1, with_tags=self.n_tags_)
        self.item_bias_ = nn.Embedding(data.n_items, 1)
        nn.init.zeros_(self.item_bias_.weight)
        parameters = [*self.users_.parameters(), *self.items_.parameters(), *self.item_bias_.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=self.learning_rate, weight_decay=self.weight_decay)
        positives = data.train[data.train["positive"]]
        users = positives["user"].to_numpy()
        items = positives["item"].to_numpy()
        progress = tqdm(range(self.epochs), desc="MRLM initial vectors (attribute FM)", unit="epoch")
        for epoch in progress:
            order = rng.permutation(len(users))
            negatives = rng.integers(0, data.n_items, size=len(users))
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                user = torch.from_numpy(users[batch])
                pos, neg = torch.from_numpy(items[batch]), torch.from_numpy(negatives[batch])
                u = self.users_(self.user_codes_, user)  # (b, d0-1)
                both = torch.cat([pos, neg])
                v = self.items_(self.item_codes_, both, self.tag_bags_)  # (2b, d0-1)
                score = (u.repeat(2, 1) * v).sum(1) + self.item_bias_(both).squeeze(1)  # (2b,)
                margin = score[: len(batch)] - score[len(batch) :]
                loss = -nn.functional.logsigmoid(margin).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            logger.debug("FM epoch %d: BPR loss %.4f", epoch, total / max(len(users), 1))
            progress.set_postfix(loss=f"{total / max(len(users), 1):.4f}")
        return self

    @torch.no_grad()
    def transform(self, data: MRLMData) -> tuple[np.ndarray, np.ndarray]:
        """u0 (n_users, d0) and v0 (n_items, d0), float32."""
        u = self.users_(self.user_codes_, torch.arange(data.n_users))
        v = self.items_(self.item_codes_, torch.arange(data.n_items), self.tag_bags_)
        u0 = torch.cat([u, torch.ones(len(u), 1)], 1)
        v0 = torch.cat([v, self.item_bias_.weight], 1)
        return u0.numpy().astype(np.float32), v0.numpy().astype(np.float32)


# --- auxiliary features and cluster ids ------------------------------------------------------------


def _tfidf_svd(documents: list[str], dim: int, seed: int, **vectorizer_options) -> np.ndarray | None:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not any(documents):
        return None
    matrix = TfidfVectorizer(**vectorizer_options).fit_transform(documents)
    if matrix.shape[1] < 2:
        return matrix.toarray()
    return TruncatedSVD(n_components=min(dim, matrix.shape[1] - 1), random_state=seed).fit_transform(matrix)


def _one_hot(codes: np.ndarray) -> np.ndarray:
    return np.eye(int(codes.max()) + 1, dtype=np.float32)[codes]


def _cover_features(paths: pd.Series) -> np.ndarray | None:
    from PIL import Image

    rows, present = [], False
    for path in paths:
        if path is None or (isinstance(path, float) and np.isnan(path)):
            rows.append(None)
            continue
        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB").resize((12, 12)), dtype=np.float32) / 255.0  # (12, 12, 3)
        except OSError as error:
            logger.warning("cover %s unreadable (%s); the video gets no image feature", path, error)
            rows.append(None)
            continue
        histogram = np.concatenate([np.histogram(rgb[..., c], bins=8, range=(0, 1))[0] for c in range(3)]).astype(np.float32) / 144.0
        rows.append(np.concatenate([rgb.ravel(), histogram]))
        present = True
    if not present:
        return None
    width = next(len(row) for row in rows if row is not None)
    return np.stack([row if row is not None else np.zeros(width, np.float32) for row in rows])


def modality_blocks(
    videos: pd.DataFrame,
    item_fields: dict[str, np.ndarray],
    item_tags: list[list[int]],
    dim: int,
    seed: int,
    item_entities: pd.DataFrame | None = None,
    kg: pd.DataFrame | None = None,
) -> dict[str, list[np.ndarray]]:
    """Per modality, its feature blocks ("kernels"), each (n_items, width); modalities without data are absent."""
    blocks: dict[str, list[np.ndarray]] = {}
    titles = videos["title"].fillna("").astype(str).tolist()
    words = _tfidf_svd(titles, dim, seed, ngram_range=(1, 2), min_df=1)
    characters = _tfidf_svd(titles, dim, seed, analyzer="char_wb", ngram_range=(3, 5), min_df=2)
    blocks["title"] = [b for b in (words, characters) if b is not None]
    n_tags = max((t for row in item_tags for t in row), default=-1) + 1
    if n_tags:
        multi_hot = np.zeros((len(videos), n_tags), np.float32)
        for row, tags in enumerate(item_tags):
            multi_hot[row, tags] = 1.0
        blocks["tags"] = [multi_hot]
    blocks["categories"] = [_one_hot(item_fields["primary_class"]), _one_hot(item_fields["secondary_class"])]
    if item_entities is not None and kg is not None and len(item_entities) and len(kg):
        by_head = kg.assign(pair=kg["relation"].astype(str) + "=" + kg["tail"].astype(str)).groupby("head")
        pairs = by_head["pair"].apply(" ".join)
        relations = by_head["relation"].apply(lambda r: " ".join(r.astype(str)))
        entity = videos["video_id"].map(item_entities.drop_duplicates("video_id").set_index("video_id")["entity"])
        options = {"token_pattern": r"\S+", "lowercase": False}
        blocks["knowledge"] = [
            b
            for b in (
                _tfidf_svd(entity.map(pairs).fillna("").tolist(), dim, seed, **options),
                _tfidf_svd(entity.map(relations).fillna("").tolist(), dim, seed, **options),
            )
            if b is not None
        ]
    covers = _cover_features(videos["cover_image"]) if "cover_image" in videos.columns else None
    if covers is not None:
        blocks["image"] = [covers]
    return {name: found for name, found in blocks.items() if found}


def cluster_ids(blocks: list[np.ndarray], n_clusters: int, seed: int) -> np.ndarray:
    """k-means on [b_1/‖b_1‖, ..., b_k/‖b_k‖] / sqrt(k): MKKM with uniform linear kernels; (n_items,) int64."""
    from sklearn.cluster import KMeans

    parts = []
    for block in blocks:
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        parts.append(np.divide(block, norms, out=np.zeros_like(block, dtype=np.float64), where=norms > 0) / np.sqrt(len(blocks)))
    features = np.concatenate(parts, axis=1)
    distinct = len(np.unique(features.round(6), axis=0))
    k = max(1, min(n_clusters, distinct))
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(features).astype(np.int64)


def prepare(
    videos: pd.DataFrame,
    interactions: pd.DataFrame,
    config: MRLMConfig,
    users: pd.DataFrame | None = None,
    item_entities: pd.DataFrame | None = None,
    kg: pd.DataFrame | None = None,
    initial_vectors: bool = True,
) -> MRLMData:
    """Feedback, split, field codes, per-modality cluster ids and (optionally) the FM initial vectors."""
    if len(videos) == 0:
        raise MRLMDataError("videos: the table is empty")
    frame = feedback(interactions, config.rating_threshold)
    videos = videos.drop_duplicates("video_id").reset_index(drop=True)
    video_ids = videos["video_id"].astype(np.int64).to_numpy()
    unknown = ~frame["video_id"].isin(video_ids)
    if unknown.any():
        logger.warning("interactions: %d rows name videos missing from the videos table; dropped", int(unknown.sum()))
        frame = frame[~unknown]
        if not frame["positive"].any():
            raise MRLMDataError("interactions: no positive feedback on a video of the videos table")
    user_ids = np.sort(frame["user_id"].unique())
    frame = frame.assign(
        user=np.searchsorted(user_ids, frame["user_id"].to_numpy()),
        item=pd.Index(video_ids).get_indexer(frame["video_id"]),
    )[["user", "item", "positive", "ts"]]
    train, valid, test = split(frame, config.split_fractions, config.seed)
    item_fields, item_tags = _item_fields(videos)
    data = MRLMData(user_ids, video_ids, train, valid, test, _user_fields(user_ids, users), item_fields, item_tags)
    for modality, blocks in modality_blocks(videos, item_fields, item_tags, config.text_svd_dim, config.seed, item_entities, kg).items():
        if config.n_clusters.get(modality, 0) < 2 or config.modality_weights.get(modality, 0) <= 0:
            continue
        data.clusters[modality] = cluster_ids(blocks, config.n_clusters[modality], config.seed)
    logger.info(
        "MRLM data: %d users, %d items, %d/%d/%d train/valid/test rows, modalities %s",
        data.n_users,
        data.n_items,
        len(train),
        len(valid),
        len(test),
        {m: int(c.max()) + 1 for m, c in data.clusters.items()},
    )
    if initial_vectors:
        fm = StructuredFM(
            config.initial_dim, config.fm_epochs, config.fm_learning_rate, config.fm_weight_decay, random_state=config.seed
        ).fit(data)
        data.initial_users, data.initial_items = fm.transform(data)
    return data
