"""The vectorised QuantileTransformer transform (multimodal.core.quantiles) gives scikit-learn's own floats."""
import numpy as np
import pytest
from sklearn.preprocessing import QuantileTransformer

from multimodal.core import quantiles


@pytest.mark.parametrize("n_rows, with_nan", [(1, False), (7, True), (300, True)])
def test_the_same_floats_as_scikit_learn(n_rows, with_nan):
    """Fitted on skewed, tied and constant columns (AutoGluon's neural network sees all three in embeddings and
    indicators), then applied to new rows inside, at and beyond the fitted range."""
    quantiles.install()
    rng = np.random.default_rng(3)
    train = np.column_stack([rng.lognormal(size=500), rng.integers(0, 3, 500).astype(float), np.zeros(500),
                             rng.normal(size=500)])
    transformer = QuantileTransformer(output_distribution="normal", n_quantiles=100, random_state=0).fit(train)
    rows = np.column_stack([rng.lognormal(size=n_rows) * 3, rng.integers(-1, 5, n_rows).astype(float),
                            rng.normal(size=n_rows), rng.normal(size=n_rows) * 4])
    if with_nan:
        rows[0, 1] = np.nan
    expected = QuantileTransformer._transform_original(transformer, rows.copy(), inverse=False)
    assert np.array_equal(transformer.transform(rows), expected, equal_nan=True)


def test_the_inverse_and_uniform_output_are_scikit_learns_own():
    quantiles.install()
    rng = np.random.default_rng(4)
    data = rng.normal(size=(200, 3))
    uniform = QuantileTransformer(n_quantiles=50).fit(data)
    assert np.array_equal(uniform.transform(data[:5]),
                          QuantileTransformer._transform_original(uniform, data[:5].copy(), inverse=False))
    normal = QuantileTransformer(output_distribution="normal", n_quantiles=50).fit(data)
    np.testing.assert_allclose(normal.inverse_transform(normal.transform(data[:5])), data[:5], atol=1e-6)
