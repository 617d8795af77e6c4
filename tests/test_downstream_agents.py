"""MemAgent and MEM1 rollouts, their rewards, and the evaluation metrics.

The search agent's control flow (pruning, lockstep, turn limits, what enters the loss) is checked
with a scripted engine whose replies are known; the same code then runs with a random tiny policy
(every budget and sample real) and, in the slow test of test_retriever_agent, with SmolLM2.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from memtrain import config as memtrain_config
from memtrain.agent.prompts import load_templates
from memtrain.agent.search_agent import SearchAgent, SearchBudgets, parse_reply, split_answers
from memtrain.engines import Generation
from memtrain.eval import long_context, search_qa
from memtrain.rl import policies
from memtrain.rl.mem1_task import Mem1Task
from memtrain.rl.memagent_task import MemAgentTask
from memtrain.settings import Agent, Runtime, section


@dataclasses.dataclass(frozen=True)
class Item:
    id: str
    question: str
    answers: tuple[str, ...] = ()
    context: str = ""
    num_docs: int = 0
    targets: tuple[tuple[str, ...], ...] = ()
    dataset: str = "toy"


class ScriptedEngine:
    """Replies chosen by a function of the decoded prompt: the engine protocol with known outputs."""

    def __init__(self, tokenizer, reply, stop: int) -> None:
        self.tokenizer, self.reply, self.stop, self.calls = tokenizer, reply, stop, []

    def generate(self, prompts, sampling):
        self.calls.append(len(prompts))
        out = []
        for prompt in prompts:
            ids = self.tokenizer(self.reply(self.tokenizer.decode(prompt)), add_special_tokens=False)["input_ids"]
            ids = ids[: sampling.max_new_tokens - 1] + [self.stop]
            out.append(Generation(tuple(ids), (0.0,) * len(ids), True))
        return out


def config(**overrides) -> dict:
    return memtrain_config.validate(memtrain_config.deep_merge({"rl": {"device": "cpu"}}, overrides))


def test_parse_reply_reads_state_and_first_action():
    action = parse_reply("<state>Paris is in France</state> <search>capital of France</search>")
    assert (action.kind, action.content, action.state) == ("search", "capital of France", "Paris is in France")
    assert parse_reply("<answer>Paris; 1889</answer> then <search>x</search>").kind == "answer"
    assert parse_reply("<search>x</search><answer>y</answer>").kind == "search"
    assert parse_reply("I think it is Paris").kind == "invalid"
    assert parse_reply("<search>  </search>").kind == "invalid"  # an empty query is not an action
    assert split_answers("Paris ; 1889", 2) == ["Paris", "1889"]
    assert split_answers("Paris", 2) == ["Paris", None]
    assert split_answers(None, 2) == [None, None]


def scripted_agent(tokenizer, reply, max_turns=3, information=200):
    searched = []

    def search(queries):
        searched.append(list(queries))
        return [f"Doc 1 (Title: {q}) facts about {q}. " * 30 for q in queries]

    engine = ScriptedEngine(tokenizer, reply, stop=tokenizer.convert_tokens_to_ids("<|im_end|>"))
    cfg = config()
    agent = SearchAgent(
        engine, tokenizer, load_templates(section(Agent, cfg)), SearchBudgets(64, information, max_turns), search
    )
    return agent, engine, searched


def test_search_agent_prunes_context_and_keeps_retrieved_text_out_of_responses(tokenizer):
    def reply(prompt):
        turn = prompt.count("Your latest turn")  # 0 on the first turn: the context holds one past turn at most
        if "turn(s) left" in prompt and "Doc 1 (Title: second" in prompt:
            return "<state>found both</state><answer>Paris; 1889</answer>"
        return f"<state>step {turn}</state><search>{'first' if 'Doc 1' not in prompt else 'second'} query</search>"

    agent, engine, searched = scripted_agent(tokenizer, reply, information=40)
    episodes = agent.run(["Where is it?; When was it built?"], group_size=2)
    assert engine.calls == [2, 2, 2]  # both episodes advance in lockstep, one generate call per turn
    assert searched == [["first query"] * 2, ["second query"] * 2]  # one batched search per turn
    for episode in episodes[0]:
        assert episode.answer == "Paris; 1889" and len(episode.turns) == 3
        last_prompt = tokenizer.decode(episode.turns[-1].prompt_ids)
        assert "second query" in last_prompt and "first query" not in last_prompt  # pruned to the latest turn
        for turn, info in zip(episode.turns[1:], episode.information, strict=True):
            assert len(tokenizer(info, add_special_tokens=False)["input_ids"]) <= 40
            assert info in tokenizer.decode(turn.prompt_ids)
        for turn in episode.turns:  # the loss sees response ids only: none of them is retrieved text
            assert "Doc 1" not in tokenizer.decode(turn.response_ids)


def test_search_agent_stops_at_the_turn_limit_and_on_invalid_actions(tokenizer):
    agent, _engine, searched = scripted_agent(tokenizer, lambda p: "<state>s</state><search>more</search>", max_turns=3)
    ((episode,),) = agent.run(["q"], group_size=1)
    assert len(episode.turns) == 3 and episode.answer is None and len(searched) == 2  # no search on the last turn
    assert "1 turn(s) left" in tokenizer.decode(episode.turns[-1].prompt_ids)

    agent, _engine, searched = scripted_agent(tokenizer, lambda p: "no tags at all")
    ((episode,),) = agent.run(["q"], group_size=1)
    assert len(episode.turns) == 1 and episode.actions[0].kind == "invalid" and not searched


def test_mem1_reward_sums_the_objectives_exact_matches_as_mem1_does_or_takes_their_mean(tokenizer):
    agent, _, _ = scripted_agent(tokenizer, lambda p: "<state>s</state><answer>the Paris; 1890</answer>")
    items = [
        Item("a", "q1; q2", targets=(("Paris",), ("1889", "1890"))),
        Item("b", "q3; q4", targets=(("Rome",), ("1890",))),
    ]
    rollout = Mem1Task(agent, group_size=2).rollout(items, np.random.default_rng(0))  # MEM1's sum: 1 + 1, 0 + 1
    assert [g.rewards for g in rollout.groups] == [[2.0, 2.0], [1.0, 1.0]]
    rollout = Mem1Task(agent, group_size=2, reward="mean").rollout(items, np.random.default_rng(0))
    assert [g.rewards for g in rollout.groups] == [[1.0, 1.0], [0.5, 0.5]]
    rows = search_qa.evaluate(agent, items, batch_size=1)
    assert [r["objective_em"] for r in rows] == [[1.0, 1.0], [0.0, 1.0]]
    summary = search_qa.summary(rows)
    assert summary["em/toy"] == pytest.approx(0.75) and summary["em_sum/toy"] == pytest.approx(1.5)


def test_memagent_task_scores_the_boxed_answer(tokenizer, tiny_policy):
    cfg = config(
        agent={"budgets": {"instruction": 320, "chunk": 16, "memory": 12, "response": 16, "max_chunks": 3}},
        data={"documents": {"min_tokens": 10, "max_tokens": 48}},
    )
    policy = policies.load(tiny_policy, Runtime.of(cfg), seed=0)
    agent = policies.memory_agent(policy, cfg)
    agent.engine = ScriptedEngine(
        tokenizer,
        lambda p: "so \\boxed{The Eiffel Tower}" if "Your answer" in p else "notes",
        stop=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    item = Item("q", "Which tower?", answers=("Eiffel Tower",), context="Paris has a tower. " * 12)
    rollout = MemAgentTask(agent, group_size=2).rollout([item], np.random.default_rng(0))
    (group,) = rollout.groups
    chunks, truncated = MemAgentTask(agent, 2).chunks(item.context)
    assert group.rewards == [1.0, 1.0] and len(chunks) == 3 and truncated
    assert all(len(m.samples) == len(chunks) + 1 for m in group.members)  # every memory update, then the answer

    random_agent = policies.memory_agent(policy, cfg)  # the tiny random policy: real budgets, noise replies
    rollout = MemAgentTask(random_agent, group_size=2, reward="sub_em").rollout([item], np.random.default_rng(0))
    assert len(rollout.values["reward"]) == 2 and all(r == 0.0 for r in rollout.values["reward"])
    for member in rollout.groups[0].members:
        assert all(len(s.response_ids) <= 16 for s in member.samples)


def test_evaluations_decode_in_eval_dtype_while_training_keeps_rl_dtype(tokenizer, tiny_policy):
    import math

    import torch

    from memtrain.engines import Sampling

    prompt = tokenizer("Where is the Eiffel Tower?")["input_ids"]
    for dtype, expected in ((None, torch.float32), ("bfloat16", torch.bfloat16)):
        cfg = config(eval={"dtype": dtype})
        with policies.decoder(tiny_policy, cfg, seed=0) as decoded:
            assert next(decoded.engine.model.parameters()).dtype == expected
            (reply,) = decoded.engine.generate([prompt], Sampling(6, temperature=0.0))
        assert len(reply.token_ids) == 6 and all(math.isfinite(lp) and lp <= 0 for lp in reply.logprobs)
        assert Runtime.of(cfg).dtype == "float32"  # what the trainers load


def test_whole_document_prompt_is_cut_in_the_middle(tokenizer):
    templates = load_templates(section(Agent, config()))
    document = "START " + "filler words here. " * 400 + " END"
    prompt, cut = long_context.fit_document(tokenizer, templates, "Which?", document, window=300, response_tokens=40)
    text = tokenizer.decode(prompt)
    assert cut and len(prompt) + 40 <= 300 and "START" in text and "END" in text and "\n...\n" in text
    prompt, cut = long_context.fit_document(tokenizer, templates, "Which?", "short", window=300, response_tokens=40)
    assert not cut and "short" in tokenizer.decode(prompt)
    with pytest.raises(ValueError, match="no room"):
        long_context.fit_document(tokenizer, templates, "Which?", document, window=120, response_tokens=40)


def test_long_context_summary_by_length():
    rows = [
        {"num_docs": 50, "em": 1.0, "sub_em": 1.0, "f1": 1.0, "reply_sub_em": 1.0},
        {"num_docs": 50, "em": 0.0, "sub_em": 1.0, "f1": 0.5, "reply_sub_em": 1.0},
        {"num_docs": 100, "em": 0.0, "sub_em": 0.0, "f1": 0.0, "reply_sub_em": 1.0},
    ]
    summary = long_context.summary(rows)
    assert summary["em/50docs"] == 0.5 and summary["em/100docs"] == 0.0 and summary["em/avg"] == 0.25
    assert summary["sub_em/50docs"] == 1.0 and summary["f1/avg"] == pytest.approx(0.375)
    assert summary["reply_sub_em/avg"] == 1.0
    assert long_context.scores("the Eiffel Tower!", ["Eiffel Tower"]) == {"em": 1.0, "sub_em": 1.0, "f1": 1.0}
    partial = long_context.scores("Eiffel", ["Eiffel Tower"])
    # MemAgent's sub-EM counts a prediction inside the gold answer too
    assert partial["em"] == 0.0 and partial["sub_em"] == 1.0 and partial["f1"] == pytest.approx(2 / 3)


def test_each_question_is_answered_eval_samples_times_and_tagged():
    from memtrain.stages.downstream import sampled

    calls = []

    def evaluate():
        calls.append(len(calls))
        return [{"id": "q1", "em": float(len(calls) == 1)}, {"id": "q2", "em": 0.0}]

    rows = sampled(evaluate, 3)
    assert len(calls) == 3 and [(r["id"], r["sample"]) for r in rows][:3] == [("q1", 0), ("q2", 0), ("q1", 1)]
    assert [r["em"] for r in rows if r["id"] == "q1"] == [1.0, 0.0, 0.0]  # each pass scored on its own
