"""The MemTrain task (paper sections 3.2-3.4): masked-entity reconstruction plus intermediate memory recall.

For each document, G1 trajectories read its chunks and answer the fixed masked-entity problem
(the E2E group); each trajectory then gets one recall question about an earlier chunk, answered
G2 times (its IMR group). Rewards follow the variant: `full` couples the IMR outcomes into R^E,
`decoupled` trains IMR but scores E2E by its answer alone, `e2e` asks no recall questions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from memtrain.agent import recall
from memtrain.agent.answers import exact_match, extract_boxed
from memtrain.agent.chunks import Chunk
from memtrain.agent.memory_agent import MemoryAgent, Trajectory, Turn
from memtrain.errors import InputError
from memtrain.rl.rewards import end_to_end_rewards, uses_recall
from memtrain.rl.samples import Group, Member, Rollout, Sample
from memtrain.settings import MemTrain

DOCUMENT_COLUMNS = ["doc_id", "answer", "text", "passages"]


def load_documents(path: str) -> list[dict[str, Any]]:
    """Assembled documents as the task reads them: text, masked answer and the entity spans of every passage."""
    try:
        rows = pq.read_table(path, columns=DOCUMENT_COLUMNS).to_pylist()
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"not a documents table with columns {DOCUMENT_COLUMNS}: {error}", file=path) from error
    if not rows:
        raise InputError("no documents to train on", file=path)
    for row in rows:
        row["entities"] = [(e["text"], e["start"], e["end"]) for p in row.pop("passages") for e in p["entities"]]
    return rows


def _sample(turn: Turn) -> Sample:
    return Sample(turn.prompt_ids, turn.response_ids)


class MemTrainTask:
    def __init__(self, agent: MemoryAgent, settings: MemTrain, variant: str, mask_token: str) -> None:
        self.agent, self.variant, self.mask_token = agent, variant, mask_token
        self.problem = settings.problem
        self.placeholder = settings.target_token
        self.group_size, self.recall_group_size = settings.group_size, settings.recall_group_size
        self.recall_coef = settings.recall_coef
        self.agent.check_problem(self.problem)
        self._chunks: dict[str, tuple[list[Chunk], bool]] = {}

    def chunks(self, document: Mapping[str, Any]) -> tuple[list[Chunk], bool]:
        """The document's chunks (at most max_chunks) and whether its tail had to be dropped to fit."""
        key = document["doc_id"]
        if key not in self._chunks:
            self._chunks[key] = self.agent.fit_chunks(document["text"], document["entities"])
        return self._chunks[key]

    def rollout(self, documents: Sequence[Mapping[str, Any]], rng: np.random.Generator) -> Rollout:
        cut = [self.chunks(d) for d in documents]
        chunk_lists = [chunks for chunks, _ in cut]
        trajectories = self.agent.read([self.problem] * len(documents), chunk_lists, self.group_size)
        matches = [
            [exact_match(extract_boxed(t.final_reply), d["answer"]) for t in group]
            for d, group in zip(documents, trajectories, strict=True)
        ]

        questions: dict[tuple[int, int], recall.RecallQuestion] = {}
        if uses_recall(self.variant):
            for d, (document, group) in enumerate(zip(documents, trajectories, strict=True)):
                for g, trajectory in enumerate(group):
                    question = recall.choose(
                        chunk_lists[d],
                        len(trajectory.memories),
                        document["answer"],
                        rng,
                        self.mask_token,
                        self.placeholder,
                    )
                    if question is not None:
                        questions[d, g] = question
        keys = list(questions)
        answers = self.agent.recall(
            [(trajectories[d][g].memories[questions[d, g].memory_index - 1], questions[d, g].section) for d, g in keys],
            self.recall_group_size,
        )
        recall_turns = dict(zip(keys, answers, strict=True))
        recall_matches = {
            key: [exact_match(extract_boxed(t.reply), questions[key].target) for t in turns]
            for key, turns in recall_turns.items()
        }

        rollout = Rollout()
        values = rollout.values
        for d, group in enumerate(trajectories):
            members = []
            rewards = end_to_end_rewards(
                matches[d], [recall_matches.get((d, g), []) for g in range(len(group))], self.variant, self.recall_coef
            )
            for g, (trajectory, reward) in enumerate(zip(group, rewards, strict=True)):
                members.append(Member(reward, tuple(map(_sample, trajectory.turns))))
                values.setdefault("e2e_em", []).append(matches[d][g])
                values.setdefault("e2e_reward", []).append(reward)
                values.setdefault("boxed_rate", []).append(float(extract_boxed(trajectory.final_reply) is not None))
                values.setdefault("memory_tokens", []).extend(len(t.response_ids) for t in trajectory.turns[:-1])
                values.setdefault("answer_tokens", []).append(len(trajectory.turns[-1].response_ids))
            rollout.groups.append(Group(d, "e2e", tuple(members)))
            values.setdefault("chunks", []).append(len(chunk_lists[d]))
            values.setdefault("truncated_documents", []).append(float(cut[d][1]))
            rollout.records.append(
                self._record(documents[d], group[0], matches[d][0], questions.get((d, 0)), recall_turns.get((d, 0), []))
            )
        for key in keys:
            turns = recall_turns[key]
            rollout.groups.append(
                Group(
                    key[0],
                    "recall",
                    tuple(Member(m, (_sample(t),)) for m, t in zip(recall_matches[key], turns, strict=True)),
                )
            )
            values.setdefault("recall_em", []).extend(recall_matches[key])
            values.setdefault("recall_tokens", []).extend(len(t.response_ids) for t in turns)
        if uses_recall(self.variant):
            values["recall_coverage"] = [
                float((d, g) in questions) for d in range(len(documents)) for g in range(self.group_size)
            ]
        return rollout

    def _record(
        self,
        document: Mapping[str, Any],
        trajectory: Trajectory,
        match: float,
        question: recall.RecallQuestion | None,
        turns: Sequence[Turn],
    ) -> dict[str, Any]:
        """One trajectory as a reader wants it in MLflow: what it remembered, what it answered, and why it scored."""
        record = {
            "doc_id": document["doc_id"],
            "answer": document["answer"],
            "memories": "\n\n".join(f"[memory {i}] {m}" for i, m in enumerate(trajectory.memories, 1)),
            "final_reply": trajectory.final_reply,
            "prediction": extract_boxed(trajectory.final_reply),
            "exact_match": match,
        }
        if question is not None:
            record.update(
                recall_memory=question.memory_index,
                recall_chunk=question.chunk_index,
                recall_target=question.target,
                recall_predictions=" | ".join(str(extract_boxed(t.reply)) for t in turns),
            )
        return record
