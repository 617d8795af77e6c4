"""Typed views of the config sections the trainer and the agents read most: `rl`, `agent`, and each training
kind's own section (`memtrain`, `posttrain.memagent`, `posttrain.mem1`).

Built once from the validated config (the schema has filled every default), so code reads `rl.loss.kl_coef` rather
than `params["rl"]["loss"]["kl_coef"]`, a misspelt field fails at import-time type checks instead of as a KeyError
deep in a run, and each class's docstring lists its fields with the schema's own descriptions (`help(RL)`).
Each class knows its dotted config path, so `section(MemTrain, config)` finds it wherever it sits.
tests/test_settings.py checks that every field is a schema key and every schema key a field.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from memtrain.config import load_schema

T = TypeVar("T")


def schema_node(path: str) -> dict[str, Any]:
    """The schema of the config key at dotted `path` (e.g. 'rl.loss')."""
    node = load_schema()
    for key in path.split("."):
        node = node["properties"][key]
    return node


def from_schema(path: str):
    """Class decorator: the section at `path`, with the schema's description of each field appended to the
    class docstring, so the docs live in one place (the schema) and still show up where the code is read."""

    def document(cls: type[T]) -> type[T]:
        properties = schema_node(path).get("properties", {})
        lines = [f"    {name}: {properties.get(name, {}).get('description', '')}".rstrip() for name in _names(cls)]
        cls.__doc__ = f"{(cls.__doc__ or '').rstrip()}\n\n`{path}` fields:\n" + "\n".join(lines)
        cls.schema_path = path
        return cls

    return document


def _names(cls: type) -> list[str]:
    return [field.name for field in dataclasses.fields(cls)]


def build(cls: type[T], values: Mapping[str, Any]) -> T:
    """An instance of the settings dataclass `cls` from its config section, nested sections included; keys the
    class does not name are ignored (a config slice may hold more)."""
    hints = typing.get_type_hints(cls)
    arguments = {}
    for name in _names(cls):
        value, kind = values[name], hints[name]
        if dataclasses.is_dataclass(kind):
            value = build(kind, value)
        elif typing.get_origin(kind) is tuple or kind is tuple:
            value = tuple(value)
        arguments[name] = value
    return cls(**arguments)


def section(cls: type[T], config: Mapping[str, Any]) -> T:
    """The typed section `cls` of a (validated) config, read at the class's dotted schema path."""
    values = config
    for key in cls.schema_path.split("."):
        values = values[key]
    return build(cls, values)


@from_schema("rl.sampling")
@dataclasses.dataclass(frozen=True)
class Sampling:
    """How rollouts sample."""

    temperature: float
    top_p: float


@from_schema("rl.filter")
@dataclasses.dataclass(frozen=True)
class Filter:
    """DAPO's dynamic sampling."""

    enabled: bool
    max_refill_rounds: int


@from_schema("rl.loss")
@dataclasses.dataclass(frozen=True)
class Loss:
    """veRL core_algos' policy loss, KL penalty and aggregation."""

    clip_ratio_low: float
    clip_ratio_high: float
    clip_ratio_c: float
    kl_coef: float
    kl_type: str
    aggregation: str
    normaliser: str


@from_schema("rl.optimizer")
@dataclasses.dataclass(frozen=True)
class Optimizer:
    """AdamW and its schedule."""

    weight_decay: float
    betas: tuple[float, float]
    eps: float
    warmup_steps: int
    grad_clip: float


@from_schema("rl")
@dataclasses.dataclass(frozen=True)
class RL:
    """The GRPO trainer's settings, shared by every training kind."""

    device: str
    dtype: str
    engine_batch_size: int
    engine_linear: str
    sampling: Sampling
    filter: Filter
    loss: Loss
    optimizer: Optimizer
    ppo_epochs: int
    micro_batch_tokens: int
    checkpoint_every: int
    keep_checkpoints: int
    log_rollouts_every: int
    rollouts_logged: int

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> RL:
        return section(cls, config)

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.device, self.dtype, self.engine_batch_size, self.engine_linear)


@from_schema("rl")
@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where and how a policy runs: the part of `rl` an evaluation job receives."""

    device: str
    dtype: str
    engine_batch_size: int
    engine_linear: str

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Runtime:
        return section(cls, config)


@from_schema("agent.budgets")
@dataclasses.dataclass(frozen=True)
class Budgets:
    """Token budgets of one turn (paper: 1024 instruction, 5120 chunk, 1024 memory, 1024 response, 8 chunks)."""

    instruction: int
    chunk: int
    memory: int
    response: int
    max_chunks: int

    @property
    def context(self) -> int:
        """Longest prompt plus reply a turn can need: what the policy's context window must hold."""
        return self.instruction + self.chunk + self.memory + self.response


@from_schema("agent.prompts")
@dataclasses.dataclass(frozen=True)
class Prompts:
    """Template files replacing the built-in ones (memtrain.agent.prompts); None keeps the built-in."""

    memory_update: str | None
    final_answer: str | None
    recall: str | None
    full_context: str | None
    search: str | None


@from_schema("agent")
@dataclasses.dataclass(frozen=True)
class Agent:
    """What every agent (memory or search) is built from."""

    budgets: Budgets
    prompts: Prompts
    no_memory: str


@from_schema("memtrain")
@dataclasses.dataclass(frozen=True)
class MemTrain:
    """What one MemTrain training (paper section 3) receives: its schedule and its task. The section's other keys,
    `backbones` and `variants`, choose which trainings run (rules/memtrain.smk) and are left out of every
    training's settings, so that choosing another set reruns no training."""

    steps: int
    batch_size: int
    mini_batch_size: int
    group_size: int
    recall_group_size: int
    recall_coef: float
    lr: float
    seed: int
    problem: str
    target_token: str


@from_schema("posttrain.memagent")
@dataclasses.dataclass(frozen=True)
class MemAgent:
    """MemAgent post-training (RULER-HotpotQA): its schedule, reward and `rl` overlay."""

    steps: int
    batch_size: int
    mini_batch_size: int
    group_size: int
    lr: float
    reward: str
    rl: Mapping[str, Any]


@from_schema("posttrain.mem1")
@dataclasses.dataclass(frozen=True)
class Mem1:
    """MEM1 post-training (multi-objective search QA): its schedule, episode limits, reward and `rl` overlay."""

    steps: int
    batch_size: int
    mini_batch_size: int
    group_size: int
    lr: float
    max_turns: int
    response_tokens: int
    information_tokens: int
    reward: str
    rl: Mapping[str, Any]
