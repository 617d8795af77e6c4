"""Tables 1-2 beside the paper's values: means, stds over seeds, differences, layouts, provenance."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from memtrain.errors import InputError
from memtrain.report import paper, tables

QWEN = {"qwen3-4b": "Qwen3-4B-Instruct-2507"}
SHARED = Path("/work/shared/paper")


def long_rows(trained, init, seed, scores, backbone="qwen3-4b"):
    return [
        {
            "backbone": backbone,
            "trained": trained,
            "init": init,
            "seed": seed,
            "num_docs": docs,
            "em": em,
            "sub_em": 99.0,
            "f1": 99.0,
        }
        for docs, em in scores.items()
    ]


def long_context():
    """Base with one seed; MemTrain+MemAgent with two; lengths 50 (7k), 100 (14k) and 4 (no paper value)."""
    return pd.DataFrame(
        long_rows("none", "base", 0, {50: 50.0, 100: 40.0, 4: 30.0})
        + long_rows("memagent", "memtrain-full", 1, {50: 70.0, 100: 60.0, 4: 20.0})
        + long_rows("memagent", "memtrain-full", 2, {50: 72.0, 100: 66.0, 4: 30.0})
    )


def cell(table, variant, column, backbone="qwen3-4b"):
    rows = table[(table["backbone"] == backbone) & (table["variant"] == variant) & (table["column"] == column)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_table1_means_stds_and_differences():
    table = tables.table1(long_context(), QWEN, metric="em")
    row = cell(table, "memtrain+memagent", "50")
    assert row["mean"] == pytest.approx(71.0) and row["std"] == pytest.approx(1.41421, abs=1e-5)
    assert row["seeds"] == 2 and row["paper_column"] == "7k"
    assert row["paper"] == pytest.approx(79.69) and row["diff"] == pytest.approx(71.0 - 79.69)
    base = cell(table, "base", "100")
    assert base["mean"] == 50.0 - 10.0 and math.isnan(base["std"]) and base["seeds"] == 1
    assert base["paper"] == pytest.approx(51.56)
    assert table["column"].tolist()[:4] == ["4", "50", "100", "avg"]  # lengths in order, avg last
    assert set(table["variant"]) == {"base", "memtrain+memagent"}  # only models with evaluations


def test_avg_is_taken_per_seed_then_over_seeds():
    row = cell(tables.table1(long_context(), QWEN, metric="em"), "memtrain+memagent", "avg")
    per_seed = [(70.0 + 60.0 + 20.0) / 3, (72.0 + 66.0 + 30.0) / 3]
    assert row["mean"] == pytest.approx(sum(per_seed) / 2)
    assert row["std"] == pytest.approx(pd.Series(per_seed).std(ddof=1))
    # Our lengths are not the paper's eight, so the paper's avg would not compare.
    assert math.isnan(row["paper"]) and math.isnan(row["diff"])


def test_paper_avg_is_compared_when_all_paper_lengths_are_there():
    frame = pd.DataFrame(
        long_rows("memagent", "memtrain-full", 0, {docs: 70.0 for docs in tables.LENGTHS})
        + long_rows("memagent", "memtrain-full", 1, {docs: 72.0 for docs in tables.LENGTHS})
    )
    row = cell(tables.table1(frame, QWEN, metric="em"), "memtrain+memagent", "avg")
    assert row["mean"] == pytest.approx(71.0) and row["paper"] == pytest.approx(70.31)
    assert row["diff"] == pytest.approx(0.69)


def test_lengths_and_backbones_without_paper_values_give_nan():
    table = tables.table1(long_context(), QWEN, metric="em")
    row = cell(table, "memtrain+memagent", "4")
    assert pd.isna(row["paper_column"]) and math.isnan(row["paper"]) and math.isnan(row["diff"])
    tiny = tables.table1(long_context().assign(backbone="smollm2-135m"), {"smollm2-135m": None}, metric="em")
    assert len(tiny) == 8 and tiny["paper"].isna().all() and tiny["paper_backbone"].isna().all()
    assert tables.table1(long_context(), {"other": None}, metric="em").empty  # backbones outside the mapping: left out


def search():
    rows = []
    for (trained, init), seeds in {
        ("none", "base"): [0],
        ("none", "memtrain-full"): [0, 1],
        ("mem1", "memtrain-full"): [0, 1],
    }.items():
        for seed in seeds:
            for dataset, em in {"nq": 30.0 + seed, "2wikimultihopqa": 20.0 + 2 * seed}.items():
                rows.append(
                    {
                        "backbone": "qwen3-4b",
                        "trained": trained,
                        "init": init,
                        "seed": seed,
                        "dataset": dataset,
                        "em": em,
                        "em_sum": 1.0,
                    }
                )
    return pd.DataFrame(rows)


def test_table2_maps_benchmarks_and_leaves_out_unreported_models():
    table = tables.table2(search(), QWEN, metric="em")
    assert set(table["variant"]) == {"base", "memtrain+mem1"}  # MemTrain alone is not in Table 2
    assert table["column"].tolist()[:3] == ["nq", "2wikimultihopqa", "avg"]  # the paper's order
    row = cell(table, "memtrain+mem1", "2wikimultihopqa")
    assert row["paper_column"] == "2wiki" and row["paper"] == pytest.approx(25.84)
    assert row["mean"] == pytest.approx(21.0) and row["diff"] == pytest.approx(21.0 - 25.84)
    assert cell(table, "base", "nq")["paper"] == pytest.approx(19.92)


def test_inconsistent_seeds_are_named():
    frame = long_context()
    frame = frame[~((frame["seed"] == 2) & (frame["num_docs"] == 4))].assign(path="eval/x.parquet")
    with pytest.raises(InputError, match="seed 2 lacks num_docs"):
        tables.table1(frame, QWEN, metric="em")
    with pytest.raises(InputError, match="field em"):
        tables.table1(long_context().drop(columns="em"), QWEN, metric="em")


def test_wide_markdown_and_latex_show_formatted_cells():
    table = tables.table1(long_context(), QWEN, metric="em")
    laid = tables.wide(table)
    assert laid.columns.tolist() == ["backbone", "variant", "4", "7k", "14k", "avg"]
    assert laid.set_index("variant").loc["memtrain+memagent", "7k"] == "71.00 ± 1.41 (79.69)"
    assert laid.set_index("variant").loc["base", "4"] == "30.00"  # one seed, no paper value
    markdown = tables.to_markdown(table)
    assert "71.00 ± 1.41 (79.69)" in markdown and "| backbone" in markdown
    latex = tables.to_latex(table)
    assert r"71.00 $\pm$ 1.41 (79.69)" in latex and r"\begin{tabular}" in latex
    assert "memtrain+memagent" in latex


def test_write_tables_writes_three_files(tmp_path):
    table = tables.table2(search(), QWEN, metric="em")
    paths = tables.write_tables(table, tmp_path / "out" / "table2")
    assert [path.name for path in paths] == ["table2.csv", "table2.md", "table2.tex"]
    assert all(path.stat().st_size > 0 for path in paths)
    back = pd.read_csv(paths[0])
    assert back["mean"].tolist() == pytest.approx(table["mean"].tolist())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["table2.csv", "table2.md", "table2.tex"]


def test_provenance_lists_the_runs_of_each_cell():
    table = tables.table1(long_context(), QWEN, metric="em")
    runs = {
        ("qwen3-4b", "none", "base", 0): "r0",
        ("qwen3-4b", "memagent", "memtrain-full", 1): "r1",
        ("qwen3-4b", "memagent", "memtrain-full", 2): "r2",
        ("qwen3-4b", "memagent", "base", 0): "other",
    }
    sources = tables.provenance(table, runs)
    assert len(sources) == len(table)
    by_cell = sources.set_index(["variant", "column"])["run_ids"]
    assert by_cell[("memtrain+memagent", "avg")] == "r1;r2" and by_cell[("base", "50")] == "r0"
    del runs[("qwen3-4b", "memagent", "memtrain-full", 2)]
    with pytest.raises(InputError, match="seed 2"):
        tables.provenance(table, runs)


def test_packaged_paper_values():
    one, two = paper.table1(), paper.table2()
    if SHARED.exists():
        pd.testing.assert_frame_equal(one, paper.read_table(SHARED / "table1_long_context_qa.csv"))
        pd.testing.assert_frame_equal(two, paper.read_table(SHARED / "table2_search_qa.csv"))
    row = one.set_index(["backbone", "variant"]).loc[("Qwen3-4B-Instruct-2507", "memtrain+memagent")]
    assert row["avg"] == pytest.approx(70.31) and row["7k"] == pytest.approx(79.69)
    assert set(two.columns) == {"backbone", "variant", "avg", *tables.BENCHMARKS.values()}
    assert set(one.columns) == {"backbone", "variant", "avg", *tables.LENGTHS.values()}
    values = paper.figures()
    assert values["figure3"]["average"] == {"full": 70.31, "end-to-end": 63.28}
    assert values["figure4"]["memtrain_memagent_lead"] == 2.64 and values["figure4"]["best_memagent_step"] == 700


def test_a_malformed_paper_table_is_named(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("backbone,variant,7k,avg\nQwen,base,57.81,oops\n")
    with pytest.raises(InputError, match=r"table\.csv.*line 2.*field avg"):
        paper.read_table(path)
    path.write_text("backbone,7k\nQwen,1.0\n")
    with pytest.raises(InputError, match="field variant"):
        paper.read_table(path)


def test_the_headline_metric_fills_the_cells_and_the_caption_and_the_csv_carries_the_others(tmp_path):
    frame = long_context().assign(sub_em=lambda f: f["em"] + 10.0, f1=lambda f: f["em"] / 2)
    table = tables.table1(frame, QWEN, metric="sub_em")  # MemAgent's accuracy
    row = cell(table, "memtrain+memagent", "50")
    assert row["metric"] == "sub_em" and row["mean"] == pytest.approx(81.0)  # (80 + 82) / 2
    assert row["paper"] == pytest.approx(79.69) and row["diff"] == pytest.approx(81.0 - 79.69)
    assert row["em_mean"] == pytest.approx(71.0) and row["em_std"] == pytest.approx(1.41421, abs=1e-5)
    assert row["f1_mean"] == pytest.approx(35.5)
    paths = tables.write_tables(table, tmp_path / "table1_long_context_qa")
    markdown, latex = paths[1].read_text(), paths[2].read_text()
    assert markdown.startswith("*Table 1: long-context HotpotQA by context length: sub-EM, MemAgent's accuracy, %")
    assert r"\caption{Table 1: long-context HotpotQA by context length: sub-EM" in latex
    assert "81.00" in markdown and set(pd.read_csv(paths[0]).columns) >= {"metric", "em_mean", "f1_std"}
