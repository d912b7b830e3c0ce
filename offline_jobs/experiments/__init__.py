"""Experiment configuration: a job's research knobs and the evidence behind their values, in a TOML file beside it.

The operational settings (:mod:`topicfs.settings`) say how the system runs. A knob that only a study of one dataset
or an ablation turns lives here instead: ``<name>.toml`` holds its values and an ``[evidence]`` table with one line
per value saying what was chosen on what. A knob that used to be a setting keeps its old ``TOPICFS_*`` variable,
which still overrides the file's value, with a deprecation warning (:data:`topicfs.settings.MOVED`).

    from offline_jobs.experiments import load_experiment
    movielens = load_experiment("table2_movielens", MovieLensExperiment)   # read by offline_jobs/table2.py
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from topicfs.settings import SettingsError, moved_variables

EXPERIMENTS_DIR = Path(__file__).resolve().parent
Experiment = TypeVar("Experiment", bound=BaseModel)


def experiment_file(name: str) -> Path:
    return EXPERIMENTS_DIR / f"{name}.toml"


def read_experiment(name: str) -> tuple[dict, dict[str, str]]:
    """The file's values and its evidence lines (key -> text)."""
    path = experiment_file(name)
    with path.open("rb") as handle:
        values = tomllib.load(handle)
    evidence = values.pop("evidence", {})
    return values, evidence


def _parse(raw: str):
    """An old variable's text as the settings read it: JSON where it is JSON (lists, numbers, true/false), else the text."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def load_experiment(name: str, model: type[Experiment], environ: Mapping[str, str] | None = None) -> Experiment:
    """``<name>.toml`` checked by ``model``, with the old ``TOPICFS_*`` variables of its moved knobs on top (each with a
    DeprecationWarning); a bad value is a :class:`SettingsError` naming the file or the variable."""
    values, _ = read_experiment(name)
    overrides = moved_variables(name, environ)
    values |= {key: _parse(raw) for key, (_, raw) in overrides.items()}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            where = overrides[key][0] if key in overrides else f"{experiment_file(name)}: {key}"
            problems.append(f"{where}={error.get('input')!r}: {error['msg']}")
        raise SettingsError("; ".join(problems)) from None
