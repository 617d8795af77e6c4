"""Tables 1 and 2 of the paper rebuilt from the evaluation means, with the paper's value beside each cell.

The long table (one row per backbone, variant and column) is the machine-readable output; `wide`
lays it out as the paper prints it. Each table has a headline metric (config `report.table1_metric`,
`report.table2_metric`): Table 1's accuracy is MemAgent's sub-EM (its `judge_sub_em`), Table 2's is MEM1's EM.
The headline fills the cells, is compared with the paper and is named in the caption; the long table (CSV)
carries the other metrics' means and stds beside it.
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

AVG = "avg"
# What each metric is called in a caption.
METRIC_NAMES = {
    "em": "exact match (EM)",
    "sub_em": "sub-EM, MemAgent's accuracy",
    "f1": "token F1",
    "em_sum": "EM summed over a question's objectives",
}
CAPTIONS = {
    "table1_long_context_qa": "Table 1: long-context HotpotQA by context length",
    "table2_search_qa": "Table 2: multi-objective search QA by benchmark",
}

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
LENGTHS: dict[int, str] = {
    50: "7k",
    100: "14k",
    200: "28k",
    400: "56k",
    800: "112k",
    1600: "224k",
    3200: "448k",
    6400: "896k",
}
# FlashRAG dataset names -> Table 2's columns, in the paper's order.
BENCHMARKS: dict[str, str] = {
    "triviaqa": "triviaqa",
    "bamboogle": "bamboogle",
    "hotpotqa": "hotpotqa",
    "nq": "nq",
    "popqa": "popqa",
    "2wikimultihopqa": "2wiki",
    "musique": "musique",
}

COLUMNS = [
    "backbone",
    "paper_backbone",
    "variant",
    "trained",
    "init",
    "column",
    "paper_column",
    "metric",
    "mean",
    "std",
    "seeds",
    "seed_list",
    "paper",
    "diff",
]


def table1(
    long_context: pd.DataFrame,
    backbones: Mapping[str, str | None],
    variants: list[str] = TABLE1_VARIANTS,
    stand_ins: Mapping[int, str] | None = None,
    *,
    metric: str,
) -> pd.DataFrame:
    """Table 1 from `results.long_context`: one row per (backbone, variant, number of documents or avg).

    `backbones` maps our short names to the paper's model names (None: not in the paper, so no
    paper values); backbones outside it are left out, as the config decides what the report covers.
    `stand_ins` maps further numbers of documents to the paper's lengths they stand in for (a small run).
    """
    return _table(
        long_context,
        backbones,
        variants,
        by="num_docs",
        metric=metric,
        paper_columns={**LENGTHS, **(stand_ins or {})},
        paper_values=paper.table1(),
        order=lambda column: (int(column), ""),
    )


def table2(
    search: pd.DataFrame,
    backbones: Mapping[str, str | None],
    variants: list[str] = TABLE2_VARIANTS,
    stand_ins: Mapping[str, str] | None = None,
    *,
    metric: str,
) -> pd.DataFrame:
    """Table 2 from `results.search_qa`: one row per (backbone, variant, benchmark or avg); see `table1`."""
    order = list(BENCHMARKS)
    return _table(
        search,
        backbones,
        variants,
        by="dataset",
        metric=metric,
        paper_columns={**BENCHMARKS, **(stand_ins or {})},
        paper_values=paper.table2(),
        order=lambda column: (order.index(column) if column in order else len(order), column),
    )


def _table(
    frame: pd.DataFrame,
    backbones: Mapping[str, str | None],
    variants: list[str],
    *,
    by: str,
    metric: str,
    paper_columns: Mapping,
    paper_values: pd.DataFrame,
    order: Callable[[object], tuple[int, str]],
) -> pd.DataFrame:
    for field in ["backbone", "trained", "init", "seed", by, metric]:
        if field not in frame.columns:
            raise InputError("the evaluation means lack a column", field=field)
    others = [name for name in METRIC_NAMES if name != metric and name in frame.columns]
    unknown = [label for label in variants if label not in VARIANTS]
    if unknown:
        raise InputError(f"unknown variants {unknown}; known: {sorted(VARIANTS)}", field="variant")
    reference = {(b, v, c): value for b, v, c, value in paper.long_values(paper_values).itertuples(index=False)}
    all_paper_columns = {name for name in paper_values.columns if name not in paper.ID_COLUMNS and name != AVG}
    rows = []
    for backbone, paper_backbone in backbones.items():
        for label in variants:
            trained, init = VARIANTS[label]
            model = frame[(frame["backbone"] == backbone) & (frame["trained"] == trained) & (frame["init"] == init)]
            if model.empty:
                continue
            name = f"{backbone}/{trained}/{init}"
            scores = _per_seed(model, by, name, metric)
            scores = scores[sorted(scores.columns, key=order)]
            scores[AVG] = scores.mean(axis=1)  # per seed, so the std of avg is over seeds too
            extra = {other: _per_seed(model, by, name, other) for other in others}
            for table in extra.values():
                table[AVG] = table.mean(axis=1)
            mapped = {column: paper_columns.get(column) for column in scores.columns if column != AVG}
            # The paper's avg is over all its columns; ours is comparable only over exactly those.
            mapped[AVG] = AVG if set(mapped.values()) == all_paper_columns else None
            seeds = ";".join(str(seed) for seed in scores.index)
            for column in scores.columns:
                values = scores[column]
                value = (
                    reference.get((paper_backbone, label, mapped[column]), math.nan)
                    if paper_backbone is not None and mapped[column] is not None
                    else math.nan
                )
                mean = float(values.mean())
                row = {
                    "backbone": backbone,
                    "paper_backbone": paper_backbone,
                    "variant": label,
                    "trained": trained,
                    "init": init,
                    "column": str(column),
                    "paper_column": mapped[column],
                    "metric": metric,
                    "mean": mean,
                    "std": float(values.std(ddof=1)),
                    "seeds": len(values),
                    "seed_list": seeds,
                    "paper": value,
                    "diff": mean - value,
                }
                for other, table in extra.items():
                    row[f"{other}_mean"] = float(table[column].mean())
                    row[f"{other}_std"] = float(table[column].std(ddof=1))
                rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS + [f"{other}_{part}" for other in others for part in ("mean", "std")])


def _per_seed(model: pd.DataFrame, by: str, name: str, metric: str) -> pd.DataFrame:
    """`metric` as seeds x columns; every seed must cover the same columns, or its average would not compare."""
    duplicated = model.duplicated(["seed", by])
    if duplicated.any():
        first = model[duplicated].iloc[0]
        raise InputError(
            f"{by} {first[by]} appears twice for seed {first['seed']}", file=first.get("path"), record=name, field=by
        )
    scores = model.pivot(index="seed", columns=by, values=metric).sort_index()
    gaps = scores.isna()
    if gaps.any(axis=None):
        seed = gaps.any(axis=1).idxmax()
        lacking = [str(column) for column in scores.columns[gaps.loc[seed]]]
        paths = model.loc[model["seed"] == seed, "path"] if "path" in model.columns else pd.Series([], dtype=str)
        raise InputError(
            f"seed {seed} lacks {by} {lacking} that other seeds have",
            file=paths.iloc[0] if len(paths) else None,
            record=name,
            field=by,
        )
    return scores


def wide(table: pd.DataFrame, pm: str = "±") -> pd.DataFrame:
    """The long table as the paper lays it out: a row per backbone and variant, a column per length/benchmark.

    Cells read "mean ± std (paper)"; the std is left out with a single seed and the paper value
    where the paper has none, so an empty part always means "not available", never zero.
    """
    if table.empty:
        return pd.DataFrame(columns=["backbone", "variant"])
    cells = table.assign(
        header=[
            paper_column if isinstance(paper_column, str) else column
            for column, paper_column in zip(table["column"], table["paper_column"])
        ],
        cell=[_cell(mean, std, value, pm) for mean, std, value in zip(table["mean"], table["std"], table["paper"])],
    )
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


def caption(name: str, table: pd.DataFrame) -> str:
    """What a table shows, its headline metric named: "<title>: <metric> (%), mean ± std over seeds (paper)"."""
    metrics = sorted(set(table["metric"])) if "metric" in table.columns else []
    named = ", ".join(METRIC_NAMES.get(metric, metric) for metric in metrics) or "no results"
    return f"{CAPTIONS.get(name, name)}: {named}, %, mean ± std over seeds (the paper's value)"


def to_markdown(table: pd.DataFrame, title: str | None = None) -> str:
    """A Markdown table of `wide(table)` (pandas' renderer; tabulate comes with snakemake), under its caption."""
    heading = f"*{title}*\n\n" if title else ""
    return heading + wide(table).to_markdown(index=False, disable_numparse=True) + "\n"  # cells are text: "0.00" stays


def to_latex(table: pd.DataFrame, title: str | None = None) -> str:
    """A LaTeX table of `wide(table)` with its caption; names are escaped, ± becomes $\\pm$ (pandas' renderer)."""
    laid = wide(table)
    text = laid.to_latex(
        index=False,
        escape=True,
        column_format="ll" + "r" * (len(laid.columns) - 2),
        caption=title.replace("%", r"\%").replace("±", r"$\pm$") if title else None,
    )
    return text.replace("±", r"$\pm$")


def write_tables(table: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """Write `<stem>.csv` (the long table), `<stem>.md` and `<stem>.tex` captioned, each atomically; their paths."""
    stem = Path(stem)
    title = caption(stem.name, table)
    paths = [stem.with_name(stem.name + suffix) for suffix in (".csv", ".md", ".tex")]
    with atomic_path(paths[0]) as tmp:
        table.to_csv(tmp, index=False)
    for path, text in zip(paths[1:], (to_markdown(table, title), to_latex(table, title))):
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
                raise InputError(
                    f"no MLflow evaluation run for seed {seed}",
                    record=f"{record.backbone}/{record.trained}/{record.init}",
                )
            ids.append(runs[key])
        rows.append(
            {"backbone": record.backbone, "variant": record.variant, "column": record.column, "run_ids": ";".join(ids)}
        )
    return pd.DataFrame(rows, columns=["backbone", "variant", "column", "run_ids"])
