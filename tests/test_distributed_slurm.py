"""Ray on a SLURM allocation: node discovery, who runs what, the commands, and Ray inside a live SLURM job."""

from __future__ import annotations

import subprocess
import time

import pytest
from slurm_cluster import slurm_job

from memtrain.distributed import ray_slurm


class Scontrol:
    """Answers of `scontrol` as SLURM 22.05 prints them (there is no SLURM controller on this machine)."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, command):
        self.calls.append(list(command))
        if command[:3] == ["scontrol", "show", "job"]:
            return "JobId=42 JobName=memtrain UserId=me(1) NumNodes=3 NodeList=gpu[01-02],big7 BatchHost=gpu01\n"
        if command[:3] == ["scontrol", "show", "hostnames"]:
            return "gpu01\ngpu02\nbig7\n"
        raise AssertionError(command)


def test_the_job_nodes_come_from_scontrol_because_snakemake_strips_the_nodelist(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    scontrol = Scontrol()
    assert ray_slurm.this_job(run=scontrol) == ("42", ["gpu01", "gpu02", "big7"])
    assert scontrol.calls == [
        ["scontrol", "show", "job", "--oneliner", "42"],
        ["scontrol", "show", "hostnames", "gpu[01-02],big7"],
    ]
    monkeypatch.delenv("SLURM_JOB_ID")
    with pytest.raises(RuntimeError, match="SLURM_JOB_ID"):
        ray_slurm.this_job(run=scontrol)
    assert ray_slurm.this_job("7", "n1", run=lambda c: "n1\n") == ("7", ["n1"])


def test_head_runs_here_and_every_other_node_gets_one_worker():
    plan = ray_slurm.layout("42", ["gpu01", "gpu02", "big7"], "gpu02.cluster.local", "10.0.0.2", 6379, 8)
    assert (plan.head, plan.workers, plan.address, plan.nodes) == ("gpu02", ("gpu01", "big7"), "10.0.0.2:6379", 3)
    head = ray_slurm.head_command(plan)
    assert (
        head[:4] == [ray_slurm.RAY, "start", "--head", "--block"] and "--num-gpus=8" in head and "--port=6379" in head
    )
    workers = ray_slurm.workers_command(plan)
    assert workers[:4] == ["srun", "--jobid=42", "--overlap", "--nodes=2"]
    assert "--ntasks-per-node=1" in workers and "--nodelist=gpu01,big7" in workers
    assert (
        workers[workers.index(ray_slurm.RAY) :][:3] == [ray_slurm.RAY, "start", "--block"]
        and "--address=10.0.0.2:6379" in workers
    )
    with pytest.raises(RuntimeError, match="not among"):
        ray_slurm.layout("42", ["gpu01"], "login1", "10.0.0.9", 6379, 8)


RAY_JOB = """
import json, sys
from memtrain.distributed import ray_slurm

job_id, nodes = ray_slurm.this_job()
host, address = ray_slurm.local_address()
plan = ray_slurm.layout(job_id, nodes, host, address, int(sys.argv[1]), gpus_per_node=0)
with ray_slurm.ray_cluster(plan, timeout=120, log_dir=sys.argv[2], num_cpus=1) as ray:
    cpus = ray_slurm.wait_for_resources(ray, {"CPU": 1}, timeout=10)["CPU"]
print(json.dumps({"job": job_id, "nodes": nodes, "head": plan.head, "cpus": cpus, "address": ray.address,
                  "auth": ray.env["RAY_AUTH_MODE"]}))
"""


@pytest.mark.slow
def test_ray_starts_on_the_nodes_of_a_live_slurm_job_and_stops(slurm_cluster, tmp_path):
    """Inside a real SLURM job (the local test cluster): the job finds its nodes through scontrol, starts the
    Ray head on itself, sees it register, and leaves nothing running (a second node's srun worker needs a
    real multi-node cluster)."""
    import json
    import socket
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script, out = tmp_path / "ray_job.py", tmp_path / "ray_job.out"
    script.write_text(RAY_JOB)
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-p",
            "cpu",
            "-c",
            "1",
            "--mem",
            "3000",
            "-o",
            str(out),
            "--wrap",
            f"{sys.executable} {script} {port} {tmp_path}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stderr
    # polled here rather than with `sbatch --wait`, whose own polling backs off to 2, 4, 8, 16 s... between checks
    deadline, job_id = time.monotonic() + 180, submitted.stdout.strip()
    while (state := slurm_job(job_id)["JobState"]) in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline, f"the SLURM job is still {state} after 180 s"
        time.sleep(0.5)
    assert state == "COMPLETED", out.read_text()[-3000:] if out.exists() else state
    report = json.loads(out.read_text().strip().splitlines()[-1])
    assert report["job"] == submitted.stdout.strip() and report["nodes"] == [socket.gethostname().split(".")[0]]
    assert report["head"] == report["nodes"][0] and report["cpus"] == 1 and report["auth"] == "token"
    host, port = report["address"].rsplit(":", 1)
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0  # the head went with the job
