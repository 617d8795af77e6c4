"""Evaluation files gathered into long tables, one row per (model, seed, length or benchmark).

The evaluation stages write `eval/<task>/<backbone>/<trained>/<init>/seed<s>.parquet` with one row per
question; the report only needs their means, so each file becomes one row per length (long context)
or per benchmark (search QA), scores in percent as the paper prints them. Only the files a rule declares
as its inputs are read, their keys taken from where they sit: a file the current config no longer asks
for (another seed, an older checkpoint) may still lie in the folder, and must not enter a mean.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from memtrain.errors import InputError
from memtrain.report.tables import VARIANTS

KEYS = ["backbone", "trained", "init", "seed"]
SCALING_KEYS = ["backbone", "series", "init", "seed", "step"]
# MemAgent runs by where they started -> the report's model names (memagent, memtrain+memagent, ...).
MEMAGENT_SERIES = {init: variant for variant, (trained, init) in VARIANTS.items() if trained == "memagent"}
LONG_CONTEXT_METRICS = ["em", "sub_em", "f1"]
SEARCH_METRICS = ["em", "em_sum"]


def _declared(paths: Sequence[str | os.PathLike], task: str, prefix: str) -> list[tuple[tuple[str, ...], int, Path]]:
    """The declared `<task>/<a>/<b>/<c>/<prefix><n>.parquet` files: folder names a, b, c and the number n."""
    found = []
    for path in map(Path, paths):
        if (
            path.suffix == ".parquet"
            and len(path.parts) >= 5
            and path.parts[-5] == task
            and path.stem.startswith(prefix)
            and path.stem.removeprefix(prefix).isdigit()
        ):
            found.append((path.parts[-4:-1], int(path.stem.removeprefix(prefix)), path))
    return sorted(found, key=lambda item: str(item[2]))


def _files(paths: Sequence[str | os.PathLike], task: str) -> list[tuple[dict[str, object], Path]]:
    return [
        ({"backbone": backbone, "trained": trained, "init": init, "seed": seed}, path)
        for (backbone, trained, init), seed, path in _declared(paths, task, "seed")
    ]


def _means(
    paths: Sequence[str | os.PathLike], task: str, by: str, metrics: list[str], percent: list[str]
) -> pd.DataFrame:
    frames = []
    for keys, path in _files(paths, task):
        rows = pd.read_parquet(path, columns=[by, *metrics])
        if rows.empty:
            raise InputError("an evaluation file without questions", file=path)
        means = rows.groupby(by, as_index=False)[metrics].mean()
        means[percent] *= 100.0
        frames.append(means.assign(**keys, path=str(path)))
    if not frames:
        return pd.DataFrame(columns=[*KEYS, by, *metrics, "path"])
    return pd.concat(frames, ignore_index=True)[[*KEYS, by, *metrics, "path"]]


def long_context(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """EM, sub-EM and F1 in percent per (backbone, trained, init, seed, num_docs), from the long-context files among
    `paths`."""
    return _means(paths, "long_context", "num_docs", LONG_CONTEXT_METRICS, LONG_CONTEXT_METRICS)


def search_qa(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """EM in percent (mean over objectives) and MEM1's summed EM per (backbone, trained, init, seed, dataset), from
    the search-QA files among `paths`."""
    return _means(paths, "search_qa", "dataset", SEARCH_METRICS, ["em"])


def _average(path: Path, metric: str) -> float:
    """`metric` in percent averaged over lengths (each length weighs the same, as in the paper's average column)."""
    rows = pd.read_parquet(path, columns=["num_docs", metric])
    if rows.empty:
        raise InputError("an evaluation file without questions", file=path)
    return float(rows.groupby("num_docs")[metric].mean().mean() * 100.0)


def scaling(
    paths: Sequence[str | os.PathLike], start_step: int, metric: str, compared: tuple[str, ...] = ("memtrain-full",)
) -> pd.DataFrame:
    """Figure 4's points: average long-context `metric` per (backbone, init, seed, post-training step), from `paths`.

    Continued runs (`scaling/<backbone>/<init>/seed<s>/step<n>.parquet`) start from their own run's
    last step, `start_step`, read from the long-context evaluation of that run, which must be among `paths`;
    the `compared` inits (MemTrain+MemAgent) are not continued and give one point each at `start_step`.
    """
    points = [
        (backbone, init, int(seed.removeprefix("seed")), step, path)
        for (backbone, init, seed), step, path in _declared(paths, "scaling", "step")
        if seed.startswith("seed") and seed.removeprefix("seed").isdigit()
    ]
    evaluated = {
        (keys["backbone"], keys["init"], keys["seed"]): path
        for keys, path in _files(paths, "long_context")
        if keys["trained"] == "memagent"
    }
    starts = {(backbone, init, seed): path for backbone, init, seed, _, path in points}
    for (backbone, init, seed), continued in sorted(starts.items()):
        if (backbone, init, seed) not in evaluated:
            raise InputError(
                f"the evaluation of the step this continued run started from, long_context/{backbone}/"
                f"memagent/{init}/seed{seed}.parquet, is not among the declared inputs",
                file=continued,
            )
        points.append((backbone, init, seed, start_step, evaluated[backbone, init, seed]))
    backbones = {backbone for backbone, _, _ in starts}
    points += [
        (backbone, init, seed, start_step, path)
        for (backbone, init, seed), path in sorted(evaluated.items())
        if backbone in backbones and init in compared and (backbone, init, seed) not in starts
    ]
    rows = [
        {
            "backbone": b,
            "series": MEMAGENT_SERIES[i],
            "init": i,
            "seed": s,
            "step": n,
            metric: _average(p, metric),
            "path": str(p),
        }
        for b, i, s, n, p in points
    ]
    return pd.DataFrame(rows, columns=[*SCALING_KEYS, metric, "path"]).sort_values(
        ["backbone", "init", "seed", "step"], ignore_index=True
    )
