"""GRPO advantages over veRL rollout rows that belong to groups of two scopes.

veRL's v1 trainer stores every sequence an agent loop returns under the key `{uid}_{session}_{index}`
and groups by `uid` only, taking one reward per session. MemTrain needs two kinds of group: the G1
trajectories of one item (across sessions: E2E, MemAgent, MEM1), whose member is a whole session
and whose advantage reaches every turn (paper Eq. 3); and the G2 recall answers of one trajectory
(inside a session: IMR), whose members are single sequences. Each row says which it belongs to in
its extra fields (written by memtrain.distributed.agent_loops), and this module turns that into the
group and member ids that veRL's own `compute_grpo_outcome_advantage` takes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

# Extra fields an agent loop writes on each output.
GROUP, SCOPE, MEMBER, REWARD = "memtrain_group", "memtrain_scope", "memtrain_member", "memtrain_reward"
PROMPT, SESSION = "prompt", "session"


@dataclass(frozen=True)
class RowKey:
    uid: str
    session: str
    index: int

    @classmethod
    def parse(cls, key: str) -> RowKey:
        uid, session, index = key.rsplit("_", 2)
        return cls(uid, session, int(index))


def group_and_member(key: str, extra: Mapping) -> tuple[str, str]:
    """The GRPO group a row is scored in and the member whose reward it carries."""
    row = RowKey.parse(key)
    if extra[SCOPE] == PROMPT:
        return row.uid, f"{row.uid}_{row.session}"
    if extra[SCOPE] == SESSION:
        group = f"{row.uid}_{row.session}/{extra[GROUP]}"
        return group, f"{group}/{extra[MEMBER]}"
    raise ValueError(f"row {key}: unknown group scope {extra[SCOPE]!r}")


def row_advantages(keys: Sequence[str], extras: Sequence[Mapping], norm_by_std: bool = False) -> list[float]:
    """One advantage per row: its member's group-relative reward (Dr. GRPO when norm_by_std is False).

    A member appears once in the advantage computation however many rows (turns) it has, so a
    trajectory of eight turns weighs in its group as much as one of three.
    """
    from verl.trainer.ppo import core_algos

    members: dict[str, tuple[str, float]] = {}
    row_members = []
    for key, extra in zip(keys, extras, strict=True):
        group, member = group_and_member(key, extra)
        reward = float(extra[REWARD])
        if member in members and members[member] != (group, reward):
            raise ValueError(f"row {key}: member {member} has two rewards or groups")
        members[member] = (group, reward)
        row_members.append(member)
    names = list(members)
    if not names:
        return []
    rewards = torch.tensor([[members[name][1]] for name in names], dtype=torch.float32)
    advantages, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=rewards,
        response_mask=torch.ones_like(rewards),
        index=np.array([members[name][0] for name in names], dtype=object),
        norm_adv_by_std_in_grpo=norm_by_std,
    )
    by_member = dict(zip(names, advantages[:, 0].tolist(), strict=True))
    return [by_member[member] for member in row_members]
