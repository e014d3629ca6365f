"""The estimator that the training job, the server and the CLI call: ``MultimodalEstimator`` (classes or a
number, by ``problem_type``), and its restrictions ``MultimodalClassifier`` and ``MultimodalRegressor``.

Classification: each expert learns the classes plus an "insufficient information" class for rows missing its
modality; the fusion network maps the experts' out-of-fold probabilities to the classes.

Regression: each expert is an AutoGluon regressor (there is no "insufficient information" number); the fusion
network gets the experts' out-of-fold predictions (standardised like the target) and, per row, the fraction of
each expert's modality that is missing — what tells it how far to trust each prediction — and predicts the
standardised target.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import itertools
import json
import logging
import platform
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Union

import numpy as np
import pandas as pd

from multimodal import __version__

from . import artifact
from .artifact import CLASSIFICATION, REGRESSION
from .cluster import ClusterData
from .errors import DataError, HyperparameterError, NotFittedError
from .experts import Expert, ExpertJob, ExpertSpec, modality_labels, refits, shared_autogluon_metadata
from .hyperparameters import defaults, resolve, specification, time_budget_seconds
from .imagerefs import ImageSource, describe_reference
from .ingest import Rows, check_label_column, frame_batches, ingest
from .jsonsafe import to_json
from .parallel import fold_strategy, local_ray
from .reduction import Reducer
from .schema import (
    ID_COLUMN,
    LABEL_COLUMN,
    PREDICTION,
    Features,
    Schema,
    describe_row,
    encode_labels,
    labels_to_indices,
    modality_missing_fraction,
    prepare_features,
)
from .scores import classification_scores, confusion_matrix, regression_scores
from .selection import (
    WeightedEnsemble,
    choice_folds,
    compare_by_cross_validation,
    each_expert_probabilities,
    load_fusion,
)
from .selection import loss as selection_loss
from .targets import choose_problem_type, numeric_targets
from .timebudget import TimeBudget
from .views import JOINT, Views, expert_specs, missing_fractions, missing_indicators, reduces_images

log = logging.getLogger(__name__)
BAD_IMAGES_LOGGED = 20  # warnings about single bad images in a fit; the rest are counted

# Whether the fusion network also gets each per-modality expert's missing fraction per row. Measured (toy, 4 min):
# no gain on real data (clothing with 10 % of each modality blanked 0.856 with / 0.855 without, films 0.627 /
# 0.626) — the experts' "insufficient information" probabilities already carry it — and a loss on small data
# (synthetic, 360 rows: 0.694 / 0.719), so not for classification. Models saved with it still use it.
FUSION_MISSING_FRACTIONS = False
TRACKED_PACKAGES = ("autogluon.tabular", "tensorflow-cpu", "tensorflow", "keras", "torch", "torchvision", "pandas",
                    "numpy", "scikit-learn")


TrainingData = Union[pd.DataFrame, Iterable[pd.DataFrame], ClusterData]


@dataclass
class _Split:
    """Rows with their features, image embeddings and targets (class indices, or numbers for regression)."""

    features: Features
    embeddings: dict[str, np.ndarray]
    y: np.ndarray


class _ClassificationOnly:
    """A method that exists only on models that predict classes: on a regression model (or a
    ``MultimodalRegressor``) reading it raises AttributeError, so ``hasattr(model, "predict_proba")`` is False
    (scikit-learn's ``available_if`` convention)."""

    def __init__(self, method: Callable) -> None:
        self.method = method
        self.__doc__ = method.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        if obj._problem_family() == REGRESSION:
            raise AttributeError(f"{self.name} does not exist for a regression model: predict() returns the numbers")
        return self.method.__get__(obj, owner)


class MultimodalEstimator:
    """Classifier or regressor over text, numeric, categorical and image columns, routed by header suffix.

    One AutoGluon expert per modality (per image column) learns the label (for classes, plus an 'insufficient
    information' class); a neural network trained on the experts' out-of-fold outputs fuses them. Whether the
    label is classes or a number is the ``problem_type`` hyperparameter (``auto``: decided from the labels,
    see ``multimodal.core.targets``). The keyword arguments are the hyperparameters of
    ``hyperparameter_specification.json`` (listed below, generated from that file); every value is checked on
    construction (``HyperparameterError`` names what is wrong).

    Fitted attributes: ``problem_type_`` (``binary``, ``multiclass`` or ``regression``), ``classes_`` (the
    labels, sorted; classification only), ``schema_`` (the training columns and their modalities),
    ``experts_``, ``fusion_``, ``metrics_`` (scores on the training rows and the validation rows, timings, the
    fusion's training curve), ``leaderboards_`` (AutoGluon's, per expert); for regression ``target_mean_`` and
    ``target_std_`` (the fusion network predicts the standardised target) and, after ``fit``,
    ``validation_predictions_`` (actual and predicted values of the validation rows).
    """

    # the values of problem_type this class accepts (its subclasses restrict them)
    problem_types: tuple[str, ...] = tuple(specification()["problem_type"].values)

    def __init__(self, **hyperparameters: Any) -> None:
        self._set_hyperparameters(resolve(hyperparameters))
        self._embedders: dict[str, Any] = {}
        self._workdir: Path | None = None

    def _set_hyperparameters(self, values: dict[str, Any]) -> None:
        if values["problem_type"] not in self.problem_types:
            other = "MultimodalRegressor" if values["problem_type"] == REGRESSION else "MultimodalClassifier"
            raise HyperparameterError(
                f"{type(self).__name__} takes problem_type {' or '.join(self.problem_types)}, not "
                f"{values['problem_type']!r}: use {other} (or MultimodalEstimator, which takes every problem type)")
        for name, value in values.items():
            setattr(self, name, value)

    # ------------------------------------------------------------------------------------------ parameters

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyperparameters, by name (scikit-learn's convention; ``deep`` has no effect: nothing is nested)."""
        return {name: getattr(self, name) for name in specification()}

    def set_params(self, **params: Any) -> "MultimodalEstimator":
        """Change hyperparameters (checked as in the constructor); takes effect at the next ``fit``."""
        self._set_hyperparameters(resolve({**self.get_params(), **params}))
        return self

    def __repr__(self) -> str:
        standard = defaults()
        changed = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v != standard[k])
        text = f"{type(self).__name__}({changed})"
        if self._is_fitted():
            what = "regression" if self.problem_type_ == REGRESSION else f"{len(self.classes_)} classes"
            text += f"  # fitted: {what}, experts {', '.join(self.expert_names_)}"
        return text

    @property
    def expert_names_(self) -> list[str]:
        self._check_fitted()
        return [e.name for e in self.experts_]

    def _problem_family(self) -> str:
        """``regression`` or ``classification``: what the fitted model is, else what it will be if known."""
        chosen = getattr(self, "problem_type_", None) or self.problem_type
        if chosen == REGRESSION or not self._accepts("classification"):
            return REGRESSION
        return "classification"

    @classmethod
    def _accepts(cls, family: str) -> bool:
        """Whether this class fits (and loads) models of ``family``: ``regression`` or ``classification``."""
        return REGRESSION in cls.problem_types if family == REGRESSION else bool(set(CLASSIFICATION) &
                                                                                 set(cls.problem_types))

    # ------------------------------------------------------------------------------------------ fitting

    def fit(self, train: TrainingData, validation: pd.DataFrame | Iterable[pd.DataFrame] | None = None, *,
            images: str | Path | None = None) -> "MultimodalEstimator":
        """Fit on ``train`` (the training CSV's columns, ``label`` included) within the time budget.

        ``train`` is a DataFrame, an iterable of DataFrames (consecutive batches of rows with the same columns:
        each is prepared and embedded as it arrives, so the images of all rows are never in memory together),
        or a ``ClusterData`` (rows read on the machines of a Ray cluster this process is connected to; embedding
        and the experts are spread over them, see ``multimodal.core.cluster``). ``validation`` (same columns, a
        DataFrame or batches; part of ``ClusterData`` for a cluster) early-stops the fusion network and is
        scored; without it a ``validation_fraction`` of the training rows (stratified by class) is held out from
        the fusion network instead.

        ``_image`` values are base64, ``s3://`` URIs, or paths relative to the directory ``images`` (the rule:
        ``multimodal.core.imagerefs``). One that gives no image fails the fit, naming it, or with
        ``bad_images="missing"`` counts as a missing image and is listed in ``bad_images_``.
        """
        budget = TimeBudget(time_budget_seconds(self.get_params()))
        self._forget_fit()
        timings: dict[str, float] = {}
        distributed = isinstance(train, ClusterData)
        train_rows, validation_rows = self._read(train, validation, images)
        train_split, validation_split = self._label(train_rows, validation_rows)
        del train_rows, validation_rows
        timings["embed"] = budget.elapsed()
        t = time.monotonic()
        oof = self._fit_experts(train_split, budget, distributed)
        timings["experts"] = time.monotonic() - t
        t = time.monotonic()
        self._fit_fusion(train_split, oof, validation_split, budget)
        timings["fusion"] = time.monotonic() - t
        timings["total"] = budget.elapsed()
        self.metrics_["timings_seconds"] = {k: round(v, 2) for k, v in timings.items()}
        self.metrics_["time_budget_seconds"] = budget.total
        self.metrics_["bad_images"] = len(self.bad_images_)
        if self.bad_images_:
            log.warning("%d image value(s) gave no image and were counted as missing images (bad_images=missing; "
                        "listed in bad_images_)", len(self.bad_images_))
        if distributed:
            self.metrics_["cluster"] = self.cluster_report_
        score = "rmse" if self.problem_type_ == REGRESSION else "accuracy"
        log.info("fit done in %.1f s (budget %.0f s): validation %s %.4f", timings["total"], budget.total, score,
                 self.metrics_["validation"][score])
        return self

    def _forget_fit(self) -> None:
        """Drop what an earlier fit set: a new fit starts from the hyperparameters alone (its problem type may
        differ), and a fit that fails leaves an unfitted estimator, never a mix of two fits."""
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
            delattr(self, name)

    def _read(self, train: TrainingData, validation: pd.DataFrame | Iterable[pd.DataFrame] | None,
              images: str | Path | None = None) -> tuple[Rows, Rows | None]:
        """Prepare and embed the rows (batch by batch); sets ``schema_`` and ``bad_images_``."""
        self.bad_images_ = []
        if isinstance(train, ClusterData):
            if validation is not None or images is not None:
                raise TypeError("with ClusterData the validation rows and the image directory are part of it "
                                "(NodeData.validation, NodeData.images), not separate arguments")
            from .cluster import ingest_on_nodes
            self.cluster_report_ = {}
            return ingest_on_nodes(self, train)
        with ImageSource(images) as source:
            rows = self._ingest(_as_batches(train, "train"), None, source="the training data", images=source)
            if validation is None:
                return rows, None
            return rows, self._ingest(_as_batches(validation, "validation"), self.schema_, images=source,
                                      source="the validation data")

    def _ingest(self, batches: Iterable[pd.DataFrame], schema: Schema | None, *, source: str,
                images: ImageSource | None = None, keep: Callable[[int], bool] = lambda k: True) -> Rows:
        """``ingest`` with this model's embedders; the first batch's header sets the schema when none is given.
        Images that give none fail it, or with ``bad_images="missing"`` are added to ``bad_images_``."""
        iterator = iter(batches)
        first = next(iterator, None)
        if first is None:
            raise DataError(f"{source} has no rows and no header")
        if schema is None:
            self._set_schema(Schema.from_header(list(first.columns), source=source))
        check_label_column(first.columns, source)
        stream = itertools.chain([first], iterator)
        del first  # or the first batch's images would stay in memory until the end
        bad = self.bad_images_ if self.bad_images == "missing" else None
        return ingest(stream, self.schema_, source=source, keep=keep,
                      embed=lambda features: self._embed(features, images=images, bad=bad, data=source))

    def _set_schema(self, schema: Schema) -> None:
        self.schema_ = schema
        self.views_ = Views(schema, text_model=self.text_model, joint_dims=self.joint_embedding_dims)

    def _label(self, train: Rows, validation: Rows | None) -> tuple[_Split, _Split | None]:
        """The targets of the labelled rows (the others are dropped); sets ``problem_type_``, ``classes_`` or the
        target's scale, and what depends on the training rows."""
        if len(train) == 0:
            raise DataError("the training data has a header but no data rows: add training examples, one per row")
        self.problem_type_ = self._choose_problem_type(train.labels)
        y, labelled = self._targets(train, source="the training data")
        if not labelled.all():  # a copy of every embedding matrix, only when rows are dropped
            train = train.take(labelled)
        self.missing_indicators_ = missing_indicators(self.schema_, train.features)
        self.fusion_missing_inputs_ = FUSION_MISSING_FRACTIONS or self.problem_type_ == REGRESSION
        schema = self.schema_
        target = (f"target mean {self.target_mean_:.4g}, std {self.target_std_:.4g}" if self.problem_type_ == REGRESSION
                  else f"{len(self.classes_)} classes")
        log.info("training data: %d rows, %s (%s), columns: %s", len(train), target, self.problem_type_,
                 ", ".join(f"{m}={len(schema.names(m))}" for m in ("text", "num", "cat", "image")))
        if validation is not None and len(validation) == 0:
            log.warning("the validation data has no rows: ignored")
        if validation is None or len(validation) == 0:
            return _Split(train.features, train.embeddings, y), None
        y_val, present = self._targets(validation, source="the validation data", fitted=True)
        validation = validation.take(present)
        log.info("validation data: %d rows", len(validation))
        return _Split(train.features, train.embeddings, y), _Split(validation.features, validation.embeddings, y_val)

    def _choose_problem_type(self, labels: pd.Series) -> str:
        """``problem_type`` with ``auto`` decided (by this class, or from the labels); classes are refined into
        binary or multiclass by ``_targets``."""
        if self.problem_type != "auto":
            return self.problem_type
        if not self._accepts("classification"):
            return REGRESSION
        if not self._accepts(REGRESSION):
            return "classification"
        return choose_problem_type(labels)

    def _targets(self, rows: Rows, *, source: str, fitted: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(targets of the labelled rows, which rows are labelled). On the training rows (``fitted`` False) this
        sets ``classes_`` and ``problem_type_``, or the target's mean and standard deviation."""
        if self.problem_type_ == REGRESSION:
            y, present = numeric_targets(rows.labels, numbers=rows.numbers, ids=rows.features.ids, source=source)
            if not fitted:
                self._set_target_scale(y)
            return y, present
        if fitted:
            y, present = labels_to_indices(rows.labels, self.classes_, source=source)
            return y[present], present
        classes, y, present = encode_labels(rows.labels, source=source)
        kind = "binary" if len(classes) == 2 else "multiclass"
        if self.problem_type_ == "multiclass" and kind == "binary":
            log.warning("problem_type is multiclass but column %r has 2 classes (%s): fitting a binary model (the "
                        "same experts and fusion network)", LABEL_COLUMN, ", ".join(map(repr, classes)))
        if self.problem_type_ == "binary" and kind != "binary":
            shown = ", ".join(map(repr, classes[:10])) + (", …" if len(classes) > 10 else "")
            raise DataError(f"{source}: problem_type is binary but column {LABEL_COLUMN!r} has {len(classes)} classes "
                            f"({shown}): set problem_type=multiclass (or auto)", column=LABEL_COLUMN)
        self.problem_type_, self.classes_ = kind, classes
        return y, present

    def _set_target_scale(self, y: np.ndarray) -> None:
        if len(y) < 2 or not np.ptp(y) > 0:
            found = f"every label is {y[0]:g}" if len(y) else "no label is set"
            raise DataError(f"the training data: column {LABEL_COLUMN!r} needs at least 2 different numbers to train a "
                            f"regressor; {found}. Check that the label column holds the target", column=LABEL_COLUMN)
        self.target_mean_, self.target_std_ = float(np.mean(y)), float(np.std(y))

    def _fit_experts(self, train: _Split, budget: TimeBudget, distributed: bool) -> np.ndarray:
        """One bagged expert per modality; sets ``experts_`` and ``leaderboards_``; returns the experts'
        out-of-fold outputs side by side (the fusion network's training inputs)."""
        self._workdir = Path(tempfile.mkdtemp(prefix="multimodal-"))
        weakref.finalize(self, shutil.rmtree, self._workdir, ignore_errors=True)
        specs = expert_specs(self.schema_, indicators=self.missing_indicators_, joint=self.joint_expert)
        image_dims = self.image_embedding_dims if reduces_images(self.reduce_image_embeddings, len(train.y)) else 0
        self.views_.fit_reducers(train.embeddings, image_dims=image_dims, joint=any(s.modality == JOINT for s in specs),
                                 seed=self.seed)
        self.views_.reduce(train.embeddings)  # the full image embeddings are freed here
        jobs = [job for job in (self._expert_job(spec, train) for spec in specs) if job is not None]
        if not jobs:
            raise DataError("every feature column is empty in every training row: nothing to learn from")
        if distributed:
            from .cluster import fit_experts_on_cluster
            results = fit_experts_on_cluster(self, train.features, train.embeddings, jobs, budget)
        else:
            results = self._fit_experts_here(train, jobs, budget)
        self.experts_ = [expert for expert, _ in results]
        self.leaderboards_ = {expert.name: expert.leaderboard for expert, _ in results}
        return self._inputs([oof for _, oof in results], train.features)

    def _expert_job(self, spec: ExpertSpec, train: _Split) -> ExpertJob | None:
        """What ``spec``'s expert learns: the class, or 'insufficient information' where its modality is missing
        (classification); the number itself (regression). None when its modality is missing in every row."""
        missing = modality_missing_fraction(train.features, spec.columns)
        if self.problem_type_ == REGRESSION:  # missing_threshold is for the 'insufficient information' class
            insufficient = missing >= 1.0
            target, learnable = train.y, not insufficient.all()
        else:
            insufficient = missing >= self.missing_threshold
            target = modality_labels(train.y, insufficient, len(self.classes_))
            learnable = len(np.unique(target)) >= 2
        if not learnable:
            log.warning("expert %s skipped: its columns (%s) are missing in every training row", spec.name,
                        ", ".join(spec.columns))
            return None
        return ExpertJob(spec, target, int(insufficient.sum()))

    def _fit_experts_here(self, train: _Split, jobs: list[ExpertJob], budget: TimeBudget
                          ) -> list[tuple[Expert, np.ndarray]]:
        """The experts one after another on this machine (each one's folds side by side with Ray when
        ``parallel_folds`` says so)."""
        strategy = fold_strategy(self.parallel_folds)
        results = []
        with local_ray(strategy):
            for i, job in enumerate(jobs):
                share = budget.expert_share(job.spec, [j.spec for j in jobs[i:]])
                log.info("expert %s: fitting on %d column(s), %d rows lack this modality, time limit %.0f s",
                         job.spec.name, len(job.spec.columns), job.lacking, share)
                results.append(Expert.fit(
                    job.spec, self.views_.frame(job.spec, train.features, train.embeddings), job.target,
                    path=self._workdir / artifact.EXPERTS_DIR / job.spec.name, time_limit=share,
                    fold_strategy=strategy, **self.expert_options(job.spec)))
        return results

    def expert_options(self, spec: ExpertSpec) -> dict[str, Any]:
        """The keyword arguments of ``Expert.fit`` that come from the hyperparameters."""
        return dict(quality=self.quality, n_folds=self.n_folds, seed=self.seed,
                    refit_full=refits(self.refit_full, self.quality),
                    text_columns=self.views_.raw_text_columns(spec), regression=self.problem_type_ == REGRESSION)

    def _fit_fusion(self, train: _Split, x: np.ndarray, validation: _Split | None, budget: TimeBudget) -> None:
        """The fusion on the out-of-fold inputs ``x``: the network or the weighted ensemble of the experts, chosen
        by cross-validation (``multimodal.core.selection``); sets ``fusion_`` and ``metrics_``."""
        y = train.y
        regression = self.problem_type_ == REGRESSION
        if validation is not None:
            fit_rows = np.arange(len(y))
            x_val, y_val = self._fusion_inputs(validation.features, validation.embeddings), validation.y
            source = "validation data"
        else:
            fit_rows, held_out = self._hold_out(y)
            x_val, y_val = x[held_out], y[held_out]
            source = f"{len(held_out)} training rows held out from the fusion network (out-of-fold)"
        folds = choice_folds(y, regression, self.seed)  # none when there are too few rows: the ensemble
        # each cross-validation network gets the share of the fusion's time the final one gets
        share = budget.fusion_seconds() / (len(folds) + 1)
        comparison = compare_by_cross_validation(
            x, self._fusion_target(y), regression,
            {"network": lambda xs, ys: self._train_network(xs, ys, share, quiet=True)[0],
             "ensemble": lambda xs, ys: self._fit_ensemble(xs, ys)}, folds) if folds else None
        network, curve = self._train_network(x[fit_rows], self._fusion_target(y[fit_rows]),
                                             max(budget.left(), share), x_val, self._fusion_target(y_val))
        ensemble = self._fit_ensemble(x[fit_rows], self._fusion_target(y[fit_rows]))
        self.fusion_, choice = self._choose_fusion(network, ensemble, comparison, x_val, y_val)
        self.metrics_ = {
            "train": self._scores(y[fit_rows], x[fit_rows]),
            "validation": self._scores(y_val, x_val),
            "validation_source": source,
            "fusion_curve": curve,
            "fusion_choice": choice,
            "rows": {"train": int(len(y)), "validation": int(len(y_val))},
        }
        if regression:
            self.metrics_["target"] = {"mean": self.target_mean_, "std": self.target_std_, "min": float(y.min()),
                                       "max": float(y.max())}
            self.validation_predictions_ = pd.DataFrame({"actual": y_val, "predicted": self._predicted(x_val)})

    def _hold_out(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows to fit, rows held out): ``validation_fraction`` of ``y``'s rows, stratified by class when every
        class present has 2 rows and both sides have room for one of each (scikit-learn refuses otherwise)."""
        from sklearn.model_selection import train_test_split
        stratify = None
        if self.problem_type_ != REGRESSION:
            counts = np.bincount(y)
            present = int((counts > 0).sum())
            held = int(np.ceil(self.validation_fraction * len(y)))
            if counts[counts > 0].min() >= 2 and held >= present and len(y) - held >= present:
                stratify = y
        return train_test_split(np.arange(len(y)), test_size=self.validation_fraction, random_state=self.seed,
                                shuffle=True, stratify=stratify)

    def _train_network(self, x: np.ndarray, target: np.ndarray, seconds: float, x_val: np.ndarray | None = None,
                       target_val: np.ndarray | None = None, *, quiet: bool = False) -> tuple[Any, dict]:
        """The fusion network on (x, target), early-stopped on (x_val, target_val) or else on rows held out of x
        (``quiet``: no log line per epoch, for the cross-validation's networks)."""
        from .fusion import FusionNetwork
        if x_val is None:
            fit_rows, held_out = self._hold_out(target)
            x, target, x_val, target_val = x[fit_rows], target[fit_rows], x[held_out], target[held_out]
        return FusionNetwork.train(
            x, target, None if self.problem_type_ == REGRESSION else len(self.classes_), x_val=x_val,
            y_val=target_val, hidden_units=self.hidden_units, learning_rate=self.learning_rate,
            batch_size=self.batch_size, n_epochs=self.n_epochs, patience=self.patience, seed=self.seed,
            time_limit=seconds, quiet=quiet)

    def _fit_ensemble(self, x: np.ndarray, target: np.ndarray) -> WeightedEnsemble:
        regression = self.problem_type_ == REGRESSION
        layout = [[] if regression else e.classes for e in self.experts_]
        return WeightedEnsemble.fit(x, target, layout, None if regression else len(self.classes_))

    def _choose_fusion(self, network: Any, ensemble: WeightedEnsemble, comparison: dict | None, x_val: np.ndarray,
                       y_val: np.ndarray) -> tuple[Any, dict]:
        """The network only when cross-validation says its loss is lower than the weighted ensemble's by more than
        one standard error; else the ensemble, which cannot fall much below the best expert. Without enough rows
        to cross-validate, the ensemble. The held-out rows' losses are reported, not used."""
        regression = self.problem_type_ == REGRESSION
        target = self._fusion_target(y_val)
        held_out = {"network": selection_loss(network.predict(x_val), target, regression),
                    "ensemble": selection_loss(ensemble.predict(x_val), target, regression)}
        better = comparison is not None and comparison["difference"] + comparison["standard_error"] < 0
        chosen = "network" if better else "ensemble"
        weights = ensemble.describe([e.name for e in self.experts_])
        name = "mean squared error (standardised)" if regression else "log-loss"
        if comparison is None:
            log.info("fusion: too few rows to cross-validate the choice; using the weighted ensemble (%s)",
                     ", ".join(f"{k} {v:.2f}" for k, v in weights.items()))
        else:
            log.info("fusion: %d-fold cross-validated %s %.4f for the network, %.4f for the weighted ensemble of the "
                     "experts (%s); difference %+.4f ± %.4f: using the %s", comparison["folds"], name,
                     comparison["loss"]["network"], comparison["loss"]["ensemble"],
                     ", ".join(f"{k} {v:.2f}" for k, v in weights.items()), comparison["difference"],
                     comparison["standard_error"], chosen)
        choice = {"chosen": chosen, "cross_validation": comparison, "validation_loss": held_out,
                  "ensemble_weights": weights}
        unused = [e.name for e, w in zip(self.experts_, ensemble.weights) if w == 0]
        if chosen == "ensemble" and unused:
            log.info("fusion: predictions will not run the experts the ensemble gives no weight: %s",
                     ", ".join(unused))
        return (network if chosen == "network" else ensemble), choice

    def _fusion_target(self, y: np.ndarray) -> np.ndarray:
        """What the fusion network learns: the class index, or the standardised number (so that one learning rate
        and one network size suit prices in the millions and ratings between 1 and 5 alike)."""
        return self._standardised(y) if self.problem_type_ == REGRESSION else y

    def _standardised(self, values: np.ndarray) -> np.ndarray:
        """Numbers on the target's scale → the standardised scale the fusion network works on."""
        return (values - self.target_mean_) / self.target_std_

    def _on_target_scale(self, values: np.ndarray) -> np.ndarray:
        """The inverse of ``_standardised``."""
        return values * self.target_std_ + self.target_mean_

    # ------------------------------------------------------------------------------------------ features

    def _embedder(self, modality: str) -> Any:
        key = (modality, self.image_model if modality == "image" else self.text_model)
        if key not in self._embedders:
            if modality == "image":
                from .images import ImageEmbedder
                self._embedders[key] = ImageEmbedder(self.image_model, batch_size=self.image_batch_size)
            else:
                from .text import TextEmbedder
                self._embedders[key] = TextEmbedder(self.text_model, batch_size=self.text_batch_size)
        return self._embedders[key]

    def _embed(self, features: Features, only: set[str] | None = None, *, images: ImageSource | None = None,
               bad: list[dict] | None = None, data: str = "") -> dict[str, np.ndarray]:
        """Embeddings of the image columns (and of the text columns with a text encoder), streamed in batches;
        with ``only``, of those columns alone. Images are read through ``images`` (None: base64 and S3 only); with
        ``bad`` (a list), an image value that gives none is appended to it (see ``_bad_image``) and counts as
        missing."""
        if images is None:
            with ImageSource() as own:
                return self._embed(features, only, images=own, bad=bad, data=data)
        out = {}
        for name in self.views_.embedded_columns():
            if only is not None and name not in only:
                continue
            values = features.values[name].tolist()
            if self.views_.modality[name] == "image":
                out[name] = self._embedder("image").embed(
                    values, column=name, source=images, first_row=features.first_row,
                    row_names=lambda position: describe_row(position, features.ids, features.first_row),
                    on_bad=None if bad is None else functools.partial(_bad_image, bad, features, name, data))
            else:
                out[name] = self._embedder("text").embed(values, column=name)
        return out

    def _fusion_inputs(self, features: Features, embeddings: dict[str, np.ndarray], *,
                       needed: list[bool] | None = None) -> np.ndarray:
        """The experts' outputs side by side (then the missing fractions, for models that use them). With
        ``needed``, an expert marked False is not run: zeros stand in for its outputs. Full image embeddings in
        ``embeddings`` are replaced by their principal components (``Views.reduce``)."""
        needed = needed or [True] * len(self.experts_)
        self.views_.reduce(embeddings)
        outputs = [e.outputs(self.views_.frame(e.spec, features, embeddings)) if use
                   else np.zeros((len(features.values), max(len(e.classes), 1)))
                   for e, use in zip(self.experts_, needed)]
        return self._inputs(outputs, features)

    def _experts_the_fusion_uses(self) -> list[bool]:
        """Per expert, whether the fused prediction depends on it: the network uses every one, the weighted
        ensemble only those it gave weight (predicting with the others would cost time for nothing)."""
        if isinstance(self.fusion_, WeightedEnsemble):
            return [bool(w > 0) for w in self.fusion_.weights]
        return [True] * len(self.experts_)

    def _inputs(self, outputs: list[np.ndarray], features: Features) -> np.ndarray:
        """The fusion network's inputs from the experts' outputs (probabilities, or predictions standardised like
        the target) and the rows' missing values."""
        if self.problem_type_ == REGRESSION:
            outputs = [self._standardised(o) for o in outputs]
        return np.hstack(outputs + self._missing_inputs(features))

    def _missing_inputs(self, features: Features) -> list[np.ndarray]:
        if not self.fusion_missing_inputs_:
            return []
        return [missing_fractions(features, [e.spec for e in self.experts_])]

    # ------------------------------------------------------------------------------------------ predicting

    def _is_fitted(self) -> bool:
        return getattr(self, "fusion_", None) is not None

    def _check_fitted(self) -> None:
        if not self._is_fitted():
            raise NotFittedError(f"this {type(self).__name__} is not fitted: call fit() or "
                                 f"{type(self).__name__}.load()")

    @_ClassificationOnly
    def predict_proba(self, df: pd.DataFrame, *, images: str | Path | None = None) -> pd.DataFrame:
        """Class probabilities: one column per original class label, index aligned with ``df`` (classification
        only). ``images``: the directory relative ``_image`` paths point into."""
        self._check_fitted()
        if len(df) == 0:
            return pd.DataFrame(np.empty((0, len(self.classes_))), index=df.index, columns=pd.Index(self.classes_))
        proba = self.fusion_.predict(self._prepared_inputs(df, images))
        return pd.DataFrame(proba, index=df.index, columns=pd.Index(self.classes_))

    def predict(self, df: pd.DataFrame, *, images: str | Path | None = None) -> pd.Series:
        """Per row: the most probable class, in the training labels' own values (named ``label``), or for
        regression the predicted number (float, named ``prediction``). ``images``: the directory relative
        ``_image`` paths point into."""
        self._check_fitted()
        if self.problem_type_ == REGRESSION:
            values = self._predicted(self._prepared_inputs(df, images)) if len(df) else np.empty(0)
            return pd.Series(values, index=df.index, name=PREDICTION, dtype=np.float64)
        proba = self.predict_proba(df, images=images)
        return pd.Series(np.asarray(self.classes_, dtype=object)[proba.to_numpy().argmax(axis=1)],
                         index=df.index, name=LABEL_COLUMN)

    def _prepared_inputs(self, df: pd.DataFrame, images: str | Path | None) -> np.ndarray:
        features = prepare_features(df, self.schema_)
        needed = self._experts_the_fusion_uses()
        columns = {c for e, use in zip(self.experts_, needed) if use for c in e.spec.columns}
        with ImageSource(images) as source:
            embeddings = self._embed(features, only=columns, images=source)
        return self._fusion_inputs(features, embeddings, needed=needed)

    def _predicted(self, x: np.ndarray) -> np.ndarray:
        """Regression: the fusion network's standardised output back on the target's scale."""
        return self._on_target_scale(self.fusion_.predict(x)[:, 0].astype(np.float64))

    def evaluate(self, df: pd.DataFrame, *, images: str | Path | None = None) -> dict:
        """Scores of the fused model and of each expert alone (under ``experts``) on the rows of ``df`` that have a
        label: accuracy, balanced_accuracy, log_loss and the confusion matrix for classes; rmse, mae and r2 for
        regression."""
        self._check_fitted()
        source = "the evaluation data"
        if LABEL_COLUMN not in df.columns:
            raise DataError(f"{source} has no {LABEL_COLUMN!r} column: evaluate() scores predictions against it",
                            column=LABEL_COLUMN)
        if self.problem_type_ == REGRESSION:
            ids = df[ID_COLUMN] if ID_COLUMN in df.columns else None
            y, labelled = numeric_targets(df[LABEL_COLUMN], numbers=np.arange(len(df)), ids=ids, source=source)
        else:
            y, labelled = labels_to_indices(df[LABEL_COLUMN], self.classes_, source=source)
            y = y[labelled]
        features = prepare_features(df.loc[labelled], self.schema_, source=source)
        with ImageSource(images) as reader:
            embeddings = self._embed(features, images=reader)
        return self._scores(y, self._fusion_inputs(features, embeddings))

    def _scores(self, y: np.ndarray, x: np.ndarray) -> dict:
        if self.problem_type_ == REGRESSION:
            scores = regression_scores(y, self._predicted(x))
            scores["experts"] = {e.name: regression_scores(y, self._on_target_scale(x[:, i]))
                                 for i, e in enumerate(self.experts_)}
            return scores
        n_classes = len(self.classes_)
        proba = self.fusion_.predict(x)
        scores = classification_scores(y, proba, n_classes)
        # rows: true class, columns: predicted class, both in the order of classes_
        scores["confusion_matrix"] = confusion_matrix(y, proba.argmax(axis=1), n_classes).tolist() if len(y) else []
        each = each_expert_probabilities(x, [e.classes for e in self.experts_], n_classes)
        scores["experts"] = {expert.name: classification_scores(y, proba, n_classes)
                             for expert, proba in zip(self.experts_, each)}
        return scores

    # ------------------------------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> int:
        """Write the model directory; returns its size in bytes. model_config.json is written last."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / artifact.CONFIG_FILE).unlink(missing_ok=True)
        for expert in self.experts_:
            target = path / artifact.EXPERTS_DIR / expert.name
            if expert.path.resolve() != target.resolve():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(expert.path, target)
        shutil.rmtree(path / artifact.FUSION_DIR, ignore_errors=True)  # a network or an ensemble, not both
        self.fusion_.save(path / artifact.FUSION_DIR)
        reducers = {}
        for i, (column, reducer) in enumerate(sorted(self.views_.reducers.items())):
            reducers[column] = f"{artifact.REDUCERS_DIR}/{i}.npz"
            reducer.save(path / reducers[column])
        config = {
            "format": artifact.FORMAT,
            "format_version": artifact.FORMAT_VERSION,
            "schema": self.schema_.to_json(),
            "problem_type": self.problem_type_,
            **({"target": {"mean": self.target_mean_, "std": self.target_std_}} if self.problem_type_ == REGRESSION
               else {"classes": self.classes_}),
            "hyperparameters": self.get_params(),
            "experts": [{**e.spec.to_json(), "classes": e.classes, "path": f"{artifact.EXPERTS_DIR}/{e.name}"}
                        for e in self.experts_],
            "reducers": reducers,
            "reduced_embeddings": sorted(self.views_.reduced),
            "fusion": {"path": artifact.FUSION_DIR, "missing_fractions": self.fusion_missing_inputs_},
            "metrics": self.metrics_,
            "versions": _versions(),
        }
        tmp = path / (artifact.CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(to_json(config), indent=2), encoding="utf-8")
        tmp.replace(path / artifact.CONFIG_FILE)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        log.info("saved model to %s (%.1f MB)", path, size / 1e6)
        return size

    @classmethod
    def load(cls, path: str | Path) -> "MultimodalEstimator":
        """Read a model directory written by ``save`` (``MultimodalEstimator.load`` reads either kind; the
        subclasses only their own).

        Prediction needs neither TensorFlow nor Keras (the fusion network runs in numpy), nor torch unless the
        model has an image column or an expert of its own uses torch; loading imports only AutoGluon and the
        libraries of the model families the experts were trained with.
        """
        with _gc_paused():
            return cls._load(Path(path))

    @classmethod
    def _load(cls, path: Path) -> "MultimodalEstimator":
        config = _read_config(path)
        model = cls._from_config(config, path)
        model.schema_ = Schema.from_json(config["schema"])
        model.views_ = Views(model.schema_, text_model=model.text_model, joint_dims=model.joint_embedding_dims,
                             reducers={c: Reducer.load(path / p) for c, p in config.get("reducers", {}).items()},
                             reduced=config.get("reduced_embeddings", []))
        model.missing_indicators_ = next((e.get("indicators", []) for e in config["experts"] if e["modality"] == "num"),
                                         [])
        model.fusion_missing_inputs_ = bool(config["fusion"].get("missing_fractions", False))
        model.metrics_ = config.get("metrics", {})
        model.leaderboards_ = {}
        model.experts_ = []
        with shared_autogluon_metadata():
            for entry in config["experts"]:
                spec = ExpertSpec.from_json(entry)
                try:
                    model.experts_.append(Expert.load(spec, path / entry["path"], [int(c) for c in entry["classes"]]))
                except Exception as exc:
                    trained = config.get("versions", {})
                    raise ValueError(f"cannot load expert {spec.name!r} from {path / entry['path']}: {exc}. The model "
                                     f"was trained with autogluon.tabular {trained.get('autogluon.tabular')}; this "
                                     f"environment has {_versions().get('autogluon.tabular')}") from exc
        model.fusion_ = load_fusion(path / config["fusion"]["path"])
        return model

    @classmethod
    def _from_config(cls, config: dict, path: Path) -> "MultimodalEstimator":
        """An instance of ``cls`` with the saved hyperparameters and problem type (models saved before regression
        existed hold classes)."""
        extra = artifact.VERSION_1_HYPERPARAMETERS if config["format_version"] == 1 else {}
        problem = config.get("problem_type") or ("binary" if len(config["classes"]) == 2 else "multiclass")
        family = REGRESSION if problem == REGRESSION else "classification"
        if not cls._accepts(family):
            raise ValueError(f"{path} holds a {'regression' if family == REGRESSION else 'classification'} model: "
                             f"load it with MultimodalEstimator.load (either kind) or "
                             f"{'MultimodalRegressor' if family == REGRESSION else 'MultimodalClassifier'}.load")
        model = cls(**{**artifact.ADDED_HYPERPARAMETERS, **config["hyperparameters"], **extra})
        model.problem_type_ = problem
        if family == REGRESSION:
            model.target_mean_, model.target_std_ = float(config["target"]["mean"]), float(config["target"]["std"])
        else:
            model.classes_ = config["classes"]
        return model


def _bad_image(bad: list[dict], features: Features, column: str, data: str, position: int, value: str,
               reason: str) -> None:
    """``bad_images="missing"``: the image counts as missing (so the 'insufficient information' rules see it),
    and is recorded for ``bad_images_`` (the training job's bad_images.csv)."""
    features.missing.iloc[position, features.missing.columns.get_loc(column)] = True
    ids = features.ids
    bad.append({"data": data, "row": features.first_row + position + 1,
                "ID": None if ids is None else str(ids.iloc[position]), "column": column,
                "reference": describe_reference(value), "reason": reason})
    if len(bad) <= BAD_IMAGES_LOGGED:
        log.warning("%s: column %r, %s: %s: %s; counted as a missing image (bad_images=missing)%s", data, column,
                    describe_row(position, ids, features.first_row), describe_reference(value), reason,
                    "; further ones are only counted" if len(bad) == BAD_IMAGES_LOGGED else "")


def _as_batches(data: Any, name: str) -> Iterable[pd.DataFrame]:
    if isinstance(data, pd.DataFrame):
        return frame_batches(data)
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(f"{name} must be a pandas DataFrame or an iterable of DataFrames (batches of rows), not "
                        f"{type(data).__name__}")
    return data


def _signature() -> inspect.Signature:
    """``__init__``'s signature, generated from the spec file: every hyperparameter keyword-only, with its default
    (so that ``help()``, IDEs reading it at run time and scikit-learn's ``clone`` see the real parameters)."""
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=hp.default_value,
                                     annotation=hp.python_type.__name__) for name, hp in specification().items()]
    return inspect.Signature(parameters, return_annotation="None")


def _parameter_docs(cls: type) -> str:
    lines = ["", "    Parameters (from hyperparameter_specification.json)", "    " + "-" * 51]
    for name, hp in specification().items():
        values = [v for v in hp.values if v in cls.problem_types] if name == "problem_type" else hp.values
        allowed = f"one of {', '.join(values)}" if values else (
            f"{hp.minimum:g} to {hp.maximum:g}" if hp.minimum is not None else "free text")
        lines.append(f"    {name} : {hp.python_type.__name__}, default {hp.default_value!r} ({allowed})")
        lines.append(f"        {hp.description}")
    return "\n".join(lines) + "\n"


class MultimodalClassifier(MultimodalEstimator):
    """``MultimodalEstimator`` for labels that are classes: ``problem_type`` ``auto`` (binary or multiclass from
    the number of classes, whatever the labels look like), ``binary`` or ``multiclass``."""

    problem_types = ("auto", *CLASSIFICATION)


class MultimodalRegressor(MultimodalEstimator):
    """``MultimodalEstimator`` for a numeric label: ``predict`` returns numbers, there is no ``predict_proba``;
    ``problem_type`` is ``auto`` or ``regression`` (the same)."""

    problem_types = ("auto", REGRESSION)


for _cls in (MultimodalEstimator, MultimodalClassifier, MultimodalRegressor):
    _cls.__init__.__signature__ = _signature()  # type: ignore[attr-defined]
    _cls.__doc__ = (_cls.__doc__ or "") + _parameter_docs(_cls)


def _read_config(path: Path) -> dict:
    config_path = path / artifact.CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: {path} is not a model saved by MultimodalEstimator "
                                "(for SageMaker, the contents of model.tar.gz must be extracted there)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{config_path} is not readable JSON ({exc}): the model directory is damaged or was "
                         "copied incompletely; extract model.tar.gz again, or retrain") from exc
    if not isinstance(config, dict) or config.get("format") != artifact.FORMAT:
        raise ValueError(f"{config_path} is not a multimodal model artifact")
    if config.get("format_version") not in artifact.READABLE_VERSIONS:
        raise ValueError(
            f"model artifact format version {config.get('format_version')} cannot be loaded by multimodal "
            f"{__version__}, which reads versions {', '.join(map(str, artifact.READABLE_VERSIONS))}: retrain the model "
            f"with this version, or serve it with the version that trained it "
            f"({config.get('versions', {}).get('multimodal')})")
    return config


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


def _versions() -> dict[str, str]:
    versions = {"multimodal": __version__, "python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
