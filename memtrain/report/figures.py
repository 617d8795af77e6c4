"""Figures 3 and 4 of the paper and the training curves, rebuilt from the pipeline's own numbers.

Every builder is a pure function from a long DataFrame to a `matplotlib.figure.Figure`; the caller
saves it (`save`) and logs it to MLflow. Figures are made as bare `Figure` objects, never through
pyplot, so that building many of them in one report process leaks no global state or open windows,
and saving needs no backend choice (a bare Figure renders PNG with Agg, headless).
The paper prints only averages for its figures (`paper.figures()`), so those are drawn as reference
marks (dashed lines, text) rather than as curves.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from memtrain.errors import InputError
from memtrain.io import atomic_path
from memtrain.report.tables import ABLATION_VARIANTS, LENGTHS, VARIANTS

METRIC = "em"
METRIC_LABELS = {"em": "EM", "sub_em": "sub-EM (accuracy)", "f1": "F1"}
# Figure 3's legend names, as the paper labels the ablations -> key of its averages in figures.yaml.
ABLATION_LABELS: dict[str, str] = {
    "memtrain+memagent": "Full",
    "e2e+memagent": "End-to-End",
    "decoupled+memagent": "Decoupled",
}
ABLATION_PAPER_KEYS: dict[str, str] = {
    "memtrain+memagent": "full",
    "e2e+memagent": "end-to-end",
    "decoupled+memagent": "decoupled",
}
# Figure 4's series -> legend names; the gap is measured from the first to the second.
SCALING_BASELINE = "memagent"
SCALING_OURS = "memtrain+memagent"
SCALING_LABELS: dict[str, str] = {SCALING_BASELINE: "MemAgent (continued)", SCALING_OURS: "MemTrain+MemAgent"}
# The reward each trainer logs to MLflow: MemTrain's end-to-end reconstruction reward, the agents' task reward.
METRIC_BY_KIND: dict[str, str] = {"memtrain": "e2e_reward", "memagent": "reward", "mem1": "reward"}
KIND_ORDER = ["memtrain", "memagent", "mem1"]
HISTORY_COLUMNS = ["run", "kind", "step", "value"]
DPI = 150


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    for field in columns:
        if field not in frame.columns:
            raise InputError(f"{what} lack a column", field=field)


def _section(paper: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    """Accept either all of `paper.figures()` or just its `name` section; None means no paper values."""
    if not paper:
        return {}
    section = paper.get(name, paper)
    return section if isinstance(section, Mapping) else {}


def _spread(values: pd.Series) -> float:
    """Std over seeds; 0 for a single seed, where pandas gives NaN, so one seed draws no error bar."""
    std = float(values.std()) if len(values) > 1 else 0.0
    return 0.0 if math.isnan(std) else std


def _length_label(num_docs: int, stand_ins: Mapping[int, str]) -> str:
    """The paper's length for its own numbers of documents; '<n> (<paper length>)' for a declared stand-in."""
    if int(num_docs) in LENGTHS:
        return LENGTHS[int(num_docs)]
    return f"{int(num_docs)} ({stand_ins[int(num_docs)]})" if int(num_docs) in stand_ins else str(int(num_docs))


