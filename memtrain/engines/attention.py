"""The attention the engine decodes with on CPU: transformers' sdpa, except for one-row queries.

transformers' sdpa path on CPU cannot hand grouped-query attention to the kernel when a mask is given
(`use_gqa_in_sdpa`), so every decode step first copies each layer's whole key/value cache
`num_key_value_groups` times (`repeat_kv`), and PyTorch's CPU flash kernel is slow for one query row in
bfloat16. A decode step's query is one row per sequence, so its attention is two small matmuls: each
key/value head's group of query heads against the cache as it is, no copy. Measured on this project's
2-core machine with SmolLM2-135M (9 query heads over 3 key/value heads), decode after a 256-token prompt
(`bench/rollout_throughput.py --dtype`, before and after in one session): batch 8 79.7 -> 108.8 tokens/s in
float32 and 51.7 -> 88.3 in bfloat16; batch 1 18.6 -> 19.6 and 11.7 -> 21.4.

It is registered through transformers' `AttentionInterface` under its own name, with sdpa's mask
function, so multi-row passes (prefills) run exactly transformers' sdpa. The engine switches a model to
it only for the span of a generate call (`decoding_attention`), so the trainer's passes never see it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "memtrain_sdpa_one_row"
# Implementations that take a boolean mask (True = attend) in place of an additive one.
BOOLEAN_MASKS = frozenset({"sdpa", NAME})

# Attention variants the grouped one-row path does not implement: their layers pass these keyword
# arguments with a value, and then sdpa's path (which handles or rejects them) runs instead.
_UNSUPPORTED = ("sliding_window", "softcap", "s_aux")


def sdpa_with_one_row_decode(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query (batch, heads, rows, dim), key and value
    (batch, kv heads, keys, dim), mask boolean (True = attend) or additive, broadcastable to
    (batch, 1, rows, keys); returns (batch, rows, heads, dim)."""
    batch, heads, rows, dim = query.shape
    if rows != 1 or dropout or any(kwargs.get(name) is not None for name in _UNSUPPORTED):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    kv_heads = key.shape[1]
    # Query head h reads key/value head h // groups (repeat_kv's layout), so a kv head's query heads
    # are consecutive: one (groups, dim) block per kv head multiplies the cache in place.
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(grouped, key.transpose(-1, -2)).mul_(dim**-0.5 if scaling is None else scaling)
    if attention_mask is not None:
        mask = attention_mask[..., : key.shape[-2]]
        if mask.dtype == torch.bool:
            scores.masked_fill_(~mask, float("-inf"))
        else:
            scores.add_(mask)
    # As eager attention: softmax in float32, whatever the weights' dtype.
    probabilities = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    return torch.matmul(probabilities, value).reshape(batch, heads, 1, dim).transpose(1, 2), None


def register() -> None:
    """Make NAME known to transformers (idempotent): the attention function, and sdpa's mask function
    for models that build their mask from a 2-D one under this name."""
    AttentionInterface.register(NAME, sdpa_with_one_row_decode)
    AttentionMaskInterface.register(NAME, sdpa_mask)


@contextlib.contextmanager
def decoding_attention(model: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Within the block, a CPU model on transformers' sdpa decodes with NAME; anything else (another
    implementation, CUDA, where the kernels handle one-row queries well) is left as it is."""
    config = getattr(model, "config", None)
    if device.type != "cpu" or getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    register()
    model.set_attn_implementation(NAME)
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")
