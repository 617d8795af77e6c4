"""Evaluation files gathered into long tables, one row per (model, seed, length or benchmark).

The evaluation stages write `eval/<task>/<backbone>/<trained>/<init>/seed<s>.parquet` with one row per
question; the report only needs their means, so each file becomes one row per length (long context)
or per benchmark (search QA), scores in percent as the paper prints them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from memtrain.errors import InputError

KEYS = ["backbone", "trained", "init", "seed"]
LONG_CONTEXT_METRICS = ["em", "sub_em", "f1"]
SEARCH_METRICS = ["em", "em_sum"]


def _files(eval_dir: str | os.PathLike, task: str) -> list[tuple[dict[str, object], Path]]:
    found = []
    for path in sorted(Path(eval_dir, task).glob("*/*/*/seed*.parquet")):
        backbone, trained, init = path.parts[-4:-1]
        found.append(({"backbone": backbone, "trained": trained, "init": init,
                       "seed": int(path.stem.removeprefix("seed"))}, path))
    return found


def _means(eval_dir: str | os.PathLike, task: str, by: str, metrics: list[str], percent: list[str]) -> pd.DataFrame:
    frames = []
    for keys, path in _files(eval_dir, task):
        rows = pd.read_parquet(path, columns=[by, *metrics])
        if rows.empty:
            raise InputError("an evaluation file without questions", file=path)
        means = rows.groupby(by, as_index=False)[metrics].mean()
        means[percent] *= 100.0
        frames.append(means.assign(**keys, path=str(path)))
    if not frames:
        return pd.DataFrame(columns=[*KEYS, by, *metrics, "path"])
    return pd.concat(frames, ignore_index=True)[[*KEYS, by, *metrics, "path"]]


def long_context(eval_dir: str | os.PathLike) -> pd.DataFrame:
    """EM, sub-EM and F1 in percent per (backbone, trained, init, seed, num_docs)."""
    return _means(eval_dir, "long_context", "num_docs", LONG_CONTEXT_METRICS, LONG_CONTEXT_METRICS)


def search_qa(eval_dir: str | os.PathLike) -> pd.DataFrame:
    """EM in percent (mean over objectives) and MEM1's summed EM per (backbone, trained, init, seed, dataset)."""
    return _means(eval_dir, "search_qa", "dataset", SEARCH_METRICS, ["em"])
