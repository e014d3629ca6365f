#!/usr/bin/env python
"""Start-up benchmark of the inference server: seconds from process start to the first /ping 200.

Usage::

    .venv/bin/python bench/startup_bench.py [--work DIR] [--repeats 3] [--baseline /tmp/baseline] [--write-docs]

Trains two small models once and caches them under ``--work`` (default ``$TMPDIR/startup-bench``): ``images``
(the server tests' model: toy quality, 2 folds, 45 s budget, efficientnet_lite0, 150 synthetic rows with a
photo column) and ``no-images`` (the same without the photo column). For each model it then starts
``python -m multimodal.serve`` on 127.0.0.1 (a free port; ``MULTIMODAL_ML_ROOT`` = a directory holding
``model/``) with 1 worker and with the server's default worker count, and measures the seconds from the
process start to the first /ping 200, the first accepted connection, the ``model loaded in`` /
``model ready in`` times each worker logs, and the RSS of each worker once ready.

With ``--baseline TREE`` the same runs are made against a second code tree (run through ``PYTHONPATH=TREE``,
with the working directory outside both trees so that neither shadows the other), interleaved run by run
(the order alternating) so that both see the same machine load. The load average of the machine is recorded
at each run. Every server is stopped by its PID (SIGTERM, then SIGKILL of it and of its workers); every wait
is bounded.

Prints a markdown table; ``--write-docs`` also appends it to docs/benchmarks.md. Raw results go to
``<work>/startup.json``.

``--breakdown`` measures instead where one worker's start-up time goes, in a fresh process per run (same
thread settings as a single-worker server): the imports of the app, of numpy/pandas and of AutoGluon, the
libraries the artifact's models need (imported up front to time them apart), each expert's
``TabularPredictor.load`` and ``persist``, the fusion network's load, and the trial prediction of
``multimodal.sagemaker.serving.app.warm_up`` split into image-encoder construction, image embedding, expert predictions and
the fusion forward pass; with CPU seconds and RSS at the end. Results go to ``<work>/breakdown.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
# The small model the server tests serve (tests/conftest.py: SERVING_HYPERPARAMETERS on make_dataset(150, seed=21)).
HYPERPARAMETERS = {"quality": "toy", "n_folds": 2, "n_mins": 0, "n_secs": 45, "n_epochs": 40, "patience": 5,
                   "image_model": "efficientnet_lite0"}
MODELS = {"images": True, "no-images": False}
START_TIMEOUT = 300.0
TRAIN_TIMEOUT = 900.0
STOP_TIMEOUT = 60.0
# Variables that would change what the server under test does: the benchmark sets its own.
CLEARED = ("SAGEMAKER_MODEL_SERVER_WORKERS", "MODEL_SERVER_WORKERS", "SAGEMAKER_BATCH",
           "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "MULTIMODAL_THREADS", "PYTHONPATH", "KERAS_HOME", "TORCH_HOME",
           "MPLCONFIGDIR", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR", "MULTIMODAL_CACHE_DIR")
_LOADED = re.compile(r"\[(\d+)\] \[INFO\] multimodal[\w.]*: model loaded in ([0-9.]+) s")
_READY = re.compile(r"\[(\d+)\] \[INFO\] multimodal[\w.]*: model ready in ([0-9.]+) s")
# Module names in each layout: the package was split into subpackages (core, sagemaker, tools); a baseline
# tree may predate that.
LAYOUTS = {
    "subpackages": {"serve": "multimodal.sagemaker.serving", "app": "multimodal.sagemaker.serving.app",
                    "front": "multimodal.sagemaker.serving.front", "classifier": "multimodal.core.estimator",
                    "experts": "multimodal.core.experts", "fusion": "multimodal.core.fusion",
                    "images": "multimodal.core.images"},
    "flat": {"serve": "multimodal.serve", "app": "multimodal.server", "front": "multimodal.asgi",
             "classifier": "multimodal.classifier", "experts": "multimodal.experts", "fusion": "multimodal.fusion",
             "images": "multimodal.images"},
}


def modules(tree: Path | None = None) -> dict[str, str]:
    """The module names of ``tree`` (default: whatever ``import multimodal`` finds)."""
    if tree is not None:
        return LAYOUTS["subpackages" if (tree / "multimodal" / "core").is_dir() else "flat"]
    import importlib.util
    return LAYOUTS["subpackages" if importlib.util.find_spec("multimodal.core") else "flat"]


# ---------------------------------------------------------------------------------------------- models

def train(path: Path, with_images: bool) -> None:
    """Train one small model into ``path`` (runs in a subprocess: see ``ensure_model``)."""
    from multimodal import MultimodalClassifier
    from multimodal.tools.synthetic import make_dataset
    data = make_dataset(150, seed=21, with_images=with_images)
    MultimodalClassifier(**HYPERPARAMETERS).fit(data).save(path)


def ensure_model(work: Path, name: str, with_images: bool, tree: Path) -> Path:
    """``work/<name>`` holding ``model/``: trained by ``tree``'s code the first time, then reused."""
    root = work / name
    model = root / "model"
    if (model / "model_config.json").is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    print(f"training the {name!r} model (about a minute)…", flush=True)
    started = time.monotonic()
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); from startup_bench import train; "
            f"from pathlib import Path; train(Path({str(model)!r}), {with_images!r})")
    with open(root / "train.log", "wb") as log:
        subprocess.run([sys.executable, "-c", code], env=server_environment(tree), cwd=work, stdout=log,
                       stderr=subprocess.STDOUT, check=True, timeout=TRAIN_TIMEOUT)
    print(f"  trained in {time.monotonic() - started:.0f} s", flush=True)
    return root


