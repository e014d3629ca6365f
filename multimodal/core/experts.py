"""Per-modality experts: one bagged AutoGluon TabularPredictor each — a classifier with an 'insufficient
information' class, or a regressor."""
from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import quantiles
from .errors import TimeBudgetError
from .resources import directory_size

log = logging.getLogger(__name__)

TARGET = "__target__"
# quality → (AutoGluon hyperparameter preset, stacking levels, minimum bagging folds)
QUALITY = {
    "toy": ("toy", 0, 0),
    "very_light": ("very_light", 0, 0),
    "light": ("light", 0, 0),
    "default": ("default", 0, 0),
    # AutoGluon's best_quality_v150: its CPU zero-shot portfolio (LightGBM with and without TabPrep feature
    # engineering, CatBoost, neural networks: about 40 configurations, none downloading weights), 8 folds, and no
    # stacking level: the fusion is the product's stacking level, and a level inside the joint expert changed
    # neither its test nor its out-of-fold scores at this quality (bench/joint_ablation.py, docs/benchmarks.md)
    # while it costs the time of a second layer of models.
    "best": ("zeroshot_2025_12_18_cpu", 0, 8),
}
# Qualities at which refit_full=auto refits the experts: at best (8 folds of a large portfolio) it cut prediction
# time 6-9x at equal accuracy (tweets 0.00 ± 0.32, films -0.44 ± 0.44 points); at toy, where prediction is
# already fast and the fusion network (chosen there) learned from the bagged outputs, it cost -0.3 to -1.3 points
# (docs/benchmarks.md, "Prediction time at best: refit_full").
REFIT_QUALITIES = {"best"}


def refits(refit_full: str, quality: str) -> bool:
    """Whether experts are refitted on all their rows after bagging (the ``refit_full`` hyperparameter)."""
    return refit_full == "true" or (refit_full == "auto" and quality in REFIT_QUALITIES)


# Model families added to AutoGluon's preset for the experts of one modality at one quality: RealMLP (pytabkit,
# AutoGluon's realmlp extra) led the image expert's leaderboard on 1,280 embedding features at best and lifted the
# fused model on clothing by +1.5 and +0.6 points (log-loss -0.030 and -0.046), seeds 0 and 1; in every expert it
# made both regression sets worse (docs/benchmarks.md, "RealMLP inside the experts at best"). A linear model (LR)
# on the image embedding, fitted before the preset's models (it takes seconds, and at best RealMLP's bag used the
# image expert's whole share before AutoGluon reached LR's own low priority): a linear probe of a pretrained
# encoder's features, which on clothing lifted the image expert from 0.726 to 0.794 at toy and from 0.742 to 0.766
# at best, the fused model's log-loss at best by -0.017 (docs/benchmarks.md, "A linear model first in the image
# experts"). In every expert it displaced the joint expert's models at toy (0.850 -> 0.792): image experts only.
LINEAR_FIRST = {"LR": [{"ag_args": {"priority": 1000}}]}
ADDED_MODELS = {("toy", "image"): LINEAR_FIRST, ("best", "image"): {**LINEAR_FIRST, "REALMLP": [{}]}}

# best_quality_v150's early stop: stop trying portfolio configurations after this many without improvement
# (by the number of training rows), so that a long portfolio does not spend the whole share on small gains.
BEST_CALLBACKS = [["EarlyStoppingCountCallback",
                   {"patience": [[100, 4], [500, 8], [2500, 15], [10000, 40], [100000, 100], None]}]]


# The fallback models of an expert the budget left no time for, tried in turn: (time limit, boosting rounds).
# Boosting hundreds of embedding features for many classes can take minutes, hence a limit; but AutoGluon's
# feature preprocessing (n-grams of long texts) can alone outlast a short limit, hence a last, unlimited and
# small one.
FALLBACKS = ((30.0, 200), (None, 20))

