"""What a fit keeps in its checkpoint directory (``multimodal.core.checkpoints``) and takes back from it: the
training rows as read and embedded, each fitted expert, the fusion. The estimator calls ``FitCheckpoints``
(or ``NoCheckpoints``, the same calls doing nothing) at each of these steps.

Keys: the rows by the data's fingerprint, the reading and embedding hyperparameters and the encoder that would
embed here (a restart on another kind of machine embeds again: its embeddings would differ in the last bits); an
expert by its input frame's and target's digests, what it is and every hyperparameter; the fusion by the
experts' keys, its inputs and every hyperparameter. Every key includes this code's version.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import artifact, runtimes
from .checkpoints import (
    Checkpoints,
    array_digest,
    code_version,
    digest,
    frame_digest,
    listing_digest,
    read_pickle,
    write_pickle,
)
from .executors import Frames, Options
from .experts import Expert, ExpertJob
from .ingest import Rows
from .selection import load_fusion
from .timebudget import TimeBudget
from .views import Views

log = logging.getLogger(__name__)

ROWS = "rows"
FUSION = "fusion"


def checkpoints_for(checkpoints: str | Path | Checkpoints | None, train: Any, validation: Any,
                    images: str | Path | None) -> Checkpoints | None:
    """``fit``'s ``checkpoints`` argument as a store; for DataFrames the data's fingerprint is computed here (the
    image files of an ``images`` directory by their names and sizes)."""
    if checkpoints is None or isinstance(checkpoints, Checkpoints):
        return checkpoints
    data = None
    if isinstance(train, pd.DataFrame) and (validation is None or isinstance(validation, pd.DataFrame)):
        data = digest([frame_digest(train), None if validation is None else frame_digest(validation),
                       None if images is None else listing_digest(Path(images))])
    else:
        log.info("checkpoints: the training data is not a DataFrame, so it has no fingerprint here: the rows will "
                 "be read and embedded again on a restart (give Checkpoints(directory, data=fingerprint) to keep "
                 "them)")
    return Checkpoints(checkpoints, data=data)


class NoCheckpoints:
    """A fit without a checkpoint directory: nothing is kept or taken back."""

    def open(self, params: dict[str, Any]) -> float:
        return 0.0

    def spent(self, seconds: float) -> None:
        pass

    def read(self, executor: Any, featurizer: Any, train: Any, validation: Any, images: str | Path | None,
             budget: TimeBudget) -> tuple[Views, Rows, Rows | None]:
        """(views, training rows, validation rows), read and embedded by ``executor``."""
        return executor.read(featurizer, train, validation, images)

    def fit_experts(self, executor: Any, jobs: list[ExpertJob], frames: Frames, options: Options,
                    budget: TimeBudget, workdir: Path, stage: str = "experts"
                    ) -> tuple[list[tuple[Expert, np.ndarray]], list[str | None]]:
        """((expert, out-of-fold outputs) per job, in order; each one's key), fitted by ``executor`` (``stage``
        names them in its report)."""
        return executor.fit_experts(jobs, frames, options, budget, workdir, stage=stage), [None] * len(jobs)

    def fusion(self, expert_keys: list[str | None], x: np.ndarray, validation: Any) -> dict | None:
        return None

    def save_fusion(self, model: Any, seconds: float) -> None:
        pass

    def summary(self) -> dict[str, Any] | None:
        return None


class FitCheckpoints(NoCheckpoints):
    """The steps of a fit kept in and taken back from ``store``."""

    def __init__(self, store: Checkpoints) -> None:
        self.store = store
        self.params: dict[str, Any] = {}
        self._fusion_key: str | None = None

    def open(self, params: dict[str, Any]) -> float:
        self.params = dict(params)
        return self.store.open(self.params)

    def spent(self, seconds: float) -> None:
        """Record the budget seconds spent so far (counting earlier attempts)."""
        self.store.record_spent(seconds)

    def read(self, executor: Any, featurizer: Any, train: Any, validation: Any, images: str | Path | None,
             budget: TimeBudget) -> tuple[Views, Rows, Rows | None]:
        """As an earlier attempt read and embedded them, else read, embedded and kept."""
        saved = self.rows(featurizer)
        if saved is not None:
            schema, train_rows, validation_rows, bad = saved
            featurizer.bad_images.extend(bad)
            return featurizer.views(schema), train_rows, validation_rows
        views, train_rows, validation_rows = executor.read(featurizer, train, validation, images)
        self.save_rows(featurizer, (views.schema, train_rows, validation_rows, list(featurizer.bad_images)),
                       budget.elapsed())
        return views, train_rows, validation_rows

    def fit_experts(self, executor: Any, jobs: list[ExpertJob], frames: Frames, options: Options,
                    budget: TimeBudget, workdir: Path, stage: str = "experts"
                    ) -> tuple[list[tuple[Expert, np.ndarray]], list[str | None]]:
        """The experts an earlier attempt fitted are taken back; the others are fitted by ``executor``, each kept
        as soon as it is done."""
        keys = {j.spec.name: self.expert_key(j, frames(j.spec), options(j.spec)) for j in jobs}
        done = {j.spec.name: self.expert(j, keys[j.spec.name], workdir / artifact.EXPERTS_DIR) for j in jobs}

        def fitted(job: ExpertJob, expert: Expert, oof: np.ndarray) -> None:
            self.save_expert(keys[job.spec.name], expert, oof)
            self.spent(budget.elapsed())

        remaining = [j for j in jobs if done[j.spec.name] is None]
        if remaining:
            for job, result in zip(remaining, executor.fit_experts(remaining, frames, options, budget, workdir,
                                                                   on_fitted=fitted, stage=stage)):
                done[job.spec.name] = result
        return [done[j.spec.name] for j in jobs], list(keys.values())

    # ------------------------------------------------------------------------------------------ rows

    def _rows_key(self, featurizer: Any) -> str | None:
        if self.store.data is None:
            return None
        return digest(code_version(), self.store.data, featurizer.params, runtimes.choose().describe())

    def rows(self, featurizer: Any) -> tuple | None:
        """(schema, training rows, validation rows, bad images) as an earlier attempt read and embedded them."""
        key = self._rows_key(featurizer)
        saved = None if key is None else self.store.load_object(ROWS, key)
        if saved is not None:
            log.info("training rows: %d, read and embedded by an earlier attempt (checkpoint %s): not read again",
                     len(saved[1]), ROWS)
        return saved

    def save_rows(self, featurizer: Any, rows: tuple, seconds: float) -> None:
        key = self._rows_key(featurizer)
        if key is not None:
            self.store.save_object(ROWS, key, rows, seconds=round(seconds, 2))
            self.spent(seconds)

    # ------------------------------------------------------------------------------------------ experts

    def expert_key(self, job: ExpertJob, frame: pd.DataFrame, options: dict[str, Any]) -> str:
        return digest(code_version(), job.spec.to_json(), frame_digest(frame), array_digest(job.target), options,
                      self.params)

    def expert(self, job: ExpertJob, key: str, workdir: Path) -> tuple[Expert, np.ndarray] | None:
        """The expert of ``job`` as an earlier attempt fitted it, unpacked under ``workdir``; None if not kept."""
        def read(entry: Path) -> tuple[Expert, np.ndarray]:
            state = read_pickle(entry / "expert.pkl")
            path = workdir / job.spec.name
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(entry / "predictor", path)
            expert = Expert.load(job.spec, path, state["classes"])
            expert.leaderboard = state["leaderboard"]
            return expert, state["oof"]

        name = f"expert-{job.spec.name}"
        kept = self.store.load(name, key, read)
        if kept is not None:
            log.info("expert %s: fitted by an earlier attempt (checkpoint %s): not fitted again", job.spec.name, name)
        return kept

    def save_expert(self, key: str, expert: Expert, oof: np.ndarray) -> None:
        def write(directory: Path) -> None:
            shutil.copytree(expert.path, directory / "predictor")
            write_pickle(directory / "expert.pkl", {"classes": expert.classes, "oof": oof,
                                                    "leaderboard": expert.leaderboard})
        self.store.save(f"expert-{expert.name}", key, write, expert=expert.name)

    # ------------------------------------------------------------------------------------------ fusion

    def fusion(self, expert_keys: list[str | None], x: np.ndarray, validation: Any) -> dict | None:
        """The fusion an earlier attempt fitted on the same experts, inputs and ``validation`` rows (features and
        targets, or None): {"fusion_": ..., "metrics_": ..., and ``validation_predictions_`` for a regressor};
        None if not kept."""
        rows = None if validation is None else [frame_digest(validation.features.values), array_digest(validation.y)]
        self._fusion_key = digest(code_version(), expert_keys, array_digest(x), rows, self.params)
        state = self.store.load(FUSION, self._fusion_key,
                                lambda entry: {**read_pickle(entry / "state.pkl"),
                                               "fusion_": load_fusion(entry / "fusion")})
        if state is not None:
            log.info("fusion: fitted by an earlier attempt (checkpoint %s): not fitted again", FUSION)
        return state

    def save_fusion(self, model: Any, seconds: float) -> None:
        if self._fusion_key is None:
            return

        def write(directory: Path) -> None:
            model.fusion_.save(directory / "fusion")
            state = {"metrics_": model.metrics_}
            if hasattr(model, "validation_predictions_"):
                state["validation_predictions_"] = model.validation_predictions_
            write_pickle(directory / "state.pkl", state)
        self.store.save(FUSION, self._fusion_key, write)
        self.spent(seconds)

    def summary(self) -> dict[str, Any]:
        """For ``metrics_``: the directory, the pieces reused and the pieces written."""
        return {"directory": str(self.store.directory), "resumed": list(self.store.resumed),
                "saved": list(self.store.saved)}


def fit_checkpoints(checkpoints: str | Path | Checkpoints | None, train: Any, validation: Any,
                    images: str | Path | None) -> NoCheckpoints:
    """What ``fit`` keeps and takes back for its ``checkpoints`` argument; without a usable directory, nothing (a
    directory that cannot be created is logged, not fatal: the fit runs as without one)."""
    store = checkpoints_for(checkpoints, train, validation, images)
    if store is None:
        return NoCheckpoints()
    try:
        store.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("checkpoints: %s cannot be created (%s): the fit keeps no checkpoints", store.root, exc)
        return NoCheckpoints()
    return FitCheckpoints(store)
