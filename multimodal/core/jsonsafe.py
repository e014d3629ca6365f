"""JSON-ready copies of the estimator's records (metrics, configuration)."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np


def to_json(value: Any) -> Any:
    """numpy arrays and scalars to Python, NaN and infinities to None (json.dumps would write invalid NaN),
    mapping keys to strings, anything else unknown to its str()."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
