"""The estimator that the training job, the server and the CLI call: ``MultimodalEstimator`` (classes or a
number, by ``problem_type``), and its restrictions ``MultimodalClassifier`` and ``MultimodalRegressor``.

Here: the public API and the fit's sequence. What differs between classes and a number is the fitted ``target_``
(``multimodal.core.targets``); reading and embedding rows, ``multimodal.core.featurize``; where the work runs
(this machine or a Ray cluster), an executor (``multimodal.core.executors``); the fusion's fit,
``multimodal.core.selection``; the model directory, ``multimodal.core.persistence``.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np
import pandas as pd

from . import leftover, persistence, selection
from .artifact import CLASSIFICATION, REGRESSION
from .checkpoints import Checkpoints
from .cluster import ClusterData
from .errors import DataError, HyperparameterError, NotFittedError
from .executors import executor_for
from .experts import ExpertJob, ExpertSpec, refits
from .featurize import Featurizer
from .hyperparameters import defaults, init_signature, parameter_docs, resolve, specification, time_budget_seconds
from .imagerefs import ImageSource
from .ingest import Rows
from .resume import NoCheckpoints, fit_checkpoints
from .schema import ID_COLUMN, LABEL_COLUMN, Features, modality_missing_fraction, prepare_features
from .selection import WeightedEnsemble
from .targets import ClassesOnly, Target, choose_problem_type, family_of, fit_target
from .timebudget import TimeBudget
from .views import (FUSION_MISSING_FRACTIONS, JOINT, expert_specs, missing_fractions, missing_indicators,
                    placeholder_rows, reduces_images)

log = logging.getLogger(__name__)

TrainingData = Union[pd.DataFrame, Iterable[pd.DataFrame], ClusterData]


@dataclass
class _Split:
    """Rows with their features, image embeddings and targets (class indices, or numbers for regression)."""

    features: Features
    embeddings: dict[str, np.ndarray]
    y: np.ndarray


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
    ``experts_``, ``fusion_``, ``metrics_`` (training and validation scores, timings, the fusion's training curve),
    ``leaderboards_`` (AutoGluon's, per expert), ``encoders_`` (how the encoders ran in training); for regression
    ``target_mean_`` and ``target_std_`` (the fusion network predicts the standardised target) and, after ``fit``,
    ``validation_predictions_`` (actual and predicted values of the validation rows).
    """

    # the values of problem_type this class accepts (its subclasses restrict them)
    problem_types: tuple[str, ...] = tuple(specification()["problem_type"].values)

    def __init__(self, **hyperparameters: Any) -> None:
        self._set_hyperparameters(resolve(hyperparameters))
        self._featurizer: Featurizer | None = None
        self._workdir: Path | None = None

    def _set_hyperparameters(self, values: dict[str, Any]) -> None:
        if values["problem_type"] not in self.problem_types:
            other = "MultimodalRegressor" if values["problem_type"] == REGRESSION else "MultimodalClassifier"
            raise HyperparameterError(
                f"{type(self).__name__} takes problem_type {' or '.join(self.problem_types)}, not "
                f"{values['problem_type']!r}: use {other} (or MultimodalEstimator, which takes every problem type)")
        for name, value in values.items():
            setattr(self, name, value)
        self._featurizer = None  # the encoders follow the hyperparameters

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
            text += f"  # fitted: {self.target_.kind()}, experts {', '.join(self.expert_names_)}"
        return text

    @property
    def expert_names_(self) -> list[str]:
        self._check_fitted()
        return [e.name for e in self.experts_]

    def _problem_family(self) -> str:
        """``regression`` or ``classification``: what the fitted model is, else what it will be if known."""
        target = getattr(self, "target_", None)
        if target is not None:
            return target.family
        families = self._families()
        if self.problem_type == "auto" and len(families) == 1:  # a MultimodalRegressor (or Classifier) set to auto
            return families.pop()
        return family_of(self.problem_type)  # auto with both families: classes until the labels say otherwise

    @classmethod
    def _families(cls) -> set[str]:
        """The families of models this class fits and loads: ``regression`` and/or ``classification``."""
        return {family_of(p) for p in cls.problem_types if p != "auto"}

    def _get_featurizer(self) -> Featurizer:
        """Reads and embeds rows for this model's hyperparameters (its encoders are loaded once and kept)."""
        if self._featurizer is None:
            self._featurizer = Featurizer.from_params(self.get_params())
        return self._featurizer

    # ------------------------------------------------------------------------------------------ fitting

    def fit(self, train: TrainingData, validation: pd.DataFrame | Iterable[pd.DataFrame] | None = None, *,
            images: str | Path | None = None, checkpoints: str | Path | Checkpoints | None = None
            ) -> "MultimodalEstimator":
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

        ``checkpoints``: a directory (or a ``Checkpoints``) keeping each finished piece (embedded rows, each expert,
        the fusion), so that the same fit started again resumes; the budget counts every attempt's time.
        """
        self._forget_fit()
        kept = fit_checkpoints(checkpoints, train, validation, images)
        budget = TimeBudget(time_budget_seconds(self.get_params()), spent=kept.open(self.get_params()))
        try:
            return self._fit(train, validation, images, budget, kept)
        except BaseException:  # a stop (SIGTERM) included: the next attempt counts the time spent so far
            kept.spent(budget.elapsed())
            raise

    def _fit(self, train: TrainingData, validation: Any, images: str | Path | None, budget: TimeBudget,
             kept: NoCheckpoints) -> "MultimodalEstimator":
        timings: dict[str, float] = {}
        executor = executor_for(train, self.parallel_folds)
        self._get_featurizer().bad_images = self.bad_images_ = []
        self.views_, train_rows, validation_rows = kept.read(executor, self._get_featurizer(), train, validation,
                                                             images, budget)
        self.schema_ = self.views_.schema
        self.encoders_ = self._get_featurizer().encoders(self.views_)
        train_split, validation_split = self._label(train_rows, validation_rows)
        del train_rows, validation_rows
        timings["embed"] = budget.elapsed()
        t = time.monotonic()
        oof, keys = self._fit_experts(train_split, budget, executor, kept)
        timings["experts"] = time.monotonic() - t
        t = time.monotonic()
        restored = kept.fusion(keys, oof, validation_split)
        if restored is None:
            self._fit_fusion(train_split, oof, validation_split, budget, executor.submit)
            kept.save_fusion(self, budget.elapsed())
        for name, value in (restored or {}).items():  # fusion_, metrics_ (and validation_predictions_)
            setattr(self, name, value)
        timings["fusion"] = time.monotonic() - t
        timings["total"] = budget.elapsed()
        self.metrics_["timings_seconds"] = {k: round(v, 2) for k, v in timings.items()}
        self.metrics_["time_budget_seconds"] = budget.total
        self.metrics_["bad_images"] = len(self.bad_images_)
        self.metrics_.update({"checkpoints": kept.summary()} if kept.summary() else {})
        self.metrics_.update({"leftover": self._leftover} if self._leftover else {})
        if self.bad_images_:
            log.warning("%d image value(s) gave no image and were counted as missing images (bad_images=missing; "
                        "listed in bad_images_)", len(self.bad_images_))
        if executor.distributed:
            self.cluster_report_ = self.metrics_["cluster"] = executor.report
        headline = self.target_.headline
        log.info("fit done in %.1f s (budget %.0f s): validation %s %.4f", timings["total"], budget.total, headline,
                 self.metrics_["validation"][headline])
        return self

    def _forget_fit(self) -> None:
        """Drop what an earlier fit set: a new fit starts from the hyperparameters alone (its problem type may
        differ), and a fit that fails leaves an unfitted estimator, never a mix of two fits."""
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
            delattr(self, name)

    def _label(self, train: Rows, validation: Rows | None) -> tuple[_Split, _Split | None]:
        """The targets of the labelled rows (the others are dropped); sets ``target_`` (and with it
        ``problem_type_`` and ``classes_`` or the target's scale), and what depends on the training rows."""
        if len(train) == 0:
            raise DataError("the training data has a header but no data rows: add training examples, one per row")
        target, y, labelled = fit_target(self._choose_problem_type(train.labels), train.labels, numbers=train.numbers,
                                         ids=train.features.ids, source="the training data")
        self._set_target(target)
        if not labelled.all():  # a copy of every embedding matrix, only when rows are dropped
            train = train.take(labelled)
        self.missing_indicators_ = missing_indicators(self.schema_, train.features)
        self.fusion_missing_inputs_ = FUSION_MISSING_FRACTIONS or target.missing_fractions_as_inputs
        log.info("training data: %d rows, %s (%s), columns: %s", len(train), target.describe(), target.problem_type,
                 ", ".join(f"{m}={len(self.schema_.names(m))}" for m in ("text", "num", "cat", "image")))
        if validation is not None and len(validation) == 0:
            log.warning("the validation data has no rows: ignored")
        if validation is None or len(validation) == 0:
            return _Split(train.features, train.embeddings, y), None
        y_val, present = target.encode(validation.labels, numbers=validation.numbers, ids=validation.features.ids,
                                       source="the validation data")
        validation = validation.take(present)
        log.info("validation data: %d rows", len(validation))
        return _Split(train.features, train.embeddings, y), _Split(validation.features, validation.embeddings, y_val)

    def _set_target(self, target: Target) -> None:
        self.target_ = target
        for name, value in target.attributes().items():
            setattr(self, name, value)

    def _choose_problem_type(self, labels: pd.Series) -> str:
        """``problem_type`` with ``auto`` decided (by this class, or from the labels); classes are refined into
        binary or multiclass by the target."""
        if self.problem_type != "auto":
            return self.problem_type
        families = self._families()
        return families.pop() if len(families) == 1 else choose_problem_type(labels)

    def _fit_experts(self, train: _Split, budget: TimeBudget, executor: Any, kept: NoCheckpoints
                     ) -> tuple[np.ndarray, list[str | None]]:
        """One bagged expert per modality (or kept by an earlier attempt); sets ``experts_`` and ``leaderboards_``;
        returns the experts' out-of-fold outputs side by side (the fusion's training inputs) and their keys."""
        self._workdir, self._leftover = Path(tempfile.mkdtemp(prefix="multimodal-")), None
        weakref.finalize(self, shutil.rmtree, self._workdir, ignore_errors=True)
        specs = expert_specs(self.schema_, indicators=self.missing_indicators_, joint=self.joint_expert)
        image_dims = self.image_embedding_dims if reduces_images(self.reduce_image_embeddings, len(train.y)) else 0
        self.views_.fit_reducers(train.embeddings, image_dims=image_dims, joint=any(s.modality == JOINT for s in specs),
                                 seed=self.seed)
        self.views_.reduce(train.embeddings)  # the full image embeddings are freed here
        jobs = [job for job in (self._expert_job(spec, train) for spec in specs) if job is not None]
        if not jobs:
            raise DataError("every feature column is empty in every training row: nothing to learn from")
        fit = partial(kept.fit_experts, executor, frames=partial(self.views_.frame, features=train.features,
                                                                 embeddings=train.embeddings))
        results, keys = fit(jobs, options=self.expert_options, budget=budget, workdir=self._workdir)
        if self.use_leftover_time:  # the joint expert again at a stronger quality, with the time left
            again = partial(fit, workdir=self._workdir / "leftover")
            results, keys, self._leftover = leftover.spend(jobs, results, keys, self.target_, budget,
                                                           self.expert_options, again)
        self.experts_ = [expert for expert, _ in results]
        self.leaderboards_ = {expert.name: expert.leaderboard for expert, _ in results}
        return self._inputs([oof for _, oof in results], train.features), keys

    def _expert_job(self, spec: ExpertSpec, train: _Split) -> ExpertJob | None:
        """What ``spec``'s expert learns (the target's ``expert_target``); None when its modality is missing in
        every row."""
        missing = modality_missing_fraction(train.features, spec.columns)
        target, insufficient, learnable = self.target_.expert_target(train.y, missing, self.missing_threshold)
        if not learnable:
            log.warning("expert %s skipped: its columns (%s) are missing in every training row", spec.name,
                        ", ".join(spec.columns))
            return None
        return ExpertJob(spec, target, int(insufficient.sum()))

    def expert_options(self, spec: ExpertSpec) -> dict[str, Any]:
        """The keyword arguments of ``Expert.fit`` that come from the hyperparameters."""
        return dict(quality=self.quality, n_folds=self.n_folds, seed=self.seed,
                    refit_full=refits(self.refit_full, self.quality),
                    text_columns=self.views_.raw_text_columns(spec), regression=self.target_.regressor)

    def _fit_fusion(self, train: _Split, x: np.ndarray, validation: _Split | None, budget: TimeBudget,
                    submit: selection.Submit = selection.here) -> None:
        """The fusion on the out-of-fold inputs ``x`` (``selection.fit_fusion``); sets ``fusion_``, ``metrics_``."""
        y, target = train.y, self.target_
        given = None if validation is None else (
            self._fusion_inputs(validation.features, validation.embeddings), validation.y)
        fitted = selection.fit_fusion(x, y, given, target, selection.FusionSettings.from_params(self.get_params()),
                                      [e.classes for e in self.experts_], [e.name for e in self.experts_],
                                      budget.fusion_seconds(), budget.left, submit)
        self.fusion_, fit_rows, x_val, y_val = fitted.fusion, fitted.fit_rows, fitted.x_val, fitted.y_val
        self.metrics_ = {
            "train": self._scores(y[fit_rows], x[fit_rows]),
            "validation": self._scores(y_val, x_val),
            "validation_source": fitted.source,
            "fusion_curve": fitted.curve,
            "fusion_choice": fitted.choice,
            "rows": {"train": int(len(y)), "validation": int(len(y_val))},
        }
        report = target.report(y, y_val, lambda: target.predicted(self.fusion_.predict(x_val)))
        if "validation_predictions" in report:
            self.validation_predictions_ = report.pop("validation_predictions")
        self.metrics_.update(report)

    # ------------------------------------------------------------------------------------------ features

    def _embed(self, features: Features, only: set[str] | None = None, *, images: ImageSource | None = None
               ) -> dict[str, np.ndarray]:
        """Embeddings of the columns the views embed (with ``only``, of those alone): ``Featurizer.embed``."""
        return self._get_featurizer().embed(self.views_, features, only, images=images)

    def _fusion_inputs(self, features: Features, embeddings: dict[str, np.ndarray], *,
                       needed: list[bool] | None = None) -> np.ndarray:
        """The experts' outputs side by side (then the missing fractions, for models that use them). With
        ``needed``, an expert marked False is not run: zeros stand in for its outputs. Full image embeddings in
        ``embeddings`` are replaced by their principal components (``Views.reduce``)."""
        needed = needed or [True] * len(self.experts_)
        self.views_.reduce(embeddings)
        outputs = [e.outputs(self.views_.frame(e.spec, features, embeddings), placeholder_rows(e.spec, features))
                   if use else np.zeros((len(features.values), max(len(e.classes), 1)))
                   for e, use in zip(self.experts_, needed)]
        return self._inputs(outputs, features)

    def _experts_the_fusion_uses(self) -> list[bool]:
        """Per expert, whether the fused prediction depends on it: the network uses every one, the weighted
        ensemble only those it gave weight (predicting with the others would cost time for nothing)."""
        if isinstance(self.fusion_, WeightedEnsemble):
            return [bool(w > 0) for w in self.fusion_.weights]
        return [True] * len(self.experts_)

    def _inputs(self, outputs: list[np.ndarray], features: Features) -> np.ndarray:
        """The fusion's inputs from the experts' outputs (as the target presents them) and, for models that use
        them, the rows' missing fractions per expert."""
        missing = [missing_fractions(features, [e.spec for e in self.experts_])] if self.fusion_missing_inputs_ else []
        return np.hstack(self.target_.fusion_inputs(outputs) + missing)

    # ------------------------------------------------------------------------------------------ predicting

    def _is_fitted(self) -> bool:
        return getattr(self, "fusion_", None) is not None

    def _check_fitted(self) -> None:
        if not self._is_fitted():
            raise NotFittedError(f"this {type(self).__name__} is not fitted: call fit() or "
                                 f"{type(self).__name__}.load()")

    @ClassesOnly
    def predict_proba(self, df: pd.DataFrame, *, images: str | Path | None = None) -> pd.DataFrame:
        """Class probabilities: one column per original class label, index aligned with ``df`` (classification
        only). ``images``: the directory relative ``_image`` paths point into."""
        self._check_fitted()
        return self.target_.probabilities(self._fused(df, images), df.index)

    def predict(self, df: pd.DataFrame, *, images: str | Path | None = None) -> pd.Series:
        """Per row: the most probable class, in the training labels' own values (named ``label``), or for
        regression the predicted number (float, named ``prediction``). ``images``: the directory relative
        ``_image`` paths point into."""
        self._check_fitted()
        return self.target_.predict(self._fused(df, images), df.index)

    def _fused(self, df: pd.DataFrame, images: str | Path | None) -> np.ndarray:
        """The fusion's outputs for the rows of ``df`` (none for no rows: no expert is run)."""
        if len(df) == 0:
            return np.empty((0, self.target_.n_outputs or 1), dtype=np.float32)
        features = prepare_features(df, self.schema_)
        needed = self._experts_the_fusion_uses()
        columns = {c for e, use in zip(self.experts_, needed) if use for c in e.spec.columns}
        with ImageSource(images) as source:
            embeddings = self._embed(features, only=columns, images=source)
        return self.fusion_.predict(self._fusion_inputs(features, embeddings, needed=needed))

    def evaluate(self, df: pd.DataFrame, *, images: str | Path | None = None) -> dict:
        """Scores of the fused model and of each expert alone (under ``experts``) on the rows of ``df`` that have a
        label: accuracy, balanced_accuracy, log_loss and the confusion matrix for classes; rmse, mae and r2 for
        regression."""
        self._check_fitted()
        source = "the evaluation data"
        if LABEL_COLUMN not in df.columns:
            raise DataError(f"{source} has no {LABEL_COLUMN!r} column: evaluate() scores predictions against it",
                            column=LABEL_COLUMN)
        ids = df[ID_COLUMN] if ID_COLUMN in df.columns else None
        y, labelled = self.target_.encode(df[LABEL_COLUMN], numbers=np.arange(len(df)), ids=ids, source=source)
        features = prepare_features(df.loc[labelled], self.schema_, source=source)
        with ImageSource(images) as reader:
            embeddings = self._embed(features, images=reader)
        return self._scores(y, self._fusion_inputs(features, embeddings))

    def _scores(self, y: np.ndarray, x: np.ndarray) -> dict:
        return self.target_.scores(y, self.fusion_.predict(x), x, [e.classes for e in self.experts_],
                                   [e.name for e in self.experts_])

    # ------------------------------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> int:
        """Write the model directory; returns its size in bytes. model_config.json is written last."""
        self._check_fitted()
        return persistence.save(self, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> "MultimodalEstimator":
        """Read a model directory written by ``save`` (``MultimodalEstimator.load`` reads either kind; the
        subclasses only their own).

        Prediction needs neither TensorFlow nor Keras (the fusion network runs in numpy), nor torch unless the
        model has an image column or an expert of its own uses torch; loading imports only AutoGluon and the
        libraries of the model families the experts were trained with.
        """
        return persistence.load_into(cls, Path(path))

    @classmethod
    def _from_saved(cls, target: Target, hyperparameters: dict[str, Any], path: Path) -> "MultimodalEstimator":
        """An instance of ``cls`` with saved hyperparameters and target; a model of the other family is an error
        that names the class to load it with."""
        if target.family not in cls._families():
            loader = "MultimodalRegressor" if target.family == REGRESSION else "MultimodalClassifier"
            raise ValueError(f"{path} holds a {target.family} model: load it with MultimodalEstimator.load (either "
                             f"kind) or {loader}.load")
        model = cls(**hyperparameters)
        model._set_target(target)
        return model


class MultimodalClassifier(MultimodalEstimator):
    """``MultimodalEstimator`` for labels that are classes: ``problem_type`` ``auto`` (binary or multiclass from
    the number of classes, whatever the labels look like), ``binary`` or ``multiclass``."""

    problem_types = ("auto", *CLASSIFICATION)


class MultimodalRegressor(MultimodalEstimator):
    """``MultimodalEstimator`` for a numeric label: ``predict`` returns numbers, there is no ``predict_proba``;
    ``problem_type`` is ``auto`` or ``regression`` (the same)."""

    problem_types = ("auto", REGRESSION)


for _cls in (MultimodalEstimator, MultimodalClassifier, MultimodalRegressor):
    _cls.__init__.__signature__ = init_signature()  # type: ignore[attr-defined]
    _cls.__doc__ = (_cls.__doc__ or "") + parameter_docs(_cls.problem_types)
