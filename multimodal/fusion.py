"""The fusion network: a Keras 3 MLP from the experts' concatenated probabilities to the real classes."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODEL_FILE = "fusion.keras"
_PREDICT_CHUNK = 65536


def keras() -> Any:
    # The backend is fixed before the first import; TensorFlow is only loaded when fusion is needed.
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras as _keras
    return _keras


class FusionNetwork:
    def __init__(self, model: Any) -> None:
        self.model = model

    @classmethod
    def train(cls, x: np.ndarray, y: np.ndarray, n_classes: int, *, x_val: np.ndarray, y_val: np.ndarray,
              hidden_units: int, learning_rate: float, batch_size: int, n_epochs: int, patience: int, seed: int,
              time_limit: float) -> tuple["FusionNetwork", dict]:
        """Adam on cross-entropy with early stopping on ``x_val``; best weights are kept."""
        k = keras()
        k.utils.set_random_seed(seed)
        model = k.Sequential([
            k.Input(shape=(x.shape[1],)),
            k.layers.Dense(hidden_units, activation="relu"),
            k.layers.Dense(hidden_units, activation="relu"),
            k.layers.Dense(n_classes, activation="softmax"),
        ])
        model.compile(optimizer=k.optimizers.Adam(learning_rate=learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        deadline = time.monotonic() + max(time_limit, 1.0)

        class Deadline(k.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if time.monotonic() >= deadline:
                    log.warning("fusion: time budget reached after %d epoch(s); keeping the best so far", epoch + 1)
                    self.model.stop_training = True

        class Progress(k.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                logs = logs or {}
                log.info("fusion epoch %d/%d: loss=%.4f val_loss=%.4f val_accuracy=%.4f", epoch + 1, n_epochs,
                         logs.get("loss", float("nan")), logs.get("val_loss", float("nan")),
                         logs.get("val_accuracy", float("nan")))

        stopper = k.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        history = model.fit(
            x.astype(np.float32), y, validation_data=(x_val.astype(np.float32), y_val), epochs=n_epochs,
            batch_size=batch_size, shuffle=True, verbose=0, callbacks=[stopper, Deadline(), Progress()])
        curve = {key: [float(v) for v in values] for key, values in history.history.items()}
        curve["best_epoch"] = int(np.argmin(curve["val_loss"])) + 1 if curve.get("val_loss") else len(curve["loss"])
        return cls(model), curve

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        # predict_on_batch skips Keras predict()'s per-call setup (~40 ms), which dominates small requests
        x = x.astype(np.float32)
        parts = [np.asarray(self.model.predict_on_batch(x[i:i + _PREDICT_CHUNK]))
                 for i in range(0, len(x), _PREDICT_CHUNK)]
        return np.concatenate(parts) if parts else np.empty((0, self.model.output_shape[-1]), np.float32)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / MODEL_FILE)

    @classmethod
    def load(cls, directory: Path) -> "FusionNetwork":
        return cls(keras().models.load_model(directory / MODEL_FILE, compile=False))
