"""The fusion network: a Keras 3 MLP from the experts' concatenated outputs to the real classes (softmax), or
to the standardised target of a regression (one linear output).

Training uses Keras (TensorFlow backend) and the artifact is the Keras file ``fusion.keras``. Prediction does
not need Keras: the Dense layers' kernels, biases and activations are read from that file (a zip holding
``config.json`` and ``model.weights.h5``) and the forward pass runs in numpy (float32). Importing TensorFlow
costs a server worker seconds of start-up and hundreds of MB, for a network of a few thousand weights.
The same numpy forward pass serves predictions right after ``train`` and after ``load``, so the two agree
exactly. A file whose layers the numpy pass does not support (anything but float32 Dense layers with the
activations of ``ACTIVATIONS``) is predicted with Keras, as before.
"""
from __future__ import annotations

import io
import json
import logging
import math
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import settings

log = logging.getLogger(__name__)

MODEL_FILE = "fusion.keras"
_PREDICT_CHUNK = 65536
_CONFIG_ENTRY = "config.json"
_WEIGHTS_ENTRY = "model.weights.h5"


def keras() -> Any:
    # The backend is fixed before the first import; TensorFlow is only loaded when training needs it.
    settings.library_defaults(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    import keras as _keras
    return _keras


# ---------------------------------------------------------------------------------------------- numpy forward

def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype, copy=False)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, np.float32(0)),
    "softmax": _softmax,
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
}


class UnsupportedNetwork(ValueError):
    """The Keras file holds something the numpy forward pass does not compute (Keras must predict)."""


