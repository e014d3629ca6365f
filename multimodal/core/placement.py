"""Which machine of a cluster fits which expert, in which order, and with how much of the time budget.

Experts are placed longest first onto the machine with the least planned work (LPT), by their expected cost
(``expert_cost``). Each machine runs its experts one after another and shares what is left of the budget among
its own queue by cost, so time one expert leaves unused, or takes beyond its share, moves the next expert's
share on that machine only: an expert that overruns does not push the other machines' plans. A machine whose
queue is empty takes the last not yet started expert of the machine with the most planned work left (so the
plan corrects itself when the costs were wrong); its CPUs meanwhile fit the folds of the others' experts
(``spreadfolds``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable

from .experts import ExpertSpec
from .timebudget import EXPERT_TIME_WEIGHT, MIN_EXPERT_SECONDS

Node = Hashable


def expert_cost(spec: ExpertSpec) -> float:
    """Expected fitting time relative to a one-column expert: the modality's share of the budget (image experts
    see hundreds of embedding features, the joint expert every column)."""
    return EXPERT_TIME_WEIGHT[spec.modality]


@dataclass
class Placement:
    """The queues of the machines (node → experts not yet started, in running order) and the cost of each."""

    queues: dict[Node, list[ExpertSpec]]
    cost: Callable[[ExpertSpec], float] = expert_cost
    moved: list[tuple[str, Node, Node]] = field(default_factory=list)  # (expert, planned node, node it ran on)
    planned: dict[str, Node] = field(default_factory=dict)

    @classmethod
    def plan(cls, specs: Iterable[ExpertSpec], nodes: list[Node],
             cost: Callable[[ExpertSpec], float] = expert_cost) -> "Placement":
        queues: dict[Node, list[ExpertSpec]] = {node: [] for node in nodes}
        load = {node: 0.0 for node in nodes}
        for spec in sorted(specs, key=cost, reverse=True):  # sorted() is stable: ties keep the caller's order
            node = min(nodes, key=lambda n: (load[n], nodes.index(n)))
            queues[node].append(spec)
            load[node] += cost(spec)
        placement = cls(queues, cost)
        placement.planned = {spec.name: node for node, queue in queues.items() for spec in queue}
        return placement

    def next(self, node: Node) -> ExpertSpec | None:
        """The expert ``node`` fits next: the head of its queue, else one taken from the busiest other queue."""
        if not self.queues[node]:
            donors = [n for n, queue in self.queues.items() if len(queue) > 0 and n != node]
            if not donors:
                return None
            donor = max(donors, key=lambda n: sum(self.cost(s) for s in self.queues[n]))
            spec = self.queues[donor].pop()
            self.moved.append((spec.name, donor, node))
            return spec
        return self.queues[node].pop(0)

    def share(self, spec: ExpertSpec, node: Node, seconds_left: float) -> float:
        """Seconds for ``spec``, starting now on ``node``: its cost's part of what is left, shared with the experts
        still queued on ``node``; at least its minimum."""
        queued = self.cost(spec) + sum(self.cost(s) for s in self.queues[node])
        weight = EXPERT_TIME_WEIGHT[spec.modality]
        return max(max(seconds_left, 0.0) * self.cost(spec) / queued, MIN_EXPERT_SECONDS * weight)
