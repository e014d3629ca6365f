"""Principal-component reduction of embedding columns.

An image embedding has 512–2,048 dimensions and a sentence embedding 384; next to a handful of numbers and
categories they would drown the joint expert's trees (and its time budget), and an image expert's fit holds
several copies of its input. Each embedding column is reduced to principal components fitted on the training
rows (``multimodal.core.views`` says which and how many). Saved as a numpy ``.npz`` (no pickle).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


# Rows transformed at a time: (x - mean) of a whole training matrix would be one more full-size copy of it.
TRANSFORM_CHUNK_ROWS = 4_096


class Reducer:
    """``(x - mean) @ components.T``: the first principal components of one embedding column."""

    def __init__(self, mean: np.ndarray, components: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.components = np.asarray(components, dtype=np.float32)

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, matrix: np.ndarray, dims: int, *, seed: int) -> "Reducer":
        """Principal components of ``matrix``'s rows (at most as many as rows and columns allow)."""
        from sklearn.decomposition import PCA
        dims = max(1, min(dims, matrix.shape[0] - 1, matrix.shape[1]))
        pca = PCA(n_components=dims, svd_solver="randomized" if dims < 0.8 * min(matrix.shape) else "full",
                  random_state=seed).fit(np.asarray(matrix, dtype=np.float32))
        return cls(pca.mean_, pca.components_)

    def transform(self, matrix: np.ndarray) -> np.ndarray:
        """The components of ``matrix``'s rows, ``TRANSFORM_CHUNK_ROWS`` at a time."""
        if len(matrix) <= TRANSFORM_CHUNK_ROWS:
            # in float64, then float32: a float32 product's last bits depend on the BLAS kernel and the arrays'
            # alignment, and rows without an image (all the placeholder's embedding, on which the experts' tree
            # splits sit) must get bit-identical components in training and in every later prediction
            x = np.asarray(matrix, dtype=np.float64) - self.mean.astype(np.float64)
            return (x @ self.components.T.astype(np.float64)).astype(np.float32)
        return np.concatenate([self.transform(matrix[i:i + TRANSFORM_CHUNK_ROWS])
                               for i in range(0, len(matrix), TRANSFORM_CHUNK_ROWS)])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:  # np.savez would append .npz to a name without it
            np.savez(handle, mean=self.mean, components=self.components)

    @classmethod
    def load(cls, path: Path) -> "Reducer":
        with np.load(path, allow_pickle=False) as data:
            return cls(data["mean"], data["components"])
