"""Tests for memtrain.tracking against a real MLflow sqlite store in a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient

from memtrain import tracking
from memtrain.tracking import PARENT_RUN_ENV

EXPERIMENT = "memtrain-test"


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A results dir in a fresh git repo (for the provenance tags) and a clean environment."""
    for name in ("MLFLOW_TRACKING_URI", PARENT_RUN_ENV, "SLURM_JOB_ID", "SLURM_JOBID"):
        monkeypatch.delenv(name, raising=False)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking, "CHECKOUT", tmp_path)
    yield tmp_path / "results"
    os.environ.pop(PARENT_RUN_ENV, None)  # start_invocation sets it outside monkeypatch


def client_for(results: Path) -> MlflowClient:
    return MlflowClient(tracking.tracking_uri(results))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri("results") == f"sqlite:///{tmp_path.resolve()}/results/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/db.sqlite")
    assert tracking.tracking_uri("results") == "sqlite:////elsewhere/db.sqlite"


def test_config_hash_and_flatten():
    a = {"model": {"name": "qwen", "lr": 1e-5}, "seeds": [1, 2]}
    b = {"seeds": [1, 2], "model": {"lr": 1e-5, "name": "qwen"}}
    assert tracking.config_hash(a) == tracking.config_hash(b)
    assert len(tracking.config_hash(a)) == 12
    assert tracking.config_hash(a) != tracking.config_hash({**a, "seeds": [1, 3]})
    assert tracking.config_hash({"p": Path("/x")}) == tracking.config_hash({"p": "/x"})
    assert tracking.flatten({"a": {"b": {"c": 1}, "d": [1, "x"]}, "e": None}) == {
        "a.b.c": "1",
        "a.d": '[1, "x"]',
        "e": "None",
    }


def test_run_context_tags(results, monkeypatch, tmp_path):
    tags = tracking.run_context_tags()
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout
    assert tags["memtrain.git_commit"] == head.strip()
    assert tags["memtrain.git_dirty"] == "false"
    assert tags["memtrain.pid"] == str(os.getpid())
    assert "memtrain.slurm_job_id" not in tags
    (tmp_path / "new.py").write_text("")
    monkeypatch.setenv("SLURM_JOBID", "42")
    tags = tracking.run_context_tags()
    assert tags["memtrain.git_dirty"] == "true"
    assert tags["memtrain.slurm_job_id"] == "42"
    monkeypatch.setenv("SLURM_JOB_ID", "43")
    assert tracking.run_context_tags()["memtrain.slurm_job_id"] == "43"


