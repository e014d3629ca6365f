"""Training on a Ray cluster: the machines read and embed their own rows, then one Ray task per expert fits its
whole bagged predictor on the machine it lands on.

The process that calls ``fit`` (the *driver*) must already be connected to the cluster (``ray.init(address=…)``;
the training job does that, ``multimodal.sagemaker.training.raycluster``). It stays the only writer: the experts
come back to it (the deployment copy of each predictor as a tar archive, with its out-of-fold probabilities and
leaderboard), and it fits the fusion network and saves the model.

* Reading and embedding: one task per node, pinned to it, runs that node's reader (``NodeData.train``), a
  callable returning batches of rows (DataFrames of the training CSV's columns). When every node reads the same
  rows (``ClusterData.replicated``, SageMaker's FullyReplicated), node k of n prepares and embeds batches k,
  k+n, k+2n, …; otherwise (ShardedByS3Key) each node takes every batch of its own rows. Only the prepared
  non-image columns and the embeddings travel to the driver, never the images.
* Experts: one task each, pinned to the node ``placement.Placement`` chose (longest first onto the least
  loaded node; a node with nothing queued takes the last queued expert of the busiest), asking for the node's
  CPUs: one expert runs per node at a time, and a node's next expert is submitted when its last one is done,
  with its share of the time then left among that node's queue. With more than one node, the folds of a bagged
  model are a queue (``spreadfolds``): the expert's process fits them one after another while any node with a
  CPU free takes the fold waiting at the back, so a node with nothing of its own left to fit takes folds of the
  others' experts; on small nodes an expert's bagged models run side by side, so that those folds never run
  out while a model ends; the fold models come back to the expert's node as archives (AutoGluon's own distributed
  mode needs S3 or a shared file system, which network isolation rules out).
* Fusion: the network the fusion fits and the five of its cross-validated choice run as Ray tasks side by side
  (``spread``); the driver keeps the results.
* Failures: a task that fails fails ``fit`` with the node's host name and the reason (a ``DataError`` on a node
  stays a ``DataError``); a node that leaves the cluster while work is pending fails it with
  ``ClusterError`` within ``POLL_SECONDS`` of Ray noticing (its health checks, see the training job's settings).
  No task is retried: a retry would overrun the time budget and hide the failure.
"""
from __future__ import annotations

import functools
import logging
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from . import archives, artifact, sidebyside, spreadfolds
from .errors import ClusterError, DataError, TimeBudgetError
from .experts import Expert, ExpertJob, ExpertSpec
from .ingest import Rows, concat
from .parallel import MIN_PARALLEL_CPUS
from .schema import Schema
from .placement import Placement
from .timebudget import TimeBudget

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


@dataclass(frozen=True)
class NodeData:
    """The rows one node of the cluster reads: ``train()`` (and ``validation()``) return batches of rows; the
    callables are pickled and run on the node ``node_id`` (a Ray node id), named ``host`` in messages.
    ``images()``, run there too, names the node's own directory that relative ``_image`` paths point into."""

    node_id: str
    host: str
    train: Callable[[], Iterable[pd.DataFrame]]
    validation: Callable[[], Iterable[pd.DataFrame]] | None = None
    images: Callable[[], str | Path | None] | None = None


@dataclass(frozen=True)
class ClusterData:
    """Training rows spread over the nodes of a Ray cluster. ``replicated``: every node reads the same rows (each
    embeds its share of the batches); otherwise each reads its own part (the rows of all parts are the data)."""

    nodes: tuple[NodeData, ...]
    replicated: bool = True


# ---------------------------------------------------------------------------------------------- reading

