"""Greedy ensemble selection over the experts' out-of-fold outputs, and the choice between it and the fusion
network.

A stacker that does worse than one of its inputs is a defect: on small data sets the fusion network can
overfit its few hundred training rows and fall below the best expert alone. The weighted ensemble of Caruana
et al. (2004), the one AutoGluon's ``WeightedEnsemble`` fits, cannot do much worse than its best input on the
rows it is fitted on (one expert with weight 1 is among the ensembles it tries), has one weight per expert
instead of thousands, and needs no training beyond a few dozen passes over a matrix.

The choice is cross-validated (``compare_by_cross_validation``): both are fitted on k - 1 folds of the fusion's
rows and scored on the k-th, so every row gets an out-of-fold loss from each and from their blend (the mean of
the two's outputs, ``Blend``). The choice climbs from the simplest fusion (``chosen_by_rule``): the ensemble;
the blend if its mean loss is below the ensemble's by more than one standard error of the paired difference;
then the network if its loss is below that of the one chosen so far by more than one standard error. The blend
is there for sets where the network is better on average but too noisy to prove it: on clothing at toy
(docs/benchmarks.md) the network was 1.3 points ahead of the ensemble on the test rows, not clearly ahead in
cross-validation (−0.008 ± 0.009), and the blend clearly ahead (−0.021 ± 0.005), +0.9 points on the test rows.
The network must also beat the blend, not only the ensemble: on films_rating at ``best`` the network and the
blend tied in cross-validation (0.61758 and 0.61759, both clearly below the ensemble's 0.62378), the lower
mean picked the network, and on the test rows it fell below the joint expert (RMSE +0.004 and +0.011 on seed 1,
+0.008 on seed 0) while the blend did not (−0.000). Choosing on the rows the network early-stops on flattered it
more. The choice, the three losses and their differences are in ``metrics_["fusion_choice"]``.

The ensemble sees the same input matrix as the network (the experts' outputs side by side) and gives the
same outputs: probabilities over the real classes (each expert's "insufficient information" probability
left out and the rest renormalised; an expert that abstains contributes uniform probabilities), or the
standardised prediction of a regression (one column).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from .targets import each_expert_probabilities

if TYPE_CHECKING:
    from .targets import Target

log = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"
BLEND_FILE = "blend.json"  # beside the network's file; the ensemble in BLEND_ENSEMBLE_DIR
BLEND_ENSEMBLE_DIR = "ensemble"
# The fusion choice's candidates: the network and the ensemble are fitted in each fold, the blend is their mean;
# the ensemble is the reference the others must beat clearly
NETWORK, ENSEMBLE, BLEND = "network", "ensemble", "blend"
# AutoGluon's WeightedEnsemble default (ensemble_size=25) and a few more: the weights are multiples of 1/ITERATIONS
ITERATIONS = 40
# Folds of the network-or-ensemble choice, and the fewest rows a fold may hold for its losses to mean anything
CHOICE_FOLDS = 5
MIN_CHOICE_ROWS_PER_FOLD = 20


def loss(outputs: np.ndarray, y: np.ndarray, target: "Target") -> float:
    """What both fusions minimise (``target.row_losses``): cross-entropy of class probabilities, or the mean
    squared error of the standardised prediction."""
    return float(np.mean(target.row_losses(outputs, y)))


class WeightedEnsemble:
    """A weighted average of the experts' outputs; ``experts`` is each expert's classes in the input's column
    order (empty lists for a regression, where expert i is input column i)."""

    def __init__(self, weights: list[float], experts: list[list[int]], n_classes: int | None) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        self.experts = [list(map(int, classes)) for classes in experts]
        self.n_classes = n_classes  # None for a regression

    def _each(self, x: np.ndarray) -> list[np.ndarray]:
        """Each expert's outputs in the ensemble's terms: real-class probabilities, or a one-column prediction."""
        x = np.asarray(x, dtype=np.float64)
        # A saved ensemble is read without the model's target object, so it knows its outputs from n_classes
        if self.n_classes is None:
            return [x[:, [i]] for i in range(len(self.experts))]
        return each_expert_probabilities(x, self.experts, self.n_classes)

    def predict(self, x: np.ndarray) -> np.ndarray:
        parts = self._each(x)
        return sum(w * part for w, part in zip(self.weights, parts) if w > 0).astype(np.float32)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, experts: list[list[int]], target: "Target",
            iterations: int = ITERATIONS) -> "WeightedEnsemble":
        """Caruana's forward selection with replacement: each step adds the expert whose addition lowers the
        loss on (x, y) most (``target``'s loss); the weights are how often each was added."""
        ensemble = cls([0.0] * len(experts), experts, target.n_outputs)
        parts = ensemble._each(x)
        counts = np.zeros(len(parts))
        total = np.zeros_like(parts[0])
        for step in range(1, iterations + 1):
            losses = [loss((total + part) / step, y, target) for part in parts]
            best = int(np.argmin(losses))
            counts[best] += 1
            total += parts[best]
        ensemble.weights = counts / counts.sum()
        return ensemble

    def describe(self, names: list[str]) -> dict[str, float]:
        return {name: round(float(w), 4) for name, w in zip(names, self.weights) if w > 0}

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (ENSEMBLE_FILE + ".tmp")
        tmp.write_text(json.dumps({"weights": self.weights.tolist(), "experts": self.experts,
                                   "n_classes": self.n_classes}), encoding="utf-8")
        tmp.replace(directory / ENSEMBLE_FILE)

    @classmethod
    def load(cls, directory: Path) -> "WeightedEnsemble":
        data = json.loads((directory / ENSEMBLE_FILE).read_text(encoding="utf-8"))
        return cls(data["weights"], data["experts"], data["n_classes"])


class Blend:
    """The mean of the network's and the weighted ensemble's outputs (probabilities, or a standardised
    prediction): a fusion that needs every expert, as the network does."""

    def __init__(self, network: Any, ensemble: WeightedEnsemble) -> None:
        self.network = network
        self.ensemble = ensemble

    def predict(self, x: np.ndarray) -> np.ndarray:
        return blend(self.network.predict(x), self.ensemble.predict(x))

    def save(self, directory: Path) -> None:
        self.network.save(directory)
        self.ensemble.save(directory / BLEND_ENSEMBLE_DIR)
        tmp = directory / (BLEND_FILE + ".tmp")
        tmp.write_text(json.dumps({"network": 0.5, "ensemble": 0.5}), encoding="utf-8")
        tmp.replace(directory / BLEND_FILE)

    @classmethod
    def load(cls, directory: Path) -> "Blend":
        from .fusion import FusionNetwork
        return cls(FusionNetwork.load(directory), WeightedEnsemble.load(directory / BLEND_ENSEMBLE_DIR))


def blend(network_outputs: np.ndarray, ensemble_outputs: np.ndarray) -> np.ndarray:
    return ((np.asarray(network_outputs, dtype=np.float64) + ensemble_outputs) / 2).astype(np.float32)


class Fusion(Protocol):
    def predict(self, x: np.ndarray) -> np.ndarray: ...


def choice_folds(y: np.ndarray, target: "Target", seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, scored rows) of each fold of the choice; empty when there are too few rows to cross-validate.
    Classes are stratified when every class has a row in each fold."""
    from sklearn.model_selection import KFold, StratifiedKFold
    folds = min(CHOICE_FOLDS, len(y) // MIN_CHOICE_ROWS_PER_FOLD)
    if folds < 2:
        return []
    stratify = target.stratifies_folds(y, folds)
    splitter = (StratifiedKFold if stratify else KFold)(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y if stratify else None))


class Done:
    """A result already computed: what ``here`` hands back."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


def here(function: Callable[[], Any], what: str) -> Done:
    """``function()`` run now, in this process: the fusion's ``submit`` on one machine (a cluster's spreads the
    fits over its machines, ``multimodal.core.cluster.spread``)."""
    return Done(function())


Submit = Callable[[Callable[[], Any], str], Any]  # (function, what it does) → an object whose result() is its value


def compare_by_cross_validation(x: np.ndarray, y: np.ndarray, target: "Target",
                                fit: dict[str, Callable[[np.ndarray, np.ndarray], Fusion]],
                                folds: list[tuple[np.ndarray, np.ndarray]], submit: Submit = here) -> dict:
    """Each candidate of ``fit`` (name → fit(x, y) → fusion: the network, then the ensemble) fitted on k - 1 of
    ``folds`` (``choice_folds``) and scored on the k-th, and ``BLEND``, the mean of the two's outputs: every row's
    out-of-fold loss per candidate, their means, and each other candidate's mean difference to the last one
    (the reference) with its standard error (paired over rows); the first's also as "difference" and
    "standard_error". Every fit is handed to ``submit`` before the first result is asked for, so a cluster runs
    them side by side."""
    def predicted(fit_one: Callable, fit_rows: np.ndarray, rows: np.ndarray) -> Callable[[], np.ndarray]:
        return lambda: np.asarray(fit_one(x[fit_rows], y[fit_rows]).predict(x[rows]))

    pending = [{name: submit(predicted(fit_one, fit_rows, rows), f"fusion choice: {name} of fold {i + 1}")
                for name, fit_one in fit.items()} for i, (fit_rows, rows) in enumerate(folds)]
    first, reference = list(fit)[0], list(fit)[-1]
    losses = {name: np.zeros(len(y)) for name in [*fit, BLEND]}
    for i, ((_, rows), results) in enumerate(zip(folds, pending)):
        outputs = {name: result.result() for name, result in results.items()}
        outputs[BLEND] = blend(outputs[first], outputs[reference])
        for name, out in outputs.items():
            losses[name][rows] = target.row_losses(out, y[rows])
        log.info("fusion choice: fold %d/%d scored", i + 1, len(folds))
    versus = {name: paired(losses[name], losses[reference]) for name in losses if name != reference}
    return {"folds": len(folds), "rows": int(len(y)), "reference": reference,
            "loss": {name: float(rows.mean()) for name, rows in losses.items()},
            "versus_reference": versus, "versus_blend": {first: paired(losses[first], losses[BLEND])},
            **versus[first]}


def paired(losses: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """The mean of the rows' loss differences to ``other`` and its standard error."""
    difference = losses - other
    return {"difference": float(difference.mean()),
            "standard_error": float(difference.std(ddof=1) / np.sqrt(len(difference)))}


def clearly_lower(versus: dict[str, float]) -> bool:
    """Whether a paired difference (``paired``) is below zero by more than one standard error."""
    return versus["difference"] + versus["standard_error"] < 0


def chosen_by_rule(comparison: dict | None) -> str:
    """The ensemble, then the blend if clearly better than it, then the network if clearly better than what was
    chosen so far: each more flexible fusion must earn its place against the simpler one it replaces."""
    if comparison is None:
        return ENSEMBLE
    chosen = BLEND if clearly_lower(comparison["versus_reference"][BLEND]) else ENSEMBLE
    against = comparison["versus_blend"][NETWORK] if chosen == BLEND else comparison["versus_reference"][NETWORK]
    return NETWORK if clearly_lower(against) else chosen


def load_fusion(directory: Path):
    """The saved fusion: the weighted ensemble or the blend when it was chosen, else the network."""
    if (directory / BLEND_FILE).is_file():
        return Blend.load(directory)
    if (directory / ENSEMBLE_FILE).is_file():
        return WeightedEnsemble.load(directory)
    from .fusion import FusionNetwork
    return FusionNetwork.load(directory)


# ---------------------------------------------------------------------------------------------- the fusion's fit

@dataclass(frozen=True)
class FusionSettings:
    """The hyperparameters of the fusion's fit (``from_params`` takes them from the estimator's)."""

    hidden_units: int
    learning_rate: float
    batch_size: int
    n_epochs: int
    patience: int
    seed: int
    validation_fraction: float

    @classmethod
    def from_params(cls, params: dict) -> "FusionSettings":
        return cls(**{f.name: params[f.name] for f in fields(cls)})


def hold_out(y: np.ndarray, target: "Target", settings: FusionSettings) -> tuple[np.ndarray, np.ndarray]:
    """(rows to fit, rows held out): ``validation_fraction`` of ``y``'s rows, stratified as the target says."""
    from sklearn.model_selection import train_test_split
    return train_test_split(np.arange(len(y)), test_size=settings.validation_fraction, random_state=settings.seed,
                            shuffle=True, stratify=target.stratify(y, settings.validation_fraction))


def train_network(x: np.ndarray, y: np.ndarray, target: "Target", settings: FusionSettings, seconds: float,
                  x_val: np.ndarray | None = None, y_val: np.ndarray | None = None, *, quiet: bool = False
                  ) -> tuple[Any, dict]:
    """The fusion network on (x, y) (y: the fusion's targets), early-stopped on (x_val, y_val) or else on rows
    held out of x (``quiet``: no log line per epoch, for the cross-validation's networks)."""
    from .fusion import FusionNetwork
    if x_val is None:
        fit_rows, held_out = hold_out(y, target, settings)
        x, y, x_val, y_val = x[fit_rows], y[fit_rows], x[held_out], y[held_out]
    return FusionNetwork.train(
        x, y, target.n_outputs, x_val=x_val, y_val=y_val, hidden_units=settings.hidden_units,
        learning_rate=settings.learning_rate, batch_size=settings.batch_size, n_epochs=settings.n_epochs,
        patience=settings.patience, seed=settings.seed, time_limit=seconds, quiet=quiet)


def choose_fusion(network: Any, ensemble: WeightedEnsemble, comparison: dict | None, x_val: np.ndarray,
                  y_val: np.ndarray, target: "Target", expert_names: list[str]) -> tuple[Any, dict]:
    """The fusion ``chosen_by_rule`` picks from the cross-validation ``comparison``: the weighted ensemble, which
    cannot fall much below the best expert, unless the blend or the network is clearly better. Without enough rows
    to cross-validate, the ensemble. The held-out rows' losses (``y_val``: the fusion's targets) are reported, not
    used."""
    fusions = {NETWORK: network, ENSEMBLE: ensemble, BLEND: Blend(network, ensemble)}
    outputs = {NETWORK: network.predict(x_val), ENSEMBLE: ensemble.predict(x_val)}  # the blend's from these
    outputs[BLEND] = blend(outputs[NETWORK], outputs[ENSEMBLE])
    held_out = {name: loss(out, y_val, target) for name, out in outputs.items()}
    chosen = chosen_by_rule(comparison)
    weights = ensemble.describe(expert_names)
    shown = ", ".join(f"{k} {v:.2f}" for k, v in weights.items())
    if comparison is None:
        log.info("fusion: too few rows to cross-validate the choice; using the weighted ensemble (%s)", shown)
    else:
        versus, network_blend = comparison["versus_reference"], comparison["versus_blend"][NETWORK]
        log.info("fusion: %d-fold cross-validated %s %.4f for the network, %.4f for their blend, %.4f for the "
                 "weighted ensemble of the experts (%s); against the ensemble: network %+.4f ± %.4f, blend %+.4f ± "
                 "%.4f; network against blend %+.4f ± %.4f: using the %s", comparison["folds"], target.loss_name,
                 comparison["loss"][NETWORK], comparison["loss"][BLEND], comparison["loss"][ENSEMBLE], shown,
                 versus[NETWORK]["difference"], versus[NETWORK]["standard_error"], versus[BLEND]["difference"],
                 versus[BLEND]["standard_error"], network_blend["difference"], network_blend["standard_error"],
                 chosen)
    unused = [name for name, w in zip(expert_names, ensemble.weights) if w == 0]
    if chosen == ENSEMBLE and unused:
        log.info("fusion: predictions will not run the experts the ensemble gives no weight: %s", ", ".join(unused))
    choice = {"chosen": chosen, "cross_validation": comparison, "validation_loss": held_out,
              "ensemble_weights": weights}
    return fusions[chosen], choice


@dataclass
class FittedFusion:
    """The chosen fusion and how it was chosen; ``fit_rows`` and (``x_val``, ``y_val``, ``source``): the rows it
    was fitted on and the rows it was validated on."""

    fusion: Any
    choice: dict
    curve: dict
    fit_rows: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    source: str


def fit_fusion(x: np.ndarray, y: np.ndarray, validation: tuple[np.ndarray, np.ndarray] | None, target: "Target",
               settings: FusionSettings, expert_classes: list[list[int]], expert_names: list[str],
               seconds: float, seconds_left: Callable[[], float], submit: Submit = here) -> FittedFusion:
    """The fusion on the experts' out-of-fold outputs ``x``: the network or the weighted ensemble of the experts,
    chosen by cross-validation (``choose_fusion``). ``validation``: the fusion inputs and targets of validation
    rows, else rows of ``x`` are held out. ``seconds``: the fusion's time; ``seconds_left``: what the budget has
    left. ``submit`` runs the networks (the final one and the cross-validation's), which are independent."""
    if validation is not None:
        fit_rows, (x_val, y_val) = np.arange(len(y)), validation
        source = "validation data"
    else:
        fit_rows, held_out = hold_out(y, target, settings)
        x_val, y_val = x[held_out], y[held_out]
        source = f"{len(held_out)} training rows held out from the fusion network (out-of-fold)"
    layout = target.ensemble_layout(expert_classes)

    def ensemble(xs: np.ndarray, ys: np.ndarray) -> WeightedEnsemble:
        return WeightedEnsemble.fit(xs, ys, layout, target)

    folds = choice_folds(y, target, settings.seed)  # none when there are too few rows: the ensemble
    share = seconds / (len(folds) + 1)  # each cross-validation network gets the share the final one gets
    y_fit, y_held = target.fusion_target(y[fit_rows]), target.fusion_target(y_val)
    # The final network first, with what the cross-validation's networks leave of the budget: started together
    # on a cluster, one after another here
    final_seconds = max(seconds_left() - share * len(folds), share)
    final = submit(lambda: train_network(x[fit_rows], y_fit, target, settings, final_seconds, x_val, y_held),
                   "the fusion network")
    comparison = compare_by_cross_validation(
        x, target.fusion_target(y), target,
        {NETWORK: lambda xs, ys: train_network(xs, ys, target, settings, share, quiet=True)[0],
         ENSEMBLE: ensemble}, folds, submit) if folds else None
    network, curve = final.result()
    fused, choice = choose_fusion(network, ensemble(x[fit_rows], y_fit), comparison, x_val, y_held, target,
                                  expert_names)
    return FittedFusion(fused, choice, curve, fit_rows, x_val, y_val, source)