class DenseStack:
    """A stack of Dense layers (kernel, bias, activation) of float32 weights, evaluated in float64 numpy and
    returned in float32: a float32 product's last bits depend on the BLAS kernel, which depends on the number of
    rows, so a row's probabilities changed with the rows sent beside it (by 3e-7 on an AMD EPYC with AVX-512);
    float64's differences vanish in the rounding to float32. The network is a few thousand weights: the cost
    is nothing next to the experts'."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray | None, str]]) -> None:
        if not layers:
            raise UnsupportedNetwork("no Dense layers")
        self.layers = [(np.ascontiguousarray(np.asarray(kernel, dtype=np.float32), dtype=np.float64),
                        None if bias is None else np.ascontiguousarray(np.asarray(bias, dtype=np.float32),
                                                                       dtype=np.float64), activation)
                       for kernel, bias, activation in layers]
        self._activations = [ACTIVATIONS[activation] for _, _, activation in layers]

    @property
    def n_outputs(self) -> int:
        return self.layers[-1][0].shape[1]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(np.asarray(x, dtype=np.float32), dtype=np.float64)
        for (kernel, bias, _), activation in zip(self.layers, self._activations):
            h = h @ kernel
            if bias is not None:
                h += bias
            h = activation(h)
        return h.astype(np.float32)

    @classmethod
    def from_keras_file(cls, data: bytes) -> "DenseStack":
        """Kernels, biases and activations of a Sequential of Dense layers saved by Keras 3 (``.keras`` bytes)."""
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                config = json.loads(archive.read(_CONFIG_ENTRY))
                weights = archive.read(_WEIGHTS_ENTRY)
        except (zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise UnsupportedNetwork(f"not a Keras 3 .keras file ({exc})") from None
        if config.get("class_name") != "Sequential":
            raise UnsupportedNetwork(f"a {config.get('class_name')!r} model, not a Sequential one")
        specs = []
        for layer in config.get("config", {}).get("layers", []):
            kind, options = layer.get("class_name"), layer.get("config", {})
            if kind == "InputLayer":
                continue
            if kind != "Dense":
                raise UnsupportedNetwork(f"a {kind!r} layer")
            dtype = options.get("dtype", "float32")
            if isinstance(dtype, dict):
                dtype = dtype.get("config", {}).get("name")
            if dtype != "float32":
                raise UnsupportedNetwork(f"layer {options.get('name')!r} computes in {dtype!r}")
            if options.get("quantization_config") or options.get("lora_rank"):
                raise UnsupportedNetwork(f"layer {options.get('name')!r} is quantized or has LoRA weights")
            activation = options.get("activation") or "linear"
            if isinstance(activation, dict) and activation.get("class_name") == "function":
                activation = activation.get("config")
            if not isinstance(activation, str) or activation not in ACTIVATIONS:
                raise UnsupportedNetwork(f"layer {options.get('name')!r} has activation {activation!r}")
            specs.append((options.get("name"), activation, bool(options.get("use_bias", True))))
        layers = _read_dense_weights(weights, specs)
        for (kernel, _, _), (next_kernel, _, _) in zip(layers, layers[1:]):
            if kernel.shape[1] != next_kernel.shape[0]:
                raise UnsupportedNetwork(f"layer shapes do not chain: {kernel.shape} then {next_kernel.shape}")
        return cls(layers)


def _read_dense_weights(weights: bytes, specs: list[tuple[str, str, bool]]) -> list:
    """(kernel, bias, activation) per Dense layer from Keras 3's model.weights.h5.

    Keras names each layer's group by its class in order (``layers/dense``, ``layers/dense_1``, …) and records
    the layer's own name in the ``vars`` group's ``name`` attribute: the attribute is matched first.
    """
    import h5py
    try:
        with h5py.File(io.BytesIO(weights), "r") as h5:
            groups = h5.get("layers")
            if groups is None:
                raise UnsupportedNetwork("model.weights.h5 has no 'layers' group")
            by_name = {}
            for key in groups:
                variables = groups[key].get("vars")
                if variables is not None and "name" in variables.attrs:
                    by_name[str(variables.attrs["name"])] = variables
            layers = []
            for position, (name, activation, use_bias) in enumerate(specs):
                variables = by_name.get(name)
                if variables is None:
                    key = "dense" if position == 0 else f"dense_{position}"
                    variables = groups.get(f"{key}/vars")
                if variables is None or len(variables) != (2 if use_bias else 1):
                    raise UnsupportedNetwork(f"no weights (or unexpected ones) for layer {name!r}")
                kernel = np.asarray(variables["0"], dtype=np.float32)
                bias = np.asarray(variables["1"], dtype=np.float32) if use_bias else None
                if kernel.ndim != 2 or (bias is not None and bias.shape != (kernel.shape[1],)):
                    raise UnsupportedNetwork(f"layer {name!r}: kernel {kernel.shape}, bias "
                                             f"{None if bias is None else bias.shape}")
                layers.append((kernel, bias, activation))
            return layers
    except OSError as exc:
        raise UnsupportedNetwork(f"model.weights.h5 cannot be read ({exc})") from None


# ---------------------------------------------------------------------------------------------- the network

# The regression loss, on the standardised target. Measured on the same experts (bench/fusion_loss.py, 2 min
# toy, docs/benchmarks.md "Regression"): mean squared error had the lower test RMSE on both real sets (films
# 1.1616 vs Huber 1.1630, loans 0.4170 vs 0.4173), Huber the lower MAE (0.8666 vs 0.8686, 0.3064 vs 0.3070):
# a tie within noise, so the loss that RMSE scores.
REGRESSION_LOSSES = {
    "mean squared error": lambda: keras().losses.MeanSquaredError(),
    "Huber": lambda: keras().losses.Huber(delta=1.0),
}
REGRESSION_LOSS = "mean squared error"


def _as_target(y: np.ndarray, regression: bool) -> np.ndarray:
    return y.astype(np.float32).reshape(-1, 1) if regression else y


# An epoch's line is logged at INFO for the first epoch and then at most once per this many seconds (every epoch
# at DEBUG): a network of a few hundred rows runs 50 epochs in 3 s, which filled the quick start with 40 lines.
PROGRESS_SECONDS = 10.0


def _callbacks(k: Any, deadline: float, n_epochs: int, quiet: bool) -> list:
    """Stop at the time budget's end; log the epochs' progress (only at debug level when ``quiet``)."""

    class Deadline(k.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if time.monotonic() >= deadline:
                log.log(logging.DEBUG if quiet else logging.WARNING,
                        "fusion: time budget reached after %d epoch(s); keeping the best so far", epoch + 1)
                self.model.stop_training = True

    class Progress(k.callbacks.Callback):
        last_shown = -math.inf

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            accuracy = f" val_accuracy={logs['val_accuracy']:.4f}" if "val_accuracy" in logs else ""
            shown = not quiet and time.monotonic() - self.last_shown >= PROGRESS_SECONDS
            if shown:
                self.last_shown = time.monotonic()
            log.log(logging.INFO if shown else logging.DEBUG, "fusion epoch %d/%d: loss=%.4f val_loss=%.4f%s",
                    epoch + 1, n_epochs, logs.get("loss", float("nan")), logs.get("val_loss", float("nan")),
                    accuracy)

    return [Deadline(), Progress()]


class FusionNetwork:
    """The fitted fusion MLP: the ``.keras`` file's bytes, and the numpy forward pass that predicts with them.

    ``model`` is the Keras model (loaded with Keras on first access after ``load``; only training, and a file
    the numpy pass cannot compute, need it).
    """

    def __init__(self, model: Any = None, *, keras_file: bytes | None = None) -> None:
        if model is None and keras_file is None:
            raise ValueError("FusionNetwork needs a Keras model or the bytes of its .keras file")
        self._model = model
        self.keras_file = keras_file if keras_file is not None else _keras_file_bytes(model)
        try:
            self.forward: DenseStack | None = DenseStack.from_keras_file(self.keras_file)
        except UnsupportedNetwork as exc:
            log.info("fusion network: predicting with Keras (the numpy forward pass does not support %s)", exc)
            self.forward = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = _load_keras_model(self.keras_file)
        return self._model

    @classmethod
    def train(cls, x: np.ndarray, y: np.ndarray, n_classes: int | None, *, x_val: np.ndarray, y_val: np.ndarray,
              hidden_units: int, learning_rate: float, batch_size: int, n_epochs: int, patience: int, seed: int,
              time_limit: float, quiet: bool = False) -> tuple["FusionNetwork", dict]:
        """Adam with early stopping on ``x_val``; best weights are kept. Classes (``n_classes``): cross-entropy.
        Regression (``n_classes`` None; ``y`` standardised): ``REGRESSION_LOSS``. ``quiet``: epochs logged at
        debug level (the cross-validation's networks)."""
        k = keras()
        k.utils.set_random_seed(seed)
        regression = n_classes is None
        model = k.Sequential([
            k.Input(shape=(x.shape[1],)),
            k.layers.Dense(hidden_units, activation="relu"),
            k.layers.Dense(hidden_units, activation="relu"),
            k.layers.Dense(1, activation="linear") if regression else k.layers.Dense(n_classes, activation="softmax"),
        ])
        loss = REGRESSION_LOSSES[REGRESSION_LOSS]() if regression else "sparse_categorical_crossentropy"
        model.compile(optimizer=k.optimizers.Adam(learning_rate=learning_rate), loss=loss,
                      metrics=[] if regression else ["accuracy"])
        stopper = k.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        history = model.fit(
            x.astype(np.float32), _as_target(y, regression), validation_data=(x_val.astype(np.float32),
                                                                               _as_target(y_val, regression)),
            epochs=n_epochs, batch_size=batch_size, shuffle=True, verbose=0,
            callbacks=[stopper, *_callbacks(k, time.monotonic() + max(time_limit, 1.0), n_epochs, quiet)])
        curve = {key: [float(v) for v in values] for key, values in history.history.items()}
        curve["best_epoch"] = int(np.argmin(curve["val_loss"])) + 1 if curve.get("val_loss") else len(curve["loss"])
        curve["loss_name"] = REGRESSION_LOSS if regression else "cross-entropy"
        if not quiet:
            best = curve["best_epoch"] - 1
            log.info("fusion network: %d epoch(s), the best %d (val_loss=%.4f%s)", len(curve["loss"]), best + 1,
                     curve["val_loss"][best] if curve.get("val_loss") else float("nan"),
                     f", val_accuracy={curve['val_accuracy'][best]:.4f}" if curve.get("val_accuracy") else "")
        return cls(model), curve

    @property
    def n_classes(self) -> int:
        return self.forward.n_outputs if self.forward is not None else int(self.model.output_shape[-1])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The network's outputs: class probabilities, or the standardised prediction (one column)."""
        x = np.asarray(x, dtype=np.float32)
        if self.forward is not None:
            predict = self.forward
        else:  # predict_on_batch skips Keras predict()'s per-call setup (~40 ms), which dominates small requests
            def predict(chunk: np.ndarray) -> np.ndarray:
                return np.asarray(self.model.predict_on_batch(chunk))
        parts = [predict(x[i:i + _PREDICT_CHUNK]) for i in range(0, len(x), _PREDICT_CHUNK)]
        return np.concatenate(parts) if parts else np.empty((0, self.n_classes), np.float32)

    def save(self, directory: Path) -> None:
        """Write ``fusion.keras``: the file Keras saved after training (or the one loaded), byte for byte."""
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (MODEL_FILE + ".tmp")
        tmp.write_bytes(self.keras_file)
        tmp.replace(directory / MODEL_FILE)

    @classmethod
    def load(cls, directory: Path) -> "FusionNetwork":
        return cls(keras_file=(directory / MODEL_FILE).read_bytes())


def _keras_file_bytes(model: Any) -> bytes:
    with tempfile.TemporaryDirectory(prefix="multimodal-fusion-") as tmp:
        path = Path(tmp) / MODEL_FILE
        model.save(path)
        return path.read_bytes()


def _load_keras_model(data: bytes) -> Any:
    k = keras()
    with tempfile.TemporaryDirectory(prefix="multimodal-fusion-") as tmp:
        path = Path(tmp) / MODEL_FILE
        path.write_bytes(data)
        return k.models.load_model(path, compile=False)