def ingest_on_nodes(params: dict[str, Any], data: ClusterData
                    ) -> tuple[Schema, Rows, Rows | None, list[dict], list[dict]]:
    """Every node reads, prepares and embeds its rows as a model with the featurizer's ``params`` does
    (``multimodal.core.featurize``); the rows come back to the driver in the order of the data. Returns (the
    schema, the training rows, the validation rows or None, each host's rows and seconds, the bad images)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    resources = _check_connected(data)
    task = ray.remote(_ingest_task)
    n = len(data.nodes)
    refs = {}
    for rank, node in enumerate(data.nodes):
        share = (rank, n) if data.replicated else (0, 1)
        cpus, gpus = max(1, int(resources[node.node_id].get("CPU", 1))), int(resources[node.node_id].get("GPU", 0))
        # Ray hides every GPU from a task that asks for none (CUDA_VISIBLE_DEVICES=""): ask for the node's own
        ref = task.options(num_cpus=cpus, num_gpus=gpus, max_retries=0,
                           scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)).remote(
            params, node, share)
        refs[ref] = f"reading and embedding the rows of host {node.host}"
    log.info("reading and embedding on %d node(s) (%s)%s", n, ", ".join(d.host for d in data.nodes),
             ": each takes every n-th batch of the same rows" if data.replicated and n > 1 else "")
    gathered = _gather(refs)
    results = [gathered[ref] for ref in refs]
    schema = _same_schema([(r[0], node.host) for r, node in zip(results, data.nodes)])
    stats = [r[3] for r in results]
    bad = [record for s in stats for record in s.pop("bad_images")]
    for s in stats:
        log.info("host %s: %d row(s) in %d batch(es) prepared and embedded in %.1f s", s["host"], s["rows"],
                 s["batches"], s["seconds"])
    train = _in_order([r[1] for r in results], data.replicated)
    validations = [r[2] for r in results if r[2] is not None]
    return schema, train, (_in_order(validations, data.replicated) if validations else None), stats, bad


def _ingest_task(params: dict, node: NodeData, share: tuple[int, int]) -> tuple[dict, Rows, Rows | None, dict]:
    import ray

    from .featurize import Featurizer
    from .imagerefs import ImageSource
    host, validation = node.host, node.validation
    started = time.monotonic()
    _use_cpus(int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    rank, n = share
    kept: list[int] = []

    def keep(k: int) -> bool:
        if k % n == rank:
            kept.append(k)
            return True
        return False

    featurizer = Featurizer.from_params(params)
    with ImageSource(node.images() if node.images else None) as images:
        views, rows = featurizer.ingest(node.train(), None, source=f"the training data of host {host}", keep=keep,
                                        images=images)
        val = None if validation is None else featurizer.ingest(
            validation(), views.schema, keep=keep, images=images, source=f"the validation data of host {host}")[1]
    stats = {"host": host, "node_id": ray.get_runtime_context().get_node_id(), "batches": len(kept),
             "rows": len(rows) + (len(val) if val is not None else 0), "seconds": round(time.monotonic() - started, 2),
             "bad_images": featurizer.bad_images}
    return views.schema.to_json(), rows, val, stats


def _same_schema(found: list[tuple[dict, str]]) -> Schema:
    first, host = found[0]
    for other, other_host in found[1:]:
        if other != first:
            a, b = Schema.from_json(first).header, Schema.from_json(other).header
            raise DataError(f"the training data of hosts {host} and {other_host} have different headers ({a} and "
                            f"{b}): every host's files need the same header, with the columns in the same order")
    return Schema.from_json(first)


def _in_order(parts: list[Rows], replicated: bool) -> Rows:
    """Replicated rows back in the source's order (each node took every n-th batch); shards one after another."""
    rows = concat(parts)
    return rows.take(np.argsort(rows.numbers, kind="stable")) if replicated else rows


# ---------------------------------------------------------------------------------------------- experts

