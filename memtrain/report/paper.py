"""The paper's published numbers (Tables 1-2, the values Figures 3-4 quote), shipped with the package.

The report puts these beside the reproduced numbers; they live in `paper_values/` inside the package
rather than in `/work/shared/paper` so that an installed pipeline can build its report anywhere.
Sources: MemTrain (arXiv 2606.03197), Table 1 (long-context HotpotQA accuracy by context length),
Table 2 (search-tool multi-hop QA exact match), Sections 5.1 / 5.2 for the Figure 3 / 4 numbers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from memtrain.errors import InputError

VALUES_DIR = Path(__file__).with_name("paper_values")
TABLE1_PATH = VALUES_DIR / "table1_long_context_qa.csv"
TABLE2_PATH = VALUES_DIR / "table2_search_qa.csv"
FIGURES_PATH = VALUES_DIR / "figures.yaml"

ID_COLUMNS = ["backbone", "variant"]


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A paper table as printed: one row per (backbone, variant), one float column per length/benchmark and `avg`.

    Every cell must be a number: a typo in a reference value would otherwise show up only as a
    strange difference in the report, far from its cause.
    """
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(f"cannot read the paper table: {error}", file=path) from error
    missing = [name for name in [*ID_COLUMNS, "avg"] if name not in raw.columns]
    if missing:
        raise InputError(f"a paper table needs the columns {missing}", file=path, field=missing[0])
    values = [name for name in raw.columns if name not in ID_COLUMNS]
    table = raw[ID_COLUMNS].copy()
    for row, record in raw.iterrows():
        line = int(row) + 2  # header is line 1
        for name in ID_COLUMNS:
            if not record[name].strip():
                raise InputError("empty name", file=path, record=f"line {line}", field=name)
        for name in values:
            try:
                number = float(record[name])
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise InputError(f"not a number: {record[name]!r}", file=path, record=f"line {line}", field=name)
    for name in values:
        table[name] = raw[name].astype(float)
    duplicated = table.duplicated(ID_COLUMNS)
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise InputError(
            f"{first['backbone']} / {first['variant']} appears twice",
            file=path,
            record=f"line {int(table[duplicated].index[0]) + 2}",
        )
    return table


def long_values(table: pd.DataFrame) -> pd.DataFrame:
    """A paper table as rows (backbone, variant, column, paper), the shape the report joins on."""
    return table.melt(id_vars=ID_COLUMNS, var_name="column", value_name="paper")


def table1() -> pd.DataFrame:
    """Table 1: accuracy (%) on long-context HotpotQA, columns 7k ... 896k and avg."""
    return read_table(TABLE1_PATH)


def table2() -> pd.DataFrame:
    """Table 2: exact match (%) of multi-hop QA with a search tool, seven benchmarks and avg."""
    return read_table(TABLE2_PATH)


def figures(path: str | os.PathLike = FIGURES_PATH) -> dict[str, Any]:
    """The numbers the paper's text gives for Figures 3 and 4 (the figures' per-length points are not printed)."""
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"cannot read the paper's figure values: {error}", file=path) from error
    for figure in ("figure3", "figure4"):
        if not isinstance(values, dict) or not isinstance(values.get(figure), dict):
            raise InputError("missing figure values", file=path, field=figure)
    return values
