"""MemAgent post-training (paper section 4.2): the memory agent reads a long context and answers its real question.

The same lockstep reading loop as MemTrain, with the downstream question as the problem and no
recall questions: one GRPO group per question, the reward (EM of the boxed answer, or sub-EM)
broadcast to every memory-update turn of the trajectory.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from memtrain.agent.answers import SCORERS, exact_match, extract_boxed, substring_match
from memtrain.agent.memory_agent import MemoryAgent
from memtrain.rl.samples import Group, Member, Rollout, Sample


class MemAgentTask:
    """Items are long-context questions (memtrain.data.qa.LongContextItem: question, answers, context)."""

    def __init__(self, agent: MemoryAgent, group_size: int, reward: str = "em") -> None:
        if reward not in SCORERS:
            raise ValueError(f"unknown reward {reward!r} (known: {', '.join(SCORERS)})")
        self.agent, self.group_size, self.score = agent, group_size, SCORERS[reward]
        self.chunks = lru_cache(maxsize=4096)(agent.fit_chunks)  # contexts recur across steps and epochs

    def rollout(self, items: Sequence, rng: np.random.Generator) -> Rollout:
        cut = [self.chunks(item.context) for item in items]
        trajectories = self.agent.read(
            [item.question for item in items], [chunks for chunks, _ in cut], self.group_size
        )
        rollout = Rollout()
        values = rollout.values
        for i, (item, group) in enumerate(zip(items, trajectories, strict=True)):
            predictions = [extract_boxed(t.final_reply) for t in group]
            rewards = [self.score(p, list(item.answers)) for p in predictions]
            rollout.groups.append(
                Group(
                    i,
                    "qa",
                    tuple(
                        Member(r, tuple(Sample(turn.prompt_ids, turn.response_ids) for turn in t.turns))
                        for r, t in zip(rewards, group, strict=True)
                    ),
                )
            )
            values.setdefault("reward", []).extend(rewards)
            values.setdefault("em", []).extend(exact_match(p, list(item.answers)) for p in predictions)
            values.setdefault("sub_em", []).extend(substring_match(p, list(item.answers)) for p in predictions)
            values.setdefault("boxed_rate", []).extend(float(p is not None) for p in predictions)
            values.setdefault("memory_tokens", []).extend(
                len(turn.response_ids) for t in group for turn in t.turns[:-1]
            )
            values.setdefault("answer_tokens", []).extend(len(t.turns[-1].response_ids) for t in group)
            values.setdefault("chunks", []).append(len(cut[i][0]))
            values.setdefault("truncated_contexts", []).append(float(cut[i][1]))
            rollout.records.append(
                {
                    "id": item.id,
                    "question": item.question,
                    "answers": " | ".join(item.answers),
                    "memories": "\n\n".join(f"[memory {k}] {m}" for k, m in enumerate(group[0].memories, 1)),
                    "final_reply": group[0].final_reply,
                    "prediction": predictions[0],
                    "reward": rewards[0],
                }
            )
        return rollout
