"""The contract between rollout code and whatever produces tokens.

Rollouts only ever see these three types: token ids in, token ids and their sampling log-probs out.
Keeping text, tokenizers and model objects out of the protocol is what lets a remote or multi-GPU
back-end stand in for the in-process one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Sampling:
    """How to decode. temperature 0 means greedy; top_p 1 disables nucleus truncation."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # A bad value would otherwise surface deep inside a batched decode (or silently sample garbage
        # from a NaN distribution), far from the config that caused it.
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"Sampling.max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not (
            isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature >= 0
        ):
            raise ValueError(
                f"Sampling.temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}"
            )
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"Sampling.top_p must be in (0, 1], got {self.top_p!r}")
        # Stored as a tuple even when given a list, so that Sampling stays hashable and immutable.
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in self.stop_token_ids):
            raise ValueError(f"Sampling.stop_token_ids must be non-negative integers, got {self.stop_token_ids!r}")


@dataclass(frozen=True)
class Generation:
    """One prompt's continuation.

    token_ids include the stop token when one ended the sequence, so that the policy-gradient loss
    also trains the decision to stop. logprobs are those of the distribution each token was drawn
    from (logits / temperature, before top-p truncation; plain log_softmax when greedy): the
    behaviour policy's log-probs that importance ratios are taken against.
    """

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    stopped: bool  # True when a stop token ended it, False when max_new_tokens did


def check_prompts(prompts: Sequence[Sequence[int]]) -> None:
    """Every engine's input check: an empty prompt gives a causal LM nothing to condition on."""
    for index, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {index} is empty: a causal LM needs at least one token to condition on")


@runtime_checkable
class Engine(Protocol):
    """Anything that turns token-id prompts into Generations."""

    def generate(self, prompts: Sequence[Sequence[int]], sampling: Sampling) -> list[Generation]:
        """One Generation per prompt, in the prompts' order."""
        ...
