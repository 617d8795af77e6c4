"""Evaluation files gathered into the report's long tables (means per length / benchmark, in percent)."""

from __future__ import annotations

import pandas as pd
import pytest

from memtrain.errors import InputError
from memtrain.report import results


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_long_context_means_per_length_in_percent(tmp_path):
    path = write(
        tmp_path / "long_context/qwen3-4b/memagent/base/seed2.parquet",
        [
            {"num_docs": 50, "em": 1.0, "sub_em": 1.0, "f1": 1.0},
            {"num_docs": 50, "em": 0.0, "sub_em": 1.0, "f1": 0.5},
            {"num_docs": 100, "em": 0.0, "sub_em": 0.0, "f1": 0.25},
        ],
    )
    frame = results.long_context([path])
    assert frame[["backbone", "trained", "init", "seed", "num_docs"]].values.tolist() == [
        ["qwen3-4b", "memagent", "base", 2, 50],
        ["qwen3-4b", "memagent", "base", 2, 100],
    ]
    assert frame["em"].tolist() == [50.0, 0.0] and frame["sub_em"].tolist() == [100.0, 0.0]
    assert frame["f1"].tolist() == [75.0, 25.0]


def test_search_qa_means_per_benchmark(tmp_path):
    path = write(
        tmp_path / "search_qa/qwen3-4b/mem1/memtrain-full/seed1.parquet",
        [
            {"dataset": "nq", "em": 0.5, "em_sum": 1.0},
            {"dataset": "nq", "em": 1.0, "em_sum": 2.0},
            {"dataset": "popqa", "em": 0.0, "em_sum": 0.0},
        ],
    )
    frame = results.search_qa([path])
    assert frame.set_index("dataset")["em"].to_dict() == {"nq": 75.0, "popqa": 0.0}
    assert frame.set_index("dataset")["em_sum"].to_dict() == {"nq": 1.5, "popqa": 0.0}
    assert results.long_context([path]).empty


def test_an_empty_evaluation_file_is_named(tmp_path):
    path = tmp_path / "search_qa/b/none/base/seed0.parquet"
    write(
        path,
        {"dataset": pd.Series([], dtype=str), "em": pd.Series([], dtype=float), "em_sum": pd.Series([], dtype=float)},
    )
    with pytest.raises(InputError, match="seed0.parquet"):
        results.search_qa([path])


def test_scaling_points_average_lengths_equally_and_start_at_the_continued_runs_last_step(tmp_path):
    def lengths(em_short, em_long):  # 2 questions at 50 documents, 1 at 100: the 100-document column weighs half
        return [{"num_docs": 50, "em": em_short}, {"num_docs": 50, "em": 0.0}, {"num_docs": 100, "em": em_long}]

    paths = [
        write(tmp_path / "long_context/q/memagent/base/seed1.parquet", lengths(1.0, 0.0)),  # (50 + 0) / 2 = 25
        write(tmp_path / "scaling/q/base/seed1/step3.parquet", lengths(1.0, 1.0)),  # (50 + 100) / 2 = 75
        write(tmp_path / "scaling/q/base/seed1/step4.parquet", lengths(0.0, 1.0)),  # (0 + 100) / 2 = 50
        write(tmp_path / "long_context/q/memagent/memtrain-full/seed1.parquet", lengths(0.0, 0.0)),
        write(tmp_path / "long_context/q/memagent/memtrain-full/seed2.parquet", lengths(1.0, 1.0)),
        write(tmp_path / "long_context/q/memagent/base/seed2.parquet", lengths(1.0, 1.0)),
    ]  # not continued: out
    points = results.scaling(paths, start_step=2, metric="em")
    assert points[["series", "init", "seed", "step", "em"]].values.tolist() == [
        ["memagent", "base", 1, 2, 25.0],
        ["memagent", "base", 1, 3, 75.0],
        ["memagent", "base", 1, 4, 50.0],
        ["memtrain+memagent", "memtrain-full", 1, 2, 0.0],
        ["memtrain+memagent", "memtrain-full", 2, 2, 75.0],
    ]


def test_a_continued_run_without_its_starting_evaluation_is_named(tmp_path):
    path = write(tmp_path / "scaling/q/base/seed1/step3.parquet", [{"num_docs": 50, "em": 1.0}])
    write(tmp_path / "long_context/q/memagent/base/seed1.parquet", [{"num_docs": 50, "em": 1.0}])  # not declared
    with pytest.raises(InputError, match="long_context/q/memagent/base/seed1.parquet"):
        results.scaling([path], start_step=2, metric="em")


def test_files_the_rule_does_not_declare_stay_out_of_every_mean(tmp_path):
    """A seed or a checkpoint the config no longer asks for may still lie beside the declared files."""
    row = {"num_docs": 50, "em": 1.0, "sub_em": 1.0, "f1": 1.0}
    declared = [
        write(tmp_path / "long_context/q/memagent/base/seed1.parquet", [row]),
        write(tmp_path / "scaling/q/base/seed1/step3.parquet", [row]),
    ]
    write(tmp_path / "long_context/q/memagent/base/seed3.parquet", [{**row, "em": 0.0}])  # stale seed
    write(tmp_path / "scaling/q/base/seed1/step9.parquet", [{**row, "em": 0.0}])  # stale checkpoint
    assert results.long_context(declared)["seed"].tolist() == [1]
    assert results.scaling(declared, start_step=2, metric="em")["step"].tolist() == [2, 3]
    # what the rules hand the stages: other outputs (models, figures) among them are no evaluation files
    assert results.long_context([*declared, tmp_path / "train/memagent/q/base/seed1/final"])["em"].tolist() == [100.0]
