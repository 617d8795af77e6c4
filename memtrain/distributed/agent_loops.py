"""veRL agent loops for MemTrain, MemAgent and MEM1, running our own rollout code against veRL's servers.

veRL (v1 trainer) runs one agent loop per (item, session), rollout.n sessions per item. Each loop
here rolls out its item with the local task (MemTrainTask, MemAgentTask, Mem1Task) at group size 1,
so the turn structure, recall questions, rewards and MemTrain variants are exactly the local
trainer's; veRL's sessions then form the G1 group across loops. Every turn is returned as its own
sequence (veRL stores them under `{uid}_{session}_{index}`), with the trajectory's reward broadcast;
IMR answers come back as further sequences whose group lives inside the session.

The rollout code is synchronous and batched (`Engine.generate`), veRL's server client is async: the
rollout runs in a worker thread and `ServerEngine` submits each prompt of a batch to the agent
loop's event loop, where veRL balances them over its vLLM/SGLang replicas.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput

from memtrain.distributed import advantages
from memtrain.distributed.verl_config import FILTER_METRIC
from memtrain.engines import Generation, Sampling
from memtrain.rl import kinds
from memtrain.rl.samples import Group, Rollout

# A rollout thread mostly waits for its server replies, so one per concurrent session (batch x
# rollout.n per agent-loop worker at paper scale); the default executor (CPUs + 4) would queue them.
_ROLLOUTS = ThreadPoolExecutor(max_workers=512, thread_name_prefix="memtrain-rollout")

# Groups formed inside one session (the G2 recall answers of one trajectory); every other group of
# a group-size-1 rollout is the session's own trajectory, grouped across sessions by veRL's uid.
SESSION_GROUPS = frozenset({"recall"})

# Added to a session's DAPO signal when one of its in-session groups is informative: larger than any reward.
_INFORMATIVE = 1.0e6


class ServerEngine:
    """The Engine protocol over veRL's async LLM server client, called from a rollout thread."""

    def __init__(self, server, loop: asyncio.AbstractEventLoop, sampling_params: Mapping[str, Any]) -> None:
        self.server, self.loop = server, loop
        # veRL's per-step settings (top_k, repetition penalty); the agent's Sampling sets the rest.
        self.base = {key: sampling_params[key] for key in ("top_k", "repetition_penalty") if key in sampling_params}
        # The weight versions (veRL's global_steps) that served this session's calls: veRL's staleness metrics
        # read their min and max from every sequence it trains on.
        self.weight_versions: list[int] = []

    def _params(self, sampling: Sampling) -> dict[str, Any]:
        return {
            **self.base,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
            "stop_token_ids": list(sampling.stop_token_ids),
            "logprobs": True,
        }

    async def _generate(self, prompt: Sequence[int], sampling: Sampling) -> Generation:
        output = await self.server.generate(
            request_id=uuid4().hex, prompt_ids=list(prompt), sampling_params=self._params(sampling)
        )
        ids = tuple(output.token_ids[: sampling.max_new_tokens])
        if output.log_probs is None or len(output.log_probs) < len(ids):
            raise RuntimeError("the rollout server returned no log-probs for its tokens: it must honour logprobs=True")
        for key in ("min_global_steps", "max_global_steps"):
            if output.extra_fields.get(key) is None:
                raise RuntimeError(f"the rollout server reported no weight version ({key}): veRL's metrics need it")
            self.weight_versions.append(int(output.extra_fields[key]))
        return Generation(
            ids, tuple(output.log_probs[: len(ids)]), stopped=bool(ids) and ids[-1] in sampling.stop_token_ids
        )

    def generate(self, prompts: Sequence[Sequence[int]], sampling: Sampling) -> list[Generation]:
        """One Generation per prompt, in order; all prompts are in flight at once."""
        futures = [asyncio.run_coroutine_threadsafe(self._generate(prompt, sampling), self.loop) for prompt in prompts]
        return [future.result() for future in futures]


