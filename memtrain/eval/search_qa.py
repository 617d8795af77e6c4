"""Multi-objective search QA (paper section 4.3, Table 2): the MEM1 agent against the retrieval server.

Reported per benchmark as the exact match averaged over the objectives (the paper's number) and as
MEM1's summed form (objectives answered correctly per question).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from memtrain.agent.search_agent import SearchAgent
from memtrain.rl.mem1_task import objective_matches


def evaluate(agent: SearchAgent, items: Sequence, batch_size: int) -> list[dict[str, Any]]:
    rows = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        episodes = agent.run([item.question for item in batch], group_size=1)
        for item, (episode,) in zip(batch, episodes, strict=True):
            matches = objective_matches(episode, item.targets)
            rows.append(
                {
                    "id": item.id,
                    "dataset": item.dataset,
                    "question": item.question,
                    "targets": [list(t) for t in item.targets],
                    "answer": episode.answer,
                    "objective_em": matches,
                    "em": float(np.mean(matches)),
                    "em_sum": float(sum(matches)),
                    "turns": len(episode.turns),
                    "searches": sum(a.kind == "search" for a in episode.actions),
                    "queries": [a.content for a in episode.actions if a.kind == "search"],
                    "final_reply": episode.turns[-1].reply,
                }
            )
    return rows


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """EM (mean over objectives) and MEM1's summed EM per benchmark, and their average over benchmarks."""
    datasets = sorted({row["dataset"] for row in rows})
    result = {}
    for metric in ("em", "em_sum"):
        per_dataset = [float(np.mean([r[metric] for r in rows if r["dataset"] == d])) for d in datasets]
        result.update({f"{metric}/{d}": v for d, v in zip(datasets, per_dataset, strict=True)})
        result[f"{metric}/avg"] = float(np.mean(per_dataset)) if per_dataset else float("nan")
    return result
