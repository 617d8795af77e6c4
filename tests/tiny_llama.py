"""The tiny random Llama that the engine tests decode with: real transformers code, milliseconds per step."""

from __future__ import annotations

import torch


def tiny_llama(vocab_size: int, **config) -> torch.nn.Module:
    """A 2-layer Llama with grouped-query attention (4 query heads over 2 key/value heads), seeded, in eval mode.

    A larger initializer_range than the default 0.02 gives peaked next-token distributions, so that greedy
    choices are not near-ties that float noise from padding or batching could flip.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    settings = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "initializer_range": 0.2,
        **config,
    }
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, **settings)).eval()
