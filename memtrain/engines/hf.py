"""In-process generation with the trainer's own Hugging Face causal LM.

The decoding loop is written out rather than delegated to `model.generate` for two reasons: every
random draw must come from a caller-owned torch.Generator (so that a rollout is exactly reproducible
and its state can be checkpointed with the trainer's), and GRPO needs the log-prob of each sampled
token under the distribution it was drawn from, which `generate` does not hand back cheaply.

The engine shares the model object with the trainer: weights are never copied, so a rollout always
uses the current policy.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from memtrain.engines.base import Generation, Sampling


class HFEngine:
    """Batched sampling from a causal LM that follows the transformers 5 forward/cache API.

    All prompts of a call are decoded together in micro-batches of at most `max_batch_size`, which is
    what makes lockstep rollouts fast: one weight read per decode step serves a whole micro-batch.
    """

    def __init__(self, model: torch.nn.Module, pad_token_id: int, generator: torch.Generator,
                 max_batch_size: int = 64) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        device = _device_of(model)
        if not _same_device(generator.device, device):
            # torch.multinomial refuses a generator on another device only at the first sampled
            # token; failing here names the cause before any compute is spent.
            raise ValueError(f"the generator is on {generator.device} but the model is on {device}: "
                             f"create it with torch.Generator(device={str(device)!r})")
        self.model = model
        self.pad_token_id = pad_token_id
        self.generator = generator
        self.max_batch_size = max_batch_size
        # Only the last position's logits are ever used; without this the prefill would materialise
        # a (batch, prompt length, vocabulary) tensor, by far the largest activation for long prompts.
        self._logits_kwargs = ({"logits_to_keep": 1}
                               if "logits_to_keep" in inspect.signature(model.forward).parameters else {})

    def generate(self, prompts: Sequence[Sequence[int]], sampling: Sampling) -> list[Generation]:
        """One Generation per prompt, in the prompts' order."""
        for index, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {index} is empty: a causal LM needs at least one token to condition on")
        # Similar lengths share a micro-batch, so that left padding wastes little compute.
        order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
        results: list[Generation | None] = [None] * len(prompts)
        # Per module, not model.train(flag): a trainer may keep some submodules in eval on purpose.
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.max_batch_size):
                    batch = order[start:start + self.max_batch_size]
                    for index, generation in zip(batch, self._generate_batch([prompts[i] for i in batch], sampling)):
                        results[index] = generation
        finally:
            for module, training in modes:
                module.training = training
        return results

    def _generate_batch(self, prompts: Sequence[Sequence[int]], sampling: Sampling) -> list[Generation]:
        device = _device_of(self.model)
        size, width, steps = len(prompts), max(len(prompt) for prompt in prompts), sampling.max_new_tokens
        # Left padding keeps every sequence's next token in the last column, so one decode step serves all.
        input_ids = torch.full((size, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((size, width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt):] = torch.as_tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt):] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        # Explicit positions: with left padding the model would otherwise count the pads, and a padded
        # prompt would not see the positions it sees alone.
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)

        stop_ids = torch.as_tensor(sampling.stop_token_ids, dtype=torch.long, device=device)
        tokens = torch.full((size, steps), self.pad_token_id, dtype=torch.long, device=device)
        logprobs = torch.zeros((size, steps), dtype=torch.float32, device=device)
        lengths = torch.zeros(size, dtype=torch.long, device=device)
        finished = torch.zeros(size, dtype=torch.bool, device=device)

        output = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=True, **self._logits_kwargs)
        for step in range(steps):
            token, logprob = _sample(output.logits[:, -1], sampling, self.generator)
            live = ~finished
            # Every row is sampled, finished or not: the generator advances the same way whatever
            # stops, so one sequence stopping never changes another's draws.
            tokens[:, step] = torch.where(live, token, self.pad_token_id)
            logprobs[:, step] = torch.where(live, logprob, 0.0)
            lengths += live
            if stop_ids.numel():
                finished |= live & torch.isin(token, stop_ids)
                # A host sync per step, paid only when stopping is possible at all.
                if bool(finished.all()):
                    break
            if step + 1 == steps:
                break
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((size, 1))], dim=-1)
            position_ids = position_ids[:, -1:] + 1
            output = self.model(input_ids=tokens[:, step:step + 1], attention_mask=attention_mask,
                                position_ids=position_ids, past_key_values=output.past_key_values,
                                use_cache=True, **self._logits_kwargs)

        return [Generation(token_ids=tuple(row_tokens[:length]), logprobs=tuple(row_logprobs[:length]), stopped=stopped)
                for row_tokens, row_logprobs, length, stopped
                in zip(tokens.tolist(), logprobs.tolist(), lengths.tolist(), finished.tolist())]


def _sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token per row and its log-prob under the untruncated, temperature-scaled distribution.

    The log-prob ignores top-p on purpose: it is then what a forward pass over the full logits gives
    back, so the trainer's recomputed log-probs can be compared with it directly.
    """
    logits = logits.float()  # bf16 log-probs are too coarse for importance ratios
    if sampling.temperature == 0:
        scores = logits.log_softmax(-1)
        token = scores.argmax(-1)
    else:
        scores = (logits / sampling.temperature).log_softmax(-1)
        probs = scores.exp()
        if sampling.top_p < 1:
            probs = _nucleus(probs, sampling.top_p)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return token, scores.gather(-1, token[:, None]).squeeze(-1)


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """probs with everything outside the smallest top-p set zeroed (unnormalised: multinomial does not care).

    A token is dropped when the tokens ranked above it already reach top_p, so the most likely token
    always survives, however small top_p is.
    """
    ranked, order = probs.sort(dim=-1, descending=True)
    outside = ranked.cumsum(-1) - ranked >= top_p
    return probs.scatter(-1, order, ranked.masked_fill(outside, 0.0))


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _same_device(left: torch.device, right: torch.device) -> bool:
    """Devices equal up to an implicit index ('cuda' means the current CUDA device)."""
    if left.type != right.type:
        return False
    if left.type == "cuda":
        current = torch.cuda.current_device()
        return (current if left.index is None else left.index) == (current if right.index is None else right.index)
    return left.index is None or right.index is None or left.index == right.index
