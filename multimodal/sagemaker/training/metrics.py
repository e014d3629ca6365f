"""The one definition of the training job's metric lines and of the MetricDefinitions that parse them.

Line format (stdout, one metric per line, printed at the end of a successful training job)::

    <channel>:<metric>=<value>;            fused model, e.g.  validation:accuracy=0.887100;   validation:rmse=3.141593;
    <channel>:<expert>_<metric>=<value>;   one expert alone,  e.g.  validation:text_accuracy=0.612500;
                                                                    validation:text_rmse=4.000000;

* ``<channel>`` is ``train`` (the rows the fusion network was fitted on; the experts' inputs there are
  out-of-fold) or ``validation`` (the validation channel, or without one the training rows held out from the
  fusion network, see ``metrics.json``'s ``validation_source``).
* ``<metric>`` depends on the problem type of the fitted model (its ``problem_type_``):

  - classification (``binary``, ``multiclass``): ``accuracy``, ``balanced_accuracy``, ``log_loss``;
  - regression: ``rmse``, ``mae``, ``r2`` (``r2`` may be negative).

  A job prints whichever of these its metrics blocks hold, so one job prints one set.
* ``<expert>`` is ``text``, ``num``, ``cat``, ``joint`` or the name of an ``_image`` column (``photo_image``), with any
  character outside ``[A-Za-z0-9_]`` replaced by ``_``.
* ``<value>`` is a decimal with exactly 6 digits after the point, never in exponent notation. Values that are
  not finite (an empty validation set) are not printed.

``metric_definitions()`` returns the SageMaker MetricDefinitions for these lines. The registered algorithm
serves both problem types, so by default they cover both sets of metrics; SageMaker allows at most 40
definitions and both sets for every static scope would take 60, so definitions are taken in this priority
order and cut at 40:

1. fused model, ``validation``: accuracy, balanced_accuracy, log_loss, rmse, mae, r2 (6)
2. fused model, ``train``: the same six (6)
3. experts, ``validation``: ``text``, ``num``, ``cat``, ``joint``, then the ``image_columns`` given, rank by rank:
   first every expert's rank-1 pair (accuracy, rmse), then the rank-2 pair (balanced_accuracy, mae), then the
   rank-3 pair (log_loss, r2) — 24 for the four static experts, so both problem types keep the same share
4. experts, ``train``: the same order.

Without image columns that is 12 fused + 24 validation-expert + 4 train-expert definitions (``train:text_accuracy``,
``train:text_rmse``, ``train:num_accuracy``, ``train:num_rmse``): the train side of the experts is dropped first,
then the experts' less telling metrics. Image experts are named after the buyer's columns, which are unknown
when the algorithm is registered: ``image_columns`` adds them after the static experts within each rank, so e.g.
one image column costs the last two (``validation:photo_image_log_loss``/``_r2``) and every train-side expert
definition. ``problem_type`` restricts the definitions to one set (what a single job can print: a test, or a
training job whose problem type is known).

``tuning_objectives()`` lists the fused validation metrics of both sets with their directions
(``SupportedTuningJobObjectiveMetrics``).
"""
from __future__ import annotations

import math
import re
import sys
from typing import Iterable, Mapping, TextIO

from multimodal.core.artifact import CLASSIFICATION, REGRESSION

CHANNELS = ("train", "validation")
CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS  # printing order within one scope
STATIC_EXPERTS = ("text", "num", "cat", "joint")
MAX_DEFINITIONS = 40  # SageMaker's limit on MetricDefinitions
OBJECTIVE_TYPES = {"accuracy": "Maximize", "balanced_accuracy": "Maximize", "log_loss": "Minimize",
                   "rmse": "Minimize", "mae": "Minimize", "r2": "Maximize"}
PROBLEM_TYPES = (*CLASSIFICATION, "classification", REGRESSION)  # a model's problem_type_, or either kind of classes
VALUE_REGEX = r"(-?[0-9]+\.[0-9]+)"
DECIMALS = 6


