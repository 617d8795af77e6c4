"""What a rollout hands the trainer: groups of scored members, each member one or more training samples.

A GRPO group holds the rollouts that share a prompt (the G1 trajectories of one document, or the
G2 recall answers of one trajectory). A member carries one scalar reward; its advantage is
broadcast to all of its samples, which is how an end-to-end trajectory's outcome reaches every
memory-update turn (paper Eq. 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One conversation the policy is trained on: the prompt it saw and the reply it wrote."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass(frozen=True)
class Member:
    reward: float
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class Group:
    item: int  # index of the data item (document, question) in the rollout's item list
    kind: str  # what the group answers, e.g. "e2e" or "recall"; metrics are split by it
    members: tuple[Member, ...]

    @property
    def rewards(self) -> list[float]:
        return [member.reward for member in self.members]


@dataclass
class Rollout:
    """A task's rollout of some items: groups to learn from, raw metric values, and a few readable records."""

    groups: list[Group] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)  # averaged by the trainer over all rounds of a step
    records: list[dict[str, Any]] = field(default_factory=list)  # full rollouts for the MLflow table

    def extend(self, other: Rollout, item_offset: int) -> None:
        """Append another round's rollout, renumbering its items after ours (DAPO refill)."""
        self.groups.extend(Group(g.item + item_offset, g.kind, g.members) for g in other.groups)
        for name, values in other.values.items():
            self.values.setdefault(name, []).extend(values)
        self.records.extend(other.records)
