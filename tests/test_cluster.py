"""Training on a Ray cluster (multimodal.core.cluster), with two nodes simulated on this machine by
ray.cluster_utils.Cluster: each node has 1 CPU and a custom resource naming it."""
from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import FAST_HYPERPARAMETERS

from multimodal import ClusterError, DataError, MultimodalClassifier, MultimodalEstimator
from multimodal.core.cluster import ClusterData, NodeData
from multimodal.core.executors import RayClusterExecutor
from multimodal.core.ingest import frame_batches
from multimodal.tools.synthetic import make_dataset, make_regression_dataset

pytestmark = pytest.mark.slow

BATCH_ROWS = 40


class FrameReader:
    """A node's reader over an in-memory frame (pickled to the node), optionally failing."""

    def __init__(self, frame: pd.DataFrame, fail: str | None = None) -> None:
        self.frame = frame
        self.fail = fail

    def __call__(self):
        if self.fail == "crash":
            raise RuntimeError("the disk of this node is gone")
        frame = self.frame
        if self.fail == "bad number":
            frame = frame.copy()
            frame.loc[frame.index[50], "size_num"] = "twelve"
        return frame_batches(frame, BATCH_ROWS)


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # The readers below are defined here: the nodes' workers get them by value, not by importing this module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    store = 300 * 2**20
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"node_a": 1},
                                                             "object_store_memory": store})
    second = cluster.add_node(num_cpus=1, resources={"node_b": 1}, object_store_memory=store)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ids = {"a": cluster.head_node.node_id, "b": second.node_id}
    yield ids
    ray.shutdown()
    cluster.shutdown()


def _data(ids: dict, train: pd.DataFrame, *, fail_b: str | None = None, validation=None) -> ClusterData:
    return ClusterData(nodes=(NodeData(ids["a"], "algo-1", FrameReader(train), validation),
                              NodeData(ids["b"], "algo-2", FrameReader(train, fail_b), validation)))