# persist() keeps the models in memory only if they need at most this share of the available memory
# (AutoGluon's own default for TabularPredictor.persist).
PERSIST_MAX_MEMORY = 0.4


@dataclass
class ExpertSpec:
    """What an expert sees: its name (also its directory), modality (``text``, ``num``, ``cat``, ``image``, or
    ``joint`` for all of them), input columns, and the ``_num`` columns whose 0/1 "was missing" indicator it gets."""

    name: str
    modality: str
    columns: list[str]
    indicators: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"name": self.name, "modality": self.modality, "columns": self.columns, "indicators": self.indicators}

    @classmethod
    def from_json(cls, data: dict) -> "ExpertSpec":
        return cls(data["name"], data["modality"], list(data["columns"]), list(data.get("indicators", [])))


@dataclass
class ExpertJob:
    """An expert to fit: what it sees, its target (class indices, ``n_classes`` = insufficient information) and
    how many training rows lack its modality."""

    spec: ExpertSpec
    target: np.ndarray
    lacking: int


def hyperparameters_for(quality: str, modality: str | None = None) -> dict:
    """AutoGluon's models for an expert of ``modality`` at ``quality`` (None: the preset alone)."""
    from autogluon.tabular.configs.hyperparameter_configs import (
        get_hyperparameter_config,
    )
    config = {**get_hyperparameter_config(QUALITY[quality][0]), **ADDED_MODELS.get((quality, modality), {})}
    if "REALMLP" in config:
        _import_realmlp_dependencies()
    try:  # FASTAI needs the autogluon.tabular[fastai] extra, which this product does not install
        import fastai  # noqa: F401
    except ImportError:
        config.pop("FASTAI", None)
    return config


def _import_realmlp_dependencies() -> None:
    """pytabkit (RealMLP) imports torchvision, whose PyPI wheel fails to import beside the CPU torch wheel unless
    worked around first; AutoGluon would then skip the model, saying only that it failed."""
    from .images import import_torchvision
    import_torchvision()


def modality_labels(y: np.ndarray, insufficient: np.ndarray, n_classes: int) -> np.ndarray:
    """The expert's target: the class, or class index n_classes where the modality lacks information."""
    return np.where(insufficient, n_classes, y)


def feature_metadata(frame: pd.DataFrame, text_columns: list[str]) -> Any:
    """Force AutoGluon to treat _text columns as text (n-grams) even when they look categorical."""
    from autogluon.common.features.feature_metadata import FeatureMetadata
    metadata = FeatureMetadata.from_df(frame)
    if text_columns:
        metadata = metadata.add_special_types({c: ["text"] for c in text_columns})
    return metadata


