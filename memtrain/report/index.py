"""`results/report/index.md`: the page a reader opens first, linking every table, figure and case study.

It also says where the numbers came from (git commit, config, MLflow run), because a report read
weeks later is only worth as much as one's ability to rebuild it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

TABLE_TITLES = {
    "table1_long_context_qa": "Table 1: long-context HotpotQA, exact match (%) by context length",
    "table2_search_qa": "Table 2: multi-objective search QA, exact match (%) per benchmark",
}
FIGURE_TITLES = {
    "fig3_ablations": "Figure 3: ablations of the memory-training objective",
    "fig4_posttrain_scaling": "Figure 4: memory training against longer post-training",
    "training_curves": "Training curves: reward against step for every run",
}


def _link(path: str | os.PathLike, home: Path) -> str:
    return Path(os.path.relpath(path, home)).as_posix()


def _title(stem: str, titles: Mapping[str, str]) -> str:
    for prefix, title in titles.items():
        if stem.startswith(prefix):
            rest = stem.removeprefix(prefix).lstrip("_")
            return f"{title} ({rest})" if rest else title
    return stem


def render(
    index: str | os.PathLike,
    tables: Sequence[str | os.PathLike],
    figures: Sequence[str | os.PathLike],
    case_studies: Sequence[str | os.PathLike],
    provenance: Mapping[str, Any],
    config: Mapping[str, Any],
    stand_ins: Sequence[str] = (),
) -> str:
    """The Markdown of the index page at `index`; `tables` are the tables' Markdown files, embedded inline.

    `provenance` holds the git commit, whether the tree was dirty, the MLflow experiment and run id and
    the config hash; `stand_ins` are sentences saying which of our settings are compared with which of
    the paper's, so that a small run's paper column is never mistaken for a like-for-like comparison.
    """
    home = Path(index).parent
    lines = ["# MemTrain reproduction: report", ""]
    lines += [
        f"- git commit: `{provenance['git_commit']}`"
        + (" (uncommitted changes)" if provenance.get("git_dirty") == "true" else ""),
        f"- config hash: `{provenance['config_hash']}` (the full config is at the end of this page)",
        (
            f"- MLflow: experiment `{provenance['experiment']}`, run `{provenance['run_id']}` holds every table and "
            f"figure below; each table cell names its evaluation runs in the `*_provenance.csv` beside it"
        ),
        f"- written {provenance['written']}",
        "",
    ]
    lines += [
        (
            "Cells read `mean ± std over seeds (paper value)`; the CSV files hold mean, std, the paper value and "
            "the difference as separate columns."
        ),
        "",
    ]
    if stand_ins:
        lines += (
            [
                (
                    "**Stand-ins.** This run is not at the paper's scale; its numbers are set beside the paper's by "
                    "declaration (config `report`):"
                ),
                "",
            ]
            + [f"- {sentence}" for sentence in stand_ins]
            + [""]
        )
    for table in tables:
        table = Path(table)
        stem = table.name.removesuffix(".md")
        siblings = " · ".join(
            f"[{suffix}]({_link(table.with_name(stem + suffix), home)})"
            for suffix in (".csv", ".tex", "_provenance.csv")
        )
        lines += [f"## {_title(stem, TABLE_TITLES)}", "", siblings, "", table.read_text(encoding="utf-8").rstrip(), ""]
    lines += ["## Figures", ""]
    for figure in figures:
        title = _title(Path(figure).stem, FIGURE_TITLES)
        lines += [f"### {title}", "", f"![{title}]({_link(figure, home)})", ""]
    lines += ["## Case study (Table 3)", ""]
    lines += [f"- [{Path(path).stem}]({_link(path, home)})" for path in case_studies] + [""]
    lines += ["## Config", "", "```yaml", yaml.safe_dump(dict(config), sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)
