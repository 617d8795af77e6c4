"""The `plan` command line: which DAG, which numbers, which format."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from memtrain import config as memtrain_config
from memtrain.errors import InputError
from memtrain.plan import dag, estimate, report, throughputs
from memtrain.plan.work import job_work


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m memtrain plan",
        description="Compute plan of a DAG: jobs, GPUs and nodes per job, hours, GPU-/CPU-hours, "
        "wall-clock and disk per stage, from snakemake's dry run and the config.",
    )
    root.add_argument("--config", required=True, help="the run's config, e.g. config/paper.yaml")
    root.add_argument("--profile", default=None, help="snakemake profile folder, e.g. slurm (resources, jobs limit)")
    root.add_argument("--target", default="all", help="rule or file to plan (default: all)")
    root.add_argument("--missing-only", action="store_true", help="plan only jobs whose outputs are missing or stale")
    root.add_argument("--throughputs", default=None, help="YAML overriding entries of memtrain/plan/throughputs.yaml")
    root.add_argument(
        "--calibrate",
        default=None,
        metavar="RESULTS_DIR",
        help="a finished run's results folder: its benchmarks/**/*.tsv scale each rule's estimate",
    )
    root.add_argument("--calibrate-config", default=None, help="the config that finished run used")
    root.add_argument("--calibrate-profile", default=None, help="the profile that finished run used (default: none)")
    root.add_argument("--jobs", type=int, default=None, help="jobs at once (default: the profile's `jobs`, else 1)")
    root.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    return root


def jobs_limit(profile: Path | None, override: int | None) -> int:
    """Jobs running at once: --jobs, else the profile's `jobs`, else 1 (a local run without a profile)."""
    if override is not None:
        if override < 1:
            raise InputError("must be at least 1", field="--jobs")
        return override
    if profile is None:
        return 1
    path = profile / "config.yaml"
    try:
        settings = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"cannot read profile: {error}", file=path) from error
    value = settings.get("jobs", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"must be a positive integer, got {value!r}", file=path, field="jobs")
    return value


def _estimates(jobs, config, numbers, factors) -> list[report.JobEstimate]:
    estimates = []
    for job in jobs:
        work = job_work(job, config, numbers)
        hours = estimate.seconds(work, job, numbers) / 3600 * factors.get(job.rule, 1.0)
        estimates.append(report.JobEstimate(job, work, hours))
    return estimates


def plan(args: argparse.Namespace) -> str:
    numbers = throughputs.load(args.throughputs)
    profile = dag.profile_dir(args.profile) if args.profile else None
    config = memtrain_config.load(args.config)
    calibrations = {}
    if args.calibrate:
        if not args.calibrate_config:
            raise InputError(
                "--calibrate needs --calibrate-config, the config the finished run used", field="--calibrate-config"
            )
        measured_config = memtrain_config.load(args.calibrate_config)
        measured_profile = dag.profile_dir(args.calibrate_profile) if args.calibrate_profile else None
        measured_jobs = dag.parse_jobs(dag.dry_run(args.calibrate_config, measured_profile, "all", os.getcwd()))
        works = {job.jobid: job_work(job, measured_config, numbers) for job in measured_jobs}
        calibrations = estimate.calibrate(measured_jobs, works, args.calibrate, measured_config["results_dir"], numbers)
    jobs = dag.parse_jobs(dag.dry_run(args.config, profile, args.target, os.getcwd(), args.missing_only))
    estimates = _estimates(jobs, config, numbers, {rule: c.factor for rule, c in calibrations.items()})
    slots = jobs_limit(profile, args.jobs)
    needs = dag.dependencies(jobs)
    rows = report.stages(estimates, needs, slots, calibrations)
    total = report.totals(estimates, needs, slots)
    if args.format == "json":
        return report.as_json(rows, total, estimates, numbers.files, calibrations, slots)
    footer = report.notes(rows, total, slots, numbers.files, calibrations)
    return (report.markdown if args.format == "markdown" else report.table)(rows, total, footer)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        sys.stdout.write(plan(args))
    except InputError as error:
        print(f"memtrain plan: {error}", file=sys.stderr)
        return 2
    return 0