def metrics_for(problem_type: str | None = None) -> tuple[str, ...]:
    """The metric names of a problem type (``binary``/``multiclass``/``classification`` or ``regression``);
    None: both sets, classification first."""
    if problem_type is None:
        return METRICS
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type must be one of {', '.join(PROBLEM_TYPES)} or None, not {problem_type!r}")
    return REGRESSION_METRICS if problem_type == REGRESSION else CLASSIFICATION_METRICS


def expert_key(expert: str) -> str:
    """The expert's name as it appears in metric names: only letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", str(expert))


def metric_name(channel: str, metric: str, expert: str | None = None) -> str:
    return f"{channel}:{metric}" if expert is None else f"{channel}:{expert_key(expert)}_{metric}"


def format_line(name: str, value: float) -> str:
    return f"{name}={value:.{DECIMALS}f};"


def metric_regex(name: str) -> str:
    return re.escape(name) + "=" + VALUE_REGEX + ";"


def _printable(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_values(metrics: Mapping) -> list[tuple[str, float]]:
    """(name, value) pairs from a fitted model's ``metrics_``: per channel the fused metrics, then each expert's.

    Every known metric a block holds is printed (classification blocks hold accuracy/balanced_accuracy/log_loss,
    regression blocks rmse/mae/r2); other keys (rows, confusion_matrix) and non-finite values are skipped."""
    values: list[tuple[str, float]] = []
    for channel in CHANNELS:
        block = metrics.get(channel) or {}
        scopes = [(None, block)] + [(name, scores) for name, scores in (block.get("experts") or {}).items()]
        for expert, scores in scopes:
            for metric in METRICS:
                value = (scores or {}).get(metric)
                if _printable(value):
                    values.append((metric_name(channel, metric, expert), float(value)))
    return values


def format_lines(metrics: Mapping) -> list[str]:
    return [format_line(name, value) for name, value in metric_values(metrics)]


def print_metric_lines(metrics: Mapping, stream: TextIO | None = None) -> list[str]:
    """Print the metric lines (stdout by default, flushed at once so that SageMaker sees them) and return them."""
    stream = stream or sys.stdout
    lines = format_lines(metrics)
    for line in lines:
        print(line, file=stream)
    stream.flush()
    return lines


def _expert_ranks(problem_type: str | None) -> list[tuple[str, ...]]:
    """Expert metrics rank by rank: the i-th classification metric with the i-th regression metric."""
    if problem_type is None:
        return list(zip(CLASSIFICATION_METRICS, REGRESSION_METRICS))
    return [(m,) for m in metrics_for(problem_type)]


def metric_definitions(image_columns: Iterable[str] = (), problem_type: str | None = None) -> list[dict[str, str]]:
    """SageMaker MetricDefinitions ``[{"Name", "Regex"}]`` matching the lines above, at most 40, in the priority
    order of the module docstring: fused validation, fused train, validation per expert, train per expert.

    ``problem_type`` None (the registered algorithm): both sets; ``"regression"`` or a classification type: one."""
    metrics = metrics_for(problem_type)
    experts = list(dict.fromkeys([*STATIC_EXPERTS, *(str(c) for c in image_columns)]))
    names = [metric_name(c, m) for c in ("validation", "train") for m in metrics]
    names += [metric_name(c, m, e) for c in ("validation", "train") for rank in _expert_ranks(problem_type)
              for e in experts for m in rank]
    unique = list(dict.fromkeys(names))[:MAX_DEFINITIONS]
    return [{"Name": name, "Regex": metric_regex(name)} for name in unique]


def tuning_objectives(problem_type: str | None = None) -> list[dict[str, str]]:
    """``SupportedTuningJobObjectiveMetrics``: the fused validation metrics, each with its direction (classification
    ones first, then regression ones; ``problem_type`` restricts them to one set)."""
    return [{"Type": OBJECTIVE_TYPES[m], "MetricName": metric_name("validation", m)} for m in metrics_for(problem_type)]
