import numpy as np
import pandas as pd

from multimodal.experts import QUALITY, align, hyperparameters_for, modality_labels


def test_probabilities_are_aligned_to_the_experts_classes():
    proba = pd.DataFrame({2: [0.5, 0.1], 0: [0.5, 0.9]})  # class 1 never predicted, columns out of order
    np.testing.assert_array_equal(align(proba, [0, 1, 2], 2), [[0.5, 0.0, 0.5], [0.9, 0.0, 0.1]])


def test_oof_rows_autogluon_duplicated_or_dropped_are_handled():
    # AutoGluon copies rows of classes too rare to bag (new labels ≥ n_rows) and may omit dropped ones
    proba = pd.DataFrame({0: [0.2, 0.7, 0.6, 0.3], 1: [0.8, 0.3, 0.4, 0.7]}, index=[0, 2, 3, 4])
    out = align(proba, [0, 1], 4)
    np.testing.assert_array_equal(out[[0, 2, 3]], [[0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])
    assert np.isnan(out[1]).all()  # left for the caller to predict directly


def test_insufficient_rows_get_the_extra_class():
    y = np.array([0, 1, 2, 1])
    assert modality_labels(y, np.array([False, True, False, True]), 3).tolist() == [0, 3, 2, 3]


def test_every_quality_maps_to_an_installed_autogluon_preset():
    for quality in QUALITY:
        config = hyperparameters_for(quality)
        assert config and "FASTAI" not in config  # fastai is not installed: never asked for
