"""Which rows of a veRL step form each optimizer step and which are trained (memtrain.distributed.minibatches),
on hand-written row keys and extra fields: the local trainer's partition (Trainer.update) and filter."""

import pytest

from memtrain.distributed import advantages, minibatches

PROMPT = {advantages.SCOPE: advantages.PROMPT, advantages.GROUP: "e2e", advantages.MEMBER: 0}


def recall(member: int, reward: float) -> dict:
    return {
        advantages.SCOPE: advantages.SESSION,
        advantages.GROUP: "recall0",
        advantages.MEMBER: member,
        advantages.REWARD: reward,
    }


def test_rows_are_grouped_by_item_in_sampled_order_mini_batch_size_items_at_a_time():
    # three items a, b, c; veRL's keys are {uid}_{session}_{index}; rows of an item need not be adjacent
    keys = ["a_0_0", "a_0_1", "b_0_0", "a_1_0", "c_0_0", "b_1_0", "c_1_0", "c_1_1"]
    assert minibatches.item_minibatches(keys, 2) == [[0, 1, 3, 2, 5], [4, 6, 7]]
    assert minibatches.item_minibatches(keys, 3) == [[0, 1, 3, 2, 5, 4, 6, 7]]  # the whole step: one update
    assert minibatches.item_minibatches(keys, 1) == [[0, 1, 3], [2, 5], [4, 6, 7]]
    with pytest.raises(ValueError, match="at least 1"):
        minibatches.item_minibatches(keys, 0)


def test_with_filtering_only_rows_of_informative_groups_are_trained():
    keys = ["a_0_0", "a_0_1", "a_0_2", "a_1_0", "b_0_0", "b_1_0"]
    extras = [
        recall(0, 1.0),
        recall(1, 1.0),  # a's session-0 recall group: both right, nothing to learn
        {**PROMPT, advantages.REWARD: 1.0},  # a's E2E group across sessions: 1.0 vs 0.0, informative
        {**PROMPT, advantages.REWARD: 0.0},
        {**PROMPT, advantages.REWARD: 0.0},
        {**PROMPT, advantages.REWARD: 0.0},
    ]  # b: all zero
    assert minibatches.trained_rows(keys, extras, filter_groups=True) == [False, False, True, True, False, False]
    assert minibatches.trained_rows(keys, extras, filter_groups=False) == [True] * 6
