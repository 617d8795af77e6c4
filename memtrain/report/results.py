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
from memtrain.report.tables import VARIANTS

KEYS = ["backbone", "trained", "init", "seed"]
SCALING_COLUMNS = ["backbone", "series", "init", "seed", "step", "em", "path"]
# MemAgent runs by where they started -> the report's model names (memagent, memtrain+memagent, ...).
MEMAGENT_SERIES = {init: variant for variant, (trained, init) in VARIANTS.items() if trained == "memagent"}
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


def _average_em(path: Path) -> float:
    """EM in percent averaged over lengths (each length weighs the same, as in the paper's average column)."""
    rows = pd.read_parquet(path, columns=["num_docs", "em"])
    if rows.empty:
        raise InputError("an evaluation file without questions", file=path)
    return float(rows.groupby("num_docs")["em"].mean().mean() * 100.0)


def scaling(eval_dir: str | os.PathLike, start_step: int,
            compared: tuple[str, ...] = ("memtrain-full",)) -> pd.DataFrame:
    """Figure 4's points: average long-context EM per (backbone, init, seed, post-training step).

    Continued runs (`eval/scaling/<backbone>/<init>/seed<s>/step<n>.parquet`) start from their own run's
    last step, `start_step`, read from the long-context evaluation of that run; the `compared` inits
    (MemTrain+MemAgent) are not continued and give one point each at `start_step`.
    """
    points = []
    for path in sorted(Path(eval_dir, "scaling").glob("*/*/seed*/step*.parquet")):
        backbone, init, seed = path.parts[-4], path.parts[-3], int(path.parts[-2].removeprefix("seed"))
        points.append((backbone, init, seed, int(path.stem.removeprefix("step")), path))
    starts = {(backbone, init, seed) for backbone, init, seed, _, _ in points}
    for backbone, init, seed in sorted(starts):
        path = Path(eval_dir, "long_context", backbone, "memagent", init, f"seed{seed}.parquet")
        if not path.is_file():
            raise InputError("a continued run lacks the evaluation of the step it started from", file=path)
        points.append((backbone, init, seed, start_step, path))
    for backbone in sorted({backbone for backbone, _, _ in starts}):
        for init in compared:
            for path in sorted(Path(eval_dir, "long_context", backbone, "memagent", init).glob("seed*.parquet")):
                if (backbone, init, int(path.stem.removeprefix("seed"))) not in starts:
                    points.append((backbone, init, int(path.stem.removeprefix("seed")), start_step, path))
    rows = [{"backbone": b, "series": MEMAGENT_SERIES[i], "init": i, "seed": s, "step": n, "em": _average_em(p),
             "path": str(p)} for b, i, s, n, p in points]
    return pd.DataFrame(rows, columns=SCALING_COLUMNS).sort_values(["backbone", "init", "seed", "step"],
                                                                    ignore_index=True)
