"""Wiring of a local training run: models, engine, agent, task and trainer from the config, and the final save.

Kept apart from the trainer so the loop stays readable top to bottom and the downstream trainers
(MemAgent, MEM1) can reuse the same setup with their own task.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memtrain.agent.memory_agent import Budgets, MemoryAgent
from memtrain.agent.prompts import load_templates
from memtrain.agent.search_agent import Search, SearchAgent, SearchBudgets
from memtrain.engines import Engine
from memtrain.engines.hf import HFEngine
from memtrain.errors import InputError
from memtrain.io import atomic_dir, link_if_identical, write_json
from memtrain.models import load_policy, load_saved_tokenizer, resolve_device
from memtrain.rl.trainer import Schedule, StepLogger, Task, Trainer
from memtrain.settings import RL, Runtime
from memtrain.tracking import config_hash


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
    """The policy behind `eval.engine`: loaded in this process, or served by a child server for the block."""
    kind, runtime = params["eval"]["engine"], Runtime.of(params)
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
    agent = config["agent"]
    sampling = sampling or config["rl"]["sampling"]
    return MemoryAgent(
        engine,
        tokenizer,
        load_templates(agent),
        Budgets.from_config(agent["budgets"]),
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
    mem1 = config["posttrain"]["mem1"]
    sampling = sampling or config["rl"]["sampling"]
    budgets = SearchBudgets(mem1["response_tokens"], mem1["information_tokens"], mem1["max_turns"])
    return SearchAgent(
        engine,
        tokenizer,
        load_templates(config["agent"]),
        budgets,
        search,
        temperature=sampling["temperature"],
        top_p=sampling["top_p"],
    )


def step_logger(run, logged: Sequence[str], steps: int) -> StepLogger:
    """Each step's metrics and sample rollouts into the stage's MLflow run; the `logged` ones also to the job log."""
    import pandas as pd

    def log_step(metrics: Mapping[str, float], step: int) -> None:
        run.log_metrics(metrics, step=step)
        print(f"step {step}/{steps}: " + " ".join(f"{k}={metrics[k]:.3g}" for k in logged if k in metrics), flush=True)

    return StepLogger(
        metrics=log_step,
        rollouts=lambda records, step: run.log_table(pd.DataFrame(records), f"rollouts/step_{step:06d}.json"),
    )


def train(
    policy: Policy,
    task: Task,
    items: list,
    config: Mapping[str, Any],
    schedule_settings: Mapping[str, Any],
    checkpoints: str | os.PathLike,
    output: str | os.PathLike,
    logger: StepLogger,
    resume: bool,
    stop_after: int | None = None,
    on_resume: Callable[[int], None] = lambda step: None,
    continue_from: str | os.PathLike | None = None,
    exports: Mapping[int, str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """Run (or continue) the training and, once all steps are done, save the policy as a Hugging Face folder.

    The checkpoint key is the hash of every setting that shapes the run, so a changed config starts
    afresh instead of resuming someone else's optimizer state. `continue_from` is a checkpoint of
    another, finished run to carry on from when this run has none of its own yet (post-training
    scaling); `exports` maps steps before the last to folders that get the policy as it was then.
    """
    trainer = Trainer(
        policy.model,
        policy.reference,
        task,
        items,
        RL.of(config),
        Schedule.from_config(schedule_settings),
        policy.generator,
        policy.pad_token_id,
        checkpoints,
        config_hash({"rl": config["rl"], "agent": config["agent"], "schedule": schedule_settings}),
        logger,
    )
    exports = dict(exports or {})
    if any(step >= trainer.schedule.steps for step in exports):
        raise ValueError(f"exports {sorted(exports)} must come before the last step {trainer.schedule.steps}")
    resumed = resume and trainer.resume()
    # Snakemake deletes the outputs of a failed job, so a resumed run may have passed exports that are gone:
    # then it starts again from where it continued, rather than miss them.
    lost = sorted(step for step in exports if step < trainer.step and not Path(exports[step]).is_dir())
    if lost and continue_from is None:
        raise InputError(
            f"the policies of steps {lost} are gone and the run has moved past them (step "
            f"{trainer.step}): delete {checkpoints} to train again",
            file=exports[lost[0]],
        )
    if resumed and not lost:
        on_resume(trainer.step)
    elif continue_from is not None:
        trainer.restore(continue_from)
    started = time.perf_counter()
    history = []
    for step in sorted(step for step in exports if step >= trainer.step):
        if stop_after is not None and step > stop_after:
            break
        history += trainer.fit(stop_after=step)
        save_policy(policy, exports[step], {"step": step})
    history += trainer.fit(stop_after=stop_after)
    summary = {
        "steps": trainer.step,
        "steps_this_run": len(history),
        "skipped_steps_this_run": int(sum(m.get("skipped", 0) for m in history)),
        "seconds_this_run": time.perf_counter() - started,
        "finished": trainer.step >= trainer.schedule.steps,
    }
    if summary["finished"]:
        save_policy(policy, output, summary)
    return summary


def save_policy(policy: Policy, path: str | os.PathLike, summary: Mapping[str, Any]) -> None:
    """The policy as a Hugging Face folder (weights, tokenizer, and how it was trained), written atomically.

    Weights byte-identical to those it started from (a run whose every step was skipped) share that file
    through a hard link instead of storing a second copy.
    """
    with atomic_dir(path) as tmp:
        policy.model.save_pretrained(str(tmp), safe_serialization=True)
        policy.tokenizer.save_pretrained(str(tmp))
        write_json(dict(summary), Path(tmp) / "training.json")
        for weights in Path(tmp).glob("*.safetensors"):
            link_if_identical(weights, policy.source / weights.name)
