"""Hyperparameters: names, types, ranges and defaults come from hyperparameter_specification.json alone.

The file is the CreateAlgorithm ``SupportedHyperParameters`` list, so the same document that SageMaker shows
users is the one the code validates against; nothing here re-declares a default.
"""
from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from .errors import HyperparameterError

SPEC_FILE = "hyperparameter_specification.json"
BOOLEAN_VALUES = {"true": True, "false": False}
# SageMaker adds keys of its own (e.g. _tuning_objective_metric, sagemaker_*): they are not ours to validate.
IGNORED_PREFIXES = ("_", "sagemaker_")


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: str  # Integer | Continuous | Categorical | FreeText
    description: str
    default: str
    minimum: float | None = None
    maximum: float | None = None
    values: tuple[str, ...] = ()

    def parse(self, raw: Any) -> Any:
        """Convert a value (SageMaker always sends strings) to its Python type and check its range."""
        if self.type == "Integer":
            value = _to_int(self.name, raw)
        elif self.type == "Continuous":
            value = _to_float(self.name, raw)
        elif self.type == "Categorical" and self.is_boolean:
            text = str(raw).strip().lower()
            if text not in BOOLEAN_VALUES:
                raise HyperparameterError(f"hyperparameter {self.name}={raw!r} must be true or false")
            return BOOLEAN_VALUES[text]
        elif self.type == "Categorical":
            value = str(raw)
            if value not in self.values:
                raise HyperparameterError(
                    f"hyperparameter {self.name}={raw!r} is not one of {', '.join(self.values)}")
            return value
        else:
            return str(raw)
        if (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum):
            raise HyperparameterError(
                f"hyperparameter {self.name}={raw!r} is out of range: it must be between "
                f"{_fmt(self.minimum)} and {_fmt(self.maximum)}")
        return value

    @property
    def default_value(self) -> Any:
        return self.parse(self.default)

    @property
    def is_boolean(self) -> bool:
        """A Categorical of exactly "true" and "false" (SageMaker has no boolean type): a bool in Python."""
        return self.type == "Categorical" and set(self.values) == {"true", "false"}

    @property
    def python_type(self) -> type:
        return bool if self.is_boolean else {"Integer": int, "Continuous": float}.get(self.type, str)


def _fmt(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


def _to_int(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise HyperparameterError(f"hyperparameter {name}={raw!r} must be an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    text = str(raw).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:  # "5.0" is a fair way to write an integer; "5.5" is not
        as_float = float(text)
    except ValueError:
        as_float = math.nan
    if math.isfinite(as_float) and as_float.is_integer():
        return int(as_float)
    raise HyperparameterError(f"hyperparameter {name}={raw!r} must be an integer, e.g. {name}=5")


def _to_float(name: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise HyperparameterError(f"hyperparameter {name}={raw!r} must be a number")
    try:
        value = float(str(raw).strip()) if not isinstance(raw, (int, float)) else float(raw)
    except ValueError:
        raise HyperparameterError(f"hyperparameter {name}={raw!r} must be a number, e.g. {name}=0.5") from None
    if not math.isfinite(value):
        raise HyperparameterError(f"hyperparameter {name}={raw!r} must be a finite number")
    return value


def load_spec_document() -> list[dict]:
    """The raw SupportedHyperParameters list, as CreateAlgorithm takes it."""
    return json.loads(resources.files(__package__).joinpath(SPEC_FILE).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def specification() -> dict[str, Hyperparameter]:
    specs: dict[str, Hyperparameter] = {}
    for entry in load_spec_document():
        rng = entry.get("Range", {})
        minimum = maximum = None
        values: tuple[str, ...] = ()
        for key in ("IntegerParameterRangeSpecification", "ContinuousParameterRangeSpecification"):
            if key in rng:
                minimum, maximum = float(rng[key]["MinValue"]), float(rng[key]["MaxValue"])
        if "CategoricalParameterRangeSpecification" in rng:
            values = tuple(rng["CategoricalParameterRangeSpecification"]["Values"])
        specs[entry["Name"]] = Hyperparameter(
            name=entry["Name"], type=entry["Type"], description=entry.get("Description", ""),
            default=entry["DefaultValue"], minimum=minimum, maximum=maximum, values=values)
    return specs


def defaults() -> dict[str, Any]:
    return {name: hp.default_value for name, hp in specification().items()}


def resolve(given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``given``, each value parsed and range-checked.

    Keys that SageMaker adds (``_…``, ``sagemaker_…``) are dropped; any other unknown name is an error,
    because a misspelt hyperparameter silently falling back to its default is worse than a failed job.
    """
    specs = specification()
    values = defaults()
    errors = []
    for name, raw in given.items():
        if name.startswith(IGNORED_PREFIXES):
            continue
        if name not in specs:
            close = [n for n in specs if n.replace("_", "") == name.replace("_", "").lower()]
            hint = f" (did you mean {close[0]}?)" if close else ""
            errors.append(f"unknown hyperparameter {name!r}{hint}; known: {', '.join(sorted(specs))}")
            continue
        try:
            values[name] = specs[name].parse(raw)
        except HyperparameterError as exc:
            errors.append(str(exc))
    if errors:
        raise HyperparameterError("; ".join(errors))
    if time_budget_seconds(values) <= 0:
        raise HyperparameterError(
            "the time budget n_hours*3600 + n_mins*60 + n_secs is 0 seconds: give at least one of them a "
            "positive value, e.g. n_mins=5")
    return values


def time_budget_seconds(values: Mapping[str, Any]) -> int:
    return int(values["n_hours"]) * 3600 + int(values["n_mins"]) * 60 + int(values["n_secs"])


def init_signature() -> inspect.Signature:
    """``__init__``'s signature, generated from the spec file: every hyperparameter keyword-only, with its default
    (so that ``help()``, IDEs reading it at run time and scikit-learn's ``clone`` see the real parameters)."""
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=hp.default_value,
                                     annotation=hp.python_type.__name__) for name, hp in specification().items()]
    return inspect.Signature(parameters, return_annotation="None")


def parameter_docs(problem_types: tuple[str, ...]) -> str:
    """The estimator classes' "Parameters" section, from the spec file (``problem_type``: the values a class
    takes)."""
    lines = ["", "    Parameters (from hyperparameter_specification.json)", "    " + "-" * 51]
    for name, hp in specification().items():
        values = [v for v in hp.values if v in problem_types] if name == "problem_type" else hp.values
        allowed = f"one of {', '.join(values)}" if values else (
            f"{hp.minimum:g} to {hp.maximum:g}" if hp.minimum is not None else "free text")
        lines.append(f"    {name} : {hp.python_type.__name__}, default {hp.default_value!r} ({allowed})")
        lines.append(f"        {hp.description}")
    return "\n".join(lines) + "\n"
