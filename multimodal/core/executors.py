"""Where the rows are read and the experts fitted: on this machine (``LocalExecutor``) or across the machines of
a Ray cluster (``RayClusterExecutor``). The estimator is handed one and calls the same two steps on either; what
happened where comes back as the executor's ``report`` (the cluster's hosts and times), never written onto the
model by the executor itself."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import artifact
from .cluster import ClusterData, fit_experts_on_cluster, ingest_on_nodes, spread
from .experts import Expert, ExpertJob, ExpertSpec
from .featurize import Featurizer, read_local
from .ingest import Rows
from .parallel import fold_strategy, local_ray
from .selection import here
from .timebudget import TimeBudget
from .views import Views

log = logging.getLogger(__name__)

Frames = Callable[[ExpertSpec], pd.DataFrame]  # an expert's input frame of the training rows
Options = Callable[[ExpertSpec], dict[str, Any]]  # Expert.fit's keyword arguments from the hyperparameters
Fitted = list[tuple[Expert, np.ndarray]]  # (expert, its out-of-fold outputs), in the order of the jobs
OnFitted = Callable[[ExpertJob, Expert, np.ndarray], None]  # called as soon as each expert is fitted


class LocalExecutor:
    """Everything on this machine: the experts one after another, each one's folds side by side with Ray when
    ``parallel_folds`` says so."""

    distributed = False
    submit = staticmethod(here)  # the fusion's fits, one after another

    def __init__(self, parallel_folds: str) -> None:
        self.parallel_folds = parallel_folds
        self.report: dict[str, Any] = {}

    def read(self, featurizer: Featurizer, train: Any, validation: Any, images: str | Path | None
             ) -> tuple[Views, Rows, Rows | None]:
        return read_local(featurizer, train, validation, images)

    def fit_experts(self, jobs: list[ExpertJob], frames: Frames, options: Options, budget: TimeBudget,
                    workdir: Path, on_fitted: OnFitted | None = None, stage: str = "experts") -> Fitted:
        strategy = fold_strategy(self.parallel_folds)
        results = []
        with local_ray(strategy):
            for i, job in enumerate(jobs):
                share = budget.expert_share(job.spec, [j.spec for j in jobs[i:]])
                log.info("expert %s: fitting on %d column(s), %d rows lack this modality, time limit %.0f s",
                         job.spec.name, len(job.spec.columns), job.lacking, share)
                results.append(Expert.fit(job.spec, frames(job.spec), job.target,
                                          path=workdir / artifact.EXPERTS_DIR / job.spec.name, time_limit=share,
                                          fold_strategy=strategy, **options(job.spec)))
                if on_fitted is not None:
                    on_fitted(job, *results[-1])
        return results


class RayClusterExecutor:
    """The machines of a Ray cluster this process is connected to read and embed their own rows; one Ray task per
    expert fits it on the machine it lands on (``multimodal.core.cluster``). ``report``: per host, the rows it
    embedded and the experts it fitted, with their times, and where each of the fusion's fits ran."""

    distributed = True

    def __init__(self, data: ClusterData, parallel_folds: str) -> None:
        self.data = data
        self.parallel_folds = parallel_folds
        self.report: dict[str, Any] = {}

    def submit(self, function: Callable[[], Any], what: str) -> Any:
        """The fusion's fits, side by side on the machines; the report's ``fusion`` says where each ran."""
        return spread(function, what, self.report.setdefault("fusion", []))

    def read(self, featurizer: Featurizer, train: Any, validation: Any, images: str | Path | None
             ) -> tuple[Views, Rows, Rows | None]:
        if validation is not None or images is not None:
            raise TypeError("with ClusterData the validation rows and the image directory are part of it "
                            "(NodeData.validation, NodeData.images), not separate arguments")
        schema, rows, validation_rows, stats, bad = ingest_on_nodes(featurizer.params, self.data)
        featurizer.bad_images.extend(bad)
        self.report["embedding"] = stats
        return featurizer.views(schema), rows, validation_rows

    def fit_experts(self, jobs: list[ExpertJob], frames: Frames, options: Options, budget: TimeBudget,
                    workdir: Path, on_fitted: OnFitted | None = None, stage: str = "experts") -> Fitted:
        """``stage``: the key of ``report`` for these experts' hosts and times (``experts``, then ``leftover``
        for the joint expert fitted again with the time the others left)."""
        results, self.report[stage] = fit_experts_on_cluster(jobs, frames, options, budget, workdir,
                                                             self.parallel_folds, on_fitted)
        return results


def executor_for(train: Any, parallel_folds: str) -> LocalExecutor | RayClusterExecutor:
    """The cluster's executor for ``ClusterData``, this machine's for anything else."""
    if isinstance(train, ClusterData):
        return RayClusterExecutor(train, parallel_folds)
    return LocalExecutor(parallel_folds)
