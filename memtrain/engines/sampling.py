"""From one decode step's logits to the next token and its log-prob, driven by given uniforms.

Each token is drawn by inverting the cumulative distribution at a uniform that the caller supplies,
one uniform per prompt and step. Drawing the uniforms up front, per prompt, is what makes a sequence's
tokens independent of which other sequences share its batch, of the batch size and of when its slot
was filled: the engine can then batch however it likes and still reproduce a call exactly.
"""

from __future__ import annotations

import torch

from memtrain.engines.base import Sampling


def choose(
    logits: torch.Tensor, sampling: Sampling, uniforms: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, log-probs) for a (rows, vocabulary) logits block.

    The log-prob is that of the untruncated, temperature-scaled distribution (top-p only narrows
    where the token may fall), which is what a forward pass over the full logits gives back, so the
    trainer's recomputed log-probs compare with it directly. Greedy decoding (temperature 0) reads
    no uniform and builds no probability tensor: argmax and one log-sum-exp.
    """
    logits = logits.float()  # bf16 log-probs are too coarse for importance ratios
    if sampling.temperature == 0:
        token = logits.argmax(-1)
        return token, logits.gather(-1, token[:, None]).squeeze(-1) - logits.logsumexp(-1)
    if uniforms is None:
        raise ValueError("sampling at a temperature above 0 needs one uniform per row")
    scaled = logits / sampling.temperature
    normaliser = scaled.logsumexp(-1, keepdim=True)
    probs = (scaled - normaliser).exp_()
    if sampling.top_p < 1:
        ranked, order = probs.sort(dim=-1, descending=True)
        # A token is dropped when the tokens ranked above it already reach top_p, so the most likely
        # token always survives, however small top_p is.
        outside = ranked.cumsum(-1).sub_(ranked) >= sampling.top_p
        token = order.gather(-1, _invert(ranked.masked_fill_(outside, 0.0), uniforms)[:, None]).squeeze(-1)
    else:
        token = _invert(probs, uniforms)
    return token, scaled.gather(-1, token[:, None]).squeeze(-1) - normaliser.squeeze(-1)


def _invert(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row, the index whose cumulative-weight interval holds uniform x total weight (weights unnormalised).

    The target is kept strictly below the total, so the index found has a cumulative weight above the
    one before it: a zero-weight token can never be chosen, whatever rounding does at either end.
    """
    cumulative = weights.cumsum_(-1)  # in place: the weights are a scratch copy (non-negative, so it stays monotone)
    total = cumulative[:, -1:]
    target = torch.minimum(uniforms.to(total.dtype)[:, None] * total, total.nextafter(torch.zeros_like(total)))
    return torch.searchsorted(cumulative, target, right=True).squeeze(-1)