def test_embedding_and_experts_run_on_both_nodes_and_the_model_is_a_one_node_models_twin(cluster, trained, train_df,
                                                                                          test_df, tmp_path):
    model = MultimodalClassifier(**{**FAST_HYPERPARAMETERS, "n_mins": 0, "n_secs": 150}).fit(_data(cluster, train_df))

    report = model.metrics_["cluster"]
    batches = {e["node_id"]: e["batches"] for e in report["embedding"]}
    n_batches = -(-len(train_df) // BATCH_ROWS)
    assert batches == {cluster["a"]: (n_batches + 1) // 2, cluster["b"]: n_batches // 2}
    assert {e["node_id"] for e in report["experts"].values()} == {cluster["a"], cluster["b"]}
    # Where each expert's folds ran (on its node, or on both while one had a CPU free) is reported
    folds = {name: e["fold_nodes"] for name, e in report["experts"].items()}
    assert all(sum(nodes.values()) >= FAST_HYPERPARAMETERS["n_folds"] and set(nodes) <= set(cluster.values())
               for nodes in folds.values()), folds
    # The fusion's network, and the network and ensemble of each fold of its choice, ran on the two hosts
    fusion = report["fusion"]
    assert sorted(f["what"] for f in fusion) == sorted(
        ["the fusion network"] + [f"fusion choice: {name} of fold {i}" for i in range(1, 6)
                                  for name in ("network", "ensemble")]), fusion
    assert {f["node_id"] for f in fusion} == {cluster["a"], cluster["b"]} and all(f["seconds"] >= 0 for f in fusion)
    # The same structure as the one-node fit of the same rows (conftest's `trained`)
    assert model.expert_names_ == trained.expert_names_
    assert model.classes_ == trained.classes_ and model.schema_ == trained.schema_
    assert [e.classes for e in model.experts_] == [e.classes for e in trained.experts_]
    assert model.missing_indicators_ == trained.missing_indicators_
    assert model.metrics_["rows"] == trained.metrics_["rows"]
    # Batches embedded on two nodes come back in the rows' order: the experts learned real signal
    assert model.metrics_["validation"]["accuracy"] > 0.6
    model.save(tmp_path)
    loaded = MultimodalClassifier.load(tmp_path)
    proba = loaded.predict_proba(test_df.drop(columns=["label"]))
    assert proba.shape == (len(test_df), len(trained.classes_))
    assert (loaded.predict(test_df.drop(columns=["label"])) == test_df["label"]).mean() > 0.6


def test_a_regression_fit_on_the_cluster_predicts_numbers(cluster, tmp_path):
    """problem_type (auto → regression, decided on the driver from the rows the nodes read) reaches every expert
    task; the toy experts leave most of the budget, so the joint expert is fitted again (use_leftover_time) on a
    node, and the two are compared by their out-of-fold squared errors."""
    train = make_regression_dataset(240, seed=6, with_images=False)
    # 150 s: the leftover is fitted when the toy experts end within 60 s (150 - 2 × 15 - 60), a wide margin on 240 rows
    model = MultimodalEstimator(quality="toy", n_folds=2, n_mins=0, n_secs=150, n_epochs=40).fit(
        _data(cluster, train))
    assert model.problem_type_ == "regression" and all(e.classes == [] for e in model.experts_)
    report = model.metrics_["cluster"]
    assert {e["node_id"] for e in report["experts"].values()} == {cluster["a"], cluster["b"]}
    assert list(report["leftover"]) == ["joint"] and report["leftover"]["joint"]["node_id"] in cluster.values()
    losses = model.metrics_["leftover"]["out_of_fold_loss"]
    assert set(losses) == {"toy", "light"} and min(losses.values()) < train["label"].astype(float).var()
    assert model.metrics_["validation"]["rmse"] < train["label"].astype(float).std()
    model.save(tmp_path)
    test = make_regression_dataset(40, seed=7, with_images=False)
    assert MultimodalEstimator.load(tmp_path).predict(test.drop(columns="label")).notna().all()


def test_sharded_rows_meet_on_the_driver(cluster):
    rows = make_dataset(240, seed=5, with_images=False)
    first, second = rows.iloc[:100], rows.iloc[100:]
    data = ClusterData(nodes=(NodeData(cluster["a"], "algo-1", FrameReader(first)),
                              NodeData(cluster["b"], "algo-2", FrameReader(second))), replicated=False)
    model = MultimodalClassifier(quality="toy", n_folds=2, n_mins=0, n_secs=40, n_epochs=20, joint_expert=False)
    executor = RayClusterExecutor(data, model.parallel_folds)
    _, train, _ = executor.read(model._get_featurizer(), data, None, None)
    assert [e["rows"] for e in executor.report["embedding"]] == [100, 140]
    assert train.features.ids.tolist() == rows["ID"].tolist()


def test_a_data_error_on_one_node_names_that_host_and_the_row(cluster, train_df):
    model = MultimodalClassifier(**{**FAST_HYPERPARAMETERS, "n_mins": 0, "n_secs": 60})
    data = ClusterData(nodes=(NodeData(cluster["a"], "algo-1", FrameReader(train_df)),
                              NodeData(cluster["b"], "algo-2", FrameReader(train_df, "bad number"))),
                       replicated=False)
    with pytest.raises(DataError, match=r"algo-2.*'size_num', row 51.*'twelve' is not a number"):
        model.fit(data)


def test_a_task_failing_on_one_node_fails_the_fit_with_the_host_and_the_reason(cluster, train_df):
    model = MultimodalClassifier(**{**FAST_HYPERPARAMETERS, "n_mins": 0, "n_secs": 60})
    with pytest.raises(ClusterError, match=r"host algo-2.*RuntimeError: the disk of this node is gone"):
        model.fit(_data(cluster, train_df, fail_b="crash"))


def test_nodes_that_are_not_in_the_cluster_are_refused(cluster, train_df):
    data = ClusterData(nodes=(NodeData("f" * 56, "algo-9", FrameReader(train_df)),))
    with pytest.raises(ClusterError, match="algo-9 are not alive nodes"):
        MultimodalClassifier().fit(data)


def test_validation_rows_read_on_the_nodes_early_stop_and_are_scored(cluster):
    train = make_dataset(200, seed=6, with_images=False)
    validation = make_dataset(80, seed=7, with_images=False)
    model = MultimodalClassifier(quality="toy", n_folds=2, n_mins=0, n_secs=45, n_epochs=20)
    model.fit(_data(cluster, train, validation=FrameReader(validation)))
    assert model.metrics_["rows"] == {"train": 200, "validation": 80}
    assert model.metrics_["validation_source"] == "validation data"
    assert np.isfinite(model.metrics_["validation"]["accuracy"])


def _fit_spread_expert(frame: pd.DataFrame, target: np.ndarray, work: str, freed_mid_bag: bool = False,
                       large_machine: bool = False, side_by_side: bool = False) -> tuple[list, np.ndarray, np.ndarray]:
    """On a node of the cluster: an expert fitted with its folds spread, then loaded from its files as the head
    loads it; (its bags, its out-of-fold outputs, its loaded copy's outputs). ``freed_mid_bag``: every bag
    starts while no other node is free (whatever the cluster says) and another node frees up for one fold
    during its first fold, which takes a second here. ``large_machine``: the expert's one CPU counts as a machine large
    enough for folds side by side (this machine may not have the CPUs). ``side_by_side``: the bagged models
    fitted side by side, as an expert on a cluster of small machines fits them."""
    import threading
    import time
    from pathlib import Path

    from multimodal.core import foldpool, sidebyside, spreadfolds
    from multimodal.core.experts import Expert, ExpertSpec
    spreadfolds.install()
    spreadfolds.BAGS.clear()
    spec = ExpertSpec(name="num", modality="num", columns=list(frame.columns))
    path = Path(work) / "num"
    measured, fold_task, parallel_from = (foldpool._folds_free_elsewhere, spreadfolds._fold_task,
                                          spreadfolds.MIN_PARALLEL_CPUS)
    if large_machine:
        spreadfolds.MIN_PARALLEL_CPUS = 1
    if freed_mid_bag:
        asked = threading.local()

        def free_elsewhere(cpus: int) -> int:  # one CPU, the first time a bag's queue thread asks
            if threading.current_thread().name != "multimodal-fold-queue" or getattr(asked, "once", False):
                return 0
            asked.once = True
            return 1

        def slow_fold_task(**kwargs):  # only the folds fitted in this process (Ray tasks import the original)
            time.sleep(1.0)
            return fold_task(**kwargs)
        foldpool._folds_free_elsewhere, spreadfolds._fold_task = free_elsewhere, slow_fold_task
    try:
        with sidebyside.side_by_side(side_by_side):
            expert, oof = Expert.fit(spec, frame, target, path=path, quality="toy", n_folds=3, time_limit=60,
                                     seed=0, text_columns=[], fold_strategy=spreadfolds.STRATEGY, num_cpus=1)
    finally:  # the worker process serves later tests
        foldpool._folds_free_elsewhere, spreadfolds._fold_task = measured, fold_task
        spreadfolds.MIN_PARALLEL_CPUS = parallel_from
    return list(spreadfolds.BAGS), oof, Expert.load(spec, path, expert.classes).outputs(frame)


def test_folds_fitted_on_an_idle_node_come_back_into_the_experts_predictor(cluster, train_df, tmp_path):
    """While node b has its CPU free, the folds of an expert fitting on node a with the few CPUs of a small
    machine go to both nodes (the expert's fold queue: its own process and b); the folds fitted on b come back
    as files and the expert loaded from a's directory predicts with every fold."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    frame = train_df[["size_num", "weight_num"]].apply(pd.to_numeric, errors="coerce").fillna(0.0)
    target = pd.factorize(train_df["label"])[0]
    task = ray.remote(_fit_spread_expert).options(
        num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(cluster["a"], soft=False))
    bags, oof, outputs = ray.get(task.remote(frame, target, str(tmp_path)))
    folds = [fold for bag in bags for fold in bag["folds"]]
    assert {fold["node_id"] for fold in folds} == {cluster["a"], cluster["b"]}, bags
    assert all(len(bag["folds"]) == 3 for bag in bags)
    assert oof.shape == outputs.shape == (len(frame), target.max() + 1)
    np.testing.assert_allclose(outputs.sum(axis=1), 1.0, rtol=1e-4)
    assert (outputs.argmax(axis=1) == target).mean() > 0.5  # predicted with the folds' models


def test_on_large_machines_every_fold_is_a_task_on_whichever_node_has_cpus_free(cluster, train_df, tmp_path):
    """On machines large enough for folds side by side an expert submits every fold as a Ray task, as AutoGluon's
    parallel_local does; with node a's CPU taken by other work they all run on b, and come back to a's
    directory."""
    import time

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    frame = train_df[["size_num", "weight_num"]].apply(pd.to_numeric, errors="coerce").fillna(0.0)
    target = pd.factorize(train_df["label"])[0]
    on_a = NodeAffinitySchedulingStrategy(cluster["a"], soft=False)
    busy = ray.remote(lambda: time.sleep(120)).options(num_cpus=1, scheduling_strategy=on_a).remote()
    try:  # the expert itself asks for no CPU, so that a's one CPU stays with the other work throughout
        task = ray.remote(_fit_spread_expert).options(num_cpus=0, scheduling_strategy=on_a)
        bags, oof, outputs = ray.get(task.remote(frame, target, str(tmp_path), large_machine=True), timeout=120)
    finally:
        ray.cancel(busy, force=True)
    assert bags and all(len(bag["folds"]) == 3 for bag in bags), bags
    assert {fold["node_id"] for bag in bags for fold in bag["folds"]} == {cluster["b"]}, bags
    assert (outputs.argmax(axis=1) == target).mean() > 0.5


def test_a_node_that_frees_up_during_a_bag_takes_the_folds_still_waiting(cluster, train_df, tmp_path):
    """Each bag starts while no other node is free, so the expert's own process takes its first fold; node b
    frees up meanwhile and takes the fold waiting at the back of the queue at once, while the expert's process
    goes on to the second."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    frame = train_df[["size_num", "weight_num"]].apply(pd.to_numeric, errors="coerce").fillna(0.0)
    target = pd.factorize(train_df["label"])[0]
    task = ray.remote(_fit_spread_expert).options(
        num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(cluster["a"], soft=False))
    bags, oof, outputs = ray.get(task.remote(frame, target, str(tmp_path), freed_mid_bag=True))
    assert bags and all(sorted(fold["node_id"] == cluster["b"] for fold in bag["folds"]) == [False, False, True]
                        for bag in bags), bags
    assert (outputs.argmax(axis=1) == target).mean() > 0.5


def test_bagged_models_fitted_side_by_side_give_the_expert_fitted_one_after_another(cluster, train_df, tmp_path):
    """An expert on a cluster of small machines fits its bagged models side by side (their folds share its fold
    queue and node b): same models in the same order, same out-of-fold and predicted outputs as the models fitted
    one after another; the folds ran on both nodes."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    frame = train_df[["size_num", "weight_num"]].apply(pd.to_numeric, errors="coerce").fillna(0.0)
    target = pd.factorize(train_df["label"])[0]
    task = ray.remote(_fit_spread_expert).options(
        num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(cluster["a"], soft=False))
    bags, oof, outputs = ray.get(task.remote(frame, target, str(tmp_path / "in-turn")))
    side_bags, side_oof, side_outputs = ray.get(task.remote(frame, target, str(tmp_path / "side"), side_by_side=True))
    assert [bag["model"] for bag in side_bags] != [], side_bags
    assert sorted(bag["model"] for bag in side_bags) == sorted(bag["model"] for bag in bags)
    assert {fold["node_id"] for bag in side_bags for fold in bag["folds"]} == {cluster["a"], cluster["b"]}
    np.testing.assert_allclose(side_oof, oof, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(side_outputs, outputs, rtol=1e-6, atol=1e-7)
    from autogluon.tabular import TabularPredictor
    names = [TabularPredictor.load(str(tmp_path / d / "num"), verbosity=0).model_names() for d in ("in-turn", "side")]
    assert names[0] == names[1] and len(names[0]) > 2, names