def directory_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


# ---------------------------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def memory_mb(pid: int) -> dict[str, float]:
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return {"rss_mb": round(fields.get("VmRSS", float("nan")), 1),
            "peak_rss_mb": round(fields.get("VmHWM", float("nan")), 1)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def is_worker_of(pid: int, arbiter: int) -> bool:
    """Whether ``pid`` is still a server process started here (a child of the arbiter, or orphaned by it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return int(fields[1]) in (arbiter, 1) and b"multimodal" in command


def ping(port: int, timeout: float = 2.0) -> int | None:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def server_environment(tree: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["PYTHONPATH"] = str(tree)
    env.update(extra)
    return env


def stop(proc: subprocess.Popen, workers: list[int]) -> None:
    """SIGTERM to the server (by PID), then SIGKILL of it and of the workers seen if it has not exited."""
    workers = sorted(set(workers) | set(children(proc.pid)))
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
    for pid in workers:
        if is_worker_of(pid, proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def which_code(tree: Path, work: Path) -> str:
    """The file `import multimodal` resolves to with the benchmark's environment for ``tree``."""
    out = subprocess.run([sys.executable, "-c", "import multimodal; print(multimodal.__file__)"],
                         env=server_environment(tree), cwd=work, capture_output=True, text=True, timeout=60,
                         check=True)
    return out.stdout.strip()


def start_once(tree: Path, ml_root: Path, work: Path, workers: int | None, log_path: Path) -> dict:
    """One server start: seconds to the first connection and to the first /ping 200, per-worker timings."""
    port = free_port()
    extra = {"SAGEMAKER_BIND_TO_PORT": str(port), "MULTIMODAL_BIND_HOST": HOST, "MULTIMODAL_ML_ROOT": str(ml_root),
             "MULTIMODAL_LOG_LEVEL": "info", "MULTIMODAL_CACHE_DIR": str(work / "cache")}
    if workers is not None:
        extra["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(workers)
    env = server_environment(tree, **extra)
    load_before = os.getloadavg()[0]
    with open(log_path, "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", modules(tree)["serve"]], env=env, cwd=work, stdout=log,
                                stderr=subprocess.STDOUT)
        first_connection = ready = None
        seen: list[int] = []
        memory: dict[str, dict] = {}
        try:
            deadline = started + START_TIMEOUT
            while time.monotonic() < deadline and proc.poll() is None:
                status = ping(port)
                now = time.monotonic() - started
                if status is not None and first_connection is None:
                    first_connection = now
                if status == 200:
                    ready = now
                    break
                seen = sorted(set(seen) | set(children(proc.pid)))
                time.sleep(0.05)
            seen = sorted(set(seen) | set(children(proc.pid)))
            if ready is not None:
                memory = {str(pid): {**memory_mb(pid), "cpu_s": round(cpu_seconds(pid), 2)} for pid in seen}
        finally:
            stop(proc, seen)
    text = log_path.read_text(errors="replace")
    if ready is None:
        raise RuntimeError(f"the server ({tree}) did not answer /ping 200 within {START_TIMEOUT:.0f} s "
                           f"(exit status {proc.returncode}); log tail:\n{text[-3000:]}")
    loaded = {pid: float(s) for pid, s in _LOADED.findall(text)}
    warm = {pid: float(s) for pid, s in _READY.findall(text)}
    return {"seconds_to_ping_200": round(ready, 3),
            "seconds_to_first_connection": None if first_connection is None else round(first_connection, 3),
            "workers": len(seen), "worker_load_seconds": loaded, "worker_ready_seconds": warm,
            "worker_memory": memory, "load_average_1min_before": round(load_before, 2)}


# ---------------------------------------------------------------------------------------------- breakdown

def libraries_needed(model_dir: Path) -> list[str]:
    """The heavy libraries the artifact's models import when loaded, in the order they are first needed."""
    config = json.loads((model_dir / "model_config.json").read_text())
    families = {p.name.split("_")[0] for e in config["experts"] for p in (model_dir / e["path"] / "models").iterdir()
                if p.is_dir()}
    needed = [library for family, library in (("LightGBM", "lightgbm"), ("XGBoost", "xgboost"),
                                               ("CatBoost", "catboost"), ("NeuralNetTorch", "torch"))
              if family in families]
    if any(c["modality"] == "image" for c in config["schema"]["columns"]) and "torch" not in needed:
        needed.append("torch")
    return needed


def breakdown_child(model_dir: Path) -> None:
    """One worker's start-up, timed by phase (run in a fresh process; prints one JSON line)."""
    started_wall, started_cpu = time.monotonic(), time.process_time()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[name] = str(len(os.sched_getaffinity(0)))
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import importlib
    import logging
    logging.disable(logging.WARNING)
    phases: dict[str, float] = {}

    def timed(name: str, function, *args, **kwargs):
        t = time.monotonic()
        try:
            return function(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.monotonic() - t

    names = modules()
    timed("import the app (flask, the server's app and front)",
          lambda: [importlib.import_module(names[m]) for m in ("front", "app")])
    timed("import the classifier (numpy, pandas)", importlib.import_module, names["classifier"])
    timed("import autogluon.tabular (incl. scikit-learn)", importlib.import_module, "autogluon.tabular")
    for library in libraries_needed(model_dir):
        timed(f"import {library} (the artifact's models need it)", importlib.import_module, library)

    from autogluon.tabular import TabularPredictor

    classifier, experts, fusion, server = (importlib.import_module(names[m])
                                           for m in ("classifier", "experts", "fusion", "app"))
    load_predictor, persist = TabularPredictor.load.__func__, TabularPredictor.persist
    TabularPredictor.load = classmethod(lambda cls, path, *a, **k: timed(
        f"expert {Path(path).name}: TabularPredictor.load", load_predictor, cls, path, *a, **k))
    TabularPredictor.persist = lambda self, *a, **k: timed(
        f"expert {Path(self.path).name}: TabularPredictor.persist", persist, self, *a, **k)
    expert_load = experts.Expert.load.__func__
    experts.Expert.load = classmethod(lambda cls, spec, *a: timed(f"expert {spec.name}: Expert.load (total)",
                                                                  expert_load, cls, spec, *a))
    fusion_load = fusion.FusionNetwork.load.__func__
    fusion.FusionNetwork.load = classmethod(lambda cls, *a: timed(
        "FusionNetwork.load (baseline: incl. importing keras + TensorFlow)", fusion_load, cls, *a))
    expert_predict, fusion_predict = experts.Expert.predict_proba, fusion.FusionNetwork.predict_proba
    experts.Expert.predict_proba = lambda self, *a: timed("trial prediction: experts' predict_proba",
                                                          expert_predict, self, *a)
    fusion.FusionNetwork.predict_proba = lambda self, *a: timed("trial prediction: fusion forward pass",
                                                                fusion_predict, self, *a)
    from multimodal.core.featurize import Featurizer
    embedder = Featurizer.embedder
    Featurizer.embedder = lambda self, modality: timed(
        "trial prediction: image encoder construction (first use)", embedder, self, modality) \
        if not self._embedders else embedder(self, modality)

    model = timed("MultimodalClassifier.load (total)", classifier.MultimodalClassifier.load, model_dir)
    schema = getattr(model, "schema_", None) or model.schema  # fitted attributes gained their underscore later
    if schema.names("image"):
        images = importlib.import_module(names["images"])
        embed = images.ImageEmbedder.embed
        images.ImageEmbedder.embed = lambda self, *a, **k: timed("trial prediction: image decode + embed",
                                                                 embed, self, *a, **k)
    timed("trial prediction (warm_up, total)", server.warm_up, model)
    status = Path("/proc/self/status").read_text()
    rss = int(status.split("VmRSS:")[1].split()[0]) / 1024
    print(json.dumps({"phases": phases, "wall_s": time.monotonic() - started_wall,
                      "cpu_s": time.process_time() - started_cpu, "rss_mb": rss,
                      "loaded": [m for m in ("tensorflow", "keras", "torch", "torchvision", "matplotlib", "sklearn",
                                             "lightgbm", "xgboost", "catboost", "h5py") if m in sys.modules]}))


def run_breakdown(trees: dict[str, Path], roots: dict[str, Path], work: Path, repeats: int) -> dict:
    results: dict = {"runs": []}
    for repeat in range(repeats):
        for model, root in roots.items():
            for name in (list(trees) if repeat % 2 == 0 else list(trees)[::-1]):
                out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--breakdown-child",
                                      str(root / "model")], env=server_environment(trees[name]), cwd=work,
                                     capture_output=True, text=True, timeout=START_TIMEOUT)
                lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
                if out.returncode != 0 or not lines:
                    raise RuntimeError(f"breakdown of {model} with {name} failed:\n{out.stderr[-3000:]}")
                run = {**json.loads(lines[-1]), "model": model, "tree": name, "repeat": repeat,
                       "load_average_1min_before": os.getloadavg()[0]}
                results["runs"].append(run)
                print(f"{model:>9} {name:<9} run {repeat + 1}: {run['wall_s']:.2f} s wall, {run['cpu_s']:.2f} s CPU, "
                      f"RSS {run['rss_mb']:.0f} MB", flush=True)
    return results


