"""The jobs of the real DAG: snakemake's own dry run, parsed, and the schedules that DAG allows.

Jobs, wildcards and per-job resources are taken from `snakemake -n` with the user's profile rather
than re-derived, so the plan counts exactly what a submission would queue (set-resources, scatter
counts, wildcard-dependent node counts included). Threads are capped at 1 in a dry run, which is
why CPUs come from the `cpus_per_task` resource where the profile sets it.
"""

from __future__ import annotations

import heapq
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from memtrain.errors import InputError

SNAKEFILE = Path(__file__).resolve().parents[2] / "Snakefile"
_BLOCK = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n?)*)", re.MULTILINE)
_PAIR = re.compile(r"(\w+)=(.*?)(?=, \w+=|$)")


@dataclass(frozen=True)
class Job:
    rule: str
    jobid: int
    wildcards: Mapping[str, str]
    resources: Mapping[str, str]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    benchmark: str | None

    @property
    def gpus(self) -> int:
        """GPUs of the job: the `gpu` resource (sbatch --gpus, per job) or the count of a `gres: gpu[:type]:N`."""
        if self.resources.get("gpu"):
            return int(self.resources["gpu"])
        gres = re.search(r"gpu(?::[\w.]+)?:(\d+)", self.resources.get("gres", ""))
        return int(gres.group(1)) if gres else 0

    @property
    def nodes(self) -> int:
        return int(self.resources.get("nodes") or 1)

    @property
    def cpus(self) -> int:
        return int(self.resources.get("cpus_per_task") or 1)

    @property
    def runtime_hours(self) -> float | None:
        """The time limit of a first attempt (the `runtime` resource, minutes), if the profile sets one."""
        runtime = self.resources.get("runtime")
        return int(runtime) / 60 if runtime else None


def profile_dir(profile: str) -> Path:
    """The profile folder; like snakemake, a bare name is looked up in the working directory."""
    path = Path(profile)
    if not any((path / name).is_file() for name in ("config.yaml", "config.v8+.yaml")):
        raise InputError("not a snakemake profile (a folder holding config.yaml)", file=path.resolve())
    return path.resolve()


def dry_run(
    config: str | os.PathLike,
    profile: str | os.PathLike | None,
    target: str,
    workdir: str | os.PathLike,
    missing_only: bool = False,
) -> str:
    """The text of `snakemake -n` for `target`: every job (--forceall) unless `missing_only`."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "-d",
        str(workdir),
        "--configfile",
        str(Path(config).resolve()),
        "--dry-run",
        "--nolock",
        *([] if missing_only else ["--forceall"]),
        target,
    ]
    if profile is not None:
        command[3:3] = ["--profile", str(profile)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir, check=False)
    if result.returncode != 0:
        raise InputError(f"snakemake's dry run failed:\n{(result.stderr or result.stdout)[-3000:]}", file=config)
    return result.stdout


def _pairs(text: str) -> dict[str, str]:
    return {key: value.strip() for key, value in _PAIR.findall(text)}


def parse_jobs(text: str) -> list[Job]:
    """Every job block of a dry run that makes something (target rules like `all` have no output)."""
    jobs = []
    for rule, body in _BLOCK.findall(text):
        fields = dict(line.strip().split(": ", 1) for line in body.splitlines() if ": " in line)
        if "output" not in fields:
            continue
        jobs.append(
            Job(
                rule,
                int(fields["jobid"]),
                _pairs(fields.get("wildcards", "")),
                _pairs(fields.get("resources", "")),
                tuple(fields.get("input", "").split(", ")),
                tuple(fields["output"].split(", ")),
                fields.get("benchmark"),
            )
        )
    if not jobs:
        raise InputError("the dry run lists no job (is the target already up to date?)")
    return jobs


def dependencies(jobs: Sequence[Job]) -> dict[int, set[int]]:
    """For each job, the jobs whose outputs it reads (an output folder counts for the files under it)."""
    producer = {path: job.jobid for job in jobs for path in job.outputs}
    needed = {}
    for job in jobs:
        needed[job.jobid] = {producer[path] for path in job.inputs if path in producer}
        needed[job.jobid] |= {producer[out] for path in job.inputs for out in producer if path.startswith(out + "/")}
    return needed


def depths(needs: Mapping[int, set[int]]) -> dict[int, int]:
    """Jobs between each job and the DAG's sources: an order of stages as the pipeline runs them."""
    depth: dict[int, int] = {}

    def visit(job: int) -> int:
        if job not in depth:
            depth[job] = 1 + max((visit(parent) for parent in needs[job]), default=-1)
        return depth[job]

    for job in needs:
        visit(job)
    return depth


def _tail_lengths(hours: Mapping[int, float], needs: Mapping[int, set[int]]) -> dict[int, float]:
    """Longest chain of hours from each job to the end of the DAG, the job itself included."""
    children: dict[int, list[int]] = {job: [] for job in hours}
    for job, parents in needs.items():
        for parent in parents:
            children[parent].append(job)
    tail: dict[int, float] = {}

    def visit(job: int) -> float:
        if job not in tail:
            tail[job] = hours[job] + max((visit(child) for child in children[job]), default=0.0)
        return tail[job]

    for job in hours:
        visit(job)
    return tail


def critical_path(hours: Mapping[int, float], needs: Mapping[int, set[int]]) -> float:
    """Wall-clock hours with unlimited parallel jobs: the longest dependency chain."""
    return max(_tail_lengths(hours, needs).values(), default=0.0)


def makespan(hours: Mapping[int, float], needs: Mapping[int, set[int]], slots: int) -> float:
    """Wall-clock hours with at most `slots` jobs at once (the profile's `jobs`), longest chain first.

    List scheduling is within a factor 2 of the optimum; it is what a queue fed in priority order does.
    """
    tail = _tail_lengths(hours, needs)
    waiting = {job: set(parents) for job, parents in needs.items()}
    ready = [(-tail[job], job) for job, parents in waiting.items() if not parents]
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < slots:
            _, job = heapq.heappop(ready)
            heapq.heappush(running, (now + hours[job], job))
        now, done = heapq.heappop(running)
        for job, parents in waiting.items():
            if done in parents:
                parents.discard(done)
                if not parents:
                    heapq.heappush(ready, (-tail[job], job))
    return now