def ablation_figure(
    long_context: pd.DataFrame,
    backbone: str,
    paper: Mapping[str, Any] | None = None,
    stand_ins: Mapping[int, str] | None = None,
    metric: str = METRIC,
) -> Figure:
    """Figure 3: EM against context length for Full, End-to-End and Decoupled MemTrain, each + MemAgent.

    `long_context` is `results.long_context`; points are means over seeds with std error bars, the
    legend gives each variant's average over its lengths (the number the paper quotes), and the
    paper's averages (`paper.figures()` or its `figure3` section) are dashed reference lines.
    """
    _require(long_context, ["backbone", "trained", "init", "seed", "num_docs", metric], "the evaluation means")
    rows = long_context[long_context["backbone"] == backbone]
    averages = _section(paper, "figure3").get("average") or {}
    figure = Figure(figsize=(7, 4.2))
    axis = figure.add_subplot()
    missing, lengths, handles = [], set(), []
    for index, variant in enumerate(ABLATION_VARIANTS):
        trained, init = VARIANTS[variant]
        points = rows[(rows["trained"] == trained) & (rows["init"] == init)].dropna(subset=[metric])
        name = ABLATION_LABELS[variant]
        if points.empty:
            missing.append(name)
            continue
        by_length = points.groupby("num_docs")[metric].agg(["mean", _spread]).sort_index()
        lengths.update(int(n) for n in by_length.index)
        color = f"C{index}"
        handles.append(
            axis.errorbar(
                by_length.index.to_numpy(dtype=float),
                by_length["mean"],
                yerr=by_length["_spread"],
                marker="o",
                capsize=3,
                color=color,
                label=f"{name} (avg {by_length['mean'].mean():.2f})",
            )
        )
        reference = averages.get(ABLATION_PAPER_KEYS[variant])
        if reference is not None:
            handles.append(
                axis.axhline(
                    float(reference),
                    color=color,
                    linestyle="--",
                    linewidth=1,
                    label=f"{name} paper avg ({float(reference):.2f})",
                )
            )
    if not lengths:
        raise InputError(f"no long-context results of {ABLATION_VARIANTS} for backbone {backbone}", field="backbone")
    axis.set_xscale("log")
    ticks = sorted(lengths)
    axis.set_xticks(ticks, [_length_label(n, stand_ins or {}) for n in ticks])
    axis.minorticks_off()
    axis.set_xlabel("context length (paper tokens, or documents per question)")
    axis.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
    title = f"Ablations of the memory-training objective, {backbone} + MemAgent"
    if missing:
        title += f"\n(no data: {', '.join(missing)})"
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend(handles=handles, fontsize="small")  # each variant beside its paper line
    figure.tight_layout()
    return figure


def _gap(means: pd.DataFrame) -> tuple[int, float, int, float] | None:
    """(best step of the baseline, its EM, the step ours is read at, ours) or None when a series is absent.

    Ours is read at the same step when it has that checkpoint, else at its last one: the paper
    compares continued MemAgent's best checkpoint with the finished MemTrain+MemAgent model.
    """
    if SCALING_BASELINE not in means.index.get_level_values(0) or SCALING_OURS not in means.index.get_level_values(0):
        return None
    baseline = means.loc[SCALING_BASELINE, "mean"]
    ours = means.loc[SCALING_OURS, "mean"]
    step = int(baseline.idxmax())
    at = step if step in ours.index else int(ours.index.max())
    return step, float(baseline[step]), at, float(ours[at])


def scaling_figure(
    points: pd.DataFrame, backbone: str, paper: Mapping[str, Any] | None = None, metric: str = METRIC
) -> Figure:
    """Figure 4: average long-context EM against post-training step, one line (mean, std band) per series.

    `points` has one row per (series, step, seed) with `em` already averaged over lengths; the gap
    between MemTrain+MemAgent and continued MemAgent at MemAgent's best step is annotated, and the
    paper's lead (`paper.figures()` or its `figure4` section) is written beside it when given.
    """
    _require(points, ["series", "step", "seed", metric], "the scaling points")
    if "backbone" in points.columns:
        points = points[points["backbone"] == backbone]
    points = points.dropna(subset=[metric])
    if points.empty:
        raise InputError(f"no post-training scaling points for backbone {backbone}", field=metric)
    means = points.groupby(["series", "step"])[metric].agg(["mean", _spread]).sort_index()
    series = sorted(
        means.index.get_level_values(0).unique(),
        key=lambda name: (list(SCALING_LABELS).index(name) if name in SCALING_LABELS else 99, name),
    )
    figure = Figure(figsize=(7, 4.2))
    axis = figure.add_subplot()
    for index, name in enumerate(series):
        line = means.loc[name]
        steps = line.index.to_numpy(dtype=float)
        axis.plot(steps, line["mean"], marker="o", color=f"C{index}", label=SCALING_LABELS.get(name, name))
        axis.fill_between(
            steps,
            line["mean"] - line["_spread"],
            line["mean"] + line["_spread"],
            color=f"C{index}",
            alpha=0.2,
            linewidth=0,
        )
        if len(line) == 1:  # a model that was not continued: its level, to compare every later step with
            axis.axhline(float(line["mean"].iloc[0]), color=f"C{index}", linestyle="--", linewidth=1)
    gap = _gap(means)
    if gap is not None:
        step, baseline, at, ours = gap
        versus = "" if at == step else f" (vs step {at})"
        axis.annotate(
            "",
            xy=(step, ours),
            xytext=(step, baseline),
            arrowprops={"arrowstyle": "<->", "color": "black", "linewidth": 1},
        )
        axis.annotate(
            f"gap {ours - baseline:+.2f} at step {step}{versus}",
            xy=(step, (ours + baseline) / 2),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize="small",
        )
    section = _section(paper, "figure4")
    lead = section.get("memtrain_memagent_lead")
    if lead is not None:
        where = section.get("best_memagent_step")
        text = f"paper: +{float(lead):.2f}" + (f" at ~step {where}" if where is not None else "")
        axis.text(0.02, 0.02, text, transform=axis.transAxes, fontsize="small", va="bottom")
    axis.set_xlabel("post-training step")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%), average over lengths")
    axis.set_title(f"Post-training scaling, {backbone}")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize="small")
    figure.tight_layout()
    return figure


