"""Samples to tensors: micro-batches under a token budget, and per-token log-probs of the responses.

Layout follows veRL: prompts left-padded, responses right-padded, so every response starts at the
same column and only the last `response_width + 1` positions need logits (the vocabulary
projection dominates memory for small models with large vocabularies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from verl.utils import torch_functional as verl_F

from memtrain.rl.samples import Sample


def micro_batches(samples: Sequence[Sample], max_tokens: int) -> list[list[int]]:
    """Indices of `samples` split so that each micro-batch's padded size (rows x widest) stays under `max_tokens`.

    Samples are sorted by length first to waste little padding; a sample longer than the budget
    gets a micro-batch of its own rather than an error, so one long turn cannot stop training.
    """
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i].prompt_ids), len(samples[i].response_ids)))
    batches: list[list[int]] = []
    prompt_width = response_width = 0
    for index in order:
        sample = samples[index]
        wider_prompt = max(prompt_width, len(sample.prompt_ids))
        wider_response = max(response_width, len(sample.response_ids))
        if batches and (len(batches[-1]) + 1) * (wider_prompt + wider_response) <= max_tokens:
            batches[-1].append(index)
            prompt_width, response_width = wider_prompt, wider_response
        else:
            batches.append([index])
            prompt_width, response_width = len(sample.prompt_ids), len(sample.response_ids)
    return batches


@dataclass
class Batch:
    input_ids: torch.Tensor  # (rows, prompt_width + response_width)
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    responses: torch.Tensor  # (rows, response_width)
    response_mask: torch.Tensor  # float, 1 on real response tokens

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(tensor.to(device) for tensor in vars(self).values()))


def collate(samples: Sequence[Sample], pad_token_id: int) -> Batch:
    prompt_width = max(len(s.prompt_ids) for s in samples)
    response_width = max(max(len(s.response_ids) for s in samples), 1)
    rows = len(samples)
    input_ids = torch.full((rows, prompt_width + response_width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, sample in enumerate(samples):
        prompt, response = sample.prompt_ids, sample.response_ids
        input_ids[row, prompt_width - len(prompt) : prompt_width] = torch.tensor(prompt)
        input_ids[row, prompt_width : prompt_width + len(response)] = torch.tensor(response, dtype=torch.long)
        attention_mask[row, prompt_width - len(prompt) : prompt_width + len(response)] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    responses = input_ids[:, prompt_width:]
    return Batch(input_ids, attention_mask, position_ids, responses, attention_mask[:, prompt_width:].float())


def pad_rows(values: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """Stack per-sample 1-d tensors (stored log-probs) into (rows, width), zero-padded on the right."""
    out = torch.zeros(len(values), width)
    for row, value in enumerate(values):
        out[row, : len(value)] = value
    return out


def response_logprobs(
    model, batch: Batch, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each response token under `model` (logits divided by the sampling temperature, as veRL does).

    Differentiable when called with grad enabled; the entropy is always detached (a diagnostic).
    """
    width = batch.responses.shape[1]
    logits = (
        model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
            logits_to_keep=width + 1,
        )
        .logits[:, :-1]
        .float()
    )
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    # veRL's default (row-wise logsumexp, or flash-attn's kernel on GPU) is ~20x slower than
    # log_softmax + gather on CPU, where memory is not the constraint.
    select = verl_F.logprobs_from_logits if logits.is_cuda else verl_F.logprobs_from_logits_naive
    log_probs = select(logits, batch.responses)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = verl_F.entropy_from_logits(logits.detach())
    return log_probs, entropy
