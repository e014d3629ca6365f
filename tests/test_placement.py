"""Placing the experts on the machines of a cluster: longest first onto the least loaded, the budget shared per
machine, idle machines taking queued work, and the projection to more machines."""
from __future__ import annotations

import pytest

from multimodal.core.experts import ExpertSpec
from multimodal.core.placement import Placement
from multimodal.core.timebudget import MIN_EXPERT_SECONDS

MODALITIES = {"text": "text", "num": "num", "cat": "cat", "photo_image": "image", "joint": "joint"}
SPECS = [ExpertSpec(name, modality, [name]) for name, modality in MODALITIES.items()]


def names(queue: list[ExpertSpec]) -> list[str]:
    return [spec.name for spec in queue]


def test_the_heaviest_experts_go_to_different_machines_and_the_plan_is_balanced():
    placement = Placement.plan(SPECS, ["algo-1", "algo-2"])
    assert names(placement.queues["algo-1"]) == ["joint", "num"]  # costs 3 + 1
    assert names(placement.queues["algo-2"]) == ["photo_image", "text", "cat"]  # 2 + 1 + 1
    one = Placement.plan(SPECS, ["algo-1"])
    assert names(one.queues["algo-1"]) == ["joint", "photo_image", "text", "num", "cat"]
    five = Placement.plan(SPECS, [f"algo-{k}" for k in range(1, 7)])
    assert sorted(len(q) for q in five.queues.values()) == [0, 1, 1, 1, 1, 1]


def test_each_machine_shares_what_is_left_among_its_own_queue():
    placement = Placement.plan(SPECS, ["algo-1", "algo-2"])
    joint = placement.next("algo-1")
    assert placement.share(joint, "algo-1", 400) == pytest.approx(300)  # 3 of algo-1's 4
    photo = placement.next("algo-2")
    assert placement.share(photo, "algo-2", 400) == pytest.approx(200)  # 2 of algo-2's 4
    # the joint expert overran: the next on its machine gets what is left, the other machine's plan is unchanged
    num = placement.next("algo-1")
    assert placement.share(num, "algo-1", 20) == pytest.approx(20)
    text = placement.next("algo-2")
    assert placement.share(text, "algo-2", 250) == pytest.approx(125)  # half of what is left: cat follows
    cat = placement.next("algo-2")
    assert placement.share(cat, "algo-2", 0) == MIN_EXPERT_SECONDS  # the budget is spent: its minimum


def test_a_machine_with_nothing_queued_takes_the_last_expert_of_the_busiest():
    placement = Placement.plan(SPECS, ["algo-1", "algo-2"])
    assert names([placement.next("algo-1"), placement.next("algo-1")]) == ["joint", "num"]
    assert placement.next("algo-2").name == "photo_image"
    assert placement.next("algo-1").name == "cat"  # algo-2 is still fitting the photo expert: its last is taken
    assert placement.moved == [("cat", "algo-2", "algo-1")] and placement.planned["cat"] == "algo-2"
    assert placement.next("algo-2").name == "text" and placement.next("algo-2") is None
    assert placement.next("algo-1") is None
