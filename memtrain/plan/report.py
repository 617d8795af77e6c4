"""The plan per stage (rule) and in total, as a table, markdown or JSON."""

from __future__ import annotations

import heapq
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from memtrain.plan.dag import Job, critical_path, depths, makespan
from memtrain.plan.estimate import Calibration
from memtrain.plan.work import Work


@dataclass(frozen=True)
class JobEstimate:
    job: Job
    work: Work
    hours: float

    @property
    def gpu_hours(self) -> float:
        return self.hours * self.job.gpus

    @property
    def cpu_hours(self) -> float:
        return self.hours * self.job.cpus * self.job.nodes


@dataclass(frozen=True)
class Stage:
    stage: str
    jobs: int
    gpus_per_job: str
    nodes_per_job: str
    hours_per_job: float  # the longest job: what must fit the time limit
    mean_hours_per_job: float
    limit_hours: float | None  # the profile's runtime of a first attempt (shortest among the jobs)
    gpu_hours: float
    cpu_hours: float
    wall_hours_parallel: float
    wall_hours_jobs_limit: float
    disk_gb: float
    calibration_factor: float | None

    @property
    def over_limit(self) -> bool:
        return self.limit_hours is not None and self.hours_per_job > self.limit_hours


def _span(values: Sequence[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def _packed(hours: Sequence[float], slots: int) -> float:
    """Wall-clock of independent jobs on `slots` parallel slots, longest first."""
    ends = [0.0] * min(slots, len(hours))
    for length in sorted(hours, reverse=True):
        heapq.heapreplace(ends, ends[0] + length)
    return max(ends)


def stages(
    estimates: Sequence[JobEstimate], needs: Mapping[int, set[int]], slots: int, calibrations: Mapping[str, Calibration]
) -> list[Stage]:
    """One row per rule, in the order stages finish (by the deepest job of each rule in the DAG)."""
    depth = depths(needs)
    by_rule: dict[str, list[JobEstimate]] = {}
    last = {}
    for estimate in estimates:
        last[estimate.job.rule] = max(last.get(estimate.job.rule, 0), depth[estimate.job.jobid])
    for estimate in sorted(estimates, key=lambda e: (last[e.job.rule], e.job.rule)):
        by_rule.setdefault(estimate.job.rule, []).append(estimate)
    rows = []
    for rule, group in by_rule.items():
        hours = [e.hours for e in group]
        limits = [e.job.runtime_hours for e in group if e.job.runtime_hours is not None]
        rows.append(
            Stage(
                rule,
                len(group),
                _span([e.job.gpus for e in group]),
                _span([e.job.nodes for e in group]),
                max(hours),
                sum(hours) / len(hours),
                min(limits) if limits else None,
                sum(e.gpu_hours for e in group),
                sum(e.cpu_hours for e in group),
                max(hours),
                _packed(hours, slots),
                sum(e.work.disk_bytes for e in group) / 1e9,
                calibrations[rule].factor if rule in calibrations else None,
            )
        )
    return rows


def totals(estimates: Sequence[JobEstimate], needs: Mapping[int, set[int]], slots: int) -> dict[str, float]:
    hours = {e.job.jobid: e.hours for e in estimates}
    return {
        "jobs": len(estimates),
        "gpu_hours": sum(e.gpu_hours for e in estimates),
        "cpu_hours": sum(e.cpu_hours for e in estimates),
        "disk_gb": sum(e.work.disk_bytes for e in estimates) / 1e9,
        "wall_hours_critical_path": critical_path(hours, needs),
        "wall_hours_jobs_limit": makespan(hours, needs, slots),
    }


HEADER = (
    "stage",
    "jobs",
    "GPUs/job",
    "nodes/job",
    "h/job",
    "limit h",
    "GPU-h",
    "CPU-h",
    "wall h (all)",
    "wall h (limit)",
    "disk GB",
)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _cells(rows: Sequence[Stage], total: Mapping[str, float]) -> list[tuple[str, ...]]:
    cells = [
        (
            row.stage + (" *" if row.calibration_factor is not None else ""),
            str(row.jobs),
            row.gpus_per_job,
            row.nodes_per_job,
            _number(row.hours_per_job) + (" !" if row.over_limit else ""),
            _number(row.limit_hours),
            _number(row.gpu_hours),
            _number(row.cpu_hours),
            _number(row.wall_hours_parallel),
            _number(row.wall_hours_jobs_limit),
            _number(row.disk_gb),
        )
        for row in rows
    ]
    cells.append(
        (
            "TOTAL",
            str(total["jobs"]),
            "",
            "",
            "",
            "",
            _number(total["gpu_hours"]),
            _number(total["cpu_hours"]),
            _number(total["wall_hours_critical_path"]),
            _number(total["wall_hours_jobs_limit"]),
            _number(total["disk_gb"]),
        )
    )
    return cells


def notes(
    rows: Sequence[Stage],
    total: Mapping[str, float],
    slots: int,
    sources: Sequence[str],
    calibrations: Mapping[str, Calibration],
) -> list[str]:
    lines = [
        (
            f"h/job: longest job of the stage; wall h (all): every job of the stage at once; wall h (limit): at most "
            f"{slots} jobs at once. TOTAL wall: the DAG's critical path, and the whole DAG scheduled {slots} jobs at a "
            f"time (dependencies respected)."
        ),
        f"Throughputs: {', '.join(sources)} (GPU rates are unmeasured assumptions unless calibrated).",
    ]
    for calibration in calibrations.values():
        rate = f", {calibration.rate:,.1f} {calibration.unit}/s per job" if calibration.rate is not None else ""
        lines.append(
            f"* {calibration.rule}: calibrated on {calibration.jobs} benchmarked job(s): measured "
            f"{calibration.measured_s:,.0f} s vs {calibration.predicted_s:,.0f} s predicted "
            f"(x{calibration.factor:.3g}){rate}"
        )
    over = [row.stage for row in rows if row.over_limit]
    if over:
        lines.append(
            f"! longer than the profile's first-attempt runtime (a retry gets attempt x runtime and resumes "
            f"from its checkpoint only for training): {', '.join(over)}"
        )
    return lines


def table(rows: Sequence[Stage], total: Mapping[str, float], footer: Sequence[str]) -> str:
    cells = [HEADER, *_cells(rows, total)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in cells
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join([*lines, "", *footer]) + "\n"


def markdown(rows: Sequence[Stage], total: Mapping[str, float], footer: Sequence[str]) -> str:
    cells = _cells(rows, total)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join([*lines, "", *(f"- {line}" for line in footer)]) + "\n"


def as_json(
    rows: Sequence[Stage],
    total: Mapping[str, float],
    estimates: Sequence[JobEstimate],
    sources: Sequence[str],
    calibrations: Mapping[str, Calibration],
    slots: int,
) -> str:
    jobs = [
        {
            "rule": e.job.rule,
            "jobid": e.job.jobid,
            "wildcards": dict(e.job.wildcards),
            "gpus": e.job.gpus,
            "nodes": e.job.nodes,
            "cpus": e.job.cpus,
            "hours": e.hours,
            "limit_hours": e.job.runtime_hours,
            "work": e.work.as_dict(),
        }
        for e in estimates
    ]
    calibrated = {rule: {**asdict(c), "factor": c.factor, "rate_per_job_s": c.rate} for rule, c in calibrations.items()}
    return (
        json.dumps(
            {
                "stages": [{**asdict(row), "over_limit": row.over_limit} for row in rows],
                "totals": dict(total),
                "jobs_limit": slots,
                "throughput_files": list(sources),
                "calibration": calibrated,
                "jobs": jobs,
            },
            indent=1,
        )
        + "\n"
    )
