"""The one model convention of the offline jobs: scikit-learn estimators whose parameters are settings.

``__init__`` stores its parameters and nothing else, ``fit`` learns and returns self, learned state ends in ``_``,
randomness comes from a seed parameter, and ``get_params`` / ``set_params`` / ``sklearn.base.clone`` work
(:class:`sklearn.base.BaseEstimator`). The parameters that are settings take their defaults and their bounds from
one place, the settings' pydantic model (``config_model``, in :mod:`topicfs.settings`): the defaults are read from
it (tests/test_settings_consistency.py checks them) and ``fit`` checks the parameters against it
(:meth:`SettingsEstimator.validated_config`), so a bad value is one ``ValueError`` naming the parameter and its bound.

    from offline_jobs.topics import TopicModel
    model = TopicModel.from_config(get_settings().topics)    # or TopicModel(n_topics=300)
    model.set_params(assign_threshold=0.5).fit(a)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar, get_args

import numpy as np
from pydantic import BaseModel, ValidationError
from sklearn.base import BaseEstimator

Estimator = TypeVar("Estimator", bound="SettingsEstimator")


def _plain(value: Any, annotation: Any) -> Any:
    """``value`` as the plain Python type strict validation expects: numpy scalars as Python numbers, tuples as
    lists, a text path as a Path; nothing else is converted, so "4" or True is no integer."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(item, None) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item, None) for key, item in value.items()}
    if isinstance(value, str) and (annotation is Path or Path in get_args(annotation)):
        return Path(value)
    return value


def describe_invalid(owner: str, error: ValidationError, config_model: type[BaseModel]) -> str:
    """One line naming each bad parameter, its value, the rule it breaks and what it means."""
    problems = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a rule over several parameters
            problems.append(message)
            continue
        name = str(item["loc"][0])
        field = config_model.model_fields.get(name)
        meaning = f" ({field.description})" if field is not None and field.description else ""
        problems.append(f"{name}={item.get('input')!r}: {message}{meaning}")
    return f"{owner}: " + "; ".join(problems)


class SettingsEstimator(BaseEstimator):
    """Base of the offline estimators: ``from_config`` builds one from the settings, ``validated_config`` checks it.

    Subclasses set ``config_model``: the settings' model whose fields are the estimator's parameters of the same name
    (the model may have fields the estimator does not take; parameters that are no field are not checked here).
    """

    config_model: ClassVar[type[BaseModel]]

    @classmethod
    def from_config(cls: type[Estimator], config: BaseModel, **extra: Any) -> Estimator:
        """An unfitted estimator with the settings' values (fields that are no parameter of this estimator are left
        out); ``extra``: parameters that are no setting (``show_progress``, ...) or overrides."""
        known = set(cls._get_param_names())
        values = {name: value for name, value in config.model_dump().items() if name in known}
        return cls(**(values | extra))

    def validated_config(self) -> BaseModel:
        """The parameters as a ``config_model`` instance, checked by its bounds and cross-field rules; a ValueError
        naming every bad parameter otherwise. Fields that are no parameter of this estimator keep their defaults."""
        fields = self.config_model.model_fields
        values = {name: _plain(value, fields[name].annotation) for name, value in self.get_params(deep=False).items() if name in fields}
        try:
            return self.config_model.model_validate(values, strict=True)
        except ValidationError as exc:
            raise ValueError(describe_invalid(type(self).__name__, exc, self.config_model)) from None
