"""The training kinds (MemTrain, MemAgent, MEM1): one registry that both back-ends build from.

A kind says how its items are read from the stage's input file and carried as JSON through veRL's dataset,
how its task is built over any engine (the local Hugging Face engine, or veRL's rollout servers inside an
agent loop), which config section schedules it (its typed class in memtrain.settings), how long one turn's
prompt and reply may get (what veRL pads to), and which step metrics the job log shows. The training stages
(memtrain.stages.memtrain, memtrain.stages.downstream) and the veRL back-end (memtrain.distributed) look a
kind up here instead of switching on its name.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from memtrain.agent.search_agent import Search
from memtrain.engines import Engine
from memtrain.errors import InputError
from memtrain.rl.trainer import Task
from memtrain.settings import Agent, Mem1, MemAgent, MemTrain, build, section


@dataclass(frozen=True)
class Kind:
    name: str
    read: Callable[[str | os.PathLike], list[Any]]
    to_json: Callable[[Any], dict[str, Any]]
    from_json: Callable[[dict[str, Any]], Any]
    section: type  # the typed config section that schedules it (memtrain.settings)
    # `settings` is run_settings(...); `search` is the MEM1 agent's retrieval, None for the others
    task: Callable[[Engine, Any, Mapping[str, Any], int, Search | None], Task]
    # (longest prompt, longest reply) of one turn, from the agent settings and the kind's section
    lengths: Callable[[Agent, Any], tuple[int, int]]
    question: Callable[[Any], str]  # what veRL's dataset row shows; our agent loops build every prompt themselves
    logged: tuple[str, ...]  # step metrics printed to the job's log
    uses_search: bool = False

    @property
    def agent_loop(self) -> str:
        """The name veRL's rollout knows this kind's agent loop by (memtrain.distributed.agent_loops)."""
        return f"{self.name}_agent"

    def items(self, path: str | os.PathLike) -> list[Any]:
        """The training items of a stage's input file: at least one."""
        items = self.read(path)
        if not items:
            raise InputError(f"no {self.name} training items", file=path)
        return items

    def typed(self, schedule: Mapping[str, Any]) -> Any:
        """The kind's own config section (with or without its seed) as its typed section."""
        return build(self.section, schedule)

    def turn_lengths(self, params: Mapping[str, Any], schedule: Mapping[str, Any]) -> tuple[int, int]:
        """(longest prompt, longest reply) of one turn: what veRL pads every turn to. `params` holds the
        `agent` section, `schedule` the kind's own section (with its seed)."""
        return self.lengths(section(Agent, params), self.typed(schedule))

    def encode(self, item: Any) -> str:
        return json.dumps(self.to_json(item), sort_keys=True)

    def decode(self, text: str) -> Any:
        return self.from_json(json.loads(text))


def run_settings(
    params: Mapping[str, Any],
    kind: str,
    schedule: Mapping[str, Any],
    variant: str | None = None,
    mask_token: str | None = None,
) -> dict[str, Any]:
    """What a kind's task is built from: the agent and rl sections, the training's own section and seed.

    The same dict serves the local stage and, written to JSON, veRL's agent loops; the training's section
    sits where the config has it (`memtrain`, `posttrain.<kind>`) so the agent builders read it there.
    """
    settings: dict[str, Any] = {"kind": kind, "agent": params["agent"], "rl": params["rl"], "seed": schedule["seed"]}
    if kind == MEMTRAIN.name:
        return {**settings, "memtrain": dict(schedule), "variant": variant, "mask_token": mask_token}
    return {**settings, "posttrain": {kind: dict(schedule)}}


# --- MemTrain ----------------------------------------------------------------------------------------------------
def _read_documents(path):
    from memtrain.rl.memtrain_task import load_documents

    return load_documents(path)


def _document_from_json(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "entities": [tuple(entity) for entity in data["entities"]]}


def _memtrain_task(engine, tokenizer, settings, group_size, search):
    from memtrain.rl.memtrain_task import MemTrainTask
    from memtrain.rl.policies import build_memory_agent

    return MemTrainTask(
        build_memory_agent(engine, tokenizer, settings),
        dataclasses.replace(section(MemTrain, settings), group_size=group_size),
        settings["variant"],
        settings["mask_token"],
    )


def _memory_agent_lengths(agent: Agent, schedule: MemTrain | MemAgent) -> tuple[int, int]:
    """Memory-agent prompts hold the instruction, a chunk and the previous memory."""
    budgets = agent.budgets
    return budgets.instruction + budgets.chunk + budgets.memory, budgets.response


MEMTRAIN = Kind(
    "memtrain",
    _read_documents,
    dict,
    _document_from_json,
    MemTrain,
    _memtrain_task,
    _memory_agent_lengths,
    question=lambda document: f"Reconstruct the masked entity of document {document['doc_id']}.",
    logged=("e2e_em", "recall_em", "e2e_reward", "filtered_fraction", "skipped", "kl", "step_seconds"),
)


# --- MemAgent ----------------------------------------------------------------------------------------------------
def _read_long_context(path):
    from memtrain.data.qa import read_long_context

    return read_long_context(path)


def _long_context_from_json(data):
    from memtrain.data.qa import LongContextItem

    return LongContextItem(**{**data, "answers": tuple(data["answers"]), "gold_titles": tuple(data["gold_titles"])})


def _memagent_task(engine, tokenizer, settings, group_size, search):
    from memtrain.rl.memagent_task import MemAgentTask
    from memtrain.rl.policies import build_memory_agent

    return MemAgentTask(build_memory_agent(engine, tokenizer, settings), group_size, section(MemAgent, settings).reward)


_POSTTRAIN_LOGGED = ("reward", "em", "filtered_fraction", "skipped", "kl", "step_seconds")
MEMAGENT = Kind(
    "memagent",
    _read_long_context,
    dataclasses.asdict,
    _long_context_from_json,
    MemAgent,
    _memagent_task,
    _memory_agent_lengths,
    question=lambda item: item.question,
    logged=_POSTTRAIN_LOGGED,
)


# --- MEM1 --------------------------------------------------------------------------------------------------------
def _read_multi_objective(path):
    from memtrain.data.qa_builders import read_multi_objective

    return read_multi_objective(path)


def _multi_objective_from_json(data):
    from memtrain.data.qa_builders import MultiObjectiveQuestion

    return MultiObjectiveQuestion(**{**data, "targets": tuple(tuple(target) for target in data["targets"])})


def _mem1_task(engine, tokenizer, settings, group_size, search):
    from memtrain.rl.mem1_task import Mem1Task
    from memtrain.rl.policies import build_search_agent

    if search is None:
        raise ValueError("the MEM1 task needs a search function")
    return Mem1Task(build_search_agent(engine, tokenizer, settings, search), group_size, section(Mem1, settings).reward)


def _mem1_lengths(agent: Agent, schedule: Mem1) -> tuple[int, int]:
    """MEM1 prompts hold the instruction, the latest reply and the retrieved text shown with it."""
    return agent.budgets.instruction + schedule.response_tokens + schedule.information_tokens, schedule.response_tokens


MEM1 = Kind(
    "mem1",
    _read_multi_objective,
    dataclasses.asdict,
    _multi_objective_from_json,
    Mem1,
    _mem1_task,
    _mem1_lengths,
    question=lambda item: item.question,
    logged=_POSTTRAIN_LOGGED,
    uses_search=True,
)


KINDS: dict[str, Kind] = {kind.name: kind for kind in (MEMTRAIN, MEMAGENT, MEM1)}


def get(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown training kind {name!r} (known: {', '.join(KINDS)})") from None
