"""Figures 3-4 and the training curves: lines, legends, paper marks, PNG output, MLflow histories."""

from __future__ import annotations

import math

import mlflow
import pandas as pd
import pytest
from matplotlib.figure import Figure

from memtrain.errors import InputError
from memtrain.report import figures, paper

BACKBONE = "qwen3-4b"


def long_rows(trained, init, seed, scores, backbone=BACKBONE):
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
            "path": "x.parquet",
        }
        for docs, em in scores.items()
    ]


def long_context():
    """Full with two seeds, End-to-End with one, no Decoupled; lengths 50 (7k), 100 (14k) and 4 (no label)."""
    return pd.DataFrame(
        long_rows("memagent", "memtrain-full", 1, {4: 80.0, 50: 70.0, 100: 60.0})
        + long_rows("memagent", "memtrain-full", 2, {4: 82.0, 50: 72.0, 100: 62.0})
        + long_rows("memagent", "memtrain-e2e", 1, {4: 75.0, 50: 65.0, 100: 55.0})
        + long_rows("memagent", "memtrain-decoupled", 1, {50: 1.0}, backbone="other")
        + long_rows("none", "base", 1, {50: 10.0})
    )


def legend_labels(axis):
    return [text.get_text() for text in axis.get_legend().get_texts()]


def assert_png(figure, path):
    saved = figures.save(figure, path)
    assert saved == path
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_ablation_figure_lines_legend_paper_marks_and_png(tmp_path):
    figure = figures.ablation_figure(long_context(), BACKBONE, paper.figures())
    assert isinstance(figure, Figure)
    (axis,) = figure.axes
    labels = legend_labels(axis)
    # Full: averages per length 81, 71, 61 -> 71.00; End-to-End 75, 65, 55 -> 65.00.
    assert labels == [
        "Full (avg 71.00)",
        "Full paper avg (70.31)",
        "End-to-End (avg 65.00)",
        "End-to-End paper avg (63.28)",
    ]
    dashed = [line for line in axis.get_lines() if line.get_linestyle() == "--"]
    assert sorted(line.get_ydata()[0] for line in dashed) == [63.28, 70.31]
    assert "no data: Decoupled" in axis.get_title()
    assert axis.get_xscale() == "log"
    assert [t.get_text() for t in axis.get_xticklabels()] == ["4", "7k", "14k"]
    # Error bars: std over seeds for Full (two seeds), none drawn wide for End-to-End (one seed).
    full = axis.containers[0]
    assert list(full.lines[0].get_ydata()) == [81.0, 71.0, 61.0]
    assert_png(figure, tmp_path / "figure3.png")


def test_ablation_figure_without_paper_values_has_no_reference_lines():
    figure = figures.ablation_figure(long_context(), BACKBONE, None, stand_ins={4: "28k"})
    (axis,) = figure.axes
    assert [t.get_text() for t in axis.get_xticklabels()] == ["4 (28k)", "7k", "14k"]  # a declared stand-in
    assert not [line for line in axis.get_lines() if line.get_linestyle() == "--"]
    assert all("paper" not in label for label in legend_labels(axis))
    # The figure3 section alone works like all of paper.figures().
    figure = figures.ablation_figure(long_context(), BACKBONE, paper.figures()["figure3"])
    assert len(legend_labels(figure.axes[0])) == 4


def test_ablation_figure_without_data_is_an_input_error():
    with pytest.raises(InputError, match="no long-context results"):
        figures.ablation_figure(long_context(), "missing-backbone", None)
    with pytest.raises(InputError, match="field em"):
        figures.ablation_figure(long_context().drop(columns="em"), BACKBONE, None)


def scaling_points():
    rows = []
    for seed, shift in ((1, -1.0), (2, 1.0)):
        for step, em in ((500, 60.0), (600, 62.0), (700, 64.0), (800, 63.0)):
            rows.append({"series": "memagent", "step": step, "seed": seed, "em": em + shift})
    rows += [
        {"series": "memtrain+memagent", "step": 500, "seed": 1, "em": 66.5},
        {"series": "memtrain+memagent", "step": 500, "seed": 2, "em": 65.5},
    ]
    return pd.DataFrame(rows)


