"""One model convention for the offline estimators (offline_jobs/estimator.py): scikit-learn parameters, one place
that checks them (the settings' pydantic models), a clear error naming a bad parameter before any work."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from offline_jobs.mmoe import MultimodalTopicEncoder
from offline_jobs.mrlm import MRLM
from offline_jobs.tag_graph import TagGraphEmbedder
from offline_jobs.topics import TopicModel
from topicfs.settings import MMoEConfig, MRLMConfig, TagGraphConfig, TopicsConfig

ESTIMATORS = {
    TagGraphEmbedder: (TagGraphConfig, [["a", "b"], ["b", "c"]]),
    TopicModel: (TopicsConfig, np.ones((8, 4), np.float32)),
    MultimodalTopicEncoder: (MMoEConfig, None),
    MRLM: (MRLMConfig, None),
}


@pytest.mark.parametrize("estimator", list(ESTIMATORS), ids=lambda e: e.__name__)
def test_parameters_work_the_scikit_learn_way(estimator) -> None:
    config, _ = ESTIMATORS[estimator]
    model = estimator.from_config(config())
    tuples = lambda params: {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}  # noqa: E731  (settings hold lists)
    assert tuples(model.get_params()) == tuples(estimator().get_params())  # the settings' defaults are the estimator's
    assert model.set_params(seed=99) is model and model.get_params()["seed"] == 99
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert not [name for name in vars(model) if name.endswith("_") and not name.startswith("_")]  # nothing learned before fit


@pytest.mark.parametrize(
    ("estimator", "bad", "message"),
    [
        (TagGraphEmbedder, {"walk_length": 1}, "TagGraphEmbedder: walk_length=1: Input should be greater than or equal to 2 (l: "),
        (TagGraphEmbedder, {"weighting": "tfidf"}, "TagGraphEmbedder: weighting='tfidf': String should match pattern"),
        (TopicModel, {"n_topics": "4"}, "TopicModel: n_topics='4': Input should be a valid integer (K: "),
        (TopicModel, {"block_size": 0}, "TopicModel: block_size=0: Input should be greater than or equal to 1"),
        (MultimodalTopicEncoder, {"n_experts": 0}, "MultimodalTopicEncoder: n_experts=0: Input should be greater than or equal to 1 (H: "),
        (
            MultimodalTopicEncoder,
            {"modality_dropout": True},
            "MultimodalTopicEncoder: modality_dropout=True: Input should be a valid number",
        ),
        (MRLM, {"theta": 0.0}, "MRLM: theta=0.0: Input should be greater than 0 (θ1: "),
        (MRLM, {"lambda_triplet": 0.7, "lambda_softmax": 0.3}, r"MRLM: lambda_triplet + lambda_softmax: λ1 + λ2 must be < 1"),
        (MRLM, {"feast_vector_dim": 8}, "MRLM: mrlm.vector_dim (d4) = 128 but feast.mrlm_vector_dim = 8"),
    ],
)
def test_a_bad_parameter_is_one_error_naming_it_before_any_work(estimator, bad: dict, message: str) -> None:
    _, data = ESTIMATORS[estimator]
    with pytest.raises(ValueError) as error:
        estimator(**bad).fit(data)
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_the_checked_parameters_are_what_the_model_uses() -> None:
    """numpy numbers and tuples are plain values to the check; a text path for a Path parameter is a path."""
    config = MultimodalTopicEncoder(n_experts=np.int64(3), cnn_channels=(4, 8), image_encoder="cnn.pt").validated_config()
    assert (config.n_experts, config.cnn_channels, str(config.image_encoder)) == (3, [4, 8], "cnn.pt")
