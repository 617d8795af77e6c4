"""Which of a veRL step's rows form each optimizer step, and which rows are trained at all.

The paper (and the local trainer, memtrain.rl.trainer.Trainer.update) takes one optimizer step per
`mini_batch_size` items, over every row of those items' sessions together, and normalises the loss by
the number of rows trained (Eq. 4). veRL splits a step's rows into mini-batches of a fixed row count
(ppo_mini_batch_size x rollout.n) instead, which for agent loops returning one row per turn gives many
optimizer steps per step, most of them off-policy. These pure functions give our veRL trainer
(memtrain.distributed.verl_trainer) the local trainer's partition; they read only the row keys veRL
stores (`{uid}_{session}_{index}`) and the extra fields our agent loops write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from memtrain.distributed.advantages import REWARD, group_and_member


def item_minibatches(keys: Sequence[str], mini_batch_size: int) -> list[list[int]]:
    """Row indices per optimizer step: the rows of `mini_batch_size` items at a time, items in sampled order."""
    if mini_batch_size < 1:
        raise ValueError(f"mini_batch_size must be at least 1, not {mini_batch_size}")
    rows_of: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        rows_of.setdefault(key.split("_", 1)[0], []).append(index)
    items = list(rows_of.values())
    return [
        [row for item in items[start : start + mini_batch_size] for row in item]
        for start in range(0, len(items), mini_batch_size)
    ]


def trained_rows(keys: Sequence[str], extras: Sequence[Mapping], filter_groups: bool) -> list[bool]:
    """Whether each row enters the update: with group filtering, only rows of groups whose rewards differ.

    The local trainer keeps an item when one of its groups is informative and then trains on the informative
    groups alone; an uninformative group of a kept item (say, IMR answers all right) would add nothing to the
    policy gradient but would still weigh in the KL term and in Eq. 4's normaliser.
    """
    groups: dict[str, set[float]] = {}
    row_groups = []
    for key, extra in zip(keys, extras, strict=True):
        group, _ = group_and_member(key, extra)
        groups.setdefault(group, set()).add(float(extra[REWARD]))
        row_groups.append(group)
    if not filter_groups:
        return [True] * len(keys)
    return [max(groups[g]) - min(groups[g]) > 1e-9 for g in row_groups]
