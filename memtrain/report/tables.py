"""Tables 1 and 2 of the paper rebuilt from the evaluation means, with the paper's value beside each cell.

The long table (one row per backbone, variant and column) is the machine-readable output; `wide`
lays it out as the paper prints it. Only exact match (`em`) goes into the tables, as Table 1's
accuracy and Table 2's EM are both exact match; sub-EM and F1 stay in MLflow and the per-question
evaluation files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from memtrain.errors import InputError
from memtrain.io import atomic_path
from memtrain.report import paper

METRIC = "em"
AVG = "avg"

# Every model the report names, as the paper labels it -> (trained, init) of the evaluation files.
VARIANTS: dict[str, tuple[str, str]] = {
    "base": ("none", "base"),
    "memtrain": ("none", "memtrain-full"),
    "memagent": ("memagent", "base"),
    "memtrain+memagent": ("memagent", "memtrain-full"),
    "mem1": ("mem1", "base"),
    "memtrain+mem1": ("mem1", "memtrain-full"),
    "e2e+memagent": ("memagent", "memtrain-e2e"),
    "decoupled+memagent": ("memagent", "memtrain-decoupled"),
}
TABLE1_VARIANTS = ["base", "memtrain", "memagent", "memtrain+memagent"]
TABLE2_VARIANTS = ["base", "mem1", "memtrain+mem1"]
ABLATION_VARIANTS = ["memtrain+memagent", "e2e+memagent", "decoupled+memagent"]  # Figure 3: Full, End-to-End, Decoupled

# Our long-context lengths (documents per question) -> the paper's context lengths in tokens.
LENGTHS: dict[int, str] = {50: "7k", 100: "14k", 200: "28k", 400: "56k", 800: "112k",
                           1600: "224k", 3200: "448k", 6400: "896k"}
# FlashRAG dataset names -> Table 2's columns, in the paper's order.
BENCHMARKS: dict[str, str] = {"triviaqa": "triviaqa", "bamboogle": "bamboogle", "hotpotqa": "hotpotqa",
                              "nq": "nq", "popqa": "popqa", "2wikimultihopqa": "2wiki", "musique": "musique"}

COLUMNS = ["backbone", "paper_backbone", "variant", "trained", "init", "column", "paper_column",
           "mean", "std", "seeds", "seed_list", "paper", "diff"]


def table1(long_context: pd.DataFrame, backbones: Mapping[str, str | None],
           variants: list[str] = TABLE1_VARIANTS, stand_ins: Mapping[int, str] | None = None) -> pd.DataFrame:
    """Table 1 from `results.long_context`: one row per (backbone, variant, number of documents or avg).

    `backbones` maps our short names to the paper's model names (None: not in the paper, so no
    paper values); backbones outside it are left out, as the config decides what the report covers.
    `stand_ins` maps further numbers of documents to the paper's lengths they stand in for (a small run).
    """
    return _table(long_context, backbones, variants, by="num_docs", paper_columns={**LENGTHS, **(stand_ins or {})},
                  paper_values=paper.table1(), order=lambda column: (int(column), ""))


def table2(search: pd.DataFrame, backbones: Mapping[str, str | None],
           variants: list[str] = TABLE2_VARIANTS, stand_ins: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Table 2 from `results.search_qa`: one row per (backbone, variant, benchmark or avg); see `table1`."""
    order = list(BENCHMARKS)
    return _table(search, backbones, variants, by="dataset", paper_columns={**BENCHMARKS, **(stand_ins or {})},
                  paper_values=paper.table2(),
                  order=lambda column: (order.index(column) if column in order else len(order), column))


def _table(frame: pd.DataFrame, backbones: Mapping[str, str | None], variants: list[str], *, by: str,
           paper_columns: Mapping, paper_values: pd.DataFrame,
           order: Callable[[object], tuple[int, str]]) -> pd.DataFrame:
    for field in ["backbone", "trained", "init", "seed", by, METRIC]:
        if field not in frame.columns:
            raise InputError("the evaluation means lack a column", field=field)
    unknown = [label for label in variants if label not in VARIANTS]
    if unknown:
        raise InputError(f"unknown variants {unknown}; known: {sorted(VARIANTS)}", field="variant")
    reference = {(b, v, c): value for b, v, c, value in
                 paper.long_values(paper_values).itertuples(index=False)}
    all_paper_columns = {name for name in paper_values.columns if name not in paper.ID_COLUMNS and name != AVG}
    rows = []
    for backbone, paper_backbone in backbones.items():
        for label in variants:
            trained, init = VARIANTS[label]
            model = frame[(frame["backbone"] == backbone) & (frame["trained"] == trained) & (frame["init"] == init)]
            if model.empty:
                continue
            scores = _per_seed(model, by, f"{backbone}/{trained}/{init}")
            scores = scores[sorted(scores.columns, key=order)]
            mapped = {column: paper_columns.get(column) for column in scores.columns}
            # The paper's avg is over all its columns; ours is comparable only over exactly those.
            mapped[AVG] = AVG if set(mapped.values()) == all_paper_columns else None
            scores[AVG] = scores.mean(axis=1)  # per seed, so the std of avg is over seeds too
            seeds = ";".join(str(seed) for seed in scores.index)
            for column in scores.columns:
                values = scores[column]
                value = (reference.get((paper_backbone, label, mapped[column]), math.nan)
                         if paper_backbone is not None and mapped[column] is not None else math.nan)
                mean = float(values.mean())
                rows.append({"backbone": backbone, "paper_backbone": paper_backbone, "variant": label,
                             "trained": trained, "init": init, "column": str(column),
                             "paper_column": mapped[column], "mean": mean, "std": float(values.std(ddof=1)),
                             "seeds": len(values), "seed_list": seeds, "paper": value, "diff": mean - value})
    return pd.DataFrame(rows, columns=COLUMNS)


