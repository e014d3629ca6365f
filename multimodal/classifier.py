"""MultimodalClassifier: the one estimator that the containers, the server and the CLI call."""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import platform
import shutil
import tempfile
import time
import weakref
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from .experts import Expert, ExpertSpec, modality_labels, shared_autogluon_metadata
from .hyperparameters import resolve, time_budget_seconds
from .schema import (LABEL_COLUMN, DataError, Features, Schema, describe_row, encode_labels, labels_to_indices,
                     modality_missing_fraction, prepare_features)

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = "multimodal-classifier"
ARTIFACT_VERSION = 1
CONFIG_FILE = "model_config.json"
EXPERTS_DIR = "modality"
FUSION_DIR = "wholistic"
MIN_EXPERT_SECONDS = 5.0
# Image experts see hundreds to thousands of embedding features and need about twice the time of the others.
EXPERT_TIME_WEIGHT = {"text": 1.0, "num": 1.0, "cat": 1.0, "image": 2.0}
TRACKED_PACKAGES = ("autogluon.tabular", "tensorflow-cpu", "tensorflow", "keras", "torch", "torchvision", "pandas",
                    "numpy", "scikit-learn")


class MultimodalClassifier:
    """Classifier over text, numeric, categorical and image columns, routed by header suffix.

    One AutoGluon expert per modality (per image column) learns the label plus an 'insufficient
    information' class; a Keras MLP trained on the experts' out-of-fold probabilities fuses them.
    Keyword arguments are the hyperparameters of hyperparameter_specification.json.
    """

    def __init__(self, **hyperparameters: Any) -> None:
        self.hyperparameters = resolve(hyperparameters)
        self.schema: Schema | None = None
        self.classes_: list | None = None
        self.experts: list[Expert] = []
        self.fusion: Any = None
        self.metrics: dict = {}
        self.leaderboards: dict[str, pd.DataFrame] = {}
        self._embedders: dict[str, Any] = {}
        self._workdir: Path | None = None

    # ------------------------------------------------------------------------------------------ fitting

    def fit(self, train_df: pd.DataFrame, validation_df: pd.DataFrame | None = None) -> "MultimodalClassifier":
        from sklearn.model_selection import train_test_split
        from .fusion import FusionNetwork

        hp = self.hyperparameters
        started = time.monotonic()
        budget = float(time_budget_seconds(hp))
        timings: dict[str, float] = {}
        schema = Schema.from_header(list(train_df.columns), source="the training data")
        classes, y, labelled = encode_labels(train_df[LABEL_COLUMN], source="the training data")
        train_df = train_df.loc[labelled].reset_index(drop=True)
        features = prepare_features(train_df, schema, source="the training data")
        self.schema, self.classes_ = schema, classes
        n_classes = len(classes)
        log.info("training data: %d rows, %d classes, columns: %s", len(features), n_classes,
                 ", ".join(f"{m}={len(schema.names(m))}" for m in ("text", "num", "cat", "image")))

        validation = None
        if validation_df is not None:
            if LABEL_COLUMN not in validation_df.columns:
                raise DataError(f"the validation data has no {LABEL_COLUMN!r} column: it needs the same header as "
                                "the training data", column=LABEL_COLUMN)
            y_val, val_labelled = labels_to_indices(validation_df[LABEL_COLUMN], classes,
                                                    source="the validation data")
            validation_df = validation_df.loc[val_labelled].reset_index(drop=True)
            validation = (prepare_features(validation_df, schema, source="the validation data"), y_val[val_labelled])
            log.info("validation data: %d rows", len(validation[1]))
        timings["prepare"] = time.monotonic() - started

        t = time.monotonic()
        embeddings = self._embed(features)
        val_embeddings = self._embed(validation[0]) if validation else {}
        timings["embed_images"] = time.monotonic() - t

        self._workdir = Path(tempfile.mkdtemp(prefix="multimodal-"))
        weakref.finalize(self, shutil.rmtree, self._workdir, ignore_errors=True)
        fusion_reserve = min(max(0.1 * budget, 10.0), 120.0)
        specs = self._expert_specs(schema)
        self.experts, oofs = [], []
        t = time.monotonic()
        for i, spec in enumerate(specs):
            insufficient = modality_missing_fraction(features, spec.columns) >= hp["missing_threshold"]
            target = modality_labels(y, insufficient, n_classes)
            if len(np.unique(target)) < 2:
                log.warning("expert %s skipped: its columns (%s) are missing in every training row", spec.name,
                            ", ".join(spec.columns))
                continue
            left = budget - (time.monotonic() - started) - fusion_reserve
            weight = EXPERT_TIME_WEIGHT[spec.modality]
            share = left * weight / sum(EXPERT_TIME_WEIGHT[s.modality] for s in specs[i:])
            if share < MIN_EXPERT_SECONDS * weight:
                log.warning("time budget nearly spent: %.0f s left for %d expert(s); giving %s the minimum of "
                            "%.0f s, so training will overrun the budget. Raise n_mins/n_hours.",
                            max(left, 0), len(specs) - i, spec.name, MIN_EXPERT_SECONDS * weight)
                share = MIN_EXPERT_SECONDS * weight
            log.info("expert %s: fitting on %d column(s), %d rows lack this modality, time limit %.0f s",
                     spec.name, len(spec.columns), int(insufficient.sum()), share)
            expert, oof = Expert.fit(
                spec, self._expert_frame(spec, features, embeddings), target,
                path=self._workdir / EXPERTS_DIR / spec.name, quality=hp["quality"], n_folds=hp["n_folds"],
                time_limit=share, seed=hp["seed"], text_columns=schema.names("text") if spec.modality == "text"
                else [])
            self.leaderboards[spec.name] = expert.leaderboard
            self.experts.append(expert)
            oofs.append(oof)
        if not self.experts:
            raise DataError("every feature column is empty in every training row: nothing to learn from")
        timings["experts"] = time.monotonic() - t

        t = time.monotonic()
        x = np.hstack(oofs)
        if validation is not None:
            fit_rows = np.arange(len(y))
            x_val, y_val = self._fusion_inputs(validation[0], val_embeddings), validation[1]
            validation_source = "validation data"
        else:
            counts = np.bincount(y, minlength=n_classes)
            fit_rows, held_out = train_test_split(
                np.arange(len(y)), test_size=hp["validation_fraction"], random_state=hp["seed"], shuffle=True,
                stratify=y if counts.min() >= 2 else None)
            x_val, y_val = x[held_out], y[held_out]
            validation_source = f"{len(held_out)} training rows held out from the fusion network (out-of-fold)"
        fusion_time = max(budget - (time.monotonic() - started), 1.0)
        self.fusion, curve = FusionNetwork.train(
            x[fit_rows], y[fit_rows], n_classes, x_val=x_val, y_val=y_val, hidden_units=hp["hidden_units"],
            learning_rate=hp["learning_rate"], batch_size=hp["batch_size"], n_epochs=hp["n_epochs"],
            patience=hp["patience"], seed=hp["seed"], time_limit=fusion_time)
        timings["fusion"] = time.monotonic() - t

        n_expert_inputs = [len(e.classes) for e in self.experts]
        self.metrics = {
            "train": self._scores(y[fit_rows], x[fit_rows], n_expert_inputs),
            "validation": self._scores(y_val, x_val, n_expert_inputs),
            "validation_source": validation_source,
            "fusion_curve": curve,
            "rows": {"train": int(len(y)), "validation": int(len(y_val))},
        }
        timings["total"] = time.monotonic() - started
        self.metrics["timings_seconds"] = {k: round(v, 2) for k, v in timings.items()}
        self.metrics["time_budget_seconds"] = budget
        log.info("fit done in %.1f s (budget %.0f s): validation accuracy %.4f", timings["total"], budget,
                 self.metrics["validation"]["accuracy"])
        return self

    def _expert_specs(self, schema: Schema) -> list[ExpertSpec]:
        specs = [ExpertSpec(m, m, schema.names(m)) for m in ("text", "num", "cat") if schema.names(m)]
        return specs + [ExpertSpec(name, "image", [name]) for name in schema.names("image")]

    def _embedder(self) -> Any:
        from .images import ImageEmbedder
        name = self.hyperparameters["image_model"]
        if name not in self._embedders:
            self._embedders[name] = ImageEmbedder(name, batch_size=self.hyperparameters["image_batch_size"])
        return self._embedders[name]

    def _embed(self, features: Features) -> dict[str, np.ndarray]:
        out = {}
        for name in self.schema.names("image"):
            out[name] = self._embedder().embed(
                features.values[name].tolist(), column=name,
                row_names=lambda position: describe_row(position, features.ids))
        return out

    @staticmethod
    def _expert_frame(spec: ExpertSpec, features: Features, embeddings: dict[str, np.ndarray]) -> pd.DataFrame:
        if spec.modality == "image":
            matrix = embeddings[spec.name]
            return pd.DataFrame(matrix, columns=[f"{spec.name}__{i}" for i in range(matrix.shape[1])])
        frame = features.values[spec.columns]
        return frame.astype(float) if spec.modality == "num" else frame

    def _expert_probabilities(self, features: Features, embeddings: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [e.predict_proba(self._expert_frame(e.spec, features, embeddings)) for e in self.experts]

    def _fusion_inputs(self, features: Features, embeddings: dict[str, np.ndarray]) -> np.ndarray:
        return np.hstack(self._expert_probabilities(features, embeddings))

    # ------------------------------------------------------------------------------------------ predicting

    def _check_fitted(self) -> None:
        if self.fusion is None:
            raise RuntimeError("this MultimodalClassifier is not fitted: call fit() or MultimodalClassifier.load()")

    def predict_proba(self, df: pd.DataFrame) -> pd.DataFrame:
        """Class probabilities: one column per original class label, index aligned with ``df``."""
        self._check_fitted()
        if len(df) == 0:
            return pd.DataFrame(np.empty((0, len(self.classes_))), index=df.index, columns=pd.Index(self.classes_))
        features = prepare_features(df, self.schema)
        proba = self.fusion.predict_proba(self._fusion_inputs(features, self._embed(features)))
        return pd.DataFrame(proba, index=df.index, columns=pd.Index(self.classes_))

    def predict(self, df: pd.DataFrame) -> pd.Series:
        """The most probable class for each row, in the training labels' own values."""
        proba = self.predict_proba(df)
        return pd.Series(np.asarray(self.classes_, dtype=object)[proba.to_numpy().argmax(axis=1)],
                         index=df.index, name=LABEL_COLUMN)

    def evaluate(self, df: pd.DataFrame) -> dict:
        """accuracy, balanced_accuracy and log_loss of the fused model, and of each expert alone."""
        self._check_fitted()
        y, labelled = labels_to_indices(df[LABEL_COLUMN], self.classes_, source="the evaluation data")
        df = df.loc[labelled]
        features = prepare_features(df, self.schema, source="the evaluation data")
        x = self._fusion_inputs(features, self._embed(features))
        return self._scores(y[labelled], x, [len(e.classes) for e in self.experts])

    def _scores(self, y: np.ndarray, x: np.ndarray, widths: list[int]) -> dict:
        n_classes = len(self.classes_)
        proba = self.fusion.predict_proba(x)
        scores = _classification_scores(y, proba, n_classes)
        # rows: true class, columns: predicted class, both in the order of classes_
        scores["confusion_matrix"] = (np.bincount(y * n_classes + proba.argmax(axis=1), minlength=n_classes ** 2)
                                      .reshape(n_classes, n_classes).tolist() if len(y) else [])
        scores["experts"] = {}
        offsets = np.cumsum([0] + widths)
        for expert, start, stop in zip(self.experts, offsets[:-1], offsets[1:]):
            scores["experts"][expert.name] = _classification_scores(
                y, _real_class_probabilities(x[:, start:stop], expert.classes, n_classes), n_classes)
        return scores

    # ------------------------------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> int:
        """Write the model directory; returns its size in bytes. model_config.json is written last."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).unlink(missing_ok=True)
        for expert in self.experts:
            target = path / EXPERTS_DIR / expert.name
            if expert.path.resolve() != target.resolve():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(expert.path, target)
        self.fusion.save(path / FUSION_DIR)
        config = {
            "format": ARTIFACT_FORMAT,
            "format_version": ARTIFACT_VERSION,
            "schema": self.schema.to_json(),
            "classes": self.classes_,
            "hyperparameters": self.hyperparameters,
            "experts": [{**e.spec.to_json(), "classes": e.classes, "path": f"{EXPERTS_DIR}/{e.name}"}
                        for e in self.experts],
            "fusion": {"path": FUSION_DIR},
            "metrics": self.metrics,
            "versions": _versions(),
        }
        tmp = path / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(config, indent=2, default=_json_default), encoding="utf-8")
        tmp.replace(path / CONFIG_FILE)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        log.info("saved model to %s (%.1f MB)", path, size / 1e6)
        return size

    @classmethod
    def load(cls, path: str | Path) -> "MultimodalClassifier":
        """Read a model directory written by ``save``.

        Prediction needs neither TensorFlow nor Keras (the fusion network runs in numpy), nor torch unless the
        model has an image column or an expert of its own uses torch; loading imports only AutoGluon and the
        libraries of the model families the experts were trained with.
        """
        with _gc_paused():
            return cls._load(Path(path))

    @classmethod
    def _load(cls, path: Path) -> "MultimodalClassifier":
        from .fusion import FusionNetwork
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path} not found: {path} is not a model saved by MultimodalClassifier "
                                    "(for SageMaker, the contents of model.tar.gz must be extracted there)")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{config_path} is not a multimodal model artifact")
        if config.get("format_version") != ARTIFACT_VERSION:
            raise ValueError(
                f"model artifact format version {config.get('format_version')} cannot be loaded by multimodal "
                f"{__version__}, which reads version {ARTIFACT_VERSION}: retrain the model with this version, or "
                f"serve it with the version that trained it ({config.get('versions', {}).get('multimodal')})")
        model = cls(**config["hyperparameters"])
        model.schema = Schema.from_json(config["schema"])
        model.classes_ = config["classes"]
        model.metrics = config.get("metrics", {})
        with shared_autogluon_metadata():
            for entry in config["experts"]:
                spec = ExpertSpec(entry["name"], entry["modality"], list(entry["columns"]))
                try:
                    model.experts.append(Expert.load(spec, path / entry["path"], [int(c) for c in entry["classes"]]))
                except Exception as exc:
                    trained = config.get("versions", {})
                    raise ValueError(f"cannot load expert {spec.name!r} from {path / entry['path']}: {exc}. The model "
                                     f"was trained with autogluon.tabular {trained.get('autogluon.tabular')}; this "
                                     f"environment has {_versions().get('autogluon.tabular')}") from exc
        model.fusion = FusionNetwork.load(path / config["fusion"]["path"])
        return model

    @property
    def expert_names(self) -> list[str]:
        return [e.name for e in self.experts]


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection within the block (restored after it, also on error).

    Loading imports AutoGluon, scikit-learn (and torch for some models) and unpickles the experts: hundreds of
    thousands of long-lived objects, which the collector would otherwise traverse again and again while they
    are created (about 10 % of a server worker's start-up, measured). Garbage from the block is collected by
    the next collection after it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _real_class_probabilities(proba: np.ndarray, expert_classes: list[int], n_classes: int) -> np.ndarray:
    """An expert's probabilities restricted to the real classes and renormalised (uniform if it abstains)."""
    out = np.zeros((len(proba), n_classes))
    for j, c in enumerate(expert_classes):
        if c < n_classes:
            out[:, c] = proba[:, j]
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.where(total > 0, total, 1), 1.0 / n_classes)


def _classification_scores(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss
    if len(y) == 0:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan"), "log_loss": float("nan"), "rows": 0}
    predicted = proba.argmax(axis=1)
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
        "log_loss": float(log_loss(y, clipped, labels=list(range(n_classes)))),
        "rows": int(len(y)),
    }


def _versions() -> dict[str, str]:
    versions = {"multimodal": __version__, "python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
