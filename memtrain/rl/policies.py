"""A policy loaded for decoding, and the agents over it: what training and evaluation share.

Kept apart from the training wiring (memtrain.rl.launch) so that an evaluation job never imports the
trainer and, through GRPO, veRL: a few CPU-seconds per job, paid by every evaluation of the DAG.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memtrain.agent.memory_agent import MemoryAgent
from memtrain.agent.prompts import load_templates
from memtrain.agent.search_agent import Search, SearchAgent, SearchBudgets
from memtrain.engines import Engine
from memtrain.engines.hf import HFEngine
from memtrain.models import load_policy, load_saved_tokenizer, resolve_device
from memtrain.settings import Agent, Mem1, Runtime, section


@dataclass
class Policy:
    """The models and sampler one local training run needs."""

    model: Any
    reference: Any
    tokenizer: Any
    engine: HFEngine
    generator: torch.Generator
    source: Path  # the folder it was loaded from

    @property
    def pad_token_id(self) -> int:
        return self.engine.pad_token_id


def load(
    policy_path: str | os.PathLike, runtime: Runtime, seed: int, threads: int | None = None, kl_coef: float = 0.0
) -> Policy:
    """Policy, frozen reference (for training with a KL term, kl_coef > 0) and the engine sharing the policy's
    weights."""
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(runtime.device)
    torch.manual_seed(seed)
    model = load_policy(policy_path, device=device, dtype=runtime.dtype)
    frozen = load_policy(policy_path, device=device, dtype=runtime.dtype) if kl_coef > 0 else None
    tokenizer = load_saved_tokenizer(policy_path)
    generator = torch.Generator(device=device).manual_seed(seed)
    # Padding never reaches the loss (masked), so eos serves when a tokenizer names no pad token.
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    engine = HFEngine(
        model,
        pad_token_id=pad,
        generator=generator,
        max_batch_size=runtime.engine_batch_size,
        linear=runtime.engine_linear,
    )
    return Policy(model, frozen, tokenizer, engine, generator, Path(policy_path))


@dataclass(frozen=True)
class Decoder:
    """What an evaluation needs from a policy: an engine over it, its tokenizer and its context length."""

    engine: Engine
    tokenizer: Any
    max_positions: int


@contextlib.contextmanager
def decoder(
    policy_path: str | os.PathLike, params: Mapping[str, Any], seed: int, threads: int | None = None
) -> Iterator[Decoder]:
    """The policy behind `eval.engine`, in `eval.dtype`: loaded in this process, or served by a child server for
    the block."""
    kind, runtime = params["eval"]["engine"], Runtime.of(params)
    runtime = dataclasses.replace(runtime, dtype=params["eval"]["dtype"] or runtime.dtype)
    if kind == "local":
        policy = load(policy_path, runtime, seed, threads=threads)
        yield Decoder(policy.engine, policy.tokenizer, policy.model.config.max_position_embeddings)
        return
    from transformers import AutoConfig

    from memtrain.engines.serve import serve

    positions = AutoConfig.from_pretrained(policy_path, local_files_only=True).max_position_embeddings
    with serve(
        kind,
        policy_path,
        params["eval"]["server"],
        device=runtime.device,
        dtype=runtime.dtype,
        seed=seed,
        linear=runtime.engine_linear,
        threads=threads,
    ) as engine:
        yield Decoder(engine, load_saved_tokenizer(policy_path), positions)


def memory_agent(
    policy: Policy | Decoder, config: Mapping[str, Any], sampling: Mapping[str, Any] | None = None
) -> MemoryAgent:
    return build_memory_agent(policy.engine, policy.tokenizer, config, sampling)


def build_memory_agent(
    engine: Engine, tokenizer, config: Mapping[str, Any], sampling: Mapping[str, Any] | None = None
) -> MemoryAgent:
    """The memory agent over any engine (the local HF engine here, veRL's rollout servers in memtrain.distributed)."""
    agent = section(Agent, config)
    sampling = sampling or config["rl"]["sampling"]
    return MemoryAgent(
        engine,
        tokenizer,
        load_templates(agent),
        agent.budgets,
        temperature=sampling["temperature"],
        top_p=sampling["top_p"],
    )


def search_agent(
    policy: Policy | Decoder, config: Mapping[str, Any], search: Search, sampling: Mapping[str, Any] | None = None
) -> SearchAgent:
    """The MEM1 agent; `sampling` defaults to the training sampling (evaluation passes its own)."""
    return build_search_agent(policy.engine, policy.tokenizer, config, search, sampling)


def build_search_agent(
    engine: Engine, tokenizer, config: Mapping[str, Any], search: Search, sampling: Mapping[str, Any] | None = None
) -> SearchAgent:
    """The MEM1 agent over any engine."""
    mem1 = section(Mem1, config)
    sampling = sampling or config["rl"]["sampling"]
    budgets = SearchBudgets(mem1.response_tokens, mem1.information_tokens, mem1.max_turns)
    return SearchAgent(
        engine,
        tokenizer,
        load_templates(section(Agent, config)),
        budgets,
        search,
        temperature=sampling["temperature"],
        top_p=sampling["top_p"],
    )