class Expert:
    """A fitted expert: probabilities over its own classes (the real ones, plus 'insufficient' if it saw any), or
    for a regressor (``classes`` empty) its prediction."""

    def __init__(self, spec: ExpertSpec, predictor: Any, classes: list[int], path: Path) -> None:
        self.spec = spec
        self.predictor = predictor
        self.classes = classes
        self.path = path
        self.leaderboard: pd.DataFrame | None = None
        self._placeholder_output: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def fit(cls, spec: ExpertSpec, frame: pd.DataFrame, target: np.ndarray, *, path: Path, quality: str,
            n_folds: int, time_limit: float, seed: int, text_columns: list[str], regression: bool = False,
            refit_full: bool = False, fold_strategy: str = "sequential_local", num_cpus: int | str = "auto"
            ) -> tuple["Expert", np.ndarray]:
        """Fit on ``frame`` → (the expert shrunk for deployment, its out-of-fold outputs per row: probabilities,
        or one column of predictions for a regressor).

        OOF outputs are taken before shrinking (and before ``refit_full``): AutoGluon cannot produce them
        afterwards, and a model refitted on every row has no out-of-fold outputs.
        """
        _, stack_levels, min_folds = QUALITY[quality]
        folds = max(n_folds, min_folds)
        if refit_full:  # the refit costs about one fold's fit of each chosen model: keep that much of the share
            time_limit = time_limit * folds / (folds + 1)
        classes = [] if regression else sorted(int(c) for c in np.unique(target))
        data = frame.copy()
        data[TARGET] = target
        work = path.with_name(path.name + ".work")
        started = time.monotonic()
        common = dict(
            num_bag_folds=folds, num_bag_sets=1, num_stack_levels=stack_levels,
            dynamic_stacking=False, feature_metadata=feature_metadata(frame, text_columns),
            ag_args_ensemble={"model_random_seed": seed, "fold_fitting_strategy": fold_strategy},
            fit_weighted_ensemble=True,
            # predict_proba_oof() (what the fusion trains on) is never temperature-scaled, while calibration
            # would scale predict_proba() (what the fusion is fed at prediction time): the two must match, and
            # the fusion network is the calibrator.
            calibrate=False, raise_on_no_models_fitted=False, num_cpus=num_cpus,
            **({"callbacks": BEST_CALLBACKS} if quality == "best" else {}))
        predictor = cls._new_predictor(work, classes)
        refused = not _fit_in_time(predictor, data, time_limit=max(time_limit, 1.0),
                                   hyperparameters=hyperparameters_for(quality, spec.modality), **common)
        for seconds, rounds in FALLBACKS:
            if not refused and predictor.model_names():
                break
            if refused and seconds is not None:
                # AutoGluon spent the whole limit preparing features (n-grams of long texts): a limited retry
                # would only prepare them again, so go straight to the unlimited small model.
                continue
            # A budget spent before this expert (slow embedding, say) must not lose the whole fit: one small
            # LightGBM per fold keeps the expert, beyond the budget but bounded.
            log.warning("expert %s: no model trained within %.0f s (%d rows, %d features); fitting one small "
                        "LightGBM instead (%d rounds%s), beyond the time budget. Raise n_mins/n_hours for better "
                        "experts.", spec.name, time_limit, len(frame), frame.shape[1], rounds,
                        f", at most {seconds:.0f} s" if seconds else "")
            time_limit = seconds or time_limit
            shutil.rmtree(work, ignore_errors=True)
            predictor = cls._new_predictor(work, classes)
            refused = not _fit_in_time(predictor, data, time_limit=seconds,
                                       hyperparameters={"GBM": {"num_boost_round": rounds}}, **common)
        if refused or not predictor.model_names():
            shutil.rmtree(work, ignore_errors=True)
            raise TimeBudgetError(
                f"expert {spec.name}: AutoGluon trained no model within its {time_limit:.0f} s share of the time "
                f"budget ({len(frame)} rows, {frame.shape[1]} features). Raise the time budget (n_mins/n_hours) "
                "or choose a lighter quality")
        oof = _out_of_fold(predictor, frame, classes)
        leaderboard = predictor.leaderboard(silent=True)
        if refit_full:
            _refit_full(predictor, spec.name, num_cpus)
        with _autogluon_quiet():
            predictor.clone_for_deployment(str(path), dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
        expert = cls.load(spec, path, classes)
        expert.leaderboard = leaderboard
        log.info("expert %s: %d rows, %s, best model %s, %.1f s", spec.name, len(frame),
                 f"{len(classes)} classes" if classes else "regression", predictor.model_best,
                 time.monotonic() - started)
        return expert, oof

    @staticmethod
    def _new_predictor(work: Path, classes: list[int]) -> Any:
        from autogluon.tabular import TabularPredictor
        quantiles.install()
        if not classes:
            return TabularPredictor(label=TARGET, problem_type="regression", eval_metric="root_mean_squared_error",
                                    path=str(work), verbosity=1)
        return TabularPredictor(label=TARGET, problem_type="binary" if len(classes) == 2 else "multiclass",
                                eval_metric="log_loss", path=str(work), verbosity=1)

    @classmethod
    def load(cls, spec: ExpertSpec, path: Path, classes: list[int]) -> "Expert":
        from autogluon.tabular import TabularPredictor
        predictor = TabularPredictor.load(str(path), verbosity=0, require_py_version_match=False)
        if any("RealMLP" in name for name in predictor.model_names()):
            _import_realmlp_dependencies()
        quantiles.install()  # the neural network's per-request transform, 40× faster with the same floats
        persist(predictor, path)
        return cls(spec, predictor, classes, path)

    def outputs(self, frame: pd.DataFrame, placeholder: np.ndarray | None = None) -> np.ndarray:
        """Probabilities over ``classes`` (one column each), or a regressor's predictions (one column).

        ``placeholder``: the rows (a boolean mask) whose features are all the missing-value placeholder, so all
        get the same output: it is computed once, from the first such row, and kept. An image expert's rows
        without an image are such rows (the black image's embedding), and the expert costs the same for one row
        as for many (tens of milliseconds a request, per fold)."""
        frame = frame.reset_index(drop=True)
        if placeholder is None or not placeholder.any():
            return _outputs(self.predictor, frame, self.classes)
        if self._placeholder_output is None:
            first = int(np.flatnonzero(placeholder)[0])
            self._placeholder_output = _outputs(self.predictor, frame.iloc[[first]].reset_index(drop=True),
                                                self.classes)[0]
        out = np.empty((len(frame), len(self._placeholder_output)))
        out[placeholder] = self._placeholder_output
        if not placeholder.all():
            out[~placeholder] = _outputs(self.predictor, frame[~placeholder].reset_index(drop=True), self.classes)
        return out


@contextlib.contextmanager
def _autogluon_quiet():
    """AutoGluon's own logger at ERROR within the block. Its clone logs every model it deletes and every file it
    copies at WARNING level: about 20 lines an expert, which drowned the progress lines of a fit (issue 20)."""
    logger = logging.getLogger("autogluon")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# How AutoGluon says that the time limit was spent before any model could start (its feature preprocessing
# alone can take it all): an AssertionError from the trainer, which would otherwise fail the whole job.
_NO_TIME_LEFT = "Not enough time left to train models"


def _fit_in_time(predictor: Any, data: pd.DataFrame, *, time_limit: float | None, **options: Any) -> bool:
    """``predictor.fit``; False when AutoGluon refused for lack of time (the caller falls back)."""
    try:
        predictor.fit(data, time_limit=time_limit, **options)
    except AssertionError as exc:
        if _NO_TIME_LEFT not in str(exc):
            raise
        log.warning("AutoGluon used the whole %.0f s limit before training a model (%s)", time_limit or 0,
                    str(exc).splitlines()[0])
        return False
    return True


def _refit_full(predictor: Any, name: str, num_cpus: int | str) -> None:
    """Collapse each bag of the best model (and the models it weights) into one model fitted on every row (for
    the few model types AutoGluon cannot refit, it keeps one fold's model), and make that the model prediction
    uses."""
    started, bagged = time.monotonic(), predictor.model_best
    refitted = predictor.refit_full(model="best", set_best_to_refit_full=True, num_cpus=num_cpus)
    log.info("expert %s: refitted %d model(s) on all rows in %.1f s; predicting with %s instead of %s", name,
             len(refitted), time.monotonic() - started, predictor.model_best, bagged)


def _outputs(predictor: Any, frame: pd.DataFrame, classes: list[int]) -> np.ndarray:
    """``predictor``'s outputs for ``frame`` (index 0..n-1): probabilities over ``classes``, or, for a regressor
    (``classes`` empty), its predictions as one column."""
    if not classes:
        return predictor.predict(frame).to_numpy(dtype=np.float64).reshape(-1, 1)
    return align(predictor.predict_proba(frame, as_multiclass=True), classes, len(frame))


def _out_of_fold(predictor: Any, frame: pd.DataFrame, classes: list[int]) -> np.ndarray:
    """The bagged predictor's out-of-fold outputs, one row per row of ``frame``."""
    if classes:
        out = align(predictor.predict_proba_oof(as_multiclass=True), classes, len(frame))
    else:
        out = _by_position(predictor.predict_oof().to_frame(), len(frame))
    # AutoGluon drops classes too rare to stratify; their rows never trained any model, so predicting them
    # directly is still out-of-fold.
    unseen = np.isnan(out).any(axis=1)
    if unseen.any():
        out[unseen] = _outputs(predictor, frame.iloc[np.flatnonzero(unseen)].reset_index(drop=True), classes)
    return out


def align(proba: pd.DataFrame, classes: list[int], n_rows: int) -> np.ndarray:
    """Reorder AutoGluon's probability columns to ``classes``; absent classes get probability 0.

    Rows AutoGluon did not score (OOF of dropped rare-class rows) come back as NaN for the caller to fill.
    """
    return _by_position(proba.reindex(columns=classes, fill_value=0.0), n_rows)


def _by_position(values: pd.DataFrame, n_rows: int) -> np.ndarray:
    """``values`` as an array of ``n_rows`` rows, row label k at position k; positions without a row are NaN."""
    out = np.full((n_rows, values.shape[1]), np.nan, dtype=np.float64)
    # Row labels are positions 0..n_rows-1. AutoGluon duplicates rows of classes too rare to bag (the copies
    # get labels >= n_rows) and leaves out rows of classes it dropped.
    index = values.index.to_numpy()
    keep = (index >= 0) & (index < n_rows) & ~values.index.duplicated()
    out[index[keep]] = values[keep].to_numpy(dtype=np.float64)
    return out


def persist(predictor: Any, path: Path, max_memory: float = PERSIST_MAX_MEMORY) -> bool:
    """Keep the best model (and the models it depends on) in memory: no disk reads per request.

    AutoGluon's own check (``persist(max_memory=...)``) sizes every model by pickling it again after a full
    ``gc.collect()``, which took 0.5–1.8 s per expert in a server worker (a full collection per model, over a
    heap holding pandas, scikit-learn and torch). The same limit is applied here to the size of the expert's
    saved models, the pickles of those same objects (after ``clone_for_deployment`` the directory holds only
    the models prediction uses). Above it, models stay on disk and are loaded per prediction, as AutoGluon
    does.
    """
    from autogluon.common.utils.resource_utils import ResourceManager
    required = directory_size(path / "models")
    available = ResourceManager.get_available_virtual_mem()
    if required > max_memory * available:
        log.warning("expert at %s: not persisting its models in memory: they need about %.0f MB, over %.0f %% of "
                    "the %.0f MB available; they are read from disk at each prediction (slower)", path,
                    required / 1e6, 100 * max_memory, available / 1e6)
        return False
    predictor.persist(models="best", max_memory=None)
    return True


_METADATA_LOCK = threading.RLock()


@contextlib.contextmanager
def shared_autogluon_metadata():
    """Within the block, TabularPredictor.load reads the installed packages' metadata once, not per predictor.

    Each TabularPredictor.load collects the versions of every installed distribution (about 0.2 s, parsing
    some 300 METADATA files) to compare them with those the predictor was saved with; loading several experts
    in a row repeats identical work. The first result is reused (a copy each time) until the block ends.
    """
    with _METADATA_LOCK:
        module = sys.modules.get("autogluon.tabular.predictor.predictor")
        if module is None:
            import autogluon.tabular.predictor.predictor as module
        original = getattr(module, "get_autogluon_metadata", None)
        if original is None:  # another AutoGluon version: nothing to share
            yield
            return
        cache: list[dict] = []

        def get_autogluon_metadata() -> dict:
            if not cache:
                cache.append(original())
            return copy.deepcopy(cache[0])

        module.get_autogluon_metadata = get_autogluon_metadata
        try:
            yield
        finally:
            module.get_autogluon_metadata = original