def test_scaling_figure_gap_and_paper_text(tmp_path):
    figure = figures.scaling_figure(scaling_points(), BACKBONE, paper.figures())
    (axis,) = figure.axes
    assert legend_labels(axis) == ["MemAgent (continued)", "MemTrain+MemAgent"]
    # the continued line, MemTrain+MemAgent's single point and its level as a dashed line; a std band each
    lines = axis.get_lines()
    assert len(lines) == 3 and len(axis.collections) == 2
    assert lines[2].get_linestyle() == "--" and list(lines[2].get_ydata()) == [66.0, 66.0]
    texts = [t.get_text() for t in axis.texts]
    # Best MemAgent step 700 (64.0); MemTrain+MemAgent was not continued, so its step 500 (mean 66.0).
    assert "gap +2.00 at step 700 (vs step 500)" in texts
    assert all(float(tick).is_integer() for tick in axis.get_xticks())
    assert "paper: +2.64 at ~step 700" in texts
    assert_png(figure, tmp_path / "figure4.png")


def test_scaling_figure_single_series_and_empty():
    points = scaling_points()
    figure = figures.scaling_figure(points[points["series"] == "memagent"], BACKBONE, None)
    (axis,) = figure.axes
    assert len(axis.get_lines()) == 1
    assert not [t for t in axis.texts if t.get_text()]  # no gap without both series, no paper text
    with pytest.raises(InputError, match="no post-training scaling points"):
        figures.scaling_figure(points.iloc[0:0], BACKBONE, None)


def test_training_curves_one_axis_per_kind_with_nan_gaps(tmp_path):
    histories = pd.DataFrame(
        [
            {"run": "memtrain/full/seed1", "kind": "memtrain", "step": s, "value": v}
            for s, v in ((1, 0.1), (2, math.nan), (3, 0.3))
        ]
        + [
            {"run": f"memagent/base/seed{seed}", "kind": "memagent", "step": s, "value": 0.5 + s / 10}
            for seed in (1, 2)
            for s in (2, 1)
        ]
    )
    figure = figures.training_curves(histories)
    memtrain_axis, memagent_axis = figure.axes
    assert memtrain_axis.get_title() == "memtrain: e2e_reward"
    assert all(float(tick).is_integer() for tick in memtrain_axis.get_xticks())  # steps 1-3: no 1.5 tick
    assert legend_labels(memagent_axis) == ["memagent/base/seed1", "memagent/base/seed2"]
    (line,) = memtrain_axis.get_lines()
    assert math.isnan(line.get_ydata()[1])  # the skipped step stays, as a gap
    assert list(memagent_axis.get_lines()[0].get_xdata()) == [1.0, 2.0]  # sorted by step
    assert_png(figure, tmp_path / "curves.png")
    with pytest.raises(InputError, match="no training histories"):
        figures.training_curves(histories.iloc[0:0])


def test_training_histories_from_mlflow(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/m.db")
    experiment = client.create_experiment("curves", artifact_location=str(tmp_path / "artifacts"))
    memtrain_run = client.create_run(experiment).info.run_id
    memagent_run = client.create_run(experiment).info.run_id
    empty_run = client.create_run(experiment).info.run_id
    for step, value in ((0, 0.2), (1, math.nan), (2, 0.4)):
        client.log_metric(memtrain_run, "e2e_reward", value, step=step, timestamp=1000 + step)
    client.log_metric(memtrain_run, "reward", 9.0, step=0)  # not the memtrain metric
    client.log_metric(memagent_run, "reward", 0.5, step=3, timestamp=1000)
    client.log_metric(memagent_run, "reward", 0.7, step=3, timestamp=2000)  # resumed: the latest wins
    labels = {
        "memtrain/full/seed1": (memtrain_run, "memtrain"),
        "memagent/base/seed1": (memagent_run, "memagent"),
        "mem1/base/seed1": (empty_run, "mem1"),
    }
    frame = figures.training_histories(client, labels, figures.METRIC_BY_KIND)
    assert list(frame.columns) == ["run", "kind", "step", "value"]
    memtrain = frame[frame["run"] == "memtrain/full/seed1"]
    assert list(memtrain["step"]) == [0, 1, 2]
    assert memtrain["value"].iloc[0] == pytest.approx(0.2) and math.isnan(memtrain["value"].iloc[1])
    memagent = frame[frame["run"] == "memagent/base/seed1"]
    assert list(memagent["value"]) == [pytest.approx(0.7)] and list(memagent["kind"]) == ["memagent"]
    assert "mem1/base/seed1" not in set(frame["run"])
    assert len(figures.training_curves(frame).axes) == 2
    with pytest.raises(InputError, match="no metric known"):
        figures.training_histories(client, {"x": (memtrain_run, "unknown")}, figures.METRIC_BY_KIND)
    empty = figures.training_histories(client, {}, figures.METRIC_BY_KIND)
    assert empty.empty and list(empty.columns) == ["run", "kind", "step", "value"]
