"""Our training items as a veRL dataset: one parquet row per item, the item itself carried in `extra_info`.

veRL's RLHFDataset hands each row's non-tensor fields to the agent loop as keyword arguments, so
the agent loop gets back exactly the item the local trainer would have rolled out (a masked document,
a long-context question, a multi-objective question). `prompt` only satisfies RLHFDataset: our
agent loops build every prompt themselves.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from memtrain.distributed.verl_config import AGENT_LOOPS
from memtrain.io import write_parquet


def encode_item(kind: str, item: Any) -> str:
    """JSON of one item: a documents-table row (memtrain) or a LongContextItem / MultiObjectiveQuestion."""
    if kind == "memtrain":
        return json.dumps(dict(item), sort_keys=True)
    if kind in ("memagent", "mem1"):
        return json.dumps(dataclasses.asdict(item), sort_keys=True)
    raise ValueError(f"unknown training kind {kind!r} (known: {', '.join(AGENT_LOOPS)})")


def decode_item(kind: str, text: str) -> Any:
    """The item `encode_item` wrote, with the tuples JSON turned into lists restored."""
    data = json.loads(text)
    if kind == "memtrain":
        data["entities"] = [tuple(entity) for entity in data["entities"]]
        return data
    if kind == "memagent":
        from memtrain.data.qa import LongContextItem

        return LongContextItem(**{**data, "answers": tuple(data["answers"]), "gold_titles": tuple(data["gold_titles"])})
    if kind == "mem1":
        from memtrain.data.qa_builders import MultiObjectiveQuestion

        return MultiObjectiveQuestion(**{**data, "targets": tuple(tuple(t) for t in data["targets"])})
    raise ValueError(f"unknown training kind {kind!r} (known: {', '.join(AGENT_LOOPS)})")


def _question(kind: str, item: Any, problem: str | None) -> str:
    return problem if kind == "memtrain" else item.question


def rows(kind: str, items: Sequence[Any], problem: str | None = None) -> list[dict[str, Any]]:
    """veRL rows: chat prompt, the kind's agent loop, and the item under extra_info (its index is veRL's sample index)."""
    return [{"data_source": f"memtrain/{kind}", "agent_name": AGENT_LOOPS[kind],
             "prompt": [{"role": "user", "content": _question(kind, item, problem)}],
             "extra_info": {"index": index, "item": encode_item(kind, item)}}
            for index, item in enumerate(items)]


def write(kind: str, items: Sequence[Any], path: str | os.PathLike, problem: str | None = None) -> int:
    """Write the dataset veRL trains on; returns the number of rows."""
    table = pa.Table.from_pylist(rows(kind, items, problem))
    write_parquet(table, path)
    return table.num_rows


def item_from_kwargs(kind: str, kwargs: Mapping[str, Any]) -> Any:
    """The item of the row an agent loop was called for."""
    return decode_item(kind, kwargs["extra_info"]["item"])
