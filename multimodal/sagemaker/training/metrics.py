"""The one definition of the training job's metric lines and of the MetricDefinitions that parse them.

Line format (stdout, one metric per line, printed at the end of a successful training job)::

    <channel>:<metric>=<value>;            fused model, e.g.  validation:accuracy=0.887100;
    <channel>:<expert>_<metric>=<value>;   one expert alone,  e.g.  validation:text_accuracy=0.612500;

* ``<channel>`` is ``train`` (the rows the fusion network was fitted on; the experts' inputs there are
  out-of-fold) or ``validation`` (the validation channel, or without one the training rows held out from the
  fusion network, see ``metrics.json``'s ``validation_source``).
* ``<metric>`` is ``accuracy``, ``balanced_accuracy`` or ``log_loss``.
* ``<expert>`` is ``text``, ``num``, ``cat``, ``joint`` or the name of an ``_image`` column (``photo_image``), with any
  character outside ``[A-Za-z0-9_]`` replaced by ``_``.
* ``<value>`` is a decimal with exactly 6 digits after the point, never in exponent notation. Values that are
  not finite (an empty validation set) are not printed.

``metric_definitions()`` returns the SageMaker MetricDefinitions for these lines. Image experts are named
after the buyer's columns, which are unknown when the algorithm is registered: the static definitions cover
the fused model and the ``text``/``num``/``cat``/``joint`` experts (30 of the 40 allowed); pass ``image_columns`` to add
definitions for known image columns (lowest priority first dropped above 40).
"""
from __future__ import annotations

import math
import re
import sys
from typing import Iterable, Mapping, TextIO

CHANNELS = ("train", "validation")
METRICS = ("accuracy", "balanced_accuracy", "log_loss")
STATIC_EXPERTS = ("text", "num", "cat", "joint")
MAX_DEFINITIONS = 40  # SageMaker's limit on MetricDefinitions
OBJECTIVE_TYPES = {"accuracy": "Maximize", "balanced_accuracy": "Maximize", "log_loss": "Minimize"}
VALUE_REGEX = r"(-?[0-9]+\.[0-9]+)"
DECIMALS = 6


def expert_key(expert: str) -> str:
    """The expert's name as it appears in metric names: only letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", str(expert))


def metric_name(channel: str, metric: str, expert: str | None = None) -> str:
    return f"{channel}:{metric}" if expert is None else f"{channel}:{expert_key(expert)}_{metric}"


def format_line(name: str, value: float) -> str:
    return f"{name}={value:.{DECIMALS}f};"


def metric_regex(name: str) -> str:
    return re.escape(name) + "=" + VALUE_REGEX + ";"


def metric_values(metrics: Mapping) -> list[tuple[str, float]]:
    """(name, value) pairs from MultimodalClassifier.metrics: per channel the fused metrics, then each expert's."""
    values: list[tuple[str, float]] = []
    for channel in CHANNELS:
        block = metrics.get(channel) or {}
        scopes = [(None, block)] + [(name, scores) for name, scores in (block.get("experts") or {}).items()]
        for expert, scores in scopes:
            for metric in METRICS:
                value = scores.get(metric)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
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


def metric_definitions(image_columns: Iterable[str] = ()) -> list[dict[str, str]]:
    """SageMaker MetricDefinitions ``[{"Name", "Regex"}]`` matching the lines above, at most 40.

    Priority: fused validation, fused train, validation per expert, train per expert.
    """
    experts = list(STATIC_EXPERTS) + [c for c in image_columns if c not in STATIC_EXPERTS]
    names = [metric_name(c, m) for c in ("validation", "train") for m in METRICS]
    names += [metric_name(c, m, e) for c in ("validation", "train") for e in experts for m in METRICS]
    unique = list(dict.fromkeys(names))[:MAX_DEFINITIONS]
    return [{"Name": name, "Regex": metric_regex(name)} for name in unique]


def tuning_objectives() -> list[dict[str, str]]:
    """``SupportedTuningJobObjectiveMetrics``: the fused validation metrics, each with its direction."""
    return [{"Type": OBJECTIVE_TYPES[m], "MetricName": metric_name("validation", m)} for m in METRICS]
