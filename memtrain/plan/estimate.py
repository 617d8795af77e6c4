"""Hours per job from its work and resources, and the per-rule corrections a finished run measures.

A job with GPUs runs its policy and encoder passes at the per-GPU rates times its GPUs (data
parallel, no communication cost); a CPU job runs them at the rates measured for one 2-thread job
here. LLM rates scale with reference / model parameters. Rollout, log-prob and update phases add
up (veRL colocates them on the same GPUs), as do the other parts of a job.

Calibration: for each rule of a finished run, the benchmark seconds snakemake recorded over the
seconds this model predicts for the same jobs (run with the config that run used) gives a factor
that scales the rule's estimates; its tokens (or words, passages) per job-second are the measured
throughput reported beside it.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from memtrain.errors import InputError
from memtrain.plan.dag import Job
from memtrain.plan.throughputs import Throughputs
from memtrain.plan.work import Work

BENCHMARK_COLUMNS = (
    "s",
    "h:m:s",
    "max_rss",
    "max_vms",
    "max_uss",
    "max_pss",
    "io_in",
    "io_out",
    "mean_load",
    "cpu_time",
)


def seconds(work: Work, job: Job, t: Throughputs) -> float:
    """Predicted seconds of one job (one attempt, nothing pre-empted)."""
    device, parallel = ("gpu", job.gpus) if job.gpus else ("cpu", 1)
    total = t[f"{device}_job_overhead_s"]
    if work.params_b:
        scale = work.params_b / t[f"{device}_reference_params_b"]
        total += (
            scale
            * (
                work.prefill / t[f"{device}_prefill_tokens_per_s"]
                + work.decode / t[f"{device}_decode_tokens_per_s"]
                + work.train / t[f"{device}_train_tokens_per_s"]
            )
            / parallel
        )
    if work.embed_passages:
        scale = work.encoder_params_b / t["embed_reference_params_b"]
        total += scale * work.embed_passages / (t[f"{device}_embed_passages_per_s"] * parallel)
    total += work.ner_words / (t["ner_words_per_s_per_process"] * work.ner_processes)
    total += work.cpu_flops / (t["cpu_gflops_per_core"] * 1e9 * job.cpus)
    total += work.text_words / t["text_words_per_s"] + work.tokenize / t["tokenize_tokens_per_s"]
    return total + work.download_mb / t["download_mb_per_s"]


def work_units(work: Work) -> tuple[float, str]:
    """The quantity a measured rate is quoted in: policy tokens, else NER words, else passages, else none."""
    for amount, unit in ((work.tokens, "tokens"), (work.ner_words, "words"), (work.embed_passages, "passages")):
        if amount:
            return amount, unit
    return 0.0, ""


@dataclass(frozen=True)
class Calibration:
    rule: str
    jobs: int
    measured_s: float
    predicted_s: float
    units: float
    unit: str

    @property
    def factor(self) -> float:
        return self.measured_s / self.predicted_s

    @property
    def rate(self) -> float | None:
        """Measured units per second of one job."""
        return self.units / self.measured_s if self.unit else None


def benchmark_seconds(path: str | os.PathLike) -> float:
    """Mean `s` of a snakemake benchmark TSV (one row per repeat)."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except OSError as error:
        raise InputError(f"cannot read benchmark: {error}", file=path) from error
    try:
        values = [float(row["s"]) for row in rows]
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(
            f"not a snakemake benchmark TSV (columns {', '.join(BENCHMARK_COLUMNS)})", file=path, field="s"
        ) from error
    if not values:
        raise InputError("benchmark has no rows", file=path, field="s")
    return sum(values) / len(values)


def calibrate(
    jobs: Sequence[Job], works: Mapping[int, Work], results_dir: str | os.PathLike, results_prefix: str, t: Throughputs
) -> dict[str, Calibration]:
    """Per rule, measured against predicted seconds over the jobs of the calibrating run that left a benchmark.

    Job benchmark paths start with the calibrating config's results_dir (`results_prefix`), which is
    replaced by `results_dir`, where the finished run's files are.
    """
    found: dict[str, list[tuple[float, float, float, str]]] = {}
    for job in jobs:
        if job.benchmark is None:
            continue
        relative = os.path.relpath(job.benchmark, results_prefix)
        path = Path(results_dir) / relative
        if not path.is_file():
            continue
        units, unit = work_units(works[job.jobid])
        found.setdefault(job.rule, []).append((benchmark_seconds(path), seconds(works[job.jobid], job, t), units, unit))
    if not found:
        raise InputError(
            f"no benchmark of the calibrating run's jobs found (looked for "
            f"{Path(results_dir) / 'benchmarks'}/<rule>/...tsv)",
            file=results_dir,
        )
    return {
        rule: Calibration(
            rule, len(rows), sum(r[0] for r in rows), sum(r[1] for r in rows), sum(r[2] for r in rows), rows[0][3]
        )
        for rule, rows in found.items()
    }