def session_rng(seed: int, uid: str, session: int) -> np.random.Generator:
    """The recall draws of one session: fixed by the training seed, the item's uid and the session."""
    digest = hashlib.sha256(f"{seed}\0{uid}\0{session}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _informative(group: Group) -> bool:
    return max(group.rewards) - min(group.rewards) > 1e-9


def dapo_signal(trajectory_reward: float, session_groups: Sequence[Group], session: int) -> float:
    """The value veRL's DAPO filter compares across an item's sessions (it drops items where all are equal).

    It is the trajectory's reward, unless one of the session's own groups (IMR) is informative: then
    a value no other session can share. An item is thus dropped exactly when none of its groups,
    E2E or IMR, would teach anything, which is the local trainer's criterion for an item.
    """
    if any(_informative(group) for group in session_groups):
        return _INFORMATIVE + session
    return trajectory_reward


def outputs(rollout: Rollout, session: int, seconds: float, weight_versions: Sequence[int]) -> list[AgentLoopOutput]:
    """A group-size-1 rollout as veRL sequences: in-session groups first, the trajectory's turns last.

    veRL copies the last sequence's reward to all sequences of the session, so the last one must be
    the trajectory's final turn; each sequence's own reward and group travel in its extra fields, and
    every sequence carries the oldest and newest weight version the session was generated with.
    """
    if not weight_versions:
        raise ValueError("a session with no generation call has no weight version")
    session_groups = [g for g in rollout.groups if g.kind in SESSION_GROUPS]
    trajectories = [g for g in rollout.groups if g.kind not in SESSION_GROUPS]
    if len(trajectories) != 1 or len(trajectories[0].members) != 1:
        raise ValueError(
            f"a session rolls out one trajectory; got groups {[(g.kind, len(g.members)) for g in trajectories]}"
        )
    trajectory = trajectories[0]
    rows = []
    for number, group in enumerate(session_groups):
        for m, member in enumerate(group.members):
            rows += [
                (
                    member.reward,
                    sample,
                    {
                        advantages.SCOPE: advantages.SESSION,
                        advantages.GROUP: f"{group.kind}{number}",
                        advantages.MEMBER: m,
                    },
                )
                for sample in member.samples
            ]
    reward = trajectory.members[0].reward
    rows += [
        (reward, sample, {advantages.SCOPE: advantages.PROMPT, advantages.GROUP: trajectory.kind, advantages.MEMBER: 0})
        for sample in trajectory.members[0].samples
    ]
    result = [
        AgentLoopOutput(
            prompt_ids=list(sample.prompt_ids),
            response_ids=list(sample.response_ids),
            response_mask=[1] * len(sample.response_ids),
            reward_score=row_reward,
            num_turns=2,
            metrics=AgentLoopMetrics(generate_sequences=seconds),
            extra_fields={
                **extra,
                advantages.REWARD: row_reward,
                "min_global_steps": min(weight_versions),
                "max_global_steps": max(weight_versions),
            },
        )
        for row_reward, sample, extra in rows
    ]
    result[-1].extra_fields["reward_extra_info"] = {FILTER_METRIC: dapo_signal(reward, session_groups, session)}
    return result


class TaskAgentLoop(AgentLoopBase):
    """A training kind's local task (memtrain.rl.kinds) at group size 1, over veRL's servers.

    The settings file the launcher wrote names the kind and holds what its task is built from; a MEM1 loop
    searches the retrieval server the launcher started.
    """

    def __init__(self, *args, settings_path: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.settings = json.loads(Path(settings_path).read_text())
        self.kind = kinds.get(self.settings["kind"])
        self.search = None
        if self.kind.uses_search:
            from memtrain.retriever.client import RetrieverClient

            client = RetrieverClient(self.settings["retriever_url"])
            self.search = client.observations(self.settings["retriever"]["top_k"])

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> list[AgentLoopOutput]:
        item = self.kind.decode(kwargs["extra_info"]["item"])
        uid, session = str(kwargs["uid"]), int(kwargs["session_id"])
        engine = ServerEngine(self.server_manager, asyncio.get_running_loop(), sampling_params)
        task = self.kind.task(engine, self.tokenizer, self.settings, 1, self.search)
        rng = session_rng(self.settings["seed"], uid, session)
        started = time.perf_counter()
        rollout = await asyncio.get_running_loop().run_in_executor(_ROLLOUTS, task.rollout, [item], rng)
        return outputs(rollout, session, time.perf_counter() - started, engine.weight_versions)


def loop_registry(settings_path: str | Path) -> list[dict[str, str]]:
    """veRL's agent_loop_config_path content: each kind's loop name, each told where the run's settings are.

    veRL instantiates loops in its agent-loop worker processes, which never import this module, so
    they are registered through this file only: veRL's `register` decorator would, on the first import
    of this module in a worker, replace these entries with ones that lack settings_path.
    """
    target = f"{TaskAgentLoop.__module__}.{TaskAgentLoop.__qualname__}"
    return [
        {"name": kind.agent_loop, "_target_": target, "settings_path": str(settings_path)}
        for kind in kinds.KINDS.values()
    ]