def training_curves(histories: pd.DataFrame) -> Figure:
    """Reward against step for every training run: one subplot per trainer kind, one line per run.

    Rows with a NaN value (steps a trainer skipped, e.g. a batch with no valid rollout) stay in the
    line so that matplotlib breaks it there, instead of drawing a straight segment across the gap.
    """
    _require(histories, HISTORY_COLUMNS, "the training histories")
    if histories.empty:
        raise InputError("no training histories to plot", field="run")
    kinds = sorted(histories["kind"].unique(), key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else 99, k))
    figure = Figure(figsize=(7, 3.2 * len(kinds)))
    axes = figure.subplots(len(kinds), 1, squeeze=False)[:, 0]
    for axis, kind in zip(axes, kinds):
        runs = histories[histories["kind"] == kind]
        for run, line in runs.groupby("run", sort=True):
            line = line.sort_values("step")
            axis.plot(
                line["step"].to_numpy(dtype=float),
                line["value"].to_numpy(dtype=float),
                marker=".",
                markersize=3,
                linewidth=1,
                label=str(run),
            )
        axis.set_title(f"{kind}: {METRIC_BY_KIND.get(kind, 'reward')}")
        axis.set_xlabel("step")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no 1.5 ticks on short runs
        axis.set_ylabel("reward")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize="x-small")
    figure.tight_layout()
    return figure


def training_histories(
    client: Any, run_ids_by_label: Mapping[str, tuple[str, str]], metric_by_kind: Mapping[str, str] = METRIC_BY_KIND
) -> pd.DataFrame:
    """MLflow metric histories as the long frame `training_curves` plots.

    `run_ids_by_label` maps a run's label (e.g. "memagent/base/seed1") to (MLflow run id, kind);
    the metric read is `metric_by_kind[kind]`. A step logged twice (a resumed run) keeps its latest value.
    """
    frames = []
    for label, (run_id, kind) in run_ids_by_label.items():
        if kind not in metric_by_kind:
            raise InputError(
                f"no metric known for the kind {kind!r}; known: {sorted(metric_by_kind)}", record=label, field="kind"
            )
        history = client.get_metric_history(run_id, metric_by_kind[kind])
        if not history:
            continue
        rows = pd.DataFrame(
            [{"step": int(m.step), "value": float(m.value), "timestamp": int(m.timestamp)} for m in history]
        )
        rows = rows.sort_values(["step", "timestamp"]).drop_duplicates("step", keep="last")
        frames.append(rows.assign(run=label, kind=kind)[HISTORY_COLUMNS])
    if not frames:
        return pd.DataFrame(
            {
                "run": pd.Series(dtype=str),
                "kind": pd.Series(dtype=str),
                "step": pd.Series(dtype=np.int64),
                "value": pd.Series(dtype=float),
            }
        )
    return pd.concat(frames, ignore_index=True)


def save(figure: Figure, path: str | os.PathLike) -> Path:
    """Write `figure` as a PNG, atomically so that a killed report never leaves a truncated image."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return Path(path)
