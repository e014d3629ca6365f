"""The model directory: writing a fitted estimator (``save``) and reading one back (``load_into``), with the
format versions a model of today's code can be read from. The directory's names live in ``artifact`` (which
imports nothing, for the server's launcher)."""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from multimodal._version import __version__

from . import artifact, runtimes
from .experts import Expert, ExpertSpec, shared_autogluon_metadata
from .jsonsafe import to_json
from .reduction import Reducer
from .resources import directory_size
from .schema import Schema
from .selection import load_fusion
from .targets import target_from_config
from .views import Views

log = logging.getLogger(__name__)

TRACKED_PACKAGES = ("autogluon.tabular", "tensorflow-cpu", "tensorflow", "keras", "torch", "torchvision", "pandas",
                    "numpy", "scikit-learn")


def save(model: Any, path: Path) -> int:
    """Write the fitted ``model``'s directory; returns its size in bytes. model_config.json is written last."""
    path.mkdir(parents=True, exist_ok=True)
    (path / artifact.CONFIG_FILE).unlink(missing_ok=True)
    for expert in model.experts_:
        target = path / artifact.EXPERTS_DIR / expert.name
        if expert.path.resolve() != target.resolve():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(expert.path, target)
    shutil.rmtree(path / artifact.FUSION_DIR, ignore_errors=True)  # a network or an ensemble, not both
    model.fusion_.save(path / artifact.FUSION_DIR)
    reducers = {}
    for i, (column, reducer) in enumerate(sorted(model.views_.reducers.items())):
        reducers[column] = f"{artifact.REDUCERS_DIR}/{i}.npz"
        reducer.save(path / reducers[column])
    config = {
        "format": artifact.FORMAT,
        "format_version": artifact.FORMAT_VERSION,
        "schema": model.schema_.to_json(),
        **model.target_.to_config(),
        "hyperparameters": model.get_params(),
        "experts": [{**e.spec.to_json(), "classes": e.classes, "path": f"{artifact.EXPERTS_DIR}/{e.name}"}
                    for e in model.experts_],
        "reducers": reducers,
        "reduced_embeddings": sorted(model.views_.reduced),
        "fusion": {"path": artifact.FUSION_DIR, "missing_fractions": model.fusion_missing_inputs_},
        "metrics": model.metrics_,
        **({"encoders": model.encoders_} if model.encoders_ else {}),
        "versions": versions(),
    }
    tmp = path / (artifact.CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(to_json(config), indent=2), encoding="utf-8")
    tmp.replace(path / artifact.CONFIG_FILE)
    size = directory_size(path)
    log.info("saved model to %s (%.1f MB)", path, size / 1e6)
    return size


def load_into(cls: type, path: Path) -> Any:
    """An instance of the estimator class ``cls`` read from the model directory ``path``."""
    with gc_paused():
        config = read_config(path)
        target = target_from_config(config)
        model = cls._from_saved(target, _hyperparameters(config), path)
        model.schema_ = Schema.from_json(config["schema"])
        model.views_ = Views(model.schema_, text_model=model.text_model, joint_dims=model.joint_embedding_dims,
                             reducers={c: Reducer.load(path / p) for c, p in config.get("reducers", {}).items()},
                             reduced=config.get("reduced_embeddings", []))
        model.missing_indicators_ = next((e.get("indicators", []) for e in config["experts"]
                                          if e["modality"] == "num"), [])
        model.fusion_missing_inputs_ = bool(config["fusion"].get("missing_fractions", False))
        model.metrics_ = config.get("metrics", {})
        model.encoders_ = config.get("encoders", {})  # absent before format 5's encoder runtimes: torch
        if model.encoders_:
            log.info("the encoders ran as %s in training; in this process they run as %s",
                     "; ".join(f"{m}: {d}" for m, d in model.encoders_.items()), runtimes.choose().describe())
        model.leaderboards_ = {}
        model.experts_ = _experts(config, path)
        model.fusion_ = load_fusion(path / config["fusion"]["path"])
        return model


def _hyperparameters(config: dict) -> dict:
    """The saved hyperparameters, with what older formats did for those added since."""
    extra = artifact.VERSION_1_HYPERPARAMETERS if config["format_version"] == 1 else {}
    return {**artifact.ADDED_HYPERPARAMETERS, **config["hyperparameters"], **extra}


def _experts(config: dict, path: Path) -> list[Expert]:
    experts = []
    with shared_autogluon_metadata():
        for entry in config["experts"]:
            spec = ExpertSpec.from_json(entry)
            try:
                experts.append(Expert.load(spec, path / entry["path"], [int(c) for c in entry["classes"]]))
            except Exception as exc:
                trained = config.get("versions", {})
                raise ValueError(f"cannot load expert {spec.name!r} from {path / entry['path']}: {exc}. The model "
                                 f"was trained with autogluon.tabular {trained.get('autogluon.tabular')}; this "
                                 f"environment has {versions().get('autogluon.tabular')}") from exc
    return experts


def read_config(path: Path) -> dict:
    """model_config.json of the model directory ``path``, checked: a missing, damaged or unreadable one is an
    error that names the file and the fix."""
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
def gc_paused():
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


def versions() -> dict[str, str]:
    """The versions of Python, this package and the libraries a model depends on (saved with it)."""
    found = {"multimodal": __version__, "python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found
