"""Tag embeddings from the tag co-occurrence graph (MTL paper III-A-2, Eq. 3-4).

Steps, each one line of :meth:`TagGraphEmbedder.fit`:

1. Graph (Eq. 3). Nodes are the tags seen on at least ``min_tag_count`` videos. The value x of the
   edge between two tags is the number of videos holding both; edges of value 0 do not exist. A walk
   at tag u steps to neighbour v with probability x_uv / sum_w x_uw. We read Eq. 3's "probability of
   an edge" this way because a walk needs a distribution over the edges *leaving the current node*
   (DeepWalk [18]); normalising over all E edges of the graph gives the same ratios between the edges of
   one node. Built with sparse matrices: B (videos x T, 0/1) and C = BᵀB minus its diagonal, so the cost
   is the sum over videos of (tags per video)², linear in the number of videos, and nothing is T x T dense.
2. DeepWalk. ``walks_per_tag`` walks of ``walk_length`` (l) nodes start from every tag (start order
   shuffled per pass, as DeepWalk does). All walkers step at once: a global cumulative sum over the CSR
   edge values plus one ``np.searchsorted`` per step picks every walker's next node.
3. Skip-gram (gensim ``Word2Vec``, ``sg=1``) on the walks gives e_j for every tag t_j.
4. Eq. 4: a video's tag representation ē is the mean of its (known) tags' embeddings
   (``weighting="mean"``), or with ``weighting="idf"`` their mean weighted by each tag's smoothed inverse
   document frequency, log((1 + N) / (1 + n_j)) + 1 over the N videos ``fit`` saw, n_j of them holding
   tag j (scikit-learn's smooth idf, always > 0). Why a weighted mean: many tags of real catalogues say
   nothing about the content (KuaiRec's most frequent tags are "感谢快手我要上热门", "thanks for making me
   trend", and "作品推广", "promotion", each on ~8% of the videos) and the plain mean lets them pull ē of
   unrelated videos together; on KuaiRec idf raised the held-out NMI of ē from 0.260 to 0.272 (PC)
   and 0.425 to 0.433 (SC) and helped a in most Table I cells (docs/TABLE1.md).

Choices the paper leaves open:

- Isolated tags (on videos alone, or only with tags dropped by ``min_tag_count``) have no edge. Their
  walk is a one-token sentence, so they are in skip-gram's vocabulary but form no (word, context) pair:
  their vector is gensim's seeded random initial vector, which we rescale to the mean norm of the
  trained vectors. A random direction says honestly "unrelated to every other tag" while keeping the
  tag's identity, so videos sharing an isolated tag still share ē (a zero vector would merge them with
  untagged videos), and the same scale keeps it from being swamped when averaged with trained tags.
- Videos without tags (43% of KuaiRec's videos) or whose tags are all unknown get ē = 0 and
  ``has_tags = False``; :func:`offline_jobs.topics.topic_representation` then keeps only their z half.
  Tags unknown to the table (new since ``fit``, or dropped by ``min_tag_count``) are skipped and counted.
- A tag listed twice on one video counts once (a video either holds a tag or not), in fit and transform.
- Reproducibility: walks use ``numpy.random.default_rng(seed)``; gensim gets the same seed. With
  ``workers=1`` (the default) the same tags and seed give bit-identical embeddings in any process;
  ``workers=2`` trains faster but thread scheduling reorders updates, so vectors differ run to run.

Run it::

    from offline_jobs.tag_graph import TagGraphEmbedder
    from topicfs.settings import get_settings

    embedder = TagGraphEmbedder.from_config(get_settings().tag_graph).fit(videos["tags"])
    e_bar, has_tags = embedder.transform(videos["tags"])   # (n, d) float32, (n,) bool
    embedder.save(get_settings().paths.models_dir / "tag_graph")
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import gensim
import numpy as np
import scipy
import scipy.sparse as sp
from gensim.models import Word2Vec
from gensim.models.callbacks import CallbackAny2Vec
from tqdm.auto import tqdm

from offline_jobs.artifacts import fingerprint_token_lists, read_json, write_json_atomic
from offline_jobs.estimator import SettingsEstimator
from topicfs.settings import TagGraphConfig

logger = logging.getLogger(__name__)

ARRAYS_FILE = "tag_graph.npz"
META_FILE = "tag_graph.json"
FORMAT_VERSION = 1


def clean_tag_lists(tags_per_video: Iterable[Any]) -> list[list[str]]:
    """Validate the tags of each video and return them as lists of distinct strings, order kept.

    Each item must be a list, tuple or array of strings (``None`` means no tags). A bare string is
    refused because iterating it would silently turn "cat" into the tags "c", "a", "t". Empty or
    whitespace-only tags carry no meaning and are dropped; surrounding whitespace is stripped.
    """
    if isinstance(tags_per_video, (str, bytes)):
        raise TypeError("tags_per_video must be a sequence with one list of tags per video, got a single string")
    cleaned: list[list[str]] = []
    for position, tags in enumerate(tags_per_video):
        if tags is None:
            cleaned.append([])
            continue
        if isinstance(tags, (str, bytes)) or not isinstance(tags, (list, tuple, np.ndarray)):
            raise TypeError(f"video at position {position}: tags must be a list of strings, got {type(tags).__name__} {tags!r}")
        seen: dict[str, None] = {}
        for tag in tags:
            if not isinstance(tag, str):
                raise TypeError(f"video at position {position}: tag {tag!r} is {type(tag).__name__}, expected str")
            tag = tag.strip()
            if tag:
                seen.setdefault(tag, None)
        cleaned.append(list(seen))
    return cleaned


def cooccurrence_matrix(tag_index_lists: Sequence[Sequence[int]], n_tags: int) -> sp.csr_matrix:
    """C (T, T) float64 CSR: C[u, v] = videos holding both tag u and tag v (u != v), zero diagonal.

    ``tag_index_lists`` holds each video's distinct tag indices. C = BᵀB for the 0/1 incidence matrix B
    (videos, T); its diagonal (videos per tag) is removed because a walk never steps from a tag to itself.
    """
    lengths = np.fromiter((len(indices) for indices in tag_index_lists), dtype=np.int64, count=len(tag_index_lists))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    columns = np.fromiter((i for indices in tag_index_lists for i in indices), dtype=np.int64, count=int(indptr[-1]))
    incidence = sp.csr_matrix(
        (np.ones(len(columns), dtype=np.float64), columns, indptr), shape=(len(tag_index_lists), n_tags)
    )  # (n_videos, T)
    cooccurrence = (incidence.T @ incidence).tocsr()  # (T, T)
    cooccurrence.setdiag(0)
    cooccurrence.eliminate_zeros()
    cooccurrence.sort_indices()
    return cooccurrence


def transition_matrix(cooccurrence: sp.csr_matrix) -> sp.csr_matrix:
    """P (T, T) CSR, Eq. 3: P[u, v] = x_uv / sum_w x_uw; rows of isolated tags stay empty."""
    degree = np.asarray(cooccurrence.sum(axis=1)).ravel()  # (T,) sum of edge values per tag
    inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    transition = (sp.diags(inverse) @ cooccurrence).tocsr()
    transition.sort_indices()
    return transition


def random_walks(
    cooccurrence: sp.csr_matrix,
    walk_length: int,
    walks_per_tag: int,
    rng: np.random.Generator,
    show_progress: bool = True,
) -> np.ndarray:
    """DeepWalk walks on the weighted graph, all walkers stepping at once.

    Returns (walks_per_tag * T, walk_length) int32 node ids. A walk from an isolated tag holds its start
    node and then -1 padding (it has nowhere to go; every other walk is full length, because a node with
    a neighbour is itself that neighbour's neighbour). Each pass visits every tag once, in a shuffled order.

    Next-node sampling: ``cumulative`` is the running sum of all CSR edge values. For a walker at u, whose
    edges occupy positions s..e-1, a target drawn uniformly in [cumulative[s-1], cumulative[e-1]) falls
    in position j's slice with probability x_j / sum of u's values, and ``searchsorted`` finds j for every
    walker in one vectorised call.
    """
    n_tags = cooccurrence.shape[0]
    indptr, neighbours = cooccurrence.indptr, cooccurrence.indices
    cumulative = np.cumsum(cooccurrence.data, dtype=np.float64)  # (nnz,)
    row_base = np.concatenate([[0.0], cumulative])[indptr[:-1]]  # (T,) cumulative value before each row
    row_total = np.concatenate([[0.0], cumulative])[indptr[1:]] - row_base  # (T,) sum of each row's values

    starts = np.concatenate([rng.permutation(n_tags) for _ in range(walks_per_tag)])  # (W,)
    walks = np.full((len(starts), walk_length), -1, dtype=np.int32)  # (W, l)
    walks[:, 0] = starts
    moving = np.flatnonzero(row_total[starts] > 0)  # walkers not stuck on an isolated tag
    current = starts[moving]
    for step in tqdm(range(1, walk_length), desc="random walks", unit="step", disable=not show_progress):
        target = row_base[current] + rng.random(len(current)) * row_total[current]
        position = np.searchsorted(cumulative, target, side="right")
        # rounding at the top of a row could land one past its last edge
        position = np.clip(position, indptr[current], indptr[current + 1] - 1)
        current = neighbours[position]
        walks[moving, step] = current
    return walks


class _EpochProgress(CallbackAny2Vec):
    """A tqdm bar over gensim's training epochs."""

    def __init__(self, epochs: int, enabled: bool):
        self.bar = tqdm(total=epochs, desc="skip-gram", unit="epoch", disable=not enabled)

    def on_epoch_end(self, model: Word2Vec) -> None:
        self.bar.update(1)

    def on_train_end(self, model: Word2Vec) -> None:
        self.bar.close()


_DEFAULTS = TagGraphConfig()


class TagGraphEmbedder(SettingsEstimator):
    """Tag embeddings e_j from DeepWalk + skip-gram on the tag co-occurrence graph; ē per video (Eq. 3-4).

    Parameters mirror :class:`topicfs.settings.TagGraphConfig`, defaults included. Learned state after :meth:`fit`:

    - ``tags_``: list[str], the T graph nodes, most frequent first (ties alphabetical)
    - ``tag_counts_``: (T,) int64, videos holding each tag
    - ``embeddings_``: (T, embedding_dim) float32, row j is e_j of ``tags_[j]``
    - ``transition_``: (T, T) scipy CSR float64, Eq. 3 step probabilities (empty rows for isolated tags)
    - ``isolated_``: (T,) bool, tags with no edge (see the module docstring for their embedding)
    - ``data_fingerprint_``: str, fingerprint of the tag lists ``fit`` saw
    """

    def __init__(
        self,
        walk_length: int = _DEFAULTS.walk_length,
        walks_per_tag: int = _DEFAULTS.walks_per_tag,
        embedding_dim: int = _DEFAULTS.embedding_dim,
        window: int = _DEFAULTS.window,
        epochs: int = _DEFAULTS.epochs,
        min_tag_count: int = _DEFAULTS.min_tag_count,
        seed: int = _DEFAULTS.seed,
        workers: int = _DEFAULTS.workers,
        weighting: str = _DEFAULTS.weighting,
        show_progress: bool = True,
    ):
        self.walk_length = walk_length
        self.walks_per_tag = walks_per_tag
        self.embedding_dim = embedding_dim
        self.window = window
        self.epochs = epochs
        self.min_tag_count = min_tag_count
        self.seed = seed
        self.workers = workers
        self.weighting = weighting
        self.show_progress = show_progress

    config_model = TagGraphConfig

    def fit(self, tags_per_video: Iterable[Any]) -> TagGraphEmbedder:
        """Build the graph over the videos' tags, walk it and train skip-gram. Returns self."""
        self.validated_config()
        tag_lists = clean_tag_lists(tags_per_video)
        counts = Counter(tag for tags in tag_lists for tag in tags)
        kept = sorted((tag for tag, count in counts.items() if count >= self.min_tag_count), key=lambda t: (-counts[t], t))
        if not kept:
            raise ValueError(
                f"TagGraphEmbedder.fit: no tag is on at least min_tag_count={self.min_tag_count} of the "
                f"{len(tag_lists)} videos ({len(counts)} distinct tags seen)"
            )
        tag_index = {tag: i for i, tag in enumerate(kept)}
        index_lists = [[tag_index[t] for t in tags if t in tag_index] for tags in tag_lists]
        cooccurrence = cooccurrence_matrix(index_lists, len(kept))  # (T, T)
        isolated = np.diff(cooccurrence.indptr) == 0
        logger.info(
            "tag graph: %d videos, %d tags kept of %d (min_tag_count=%d), %d edges, %d isolated tags",
            len(tag_lists),
            len(kept),
            len(counts),
            self.min_tag_count,
            cooccurrence.nnz // 2,
            int(isolated.sum()),
        )

        rng = np.random.default_rng(self.seed)
        walks = random_walks(cooccurrence, self.walk_length, self.walks_per_tag, rng, self.show_progress)  # (W, l)
        tag_array = np.array(kept, dtype=object)
        sentences = [tag_array[walk[walk >= 0]].tolist() for walk in walks]

        model = Word2Vec(
            sentences=sentences,
            vector_size=self.embedding_dim,
            window=self.window,
            sg=1,  # skip-gram, as the paper (and DeepWalk) use
            min_count=1,  # every graph node needs a vector; rare tags were already cut by min_tag_count
            workers=self.workers,
            seed=self.seed,
            epochs=self.epochs,
            callbacks=[_EpochProgress(self.epochs, self.show_progress)],
        )
        embeddings = np.stack([model.wv[tag] for tag in kept]).astype(np.float32)  # (T, d)
        if isolated.any():
            trained_norms = np.linalg.norm(embeddings[~isolated], axis=1)
            target_norm = float(trained_norms.mean()) if len(trained_norms) else 1.0
            norms = np.linalg.norm(embeddings[isolated], axis=1, keepdims=True)
            embeddings[isolated] *= target_norm / np.maximum(norms, np.finfo(np.float32).tiny)

        self.tags_ = list(kept)
        self.tag_counts_ = np.array([counts[t] for t in kept], dtype=np.int64)
        self.embeddings_ = embeddings
        self.transition_ = transition_matrix(cooccurrence)
        self.isolated_ = isolated
        self.data_fingerprint_ = fingerprint_token_lists(tag_lists)
        self.n_videos_fit_ = len(tag_lists)
        self._tag_index = tag_index
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "embeddings_"):
            raise RuntimeError("TagGraphEmbedder is not fitted: call fit() or TagGraphEmbedder.load() first")

    @property
    def tag_index_(self) -> dict[str, int]:
        """tag -> row of ``embeddings_``."""
        self._check_fitted()
        return self._tag_index

    def transform(self, tags_per_video: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
        """ē for every video (Eq. 4, weighted by ``weighting``) and whether it had any known tag.

        Returns ``e_bar`` (n, embedding_dim) float32 and ``has_tags`` (n,) bool. A video with no known
        tag gets a zero row and ``has_tags = False``; unknown tags are skipped (counted in the log).
        """
        self._check_fitted()
        tag_lists = clean_tag_lists(tags_per_video)
        tag_index = self._tag_index
        index_lists = [[tag_index[t] for t in tags if t in tag_index] for tags in tag_lists]
        known = np.fromiter((len(indices) for indices in index_lists), dtype=np.int64, count=len(index_lists))  # (n,)
        n_unknown = sum(len(tags) for tags in tag_lists) - int(known.sum())
        indptr = np.concatenate([[0], np.cumsum(known)])
        columns = np.fromiter((i for indices in index_lists for i in indices), dtype=np.int64, count=int(indptr[-1]))
        if self.weighting == "idf":
            idf = np.log((1.0 + self.n_videos_fit_) / (1.0 + self.tag_counts_)) + 1.0  # (T,)
            tag_weights = idf[columns]  # (nnz,)
        else:
            tag_weights = np.ones(len(columns))
        totals = np.add.reduceat(tag_weights, indptr[:-1][known > 0]) if len(columns) else np.zeros(0)  # per video with tags
        video_totals = np.ones(len(index_lists))
        video_totals[known > 0] = totals
        weights = tag_weights / np.repeat(video_totals, known)  # w_j / sum of the video's w; 1/v for the mean
        averaging = sp.csr_matrix((weights, columns, indptr), shape=(len(index_lists), len(self.tags_)))  # (n, T)
        e_bar = np.asarray(averaging @ self.embeddings_.astype(np.float64), dtype=np.float32)  # (n, d)
        has_tags = known > 0
        if n_unknown or not has_tags.all():
            logger.info(
                "tag representation: %d of %d videos have no known tag (zero ē); %d unknown tag occurrence(s) skipped",
                int((~has_tags).sum()),
                len(tag_lists),
                n_unknown,
            )
        return e_bar, has_tags

    def tag_weights(self) -> np.ndarray:
        """(T,) float64 the weight of each tag (rows of ``embeddings_``) in Eq. 4: idf with ``weighting="idf"``, else 1."""
        self._check_fitted()
        if self.weighting == "idf":
            return np.log((1.0 + self.n_videos_fit_) / (1.0 + self.tag_counts_)) + 1.0
        return np.ones(len(self.tags_))

    def fit_transform(self, tags_per_video: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """``fit`` then ``transform`` on the same videos."""
        return self.fit(tags_per_video).transform(tags_per_video)

    def embedding_of(self, tag: str) -> np.ndarray:
        """e_j of one tag, (embedding_dim,) float32; KeyError naming the tag when it is unknown."""
        self._check_fitted()
        if tag not in self._tag_index:
            raise KeyError(f"tag {tag!r} is not in the tag graph ({len(self.tags_)} tags)")
        return self.embeddings_[self._tag_index[tag]]

    def save(self, directory: str | Path) -> Path:
        """Write the fitted state to ``directory`` (arrays in .npz, tags and config in JSON beside them)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(
            directory / ARRAYS_FILE,
            embeddings=self.embeddings_,
            tag_counts=self.tag_counts_,
            isolated=self.isolated_,
            transition_data=self.transition_.data,
            transition_indices=self.transition_.indices,
            transition_indptr=self.transition_.indptr,
        )
        write_json_atomic(
            directory / META_FILE,
            {
                "format_version": FORMAT_VERSION,
                "estimator": type(self).__name__,
                "config": {k: v for k, v in self.get_params().items() if k != "show_progress"},
                "data_fingerprint": self.data_fingerprint_,
                "n_videos_fit": self.n_videos_fit_,
                "n_tags": len(self.tags_),
                "n_isolated_tags": int(self.isolated_.sum()),
                "versions": {"gensim": gensim.__version__, "numpy": np.__version__, "scipy": scipy.__version__},
                "tags": self.tags_,
            },
        )
        logger.info("saved tag graph embedder (%d tags) to %s", len(self.tags_), directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TagGraphEmbedder:
        """Read an embedder written by :meth:`save`."""
        directory = Path(directory)
        meta = read_json(directory / META_FILE)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory / META_FILE}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
        embedder = cls(**{"weighting": "mean", **meta["config"]})  # saved before weighting existed: the plain mean
        with np.load(directory / ARRAYS_FILE) as arrays:
            n_tags = len(meta["tags"])
            embedder.embeddings_ = arrays["embeddings"]
            embedder.tag_counts_ = arrays["tag_counts"]
            embedder.isolated_ = arrays["isolated"]
            embedder.transition_ = sp.csr_matrix(
                (arrays["transition_data"], arrays["transition_indices"], arrays["transition_indptr"]), shape=(n_tags, n_tags)
            )
        if embedder.embeddings_.shape[0] != n_tags:
            raise ValueError(f"{directory}: {embedder.embeddings_.shape[0]} embeddings for {n_tags} tags")
        embedder.tags_ = list(meta["tags"])
        embedder.data_fingerprint_ = meta["data_fingerprint"]
        embedder.n_videos_fit_ = meta["n_videos_fit"]
        embedder._tag_index = {tag: i for i, tag in enumerate(embedder.tags_)}
        return embedder
