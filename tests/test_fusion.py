"""The fusion network: trained with Keras, predicted with numpy from the saved .keras file."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from multimodal.core.fusion import (
    MODEL_FILE,
    DenseStack,
    FusionNetwork,
    UnsupportedNetwork,
    keras,
)

N_FEATURES, N_CLASSES = 11, 4


def probabilities_like(n: int, seed: int) -> np.ndarray:
    """Rows like the experts' concatenated probabilities: blocks that sum to 1."""
    rng = np.random.default_rng(seed)
    blocks = [rng.dirichlet(np.ones(width), n) for width in (5, 3, 3)]
    return np.hstack(blocks)


@pytest.fixture(scope="module")
def data():
    x = probabilities_like(400, seed=0)
    y = (x[:, :4].argmax(axis=1) + (x[:, 5] > 0.5)) % N_CLASSES
    return x, y


@pytest.fixture(scope="module")
def trained(data):
    x, y = data
    network, curve = FusionNetwork.train(x[:300], y[:300], N_CLASSES, x_val=x[300:], y_val=y[300:], hidden_units=16,
                                         learning_rate=0.01, batch_size=32, n_epochs=15, patience=3, seed=0,
                                         time_limit=60)
    assert curve["loss"]
    return network


def test_predictions_after_training_use_the_numpy_forward_pass_and_match_keras(trained):
    assert trained.forward is not None
    x = np.vstack([probabilities_like(257, seed=1), np.zeros((1, N_FEATURES)), np.ones((1, N_FEATURES))])
    ours = trained.predict(x)
    reference = np.asarray(trained.model.predict(x.astype(np.float32), verbose=0))
    assert ours.dtype == np.float32 and ours.shape == (len(x), N_CLASSES)
    np.testing.assert_allclose(ours, reference, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-6)


def test_save_and_load_give_identical_probabilities(trained, tmp_path):
    trained.save(tmp_path)
    loaded = FusionNetwork.load(tmp_path)
    assert loaded.forward is not None
    x = probabilities_like(100, seed=2)
    np.testing.assert_array_equal(loaded.predict(x), trained.predict(x))
    # the artifact is the Keras file, unchanged: Keras itself loads it and predicts the same
    assert (tmp_path / MODEL_FILE).read_bytes() == trained.keras_file
    with zipfile.ZipFile(tmp_path / MODEL_FILE) as archive:
        assert {"config.json", "model.weights.h5", "metadata.json"} <= set(archive.namelist())
    reference = keras().models.load_model(tmp_path / MODEL_FILE, compile=False).predict(x.astype(np.float32),
                                                                                        verbose=0)
    np.testing.assert_allclose(loaded.predict(x), reference, atol=1e-6, rtol=0)


def test_empty_input(trained):
    assert trained.predict(np.empty((0, N_FEATURES))).shape == (0, N_CLASSES)


def test_large_inputs_are_predicted_in_chunks_with_the_same_result(trained, monkeypatch):
    from multimodal.core import fusion
    x = probabilities_like(1000, seed=3)
    whole = trained.predict(x)
    monkeypatch.setattr(fusion, "_PREDICT_CHUNK", 64)
    np.testing.assert_array_equal(trained.predict(x), whole)


def test_loading_and_predicting_imports_neither_keras_nor_tensorflow(trained, tmp_path):
    trained.save(tmp_path)
    x = probabilities_like(20, seed=4)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np; from pathlib import Path; from multimodal.core.fusion import FusionNetwork; "
            f"d = Path({str(tmp_path)!r}); f = FusionNetwork.load(d); np.save(d / 'p.npy', f.predict("
            "np.load(d / 'x.npy'))); loaded = [m for m in ('keras', 'tensorflow', 'torch') if m in sys.modules]; "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), trained.predict(x))


def saved_and_loaded(model, directory: Path) -> FusionNetwork:
    """A Keras model saved by Keras itself (as the previous FusionNetwork.save did), loaded by FusionNetwork."""
    model.save(directory / MODEL_FILE)
    return FusionNetwork.load(directory)


