"""MEM1 post-training (paper section 4.3): a search agent answering several questions at once.

One GRPO group per multi-objective question; an episode's reward combines the exact matches of its
objectives (`posttrain.mem1.reward`: their sum, as MEM1's code computes it, or their mean, which keeps
rewards in [0, 1] whatever k is), broadcast to every turn of the episode.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memtrain.agent.answers import exact_match
from memtrain.agent.search_agent import Episode, SearchAgent, split_answers
from memtrain.rl.samples import Group, Member, Rollout, Sample

# How an episode's per-objective EMs make its reward (posttrain.mem1.reward).
OBJECTIVE_REWARDS = {"sum": lambda matches: float(sum(matches)), "mean": lambda matches: float(np.mean(matches))}


def objective_matches(episode: Episode, targets: Sequence[Sequence[str]]) -> list[float]:
    """EM of each objective's answer against that objective's answer list."""
    answers = split_answers(episode.answer, len(targets))
    return [exact_match(answer, list(gold)) for answer, gold in zip(answers, targets, strict=True)]


class Mem1Task:
    """Items are multi-objective questions (memtrain.data.qa_builders.MultiObjectiveQuestion: question, targets)."""

    def __init__(self, agent: SearchAgent, group_size: int, reward: str = "sum") -> None:
        if reward not in OBJECTIVE_REWARDS:
            raise ValueError(f"unknown MEM1 reward {reward!r} (known: {', '.join(OBJECTIVE_REWARDS)})")
        self.agent, self.group_size, self.combine = agent, group_size, OBJECTIVE_REWARDS[reward]

    def rollout(self, items: Sequence, rng: np.random.Generator) -> Rollout:
        episodes = self.agent.run([item.question for item in items], self.group_size)
        rollout = Rollout()
        values = rollout.values
        for i, (item, group) in enumerate(zip(items, episodes, strict=True)):
            matches = [objective_matches(e, item.targets) for e in group]
            rewards = [self.combine(m) for m in matches]
            rollout.groups.append(
                Group(
                    i,
                    "search",
                    tuple(
                        Member(r, tuple(Sample(t.prompt_ids, t.response_ids) for t in e.turns))
                        for r, e in zip(rewards, group, strict=True)
                    ),
                )
            )
            values.setdefault("reward", []).extend(rewards)
            values.setdefault("answered", []).extend(float(e.answer is not None) for e in group)
            values.setdefault("turns", []).extend(len(e.turns) for e in group)
            values.setdefault("searches", []).extend(sum(a.kind == "search" for a in e.actions) for e in group)
            values.setdefault("invalid_action", []).extend(float(e.actions[-1].kind == "invalid") for e in group)
            values.setdefault("response_tokens", []).extend(len(t.response_ids) for e in group for t in e.turns)
            first = group[0]
            rollout.records.append(
                {
                    "id": item.id,
                    "question": item.question,
                    "targets": " ; ".join(" | ".join(t) for t in item.targets),
                    "turns": "\n\n".join(f"[turn {k}] {t.reply}" for k, t in enumerate(first.turns, 1)),
                    "answer": first.answer,
                    "reward": rewards[0],
                }
            )
        return rollout
