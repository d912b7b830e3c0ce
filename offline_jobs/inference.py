"""Topics for videos published after the topic job ran, from the models it saved: the one part of the offline jobs
the stream worker imports (``stream/app.py``, on the first video-published event that carries content).

Importing this module loads numpy and pandas only; :func:`load_topic_assigner` loads the models and their libraries
(torch, gensim, scikit-learn) through :class:`offline_jobs.pipeline.TopicModels`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from offline_jobs.pipeline import TopicModels


class TopicAssigner:
    """Topics for videos published after the job ran, from the saved models (used by the stream)."""

    def __init__(self, models: TopicModels):
        self.models = models

    def assign_with_weights(self, videos: pd.DataFrame) -> tuple[list[list[int]], list[list[float]]]:
        a, _, _ = self.models.representation(videos)
        return self.models.topics.assign(a).to_lists()

    def assign(self, videos: pd.DataFrame) -> list[list[int]]:
        """Topic ids per row of ``videos`` (a table meeting topicfs.contracts), nearest first."""
        return self.assign_with_weights(videos)[0]


def load_topic_assigner(models_dir: str | Path) -> TopicAssigner:
    """The assigner over the models the topic job saved under ``models_dir`` (``paths.models_dir``)."""
    from offline_jobs.pipeline import TopicModels  # the models' libraries: only when the first assignment is needed

    return TopicAssigner(TopicModels.load(Path(models_dir)))
