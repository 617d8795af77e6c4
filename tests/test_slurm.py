"""The SLURM profiles: the paper profile plans the whole paper DAG, and the test DAG runs through a real
single-node SLURM cluster (tests/slurm_cluster.py) with the SLURM executor, failures included."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

import pytest
from dag_runs import ROOT, job_counts, runs
from slurm_cluster import slurm_job

from memtrain.plan.dag import parse_jobs

PAPER_JOBS = {  # config/paper.yaml: 2 backbones, 3 variants, 2 inits x 3 seeds, 8 lengths, 7 benchmarks
    "wiki_download": 1,
    "passages": 1,
    "ner": 64,
    "embed": 16,
    "index": 1,
    "tokenizer": 1,
    "assemble": 1,
    "dataset_card": 1,
    "prepare_model": 2,
    "memtrain_train": 6,
    "qa_long_context": 1,
    "qa_search": 1,
    "search_corpus": 1,
    "search_index": 1,
    "posttrain_train": 36,
    "eval_long_context": 28,
    "eval_search_qa": 14,
    "posttrain_continue": 6,
    "eval_scaling": 36,
    "case_study": 2,
    "figures": 1,
    "report": 1,
    "all": 1,
}


def paper_plan(*args: str, env: dict[str, str] | None = None) -> str:
    """`snakemake --profile slurm -n ...` from the repository root, as a user types it."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "slurm", "-n", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def job_resources(plan: str, rule: str) -> list[Mapping[str, str]]:
    """The resources of every planned job of `rule`, read by the planner's own dry-run parser."""
    return [job.resources for job in parse_jobs(plan) if job.rule == rule]


@pytest.mark.slow
def test_paper_profile_plans_the_whole_paper_dag_with_gpu_jobs_on_gpu_nodes():
    plan = paper_plan("all")
    assert job_counts(plan) == PAPER_JOBS
    training = {(r["nodes"], r["gpu"], r["slurm_partition"]) for r in job_resources(plan, "posttrain_train")}
    assert training == {("1", "8", "gpu")}  # = trainer.verl in config/paper.yaml, which the veRL launch checks
    assert {r["gpu"] for r in job_resources(plan, "eval_long_context")} == {"1"}
    assert {r["slurm_partition"] for r in job_resources(plan, "ner")} == {"cpu"}
    assert "gpu" not in job_resources(plan, "ner")[0]


@pytest.mark.slow
def test_partitions_account_and_gpu_model_come_from_the_environment():
    plan = paper_plan(
        "memtrain",
        env={
            "MEMTRAIN_GPU_PARTITION": "a100-long",
            "MEMTRAIN_CPU_PARTITION": "batch",
            "MEMTRAIN_SLURM_ACCOUNT": "proj42",
            "MEMTRAIN_GPU_MODEL": "a100",
        },
    )
    train = job_resources(plan, "memtrain_train")[0]
    assert (train["slurm_partition"], train["gpu_model"], train["slurm_account"]) == ("a100-long", "a100", "proj42")
    assert job_resources(plan, "passages")[0]["slurm_partition"] == "batch"


@pytest.mark.slow
def test_one_stage_replans_alone_through_the_profile():
    assert job_counts(paper_plan("ablations")) == {
        "wiki_download": 1,
        "passages": 1,
        "ner": 64,
        "embed": 16,
        "index": 1,
        "tokenizer": 1,
        "assemble": 1,
        "prepare_model": 2,
        "memtrain_train": 6,
        "qa_long_context": 1,
        "posttrain_train": 18,
        "eval_long_context": 18,
        "ablations": 1,
    }


@pytest.mark.slow
def test_data_jobs_ran_as_slurm_jobs_recorded_in_mlflow(data_rerun):
    if not data_rerun.through_slurm:
        pytest.skip("no local SLURM cluster here: the rerun of `data` ran locally")
    stages = [r for r in runs(data_rerun.workdir) if r.data.tags.get("memtrain.kind") == "stage"]
    assert len(stages) == 10
    job_ids = {
        r.data.tags["memtrain.rule"] + r.data.tags["memtrain.wildcards"]: r.data.tags["memtrain.slurm_job_id"]
        for r in stages
    }
    assert len(set(job_ids.values())) == 10  # one SLURM job per snakemake job
    # The executor's own record of what it submitted: .snakemake/slurm_logs/rule_<rule>/<wildcards>/<job id>.log
    logged = {path.stem for path in (data_rerun.workdir / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert logged == set(job_ids.values())
    for run in stages:
        job = slurm_job(run.data.tags["memtrain.slurm_job_id"])
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0"
        if run.data.tags["memtrain.rule"] == "embed":  # the GPU rule got the node's fake GPU
            assert job["Partition"] == "gpu" and job["TresPerNode"] == "gres:gpu:fake:1"
        else:
            assert job["Partition"] == "cpu" and "TresPerNode" not in job


@pytest.mark.slow
def test_a_failing_slurm_job_is_reported_failed(slurm_failure):
    workdir, result = slurm_failure
    assert result.returncode != 0
    assert "Error in rule wiki_download" in result.stdout + result.stderr
    assert not (workdir / "results" / "data" / "articles.parquet").exists()
    by_rule = {r.data.tags.get("memtrain.rule", "invocation"): r for r in runs(workdir)}
    assert by_rule["invocation"].info.status == "FAILED"
    failed = by_rule["wiki_download"]
    assert failed.info.status == "FAILED" and "record line 2" in failed.data.tags["memtrain.error"]
    job = slurm_job(failed.data.tags["memtrain.slurm_job_id"])
    assert job["JobState"] == "FAILED" and job["ExitCode"] != "0:0"
    assert f"SLURM jobid {job['JobId']}" in result.stdout + result.stderr