def breakdown_markdown(results: dict, trees: dict[str, Path]) -> str:
    lines = []
    models = list(dict.fromkeys(r["model"] for r in results["runs"]))
    for model in models:
        runs = {name: [r for r in results["runs"] if r["model"] == model and r["tree"] == name] for name in trees}
        phases = list(dict.fromkeys(p for rs in runs.values() for r in rs for p in r["phases"]))
        lines += [f"#### `{model}`: one worker's start-up, seconds (median of {len(next(iter(runs.values())))} runs)",
                  "", "| phase | " + " | ".join(trees) + " |", "|---|" + "---:|" * len(trees)]
        for phase in phases:
            cells = []
            for name in trees:
                values = [r["phases"][phase] for r in runs[name] if phase in r["phases"]]
                cells.append(f"{statistics.median(values):.2f}" if values else "—")
            lines.append(f"| {phase} | " + " | ".join(cells) + " |")
        for key, label, fmt in (("wall_s", "**whole process, wall**", "**{:.2f}**"), ("cpu_s", "whole process, CPU",
                                                                                        "{:.2f}"),
                                ("rss_mb", "RSS at the end (MB)", "{:.0f}")):
            lines.append(f"| {label} | " + " | ".join(fmt.format(statistics.median(r[key] for r in runs[name]))
                                                     for name in trees) + " |")
        lines.append("| libraries loaded | " + " | ".join(", ".join(runs[name][0]["loaded"]) for name in trees) + " |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- report

def summarise(runs: list[dict]) -> dict:
    times = [r["seconds_to_ping_200"] for r in runs]
    ready = [max(r["worker_ready_seconds"].values()) for r in runs if r["worker_ready_seconds"]]
    loaded = [max(r["worker_load_seconds"].values()) for r in runs if r["worker_load_seconds"]]
    rss = [m["rss_mb"] for r in runs for m in r["worker_memory"].values()]
    cpu = [m["cpu_s"] for r in runs for m in r["worker_memory"].values()]
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times),
            "workers": statistics.median(r["workers"] for r in runs),
            "load_s": statistics.median(loaded) if loaded else None,
            "ready_s": statistics.median(ready) if ready else None,
            "rss_mb": statistics.median(rss) if rss else None,
            "cpu_s": statistics.median(cpu) if cpu else None,
            "load_average": statistics.mean(r["load_average_1min_before"] for r in runs)}