def fit_experts_on_cluster(jobs: list[ExpertJob], frames: Callable[[ExpertSpec], pd.DataFrame],
                           options: Callable[[ExpertSpec], dict], budget: TimeBudget, workdir: Path,
                           parallel_folds: str, on_fitted: Callable[[ExpertJob, Expert, np.ndarray], None] | None = None
                           ) -> tuple[list[tuple[Expert, np.ndarray]], dict]:
    """One task per expert, each pinned to the node ``Placement`` chose for it: ((expert, out-of-fold outputs) in
    the order of ``jobs``, each expert's host, planned host, time limit and seconds). A node's next expert is
    submitted when its last one is done, with its share of the time left then. ``frames(spec)`` is the expert's
    input frame, ``options(spec)`` the keyword arguments of ``Expert.fit``; the experts are unpacked under
    ``workdir`` as they arrive, and handed to ``on_fitted`` then."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    nodes = _cpu_nodes()
    cpus = _task_cpus(nodes)
    names = {n["NodeID"]: _host(n) for n in nodes}
    placement = Placement.plan([j.spec for j in jobs], sorted(names, key=names.get))
    by_name = {job.spec.name: job for job in jobs}
    spread_folds = len(nodes) > 1 and parallel_folds != "false"
    log.info("%d expert(s) placed on %d node(s) with %d CPU(s) each: %s%s", len(jobs), len(nodes), cpus,
             "; ".join(f"{names[n]}: {', '.join(s.name for s in q) or 'nothing'}" for n, q in placement.queues.items()),
             "; a model's folds go to any node with a CPU free"
             if spread_folds else "; each expert's folds one after another on its node")
    task = ray.remote(_expert_task)
    refs: dict[Any, tuple[ExpertJob, str, float]] = {}
    fitted, report = {}, {}

    def submit(node_id: str) -> dict[Any, str]:
        spec = placement.next(node_id)
        if spec is None:
            return {}
        job = by_name[spec.name]
        left = budget.left() - budget.fusion_reserve
        share = placement.share(spec, node_id, left)
        if share > left:
            log.warning("time budget nearly spent: %.0f s left; giving %s the minimum of %.0f s on %s, so training "
                        "will overrun the budget. Raise n_mins/n_hours.", max(left, 0), spec.name, share,
                        names[node_id])
        log.info("expert %s: %d column(s), %d rows lack this modality, time limit %.0f s, on %s", spec.name,
                 len(spec.columns), job.lacking, share, names[node_id])
        affinity = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        ref = task.options(num_cpus=cpus, scheduling_strategy=affinity, max_retries=0).remote(
            spec, ray.put(frames(spec)), job.target, share, cpus, spread_folds, options(spec))
        refs[ref] = (job, node_id, share)
        return {ref: f"expert {spec.name} on host {names[node_id]}"}

    def arrived(ref: Any, output: tuple) -> None:
        job, node_id, share = refs[ref]
        archive, oof, classes, leaderboard, seconds, bags = output
        folds = [fold for bag in bags for fold in bag["folds"]]
        path = workdir / artifact.EXPERTS_DIR / job.spec.name
        archives.unpack(archive, path)
        expert = Expert.load(job.spec, path, classes)
        expert.leaderboard = leaderboard
        fitted[job.spec.name] = (expert, oof)
        report[job.spec.name] = {"host": names[node_id], "node_id": node_id, "seconds": seconds,
                                 "time_limit": round(share, 1),
                                 "planned_host": names[placement.planned[job.spec.name]],
                                 "folds": _count(names.get(f["node_id"], f["node_id"]) for f in folds),
                                 "fold_nodes": _count(f["node_id"] for f in folds),
                                 "bags": [{"model": b["model"], "started": b["started"], "seconds": b["seconds"],
                                           "fold_seconds": [f["seconds"] for f in b["folds"]]} for b in bags]}
        log.info("expert %s: fitted on %s in %.1f s%s", job.spec.name, names[node_id], seconds,
                 "".join(f"; {n} fold(s) on {host}" for host, n in report[job.spec.name]["folds"].items()))
        if on_fitted is not None:
            on_fitted(job, expert, oof)

    first = {}
    for node_id in placement.queues:
        first.update(submit(node_id))
    # A node's next expert starts as its last one ends, before that one's archive has travelled: else the other
    # nodes' fold queues take the node's CPU meanwhile and the expert waits for their fold
    _gather(first, arrived, finished=lambda ref: submit(refs[ref][1]))
    return [fitted[job.spec.name] for job in jobs], report


def _expert_task(spec: ExpertSpec, frame: pd.DataFrame, target: np.ndarray, time_limit: float, cpus: int,
                 spread_folds: bool, options: dict) -> tuple[bytes, np.ndarray, list[int], pd.DataFrame, float, list]:
    started = time.monotonic()
    _use_cpus(cpus)
    spreadfolds.install()
    spreadfolds.BAGS.clear()
    work = Path(tempfile.mkdtemp(prefix="mm-expert-"))
    try:
        # On small machines every fold goes through the process's fold pool, which bags side by side keep full
        with sidebyside.side_by_side(spread_folds and cpus < MIN_PARALLEL_CPUS):
            expert, oof = Expert.fit(spec, frame, target, path=work / spec.name, time_limit=time_limit,
                                     fold_strategy=spreadfolds.STRATEGY if spread_folds else "sequential_local",
                                     num_cpus=cpus, **options)
        bags = sorted(({**bag, "started": round(bag["started"] - started, 2)} for bag in spreadfolds.BAGS),
                      key=lambda bag: bag["started"])
        return (archives.pack(work / spec.name), oof, expert.classes, expert.leaderboard,
                round(time.monotonic() - started, 2), bags)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _count(keys: Iterable[str]) -> dict[str, int]:
    """How many folds (``spreadfolds.BAGS``) each host or node fitted."""
    return dict(sorted(Counter(keys).items()))


# ---------------------------------------------------------------------------------------------- the fusion

class Pending:
    """The result of a function ``spread`` handed to the cluster; ``record``, when given, gets where it ran and
    how long it took as the result is taken."""

    def __init__(self, ref: Any, what: str, record: list[dict] | None = None) -> None:
        self.ref, self.what, self.record = ref, what, record

    def result(self) -> Any:
        value, node_id, seconds = _gather({self.ref: self.what})[self.ref]
        if self.record is not None:
            hosts = {n["NodeID"]: _host(n) for n in _alive_nodes()}
            self.record.append({"what": self.what, "host": hosts.get(node_id, node_id), "node_id": node_id,
                                "seconds": seconds})
        return value


def spread(function: Callable[[], Any], what: str, record: list[dict] | None = None) -> Pending:
    """``function()`` as a Ray task on a node with CPUs free (Ray's SPREAD), with a node's CPUs: the fusion's
    independent fits run side by side on the machines. ``record``: see ``Pending``."""
    cpus = _task_cpus(_cpu_nodes())
    ref = _call_task().options(num_cpus=cpus, scheduling_strategy="SPREAD", max_retries=0).remote(function, cpus)
    return Pending(ref, what, record)


@functools.lru_cache(maxsize=1)
def _call_task() -> Any:
    import ray
    return ray.remote(_call)


def _call(function: Callable[[], Any], cpus: int) -> tuple[Any, str, float]:
    """(``function()``, the node it ran on, its seconds)."""
    import ray
    started = time.monotonic()
    _use_cpus(cpus)
    value = function()
    return value, ray.get_runtime_context().get_node_id(), round(time.monotonic() - started, 2)


# ---------------------------------------------------------------------------------------------- Ray

def _check_connected(data: ClusterData) -> dict[str, dict]:
    """The resources of every alive node, by node id, once every node of ``data`` is among them."""
    import ray
    if not ray.is_initialized():
        raise ClusterError("fit(ClusterData) needs this process connected to the Ray cluster first "
                           "(ray.init(address=...))")
    alive = {n["NodeID"]: n["Resources"] for n in _alive_nodes()}
    absent = [d.host for d in data.nodes if d.node_id not in alive]
    if absent:
        raise ClusterError(f"host(s) {', '.join(absent)} are not alive nodes of the Ray cluster")
    return alive


def _cpu_nodes() -> list[dict]:
    """The alive nodes with a CPU to offer (a node without CPUs fits nothing)."""
    return [n for n in _alive_nodes() if n["Resources"].get("CPU", 0) >= 1]


def _task_cpus(nodes: list[dict]) -> int:
    """The CPUs an expert's or the fusion's task asks for: the smallest node's, so that every node can run one."""
    return max(1, int(min(n["Resources"]["CPU"] for n in nodes)))


def _alive_nodes() -> list[dict]:
    import ray
    return [n for n in ray.nodes() if n.get("Alive")]


def _host(node: dict) -> str:
    """A node's host name (``--node-name``), else its address."""
    return node.get("NodeName") or node["NodeManagerAddress"]


def _use_cpus(cpus: int) -> None:
    """Libraries in a Ray task size their thread pools by the machine's cores; use the task's CPUs."""
    import torch
    torch.set_num_threads(cpus)


def _gather(refs: dict[Any, str], arrived: Callable[[Any, Any], None] | None = None,
            finished: Callable[[Any], dict[Any, str]] | None = None) -> dict[Any, Any]:
    """The results of ``refs`` (each with what it does), failing as soon as one task fails or a node that was
    alive at the start leaves the cluster while tasks are pending. ``finished(ref)`` is called the moment a task
    ends, before its result travels; the tasks it returns (ref → what it does) are waited for too.
    ``arrived(ref, result)`` is called as each result comes."""
    import ray
    from ray.exceptions import RayError, RayTaskError
    watched = {n["NodeID"]: _host(n) for n in _alive_nodes()}
    refs, pending, results = dict(refs), list(refs), {}
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=POLL_SECONDS)
        for ref in done:
            what = refs[ref]
            more = finished(ref) if finished is not None else None
            if more:
                refs.update(more)
                pending.extend(more)
            try:
                results[ref] = ray.get(ref)
            except RayTaskError as exc:
                _cancel(pending)
                cause = getattr(exc, "cause", None)
                if isinstance(cause, (DataError, TimeBudgetError, ClusterError)):
                    raise cause from None
                raise ClusterError(f"{what} failed on the Ray cluster: {type(cause).__name__ if cause else 'error'}: "
                                   f"{cause if cause is not None else exc}") from None
            except RayError as exc:  # the worker process or its node died
                _cancel(pending)
                died = re.search(r"node ID: ([0-9a-f]+)", str(exc))  # NodeDiedError names the node
                lost = _lost(watched) or ([watched[died.group(1)]] if died and died.group(1) in watched else [])
                if lost:
                    raise ClusterError(f"host(s) {', '.join(lost)} left the Ray cluster while {what} ran: check "
                                       "that host's log (it stopped, ran out of memory or lost the network)") from None
                raise ClusterError(f"{what} failed on the Ray cluster: {type(exc).__name__}: "
                                   f"{str(exc).split('. ')[0]}") from None
            if arrived is not None:
                arrived(ref, results[ref])
        lost = _lost(watched) if pending else []
        if lost:
            _cancel(pending)
            raise ClusterError(f"host(s) {', '.join(lost)} left the Ray cluster while "
                               f"{', '.join(refs[r] for r in pending)} {'was' if len(pending) == 1 else 'were'} "
                               "pending: check that host's log (it stopped, ran out of memory or lost the network)")
    return results


def _lost(watched: dict[str, str]) -> list[str]:
    """The hosts of ``watched`` (node id → host) that are no longer alive nodes."""
    alive = {n["NodeID"] for n in _alive_nodes()}
    return [host for node_id, host in watched.items() if node_id not in alive]


def _cancel(refs: list) -> None:
    import ray
    for ref in refs:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001 - best effort: the fit fails anyway
            pass
