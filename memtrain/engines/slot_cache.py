"""A preallocated key/value cache of independent slots, for continuous batching.

transformers' own caches advance every row of a batch together (one shared length, or one shared
write position for the static cache), so a finished sequence cannot hand its row to a waiting prompt.
Here each slot is a row of a tensor allocated once per generate call, as wide as the longest prompt
plus the token budget, and keeps its own start and write columns:

    columns  [0, start)        left padding of the prompt group the slot was filled with (masked)
             [start, write)    the slot's prompt and the tokens generated so far
             write             where this step's key and value go

The model sees it through transformers' cache extension point (a `Cache` of `CacheLayerMixin`
layers, whose `update` the attention layers call) together with a 4-D additive attention mask that
the engine builds from the same columns, so no per-step concatenation of cache or mask ever happens.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class SlotState:
    """What the current forward pass writes: one prompt group's rows (prefill) or one column per slot (decode)."""

    def __init__(self, slots: int, width: int) -> None:
        self.slots, self.width = slots, width
        self.prefill_rows: torch.Tensor | None = None  # slot indices being filled, or None when decoding
        self.write: torch.Tensor | None = None  # decode: (slots,) column each slot writes this step


class SlotLayer(CacheLayerMixin):
    """One attention layer's (slots, kv heads, width, head dim) keys and values."""

    def __init__(self, state: SlotState) -> None:
        super().__init__()
        self.state = state

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        shape = (self.state.slots, key_states.shape[1], self.state.width, key_states.shape[-1])
        self.keys = key_states.new_zeros(shape)
        self.values = value_states.new_zeros(shape[:-1] + value_states.shape[-1:])
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        state = self.state
        if state.prefill_rows is not None:
            # A prompt group attends only to itself: store it and hand the fresh states straight back.
            length = key_states.shape[2]
            self.keys[state.prefill_rows, :, :length] = key_states
            self.values[state.prefill_rows, :, :length] = value_states
            return key_states, value_states
        rows = torch.arange(self.keys.shape[0], device=self.keys.device)
        self.keys[rows, :, state.write] = key_states[:, :, 0]
        self.values[rows, :, state.write] = value_states[:, :, 0]
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.state.width, 0

    def get_seq_length(self) -> int:
        return self.state.width

    def get_max_cache_shape(self) -> int:
        return self.state.width


class SlotCache(Cache):
    """The cache the engine passes as `past_key_values` for every forward pass of one generate call."""

    def __init__(self, num_layers: int, slots: int, width: int) -> None:
        self.state = SlotState(slots, width)
        super().__init__(layers=[SlotLayer(self.state) for _ in range(num_layers)])

    def prefill(self, rows: torch.Tensor) -> None:
        """The next forward pass fills these slots with a left-padded prompt group from column 0."""
        self.state.prefill_rows, self.state.write = rows, None

    def decode(self, write: torch.Tensor) -> None:
        """The next forward pass advances every slot by one token, written at its column in `write`."""
        self.state.prefill_rows, self.state.write = None, write

    def copy(self, sources: torch.Tensor, targets: torch.Tensor, columns: int) -> None:
        """Give each target slot the first `columns` columns of its source slot (a prompt prefilled once)."""
        for layer in self.layers:
            if layer.is_initialized:
                layer.keys[targets, :, :columns] = layer.keys[sources, :, :columns]
                layer.values[targets, :, :columns] = layer.values[sources, :, :columns]

    def compact(self, keep: torch.Tensor) -> None:
        """Keep only these slots, in this order.

        Done when no prompt waits any more and most slots have finished: the tail of a call then
        stops paying attention and cache traffic for rows that only hold finished sequences.
        """
        self.state.slots = int(keep.numel())
        for layer in self.layers:
            if layer.is_initialized:
                layer.keys, layer.values = layer.keys[keep], layer.values[keep]