def markdown(results: dict) -> str:
    trees = results["trees"]
    lines = ["| model | workers | code | /ping 200 after (median) | min – max | model loaded in (in worker) | "
             "ready in (load + trial prediction) | worker CPU time when ready | worker RSS when ready | runs |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, s in results["summary"].items():
        model, workers, tree = key.split("|")
        label = tree if len(trees) > 1 else "this tree"

        def seconds(v: float | None) -> str:
            return "—" if v is None else f"{v:.1f} s"

        def megabytes(v: float | None) -> str:
            return "—" if v is None else f"{v:.0f} MB"
        lines.append(f"| `{model}` ({results['model_mb'][model]:.1f} MB) | {workers} ({s['workers']:g} started) | "
                     f"{label} | **{s['median']:.1f} s** | {s['min']:.1f} – {s['max']:.1f} s | "
                     f"{seconds(s['load_s'])} | {seconds(s['ready_s'])} | {seconds(s['cpu_s'])} | "
                     f"{megabytes(s['rss_mb'])} | {s['n']} |")
    m = results["machine"]
    lines += ["", f"Command: `python bench/startup_bench.py {' '.join(results['argv'])}`  ",
              f"Run: {results['started']} on {m['cores']} cores ({m['processor']}), Python {m['python']}; "
              f"1-minute load average before the runs {m['load_before']}, after {m['load_after']} (mean over the "
              f"runs' starts {results['mean_load_average']:.2f}). Code trees: "
              + "; ".join(f"{name} = `{path}`" for name, path in trees.items()) + ". "
              + ("Runs are interleaved run by run, so every tree sees the same machine load. " if len(trees) > 1
                 else "") + "`default` workers: the server's own choice "
              "(min(cores, memory ÷ estimate)). *Model loaded in* and *ready in* are the slowest worker's log "
              "lines (ready = load + trial prediction), measured from the start of its loading thread; CPU time "
              "and RSS are per worker (median over workers and runs) at the first /ping 200."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "startup-bench",
                        help="directory for the cached models, logs and results (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="starts per configuration (default: 3)")
    parser.add_argument("--baseline", type=Path, help="a second code tree to compare with (run via PYTHONPATH)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--workers", nargs="+", default=["1", "default"],
                        help="worker counts to measure: integers and/or 'default' (default: 1 default)")
    parser.add_argument("--write-docs", action="store_true", help=f"append the table to {DOCS.relative_to(ROOT)}")
    parser.add_argument("--breakdown", action="store_true",
                        help="time the phases of one worker's start-up instead (see above)")
    parser.add_argument("--breakdown-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.breakdown_child is not None:
        breakdown_child(args.breakdown_child)
        return 0

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    trees = {"this tree": ROOT}
    if args.baseline is not None:
        baseline = args.baseline.resolve()
        if not (baseline / "multimodal" / "serve.py").is_file():
            parser.error(f"{baseline} holds no multimodal/serve.py")
        trees = {"baseline": baseline, "this tree": ROOT}
    for name, tree in trees.items():
        resolved = which_code(tree, work)
        print(f"{name}: {resolved}", flush=True)
        if not resolved.startswith(str(tree)):
            raise SystemExit(f"{name}: `import multimodal` resolves to {resolved}, not under {tree}")

    roots = {name: ensure_model(work, name, MODELS[name], ROOT) for name in args.models}
    results: dict = {
        "argv": sys.argv[1:], "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "trees": {name: str(path) for name, path in trees.items()},
        "model_mb": {name: round(directory_mb(root / "model"), 2) for name, root in roots.items()},
        "machine": {"cores": len(os.sched_getaffinity(0)), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "load_before": [round(v, 2) for v in os.getloadavg()]},
        "runs": []}
    if args.breakdown:
        breakdown = run_breakdown(trees, roots, work, args.repeats)
        breakdown["load_average"] = [round(v, 2) for v in os.getloadavg()]
        (work / "breakdown.json").write_text(json.dumps(breakdown, indent=2))
        print()
        print(breakdown_markdown(breakdown, trees))
        print(f"1-minute load average before {results['machine']['load_before']}, after "
              f"{breakdown['load_average']}")
        return 0
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    configurations = [(model, workers) for model in args.models for workers in args.workers]
    order = list(trees)
    for repeat in range(args.repeats):
        for model, workers in configurations:
            # alternate which tree starts first, so neither always runs right after the other
            for name in (order if repeat % 2 == 0 else order[::-1]):
                count = None if workers == "default" else int(workers)
                log_path = logs / f"{model}-{workers}-{name.replace(' ', '_')}-{repeat}.log"
                run = start_once(trees[name], roots[model], work, count, log_path)
                run.update({"model": model, "workers_setting": workers, "tree": name, "repeat": repeat})
                results["runs"].append(run)
                print(f"{model:>9} workers={workers:<7} {name:<9} run {repeat + 1}: /ping 200 after "
                      f"{run['seconds_to_ping_200']:.2f} s ({run['workers']} worker(s), ready "
                      f"{run['worker_ready_seconds']}, load avg {run['load_average_1min_before']})", flush=True)
    results["machine"]["load_after"] = [round(v, 2) for v in os.getloadavg()]
    results["summary"] = {}
    for model, workers in configurations:
        for name in trees:
            runs = [r for r in results["runs"]
                    if (r["model"], r["workers_setting"], r["tree"]) == (model, workers, name)]
            results["summary"][f"{model}|{workers}|{name}"] = summarise(runs)
    results["mean_load_average"] = statistics.mean(r["load_average_1min_before"] for r in results["runs"])
    (work / "startup.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    print()
    print(table)
    if args.write_docs:
        with open(DOCS, "a", encoding="utf-8") as handle:
            handle.write("\n\n## Server start-up\n\nGenerated by `bench/startup_bench.py`: seconds from starting "
                         "`python -m multimodal.serve` to its first `/ping` 200, for two small models.\n\n"
                         + table + "\n")
        print(f"\nappended to {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