def test_a_file_saved_by_keras_with_its_own_layer_names_is_read_by_name(tmp_path):
    """Files written by the previous FusionNetwork.save (Keras model.save), or with other layer names."""
    k = keras()
    k.utils.set_random_seed(1)
    model = k.Sequential([k.Input(shape=(6,)), k.layers.Dense(5, activation="tanh", name="first"),
                          k.layers.Dense(7, activation="sigmoid", name="dense_3"),
                          k.layers.Dense(3, activation="linear", use_bias=False, name="dense"),
                          k.layers.Dense(3, activation="softmax", name="out")])
    network = saved_and_loaded(model, tmp_path)
    assert network.forward is not None
    x = np.random.default_rng(5).normal(size=(50, 6))
    np.testing.assert_allclose(network.predict(x), model.predict(x.astype(np.float32), verbose=0), atol=1e-6,
                               rtol=0)


def test_layers_the_numpy_pass_does_not_support_are_predicted_with_keras(tmp_path):
    k = keras()
    k.utils.set_random_seed(2)
    model = k.Sequential([k.Input(shape=(6,)), k.layers.Dense(8, activation="elu"), k.layers.Dropout(0.5),
                          k.layers.Dense(3, activation="softmax")])
    network = saved_and_loaded(model, tmp_path)
    assert network.forward is None
    x = np.random.default_rng(6).normal(size=(10, 6))
    np.testing.assert_allclose(network.predict(x), model.predict(x.astype(np.float32), verbose=0), atol=1e-6,
                               rtol=0)
    assert network.n_classes == 3 and network.predict(np.empty((0, 6))).shape == (0, 3)


def test_files_that_are_not_keras_sequentials_are_refused_by_the_numpy_reader(trained, tmp_path):
    with pytest.raises(UnsupportedNetwork, match="not a Keras 3"):
        DenseStack.from_keras_file(b"not a zip")
    with zipfile.ZipFile(tmp_path / "functional.keras", "w") as archive:
        with zipfile.ZipFile(io.BytesIO(trained.keras_file)) as original:
            config = json.loads(original.read("config.json"))
            archive.writestr("model.weights.h5", original.read("model.weights.h5"))
        config["class_name"] = "Functional"
        archive.writestr("config.json", json.dumps(config))
    with pytest.raises(UnsupportedNetwork, match="'Functional' model"):
        DenseStack.from_keras_file((tmp_path / "functional.keras").read_bytes())


@pytest.mark.parametrize("loss", ["mean squared error", "Huber"])
def test_a_regression_network_learns_a_standardised_target_with_a_linear_output(loss, monkeypatch, tmp_path):
    from multimodal.core import fusion
    monkeypatch.setattr(fusion, "REGRESSION_LOSS", loss)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 5)).astype(np.float32)
    y = 0.8 * x[:, 0] - 0.5 * x[:, 1] * (x[:, 2] > 0) + 0.1 * rng.normal(size=600)
    y = (y - y.mean()) / y.std()
    network, curve = FusionNetwork.train(x[:450], y[:450], None, x_val=x[450:], y_val=y[450:], hidden_units=16,
                                         learning_rate=0.01, batch_size=32, n_epochs=40, patience=5, seed=0,
                                         time_limit=60)
    assert curve["loss_name"] == loss and "val_accuracy" not in curve
    assert network.forward is not None and network.forward.layers[-1][2] == "linear"  # numpy predicts it
    predicted = network.predict(x[450:])
    assert predicted.shape == (150, 1)
    np.testing.assert_allclose(predicted, network.model.predict(x[450:], verbose=0), atol=1e-5, rtol=0)
    assert np.mean((predicted[:, 0] - y[450:]) ** 2) < 0.2  # far below the target's variance of 1
    network.save(tmp_path)
    np.testing.assert_array_equal(FusionNetwork.load(tmp_path).predict(x[450:]), predicted)
