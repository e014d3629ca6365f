"""A faster forward transform for scikit-learn's ``QuantileTransformer`` (normal output), with the same results.

AutoGluon's neural network model (``NeuralNetTorch``) maps every numeric column through a
``QuantileTransformer(output_distribution="normal")``. scikit-learn transforms one column at a time and calls
``scipy.stats.norm.ppf`` three times per column; on an image expert's 1,280 embedding columns that took about
210 ms per fold for a one-row request, 85 % of the server's whole per-request time (issue 21's latency study).
The same arithmetic on the whole matrix at once — ``np.interp`` per column, then ``scipy.special.ndtri`` (what
``norm.ppf`` computes) and the clip on the matrix — takes about 5 ms and gives identical floats
(tests/test_quantiles.py holds it to ``np.array_equal`` against scikit-learn's own code).

Installed once (``install``) for scikit-learn versions whose ``_transform`` was read and tested; any other
version keeps its own code.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TESTED_SKLEARN = ("1.9.",)  # the versions whose QuantileTransformer._transform this mirrors
_installed = False


def forward_normal(transformer: Any, X: np.ndarray, bounds_threshold: float) -> np.ndarray:
    """scikit-learn's ``QuantileTransformer._transform(X, inverse=False)`` for dense ``X`` and normal output, on
    the whole matrix: interpolation between the fitted quantiles per column (both directions, averaged, as
    scikit-learn does for repeated quantiles), the bounds, then the normal quantile function, clipped."""
    import scipy.special
    quantiles, references = transformer.quantiles_, transformer.references_
    reversed_references = -references[::-1]
    with np.errstate(invalid="ignore"):
        lower = X - bounds_threshold < quantiles[0]
        upper = X + bounds_threshold > quantiles[-1]
    out = np.empty_like(X)
    for j in range(X.shape[1]):
        column = X[:, j]
        out[:, j] = 0.5 * (np.interp(column, quantiles[:, j], references)
                           - np.interp(-column, -quantiles[::-1, j], reversed_references))
    out[upper] = 1
    out[lower] = 0
    clip_min = scipy.special.ndtri(bounds_threshold - np.spacing(1))
    clip_max = scipy.special.ndtri(1 - (bounds_threshold - np.spacing(1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.clip(scipy.special.ndtri(out), clip_min, clip_max)
    X[...] = out
    return X


def install() -> None:
    """Route dense, forward, normal-output transforms of ``QuantileTransformer`` through ``forward_normal``."""
    global _installed
    if _installed:
        return
    import sklearn
    from scipy import sparse
    from sklearn.preprocessing import _data
    if not sklearn.__version__.startswith(TESTED_SKLEARN):
        log.debug("scikit-learn %s: QuantileTransformer left as it is", sklearn.__version__)
        return
    original = _data.QuantileTransformer._transform
    threshold = _data.BOUNDS_THRESHOLD

    def _transform(self: Any, X: Any, inverse: bool = False) -> Any:
        if inverse or sparse.issparse(X) or self.output_distribution != "normal":
            return original(self, X, inverse)
        return forward_normal(self, X, threshold)

    _data.QuantileTransformer._transform = _transform
    _data.QuantileTransformer._transform_original = original
    _installed = True
