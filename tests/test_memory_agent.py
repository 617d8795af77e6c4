"""Memory-agent rollouts and the MemTrain task: sample structure and token budgets.

Fast tests use a random tiny policy with the real tokenizer and chat template (its replies are
noise, but every turn, budget and group is real); the slow test runs the real SmolLM2.
"""

from __future__ import annotations

import numpy as np
import pytest
from masked_document import BUDGETS, DOCUMENT, TEXT, small_config

from memtrain.agent.chunks import chunk_document
from memtrain.rl import policies
from memtrain.rl.memtrain_task import MemTrainTask
from memtrain.settings import Budgets, MemTrain, Runtime, section


def settings(**memtrain) -> dict:
    return small_config({"group_size": 3, "recall_group_size": 2, **memtrain})


def make_task(policy_path, variant: str) -> tuple[MemTrainTask, dict]:
    config = settings()
    policy = policies.load(policy_path, Runtime.of(config), seed=0)
    task = MemTrainTask(policies.memory_agent(policy, config), section(MemTrain, config), variant, "[MASK]")
    return task, config


def check_budgets(task: MemTrainTask, trajectories) -> None:
    budgets: Budgets = task.agent.budgets
    for trajectory in trajectories:
        for turn in trajectory.turns:
            assert len(turn.response_ids) <= budgets.response
            assert len(turn.prompt_ids) + len(turn.response_ids) <= budgets.context
        for memory in trajectory.memories:
            assert len(task.agent.tokenizer(memory, add_special_tokens=False)["input_ids"]) <= budgets.memory


@pytest.mark.parametrize("variant", ["full", "decoupled", "e2e"])
def test_memtrain_rollout_structure(tiny_policy, variant):
    task, _config = make_task(tiny_policy, variant)
    chunks, truncated = task.chunks(DOCUMENT)
    assert len(chunks) == 3 and truncated  # the text needs more than 3 x 16 tokens: its tail is dropped
    rollout = task.rollout([DOCUMENT, DOCUMENT], np.random.default_rng(0))

    e2e = [g for g in rollout.groups if g.kind == "e2e"]
    recall = [g for g in rollout.groups if g.kind == "recall"]
    assert [g.item for g in e2e] == [0, 1] and all(len(g.members) == 3 for g in e2e)
    for group in e2e:
        for member in group.members:  # 3 memory updates then the answer: 4 turns, one sample each
            assert len(member.samples) == 4
    if variant == "e2e":
        assert recall == [] and "recall_em" not in rollout.values
    else:
        assert len(recall) == 6 and all(len(g.members) == 2 and len(g.members[0].samples) == 1 for g in recall)
        assert rollout.values["recall_coverage"] == [1.0] * 6
    if variant != "full":  # without coupling R^E is the answer's exact match
        assert rollout.values["e2e_reward"] == rollout.values["e2e_em"]
    assert len(rollout.values["memory_tokens"]) == 2 * 3 * 3
    assert max(rollout.values["memory_tokens"]) <= BUDGETS["response"]
    record = rollout.records[0]
    assert record["doc_id"] == "d0" and record["memories"].count("[memory ") == 3


def test_trajectories_respect_the_budgets_and_recall_prompts_hide_the_target(tiny_policy):
    task, _ = make_task(tiny_policy, "full")
    chunks, _ = task.chunks(DOCUMENT)
    trajectories = task.agent.read([task.problem], [chunks], group_size=2)[0]
    check_budgets(task, trajectories)
    prompt = task.agent.tokenizer.decode(trajectories[0].turns[0].prompt_ids)
    assert task.problem in prompt and "No previous memory." in prompt and chunks[0].text in prompt
    answer_prompt = task.agent.tokenizer.decode(trajectories[0].turns[-1].prompt_ids)
    assert "<section>" not in answer_prompt and trajectories[0].memories[-1] in answer_prompt


def test_over_long_problem_or_document_is_refused(tiny_policy):
    task, _ = make_task(tiny_policy, "e2e")
    with pytest.raises(ValueError, match="instruction budget"):
        task.agent.check_problem("word " * 400)
    too_many = chunk_document(task.agent.tokenizer, TEXT, 16)
    with pytest.raises(ValueError, match="chunk budget"):
        task.agent.read(["p"], [too_many], 1)


@pytest.mark.slow
def test_real_smollm2_rollout(smollm2_policy):
    """The bundled SmolLM2, dequantised once, reads a document: real memories, budgets respected."""
    task, _ = make_task(smollm2_policy, "full")
    rollout = task.rollout([DOCUMENT], np.random.default_rng(1))
    chunks, _ = task.chunks(DOCUMENT)
    trajectories = task.agent.read([task.problem], [chunks], group_size=2)[0]
    check_budgets(task, trajectories)
    assert all(t.memories and all(m.strip() for m in t.memories) for t in trajectories)
    assert {g.kind for g in rollout.groups} == {"e2e", "recall"}
    assert len(rollout.values["e2e_em"]) == 3 and len(rollout.values["recall_em"]) == 6