def _per_seed(model: pd.DataFrame, by: str, name: str) -> pd.DataFrame:
    """EM as seeds x columns; every seed must cover the same columns, or its average would not compare."""
    duplicated = model.duplicated(["seed", by])
    if duplicated.any():
        first = model[duplicated].iloc[0]
        raise InputError(f"{by} {first[by]} appears twice for seed {first['seed']}",
                         file=first.get("path"), record=name, field=by)
    scores = model.pivot(index="seed", columns=by, values=METRIC).sort_index()
    gaps = scores.isna()
    if gaps.any(axis=None):
        seed = gaps.any(axis=1).idxmax()
        lacking = [str(column) for column in scores.columns[gaps.loc[seed]]]
        paths = model.loc[model["seed"] == seed, "path"] if "path" in model.columns else pd.Series([], dtype=str)
        raise InputError(f"seed {seed} lacks {by} {lacking} that other seeds have",
                         file=paths.iloc[0] if len(paths) else None, record=name, field=by)
    return scores


def wide(table: pd.DataFrame, pm: str = "±") -> pd.DataFrame:
    """The long table as the paper lays it out: a row per backbone and variant, a column per length/benchmark.

    Cells read "mean ± std (paper)"; the std is left out with a single seed and the paper value
    where the paper has none, so an empty part always means "not available", never zero.
    """
    if table.empty:
        return pd.DataFrame(columns=["backbone", "variant"])
    cells = table.assign(
        header=[paper_column if isinstance(paper_column, str) else column
                for column, paper_column in zip(table["column"], table["paper_column"])],
        cell=[_cell(mean, std, value, pm) for mean, std, value in zip(table["mean"], table["std"], table["paper"])])
    headers = list(dict.fromkeys(header for header in cells["header"] if header != AVG)) + [AVG]
    rows = list(dict.fromkeys(zip(cells["backbone"], cells["variant"])))
    laid = cells.pivot(index=["backbone", "variant"], columns="header", values="cell")
    laid = laid.reindex(index=pd.MultiIndex.from_tuples(rows, names=["backbone", "variant"]), columns=headers)
    laid.columns.name = None
    return laid.fillna("").reset_index()


def _cell(mean: float, std: float, value: float, pm: str) -> str:
    text = f"{mean:.2f}"
    if not math.isnan(std):
        text += f" {pm} {std:.2f}"
    if not math.isnan(value):
        text += f" ({value:.2f})"
    return text


def to_markdown(table: pd.DataFrame) -> str:
    """A Markdown table of `wide(table)` (pandas' renderer; tabulate comes with snakemake)."""
    return wide(table).to_markdown(index=False) + "\n"


def to_latex(table: pd.DataFrame) -> str:
    """A LaTeX tabular of `wide(table)`; names are escaped, ± becomes $\\pm$ (pandas' renderer, jinja2)."""
    laid = wide(table)
    text = laid.to_latex(index=False, escape=True, column_format="ll" + "r" * (len(laid.columns) - 2))
    return text.replace("±", r"$\pm$")


def write_tables(table: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """Write `<stem>.csv` (the long table), `<stem>.md` and `<stem>.tex`, each atomically; return their paths."""
    stem = Path(stem)
    paths = [stem.with_name(stem.name + suffix) for suffix in (".csv", ".md", ".tex")]
    with atomic_path(paths[0]) as tmp:
        table.to_csv(tmp, index=False)
    for path, text in zip(paths[1:], (to_markdown(table), to_latex(table))):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return paths


def provenance(table: pd.DataFrame, runs: Mapping[tuple[str, str, str, int], str]) -> pd.DataFrame:
    """For every cell, the MLflow run ids of the evaluation runs it averages (';'-joined, in seed order).

    `runs` maps (backbone, trained, init, seed) to an evaluation run id; a cell whose run is missing
    is an error rather than an empty entry, since a report must not claim a source it cannot name.
    """
    rows = []
    for record in table.itertuples(index=False):
        ids = []
        for seed in str(record.seed_list).split(";"):
            key = (record.backbone, record.trained, record.init, int(seed))
            if key not in runs:
                raise InputError(f"no MLflow evaluation run for seed {seed}",
                                 record=f"{record.backbone}/{record.trained}/{record.init}")
            ids.append(runs[key])
        rows.append({"backbone": record.backbone, "variant": record.variant, "column": record.column,
                     "run_ids": ";".join(ids)})
    return pd.DataFrame(rows, columns=["backbone", "variant", "column", "run_ids"])