def test_run_context_tags_outside_git(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking, "CHECKOUT", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    tags = tracking.run_context_tags()
    assert tags["memtrain.git_commit"] == "unknown"
    assert "memtrain.git_dirty" not in tags


def test_invocation_with_stage(results: Path, tmp_path: Path):
    config = {
        "model": {"name": "qwen", "lr": 1e-5},
        "seeds": [1, 2],
        "prompt": "x" * 7000,
        "grid": {f"k{i}": i for i in range(150)},  # more than one log_batch of params
    }
    parent_id = tracking.start_invocation(results, EXPERIMENT, ["all", "report"], config)
    assert (results / "mlflow.db").is_file()
    assert os.environ[PARENT_RUN_ENV] == parent_id
    client = client_for(results)
    parent = client.get_run(parent_id)
    assert parent.info.run_name == "snakemake all report"
    assert parent.info.status == "RUNNING"
    tags = parent.data.tags
    assert tags["memtrain.kind"] == "invocation"
    assert tags["memtrain.targets"] == "all report"
    assert tags["memtrain.config_hash"] == tracking.config_hash(config)
    assert tags["memtrain.host"] and len(tags["memtrain.git_commit"]) == 40
    params = parent.data.params
    assert len(params) == 154
    assert params["model.lr"] == "1e-05" and params["seeds"] == "[1, 2]"
    assert params["prompt"] == "x" * 6000
    config_file = client.download_artifacts(parent_id, "config.json", str(tmp_path))
    assert json.loads(Path(config_file).read_text()) == config

    stage_params = {"shard": 1, "model": {"name": "qwen"}}
    with tracking.stage_run("ner", stage_params, results, EXPERIMENT, rule="ner", wildcards={"shard": "1-of-2"}) as run:
        run.log_metrics({"f1": 0.5, "missing": None, "n": 3}, step=2)
        run.log_dict({"a": 1}, "out/summary.json")
        run.log_table(pd.DataFrame({"x": [1, 2]}), "table.json")
        figure = Figure()
        figure.subplots().plot([1, 2])
        run.log_figure(figure, "plot.png")
        (tmp_path / "notes.txt").write_text("hi")
        run.log_artifact(tmp_path / "notes.txt", "extra")
        run.set_tags({"note": "ok"})
    child = client.get_run(run.run_id)
    assert child.info.status == "FINISHED"
    assert child.info.run_name == "ner 1-of-2"
    assert child.info.experiment_id == parent.info.experiment_id
    tags = child.data.tags
    assert tags["mlflow.parentRunId"] == parent_id
    assert tags["memtrain.kind"] == "stage"
    assert tags["memtrain.stage"] == tags["memtrain.rule"] == "ner"
    assert json.loads(tags["memtrain.wildcards"]) == {"shard": "1-of-2"}
    assert tags["memtrain.config_hash"] == tracking.config_hash(stage_params)
    assert tags["memtrain.host"] == parent.data.tags["memtrain.host"]
    assert tags["memtrain.git_commit"] == parent.data.tags["memtrain.git_commit"]
    assert tags["note"] == "ok"
    assert child.data.params == {"shard": "1", "model.name": "qwen"}
    assert child.data.metrics == {"f1": 0.5, "n": 3.0}
    assert client.get_metric_history(run.run_id, "f1")[0].step == 2
    artifacts = results / "mlartifacts" / run.run_id / "artifacts"
    for name in ("out/summary.json", "table.json", "plot.png", "extra/notes.txt"):
        assert (artifacts / name).is_file(), name
    assert not (tmp_path / "mlruns").exists()

    tracking.end_invocation(parent_id, "FINISHED", results)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.info.end_time
    assert PARENT_RUN_ENV not in os.environ


def test_failures(results: Path):
    parent_id = tracking.start_invocation(results, EXPERIMENT, ["all"], {})
    with pytest.raises(ValueError, match="bad shard"), tracking.stage_run("ner", {}, results, EXPERIMENT) as run:
        raise ValueError("bad shard")
    client = client_for(results)
    failed = client.get_run(run.run_id)
    assert failed.info.status == "FAILED"
    assert failed.info.run_name == "ner"
    assert failed.data.tags["memtrain.error"] == "ValueError: bad shard"
    # a job killed mid-way leaves its run RUNNING
    cut_off = client.create_run(failed.info.experiment_id, tags={"mlflow.parentRunId": parent_id}).info.run_id
    tracking.end_invocation(parent_id, "FAILED", results)
    assert client.get_run(parent_id).info.status == "FAILED"
    assert client.get_run(cut_off).info.status == "FAILED"


def test_standalone_stage(results: Path):
    with tracking.stage_run("eval", {"k": 1}, results, EXPERIMENT) as run:
        pass
    client = client_for(results)
    standalone = client.get_run(run.run_id)
    assert standalone.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in standalone.data.tags
    assert "memtrain.rule" not in standalone.data.tags
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.artifact_location == (results.resolve() / "mlartifacts").as_uri()


def test_stale_invocations(results: Path):
    client = client_for(results)
    killed_id = tracking.start_invocation(results, EXPERIMENT, ["all"], {})
    experiment_id = client.get_run(killed_id).info.experiment_id
    client.set_tag(killed_id, "memtrain.pid", str(dead_pid()))
    orphan = client.create_run(experiment_id, tags={"mlflow.parentRunId": killed_id}).info.run_id

    live_id = tracking.start_invocation(results, EXPERIMENT, ["all"], {})
    killed = client.get_run(killed_id)
    assert killed.info.status == "KILLED" and killed.info.end_time
    assert killed.data.tags["memtrain.closed_by"]
    assert client.get_run(orphan).info.status == "KILLED"

    # our own pid on our host is alive: not stale
    assert tracking.close_stale_invocations(client, experiment_id) == []
    assert client.get_run(live_id).info.status == "RUNNING"
    # the same pid on another host cannot be checked, so it is treated as stale
    client.set_tag(live_id, "memtrain.host", "elsewhere")
    assert tracking.close_stale_invocations(client, experiment_id) == [live_id]
    assert client.get_run(live_id).info.status == "KILLED"


def test_finished_job_runs_map_each_job_to_its_newest_finished_run(results: Path):
    assert tracking.finished_job_runs(results, EXPERIMENT, "eval_long_context") == {}
    wildcards = {"backbone": "b", "trained": "none", "init": "base", "seed": "0"}
    ids = []
    for _ in range(2):  # a rerun job: the newer run made the file on disk
        with tracking.stage_run(
            "eval_long_context", {}, results, EXPERIMENT, rule="eval_long_context", wildcards=wildcards
        ) as run:
            ids.append(run.run_id)
    failed = {**wildcards, "seed": "1"}  # a failed run never backs a report cell
    with (
        pytest.raises(RuntimeError),
        tracking.stage_run("eval_long_context", {}, results, EXPERIMENT, rule="eval_long_context", wildcards=failed),
    ):
        raise RuntimeError("boom")
    with tracking.stage_run("posttrain", {}, results, EXPERIMENT, rule="posttrain_train", wildcards=wildcards):
        pass
    found = tracking.finished_job_runs(results, EXPERIMENT, "eval_long_context")
    assert found == {tuple(sorted(wildcards.items())): ids[1]}


def test_the_experiment_opens_on_its_runs_whoever_created_it(results: Path):
    """MLflow 3's UI shows an experiment without mlflow.experimentKind as a GenAI one (traces, no runs table)."""
    with tracking.stage_run("eval", {}, results, EXPERIMENT):
        pass
    client = client_for(results)
    assert client.get_experiment_by_name(EXPERIMENT).tags["mlflow.experimentKind"] == "custom_model_development"
    other = client.create_experiment("made-elsewhere")  # e.g. by veRL's logger, or before the tag existed
    with tracking.stage_run("eval", {}, results, "made-elsewhere"):
        pass
    assert client.get_experiment(other).tags["mlflow.experimentKind"] == "custom_model_development"
