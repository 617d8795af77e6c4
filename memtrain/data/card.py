"""The dataset card: what the assembled documents look like, in numbers and one figure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa


def _distribution(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    quantiles = np.percentile(values, [5, 25, 50, 75, 95])
    return {
        "min": float(values.min()),
        "p5": float(quantiles[0]),
        "p25": float(quantiles[1]),
        "median": float(quantiles[2]),
        "p75": float(quantiles[3]),
        "p95": float(quantiles[4]),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


def split_summary(documents: pa.Table) -> dict[str, Any]:
    passages = documents.column("passages").to_pylist()
    roles = Counter(p["role"] for doc in passages for p in doc)
    return {
        "documents": documents.num_rows,
        "num_tokens": _distribution(np.asarray(documents.column("num_tokens").to_pylist(), dtype=float)),
        "passages_per_document": _distribution(np.asarray([len(doc) for doc in passages], dtype=float)),
        "masks_per_document": _distribution(np.asarray(documents.column("num_masks").to_pylist(), dtype=float)),
        "passage_roles": dict(sorted(roles.items())),
        "answer_labels": dict(Counter(documents.column("answer_label").to_pylist()).most_common()),
        "recall_entities_per_document": _distribution(
            np.asarray([sum(len(p["entities"]) for p in doc) for doc in passages], dtype=float)
        ),
    }


def card(
    train: pa.Table, heldout: pa.Table, assembly: Mapping[str, Any], settings: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "train": split_summary(train),
        "heldout": split_summary(heldout),
        "assembly": dict(assembly),
        "settings": dict(settings),
    }


def histogram(train: pa.Table, heldout: pa.Table, min_tokens: int, max_tokens: int):
    """Token-length histogram of both splits, with the configured bounds drawn in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=120)
    bins = np.linspace(min_tokens, max_tokens, 31) if max_tokens > min_tokens else 30
    for table, name in ((train, "train"), (heldout, "held-out")):
        if table.num_rows:
            axis.hist(table.column("num_tokens").to_pylist(), bins=bins, alpha=0.6, label=f"{name} ({table.num_rows})")
    for bound in (min_tokens, max_tokens):
        axis.axvline(bound, color="black", linestyle="--", linewidth=0.8)
    axis.set_xlabel("document length (policy tokens)")
    axis.set_ylabel("documents")
    axis.set_title("MemTrain documents by length")
    axis.legend()
    figure.tight_layout()
    return figure
