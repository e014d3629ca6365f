"""Multi-instance training: fit wall time of one training job on 1 node and on N nodes, side by side.

Each node is one `multimodal-train` process pinned to its own CPU core (`taskset -c k`, inherited by its Ray
node and Ray workers) and offering 1 CPU to Ray (MULTIMODAL_NODE_CPUS=1), so that the comparison is honest on a
2-core machine: 1 node = one host (no Ray cluster, as a single-instance job runs) on 1 core; 2 nodes = two hosts
forming a Ray cluster, 1 core each. Same data, same hyperparameters, same budget; the budget is large enough for
the experts to finish before it (quality toy), so the wall time measures the work, not the budget.

Prints a table (wall time of the job, its stages from metrics.json, accuracy on the held-out test rows, where
the experts ran) and with --write-docs puts it in docs/benchmarks.md.

    python bench/scale_out.py --data /tmp/bench-data/clothing --nodes 1 2 --write-docs
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multimodal.tools.local_training import layout_training_root  # noqa: E402

log = logging.getLogger("scale_out")
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Multi-instance training: 1 node against 2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(work: Path, train: Path, nodes: int, hyperparameters: dict[str, str], timeout: float) -> dict:
    """One training job on ``nodes`` hosts, each pinned to core k; returns the head's figures."""
    hosts = [f"algo-{k + 1}" for k in range(nodes)]
    roots = [work / f"nodes{nodes}" / h for h in hosts]
    for host, root in zip(hosts, roots):
        layout_training_root(root, train=train, validation=None, hyperparameters=hyperparameters, host=host,
                             hosts=hosts)
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", MULTIMODAL_NODE_CPUS="1")
    if nodes > 1:
        env.update(MULTIMODAL_HOSTS_ADDRESSES=json.dumps({h: f"127.0.0.{k + 1}" for k, h in enumerate(hosts)}),
                   MULTIMODAL_HOSTS_PORT=str(free_port()), MULTIMODAL_RAY_PORT=str(free_port()))
    cores = os.cpu_count() or 1
    started = time.monotonic()
    processes = []
    for k, root in enumerate(roots):
        command = ["taskset", "-c", str(k % cores), sys.executable, "-m", "multimodal.sagemaker.training"]
        with open(root.parent / f"{root.name}.log", "w") as out:
            processes.append(subprocess.Popen(command, env={**env, "MULTIMODAL_ML_ROOT": str(root)},
                                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              start_new_session=True))
    try:
        codes = [p.wait(timeout) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    wall = time.monotonic() - started
    if codes[0] != 0:
        raise SystemExit(f"{nodes} node(s): the head failed (exit {codes[0]}): see {roots[0].parent}/algo-1.log")
    metrics = json.loads((roots[0] / "output" / "data" / "metrics.json").read_text())
    return {"nodes": nodes, "wall": wall, "codes": codes, "metrics": metrics, "model": roots[0] / "model"}


def accuracy(model_dir: Path, test: pd.DataFrame) -> float:
    from multimodal import MultimodalClassifier
    model = MultimodalClassifier.load(model_dir)
    predicted = model.predict(test.drop(columns=["label"]))
    return float((predicted.astype(str) == test["label"].astype(str)).mean())


def row(result: dict, test: pd.DataFrame) -> dict:
    metrics = result["metrics"]
    timings = metrics.get("timings_seconds", {})
    stages = metrics["job"]["stages_seconds"]
    cluster = metrics.get("cluster", {})
    experts = {name: e["host"] for name, e in cluster.get("experts", {}).items()}
    details = {name: {k: e.get(k) for k in ("host", "planned_host", "time_limit", "seconds", "folds", "bags")}
               for name, e in cluster.get("experts", {}).items()}
    networks: dict[str, list[float]] = {}  # host → seconds of each of the fusion's networks it fitted
    for fit in cluster.get("fusion", []):
        if "ensemble" not in fit["what"]:
            networks.setdefault(fit["host"], []).append(fit["seconds"])
    return {"nodes": result["nodes"], "train_rows": metrics["rows"]["train"], "wall_s": round(result["wall"], 1),
            "cluster_start_s": stages.get("Ray cluster", 0.0), "read_embed_s": timings.get("embed"),
            "experts_s": timings.get("experts"), "fusion_s": timings.get("fusion"),
            "accuracy": round(accuracy(result["model"], test), 4),
            "experts_on": ", ".join(f"{n}@{h}" for n, h in experts.items()) or "(one host)", "experts": details,
            "fusion_on": "; ".join(f"{h}: {', '.join(f'{s:g}' for s in secs)} s" for h, secs in sorted(networks.items()))
            or "(one host)"}


def table(rows: list[dict]) -> str:
    head = ("| nodes | job wall (s) | Ray cluster start (s) | read + embed (s) | experts (s) | fusion (s) | "
            "test accuracy | experts ran on | the fusion's networks ran on |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['nodes']} | {r['wall_s']} | {r['cluster_start_s']} | {r['read_embed_s']} | "
                     f"{r['experts_s']} | {r['fusion_s']} | {r['accuracy']} | {r['experts_on']} | {r['fusion_on']} |")
    return "\n".join(lines)


def expert_table(rows: list[dict]) -> str:
    """Where each expert of the multi-node runs was planned, where it ran, its time limit and its seconds."""
    lines = ["| nodes | expert | planned on | ran on | time limit (s) | seconds | folds fitted on |",
             "|---|---|---|---|---:|---:|---|"]
    for r in rows:
        for name, e in r["experts"].items():
            folds = ", ".join(f"{host} {n}" for host, n in (e.get("folds") or {}).items()) or "its host"
            lines.append(f"| {r['nodes']} | {name} | {e['planned_host']} | {e['host']} | {e['time_limit']} | "
                         f"{e['seconds']} | {folds} |")
    return "\n".join(lines)


FUSION_FITS = 6  # the fusion network and the five of its cross-validated choice, run side by side on a cluster


def projection(rows: list[dict], hosts: list[int]) -> str:
    """Job wall on more hosts: the experts replayed fold by fold (``simulate_experts``) on the folds' measured
    seconds (a multi-node run's, each fold on one core), embedding divided among the hosts, the fusion's six
    networks in rounds of one per host, and the rest (start-up, saving) as on one node plus the Ray cluster's
    start."""
    single = next((r for r in rows if r["nodes"] == 1), None)
    multi = next((r for r in rows if r["nodes"] > 1 and r["experts"]), None)
    if single is None or multi is None:
        return ""
    fixed = single["wall_s"] - single["read_embed_s"] - single["experts_s"] - single["fusion_s"]
    lines = ["| hosts | projected job wall (s) | experts (s) | fusion (s) | speed-up over 1 node (measured) |",
             "|---|---:|---:|---:|---:|"]
    for k in hosts:
        experts = simulate_experts(multi["experts"], k)
        fusion = single["fusion_s"] * -(-FUSION_FITS // k) / FUSION_FITS
        wall = fixed + (multi["cluster_start_s"] if k > 1 else 0) + single["read_embed_s"] / k + experts + fusion
        lines.append(f"| {k} | {wall:.0f} | {experts:.0f} | {fusion:.0f} | {single['wall_s'] / wall:.2f}× |")
    return "\n".join(lines)


def simulate_experts(experts: dict[str, dict], hosts: int) -> float:
    """Seconds until the last expert is done on ``hosts`` one-core hosts, as the cluster runs them: each host fits
    one expert at a time (placed by cost, idle hosts taking queued experts: ``placement.Placement``); an expert
    first runs its own serial work (its seconds outside the span of its bagged models' fold stages) on a core,
    then the folds of all its bagged models (fitted side by side, ``sidebyside.side_by_side``) queue, in the
    models' order, for whichever core is free first."""
    import heapq
    import itertools

    from multimodal.core.experts import ExpertSpec
    from multimodal.core.placement import Placement
    placement = Placement.plan([ExpertSpec(name=n, modality=_modality(n), columns=[]) for n in experts],
                               list(range(hosts)))
    waiting: list = []  # heap of (order, expert, is a fold, seconds)
    running: list = []  # heap of (end, tie, expert, is a fold)
    left: dict[str, int] = {}
    host_of: dict[str, int] = {}
    order = itertools.count()

    def start_expert(host: int) -> None:
        spec = placement.next(host)
        if spec is not None:
            host_of[spec.name] = host
            heapq.heappush(waiting, (next(order), spec.name, False, _serial_seconds(experts[spec.name])))

    def start_folds(name: str) -> None:
        folds = [seconds for bag in experts[name]["bags"] for seconds in bag["fold_seconds"]]
        left[name] = len(folds)
        for seconds in folds:
            heapq.heappush(waiting, (next(order), name, True, seconds))
        if not folds:
            start_expert(host_of[name])

    for host in range(hosts):
        start_expert(host)
    now, free = 0.0, hosts
    while waiting or running:
        while free and waiting:
            _, name, fold, seconds = heapq.heappop(waiting)
            free -= 1
            heapq.heappush(running, (now + seconds, next(order), name, fold))
        now, _, name, fold = heapq.heappop(running)
        free += 1
        if not fold:
            start_folds(name)
        else:
            left[name] -= 1
            if not left[name]:
                start_expert(host_of[name])
    return now


def _serial_seconds(expert: dict) -> float:
    """An expert's seconds outside its bagged models' fold stages (preprocessing, the ensemble, saving)."""
    bags = expert["bags"]
    if not bags:
        return expert["seconds"]
    if all("started" in bag for bag in bags):  # fold stages side by side: their span
        span = max(b["started"] + b["seconds"] for b in bags) - min(b["started"] for b in bags)
    else:
        span = sum(b["seconds"] for b in bags)
    return max(expert["seconds"] - span, 0.0)


def _modality(name: str) -> str:
    if name == "joint" or name in ("text", "num", "cat"):
        return name
    return "image"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    extras = [f for f in ("amx_bf16", "avx512_bf16", "avx2") if f in flags]
    return f"{os.cpu_count()} cores of {model} ({', '.join(extras)}), Python {platform.python_version()}"


def write_docs(text: str, section: str) -> None:
    """``text`` (which starts with ``section``) in place of that section of docs/benchmarks.md, else at its end."""
    content = DOCS.read_text() if DOCS.exists() else ""
    if section in content:
        start = content.index(section)
        nxt = content.find("\n## ", start + len(section))
        content = content[:start] + text.rstrip() + "\n" + (content[nxt:] if nxt >= 0 else "")
    else:
        content = content.rstrip() + "\n\n" + text.rstrip() + "\n"
    DOCS.write_text(content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="directory with train.csv and test.csv")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work", type=Path, default=Path("/tmp/scale-out"))
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    hyperparameters = {"quality": "toy", "n_hours": "0", "n_mins": "10", "n_secs": "0", "n_folds": "3",
                       "image_model": "efficientnet_lite0"}
    hyperparameters.update(dict(item.split("=", 1) for item in args.hp))
    shutil.rmtree(args.work, ignore_errors=True)
    test = pd.read_csv(args.data / "test.csv", dtype=str, keep_default_na=False)
    rows = []
    for nodes in args.nodes:
        log.info("training on %d node(s)…", nodes)
        result = run_job(args.work, args.data / "train.csv", nodes, hyperparameters, args.timeout)
        rows.append(row(result, test))
        log.info("%d node(s): %s", nodes, rows[-1])
    text = table(rows) + "\n\n" + expert_table([r for r in rows if r["experts"]])
    projected = projection(rows, [1, 2, 3, 4])
    if projected:
        text += ("\n\nProjected to more hosts (the experts replayed fold by fold on the measured seconds of each "
                 "fold):\n\n" + projected)
    print(text)
    if args.write_docs:
        command = "python bench/scale_out.py --data " + str(args.data) + " --nodes " + " ".join(map(str, args.nodes))
        command += "".join(f" --hp {h}" for h in args.hp)
        section = f"{SECTION}: {args.data.name}, folds and fusion spread over the hosts (issue 23)"
        write_docs(f"{section}\n\nMachine: {machine()}. Command: `{command} --write-docs`. Data: "
                   f"`{args.data.name}` ({rows[0]['train_rows']} training rows, {len(test)} test rows). Hyperparameters: "
                   f"{', '.join(f'{k}={v}' for k, v in hyperparameters.items())}. Each node is a `multimodal-train` "
                   "process pinned to its own core (`taskset`), offering 1 CPU to Ray; 1 node is a single-host job "
                   "(no Ray cluster).\n\n" + text + "\n", section)


if __name__ == "__main__":
    main()
