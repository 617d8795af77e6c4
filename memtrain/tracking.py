"""MLflow bookkeeping: one parent run per snakemake invocation, one child run per job.

Every job is its own ``python -m memtrain <stage>`` process, so the parent run id travels
through the environment (:data:`PARENT_RUN_ENV`) instead of MLflow's in-process run stack,
and all calls go through an explicit :class:`~mlflow.MlflowClient`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import mlflow  # memtrain/__init__.py has already turned MLflow's telemetry off
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.utils.validation import (
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

PARENT_RUN_ENV = "MEMTRAIN_MLFLOW_PARENT_RUN_ID"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
_PARENT_TAG = "mlflow.parentRunId"  # the tag MLflow's UI uses to nest runs


def tracking_uri(results_dir: str | os.PathLike) -> str:
    """Where runs are recorded: an explicit MLFLOW_TRACKING_URI wins; otherwise a sqlite file
    under results_dir, absolute so that jobs started from any working directory agree."""
    return os.environ.get(TRACKING_URI_ENV) or f"sqlite:///{Path(results_dir).resolve()}/mlflow.db"


def config_hash(config: Mapping) -> str:
    """Short fingerprint for telling runs with identical settings apart at a glance."""
    canonical = json.dumps(config, sort_keys=True, default=str)
    return sha256(canonical.encode()).hexdigest()[:12]


def flatten(mapping: Mapping, prefix: str = "") -> dict[str, str]:
    """MLflow params are flat strings; nested config sections become dotted keys."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = str(value)
    return flat


# The commit that matters is the code's: git runs in the checkout this package is imported from, since a
# job's working directory (snakemake -d) can be anywhere.
CHECKOUT = Path(__file__).resolve().parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30, cwd=CHECKOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def run_context_tags() -> dict[str, str]:
    """Enough provenance to find the code, machine and process (or SLURM job) behind a run,
    and to decide later whether a RUNNING invocation is really still alive."""
    tags = {
        "memtrain.git_commit": _git("rev-parse", "HEAD") or "unknown",
        "memtrain.host": socket.gethostname(),
        "memtrain.pid": str(os.getpid()),
    }
    status = _git("status", "--porcelain")
    if status is not None:
        tags["memtrain.git_dirty"] = str(bool(status)).lower()
    slurm_job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SLURM_JOBID")
    if slurm_job:
        tags["memtrain.slurm_job_id"] = slurm_job
    return tags


def _log_params(client: MlflowClient, run_id: str, params: Mapping) -> None:
    """MLflow rejects long values and batches of more than 100 params; fit within both."""
    items = [Param(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in flatten(params).items()]
    for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + MAX_PARAMS_TAGS_PER_BATCH])


# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, an empty overview); tagged, it opens
# on the runs table, where the pipeline's runs are. The value is the UI's own name for model-training experiments.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def _experiment_id(client: MlflowClient, name: str, results_dir: str | os.PathLike) -> str:
    """Get or create the experiment, keeping its artifacts under results_dir rather than
    in whatever directory the process happened to start in, and tagged to open on its runs."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        artifacts = (Path(results_dir).resolve() / "mlartifacts").as_uri()
        try:
            return client.create_experiment(
                name, artifact_location=artifacts, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except mlflow.MlflowException:
            experiment = client.get_experiment_by_name(name)  # another process created it first
            if experiment is None:
                raise
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # made before the tag was set, or by another tool
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def _running_runs(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    query = f"{filter_string} AND attributes.status = 'RUNNING'"
    return client.search_runs([experiment_id], query)


def _terminate_children(client: MlflowClient, run: Run, status: str) -> None:
    """A parent can only end once its jobs are gone; any child still RUNNING was cut off."""
    query = f"tags.`{_PARENT_TAG}` = '{run.info.run_id}'"
    for child in _running_runs(client, run.info.experiment_id, query):
        client.set_terminated(child.info.run_id, status)


def _is_alive(tags: Mapping[str, str]) -> bool:
    """Only a process on this host can be probed; a parent from elsewhere counts as dead."""
    if tags.get("memtrain.host") != socket.gethostname():
        return False
    try:
        os.kill(int(tags.get("memtrain.pid", "")), 0)
    except PermissionError:  # exists, but belongs to someone else
        return True
    except (ValueError, OSError):
        return False
    return True


def close_stale_invocations(client: MlflowClient, experiment_id: str) -> list[str]:
    """An invocation killed without reaching onerror leaves its parent RUNNING forever;
    mark such runs (and their children) KILLED so the UI tells the truth."""
    marker = f"{socket.gethostname()}:{os.getpid()}"
    closed = []
    for run in _running_runs(client, experiment_id, "tags.`memtrain.kind` = 'invocation'"):
        if _is_alive(run.data.tags):
            continue
        _terminate_children(client, run, "KILLED")
        client.set_tag(run.info.run_id, "memtrain.closed_by", marker)
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    return closed


def start_invocation(results_dir: str | os.PathLike, experiment: str, targets: Sequence[str], config: Mapping) -> str:
    """Opens the parent run in the main snakemake process. Doing it here, before any job
    starts, also creates the sqlite tables once: parallel first-opens race on creating them."""
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri(results_dir))
    experiment_id = _experiment_id(client, experiment, results_dir)
    close_stale_invocations(client, experiment_id)
    tags = {
        "memtrain.kind": "invocation",
        "memtrain.targets": " ".join(targets),
        "memtrain.config_hash": config_hash(config),
        **run_context_tags(),
    }
    run = client.create_run(experiment_id, run_name=" ".join(["snakemake", *targets]), tags=tags)
    _log_params(client, run.info.run_id, config)
    # default=str as in config_hash: a config may hold paths or other non-JSON values.
    text = json.dumps(config, indent=2, sort_keys=True, default=str)
    client.log_text(run.info.run_id, text, "config.json")
    os.environ[PARENT_RUN_ENV] = run.info.run_id
    return run.info.run_id


def end_invocation(run_id: str, status: Literal["FINISHED", "FAILED"], results_dir: str | os.PathLike) -> None:
    """Closes the parent run; jobs killed mid-way never closed their own runs."""
    client = MlflowClient(tracking_uri(results_dir))
    _terminate_children(client, client.get_run(run_id), "FAILED")
    client.set_terminated(run_id, status)
    if os.environ.get(PARENT_RUN_ENV) == run_id:  # later runs in this process must not nest here
        del os.environ[PARENT_RUN_ENV]


class StageRun:
    """Handle to a job's run that logs through the client, so no fluent global state is needed."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_metrics(self, metrics: Mapping[str, float | None], step: int | None = None) -> None:
        """Metrics a stage could not compute arrive as None; they are left out, not faked."""
        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        self.client.log_batch(self.run_id, metrics=entries)

    def log_dict(self, obj: Mapping, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dict(obj), artifact_file)

    def log_figure(self, figure: Figure, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, os.fspath(path), artifact_path)

    def log_table(self, data: pandas.DataFrame, artifact_file: str) -> None:
        """Stored in MLflow's table JSON format, which the UI can display and query."""
        self.client.log_table(self.run_id, data, artifact_file)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


@contextlib.contextmanager
def stage_run(
    stage: str,
    params: Mapping,
    results_dir: str | os.PathLike,
    experiment: str,
    rule: str | None = None,
    wildcards: Mapping[str, str] | None = None,
) -> Iterator[StageRun]:
    """One run per job, nested under the invocation named in the environment so a whole
    snakemake call reads as one tree; a stage run by hand gets a standalone run."""
    wildcards = dict(wildcards or {})
    client = MlflowClient(tracking_uri(results_dir))
    tags = {
        "memtrain.kind": "stage",
        "memtrain.stage": stage,
        "memtrain.wildcards": json.dumps(wildcards, sort_keys=True),
        "memtrain.config_hash": config_hash(params),
        **run_context_tags(),
    }
    if rule:
        tags["memtrain.rule"] = rule
    parent_id = os.environ.get(PARENT_RUN_ENV)
    if parent_id:
        tags[_PARENT_TAG] = parent_id
        # A child must live in its parent's experiment for the UI to nest it.
        experiment_id = client.get_run(parent_id).info.experiment_id
    else:
        experiment_id = _experiment_id(client, experiment, results_dir)
    run_name = " ".join([rule or stage, *map(str, wildcards.values())])
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    _log_params(client, run.info.run_id, params)
    try:
        yield StageRun(client, run.info.run_id)
    except BaseException as error:  # KeyboardInterrupt too: the job did not finish
        message = f"{type(error).__name__}: {error}"[:MAX_TAG_VAL_LENGTH]
        client.set_tag(run.info.run_id, "memtrain.error", message)
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


def finished_job_runs(
    results_dir: str | os.PathLike, experiment: str, rule: str
) -> dict[tuple[tuple[str, str], ...], str]:
    """The newest FINISHED run of each job of `rule`, keyed by its sorted wildcards: what a report cell traces to.

    A job rerun after a config change leaves older runs behind; the newest one produced the file on disk.
    """
    client = MlflowClient(tracking_uri(results_dir))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    query = f"tags.`memtrain.rule` = '{rule}' AND attributes.status = 'FINISHED'"
    newest: dict[tuple[tuple[str, str], ...], Run] = {}
    for run in client.search_runs([found.experiment_id], query, max_results=50_000):
        key = tuple(sorted(json.loads(run.data.tags["memtrain.wildcards"]).items()))
        if key not in newest or run.info.start_time > newest[key].info.start_time:
            newest[key] = run
    return {key: run.info.run_id for key, run in newest.items()}
