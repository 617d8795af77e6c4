"""Our training items as a veRL dataset: one parquet row per item, the item itself carried in `extra_info`.

veRL's RLHFDataset hands each row's non-tensor fields to the agent loop as keyword arguments, so
the agent loop gets back exactly the item the local trainer would have rolled out (a masked document,
a long-context question, a multi-objective question), encoded by its kind (memtrain.rl.kinds). `prompt`
only satisfies RLHFDataset: our agent loops build every prompt themselves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from memtrain.io import write_parquet
from memtrain.rl import kinds


def rows(kind: str, items: Sequence[Any]) -> list[dict[str, Any]]:
    """veRL rows: chat prompt, the kind's agent loop, and the item under extra_info (its index is veRL's sample index)."""
    spec = kinds.get(kind)
    return [
        {
            "data_source": f"memtrain/{kind}",
            "agent_name": spec.agent_loop,
            "prompt": [{"role": "user", "content": spec.question(item)}],
            "extra_info": {"index": index, "item": spec.encode(item)},
        }
        for index, item in enumerate(items)
    ]


def write(kind: str, items: Sequence[Any], path: str | os.PathLike) -> int:
    """Write the dataset veRL trains on; returns the number of rows."""
    table = pa.Table.from_pylist(rows(kind, items))
    write_parquet(table, path)
    return table.num_rows
