"""Real snakemake runs on config/test.yaml in temporary working directories, shared by the DAG and SLURM tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow

from memtrain import processes, tracking

ROOT = Path(__file__).resolve().parent.parent
SLURM_PROFILE = ROOT / "tests" / "slurm"
# Two one-thread jobs at a time rather than one two-thread job: the test DAG's jobs spend much of their time
# starting up, loading and writing models, which two jobs overlap (cpu time is about 60% of wall time).
LOCAL = ("--cores", "2", "--max-threads", "1")
DETERMINISTIC_OUTPUTS = [
    "articles.parquet",
    "passages.parquet",
    "entities/1-of-2.parquet",
    "entities/2-of-2.parquet",
    "documents.parquet",
    "documents_heldout.parquet",
]


def _command(workdir: Path, args: tuple[str, ...], configs: tuple[str, ...]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        *(str(ROOT / "config" / name) for name in configs),
        *args,
    ]


def _env() -> dict[str, str]:
    """The suite's environment without an MLflow store or parent run of its own (the pipeline makes both)."""
    return {k: v for k, v in os.environ.items() if k not in (tracking.TRACKING_URI_ENV, tracking.PARENT_RUN_ENV)}


def _checked(result: subprocess.CompletedProcess, check: bool) -> subprocess.CompletedProcess:
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(result.args[2:])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def snakemake(
    workdir: Path, *args: str, check: bool = True, configs: tuple[str, ...] = ("test.yaml",)
) -> subprocess.CompletedProcess:
    """snakemake on the files `configs` of config/ or absolute paths (later ones overlay earlier ones) in `workdir`."""
    command = _command(workdir, args, configs)
    return _checked(subprocess.run(command, capture_output=True, text=True, env=_env(), check=False), check)


def start_beside(request, fixture: str) -> None:
    """Start the run of `fixture` (named `<x>_started`, giving a Started) now, when a selected test asks for `<x>`:
    the caller has just finished what that run needs, and the tests that follow overlap with it."""
    waited_for = fixture.removesuffix("_started")
    if any(waited_for in item.fixturenames for item in request.session.items):
        request.getfixturevalue(fixture)


class Started:
    """A snakemake run going on beside the tests (its output in files, so that no pipe fills up); `wait` gives
    what `snakemake` would have returned. Runs whose jobs mostly wait (on a SLURM scheduler) overlap this way
    with runs that compute."""

    def __init__(self, workdir: Path, *args: str, configs: tuple[str, ...] = ("test.yaml",)) -> None:
        self.command = _command(workdir, args, configs)
        self._out = workdir.with_name(workdir.name + ".out")
        self._err = workdir.with_name(workdir.name + ".err")
        with self._out.open("w") as out, self._err.open("w") as err:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=err, text=True, env=_env())

    def wait(self, check: bool = True) -> subprocess.CompletedProcess:
        returncode = self.process.wait()
        result = subprocess.CompletedProcess(self.command, returncode, self._out.read_text(), self._err.read_text())
        return _checked(result, check)

    def stop(self) -> None:
        """Ends a run nobody waited for (the session stopped early); snakemake cancels its SLURM jobs on SIGTERM."""
        processes.stop(self.process, grace=60)


def runs(workdir: Path) -> list:
    client = mlflow.MlflowClient(tracking.tracking_uri(workdir / "results"))
    experiment = client.get_experiment_by_name("memtrain")
    return client.search_runs([experiment.experiment_id])


def job_counts(plan: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, without its total."""
    counts = {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", plan, re.MULTILINE)}
    counts.pop("total", None)
    return counts


# Outputs the pipeline only ever replaces (written under a temporary name, then renamed): a copy of a working
# directory may share them; everything else (MLflow's database, logs, snakemake's records) is copied.
_REPLACED_ONLY = {".safetensors", ".parquet", ".faiss", ".npy", ".pt"}


def clone_workdir(source: Path, target: Path) -> Path:
    """A working directory to run more jobs in without touching `source` (which other tests read)."""

    def copy(src: str, dst: str) -> None:
        if Path(src).suffix in _REPLACED_ONLY:
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=copy, symlinks=True)
    return target
