"""A Ray cluster over the nodes of the running SLURM job, for the length of one training.

Inside a Snakemake job the SLURM jobstep plugin strips every SLURM_* variable except the job's
identity (SLURM_JOB_ID and a few more), and runs the job as a one-task step on the allocation's
first node. So the node list is asked of `scontrol` (or given explicitly), the head starts here,
and the other nodes join through `srun --jobid ... --overlap`, one `ray start --block` per node,
sharing the resources the job step already holds. Command builders are pure functions; the
context manager starts, waits for every GPU to register, and stops what it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from memtrain.processes import stop

# The `ray` of this environment, also on the other nodes (same software path on a cluster's shared file system):
# a Snakemake job's PATH need not contain the environment's bin folder.
RAY = os.path.join(os.path.dirname(sys.executable), "ray")

Runner = Callable[[Sequence[str]], str]  # runs a command, returns its stdout (raises on failure)


def run_command(command: Sequence[str]) -> str:
    return subprocess.run(list(command), check=True, capture_output=True, text=True).stdout


def hostnames(nodelist: str, run: Runner = run_command) -> list[str]:
    """A SLURM node list ('gpu[01-03],big7') expanded to host names, as SLURM itself expands it."""
    return [line.strip() for line in run(["scontrol", "show", "hostnames", nodelist]).splitlines() if line.strip()]


def job_nodelist(job_id: str, run: Runner = run_command) -> str:
    """The NodeList of a job, from `scontrol show job` (SLURM_JOB_NODELIST does not reach Snakemake jobs)."""
    found = re.search(r"(?:^|\s)NodeList=(\S+)", run(["scontrol", "show", "job", "--oneliner", job_id]))
    if found is None or found.group(1) in ("", "(null)"):
        raise RuntimeError(f"scontrol names no nodes for job {job_id}: is it running?")
    return found.group(1)


@dataclass(frozen=True)
class Layout:
    """Who runs what: the head on the node this process runs on, one worker per other node."""

    job_id: str
    head: str
    workers: tuple[str, ...]
    head_ip: str
    port: int
    gpus_per_node: int

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.port}"

    @property
    def nodes(self) -> int:
        return 1 + len(self.workers)


def layout(job_id: str, nodes: Sequence[str], this_host: str, head_ip: str, port: int, gpus_per_node: int) -> Layout:
    """The head must be the node this process runs on: the job step runs it on the allocation's first node."""
    short = this_host.split(".")[0]
    matches = [node for node in nodes if node.split(".")[0] == short]
    if not matches:
        raise RuntimeError(f"this host {this_host} is not among the job's nodes {list(nodes)}")
    return Layout(job_id, matches[0], tuple(node for node in nodes if node != matches[0]), head_ip, port, gpus_per_node)


def head_command(plan: Layout, num_cpus: int | None = None) -> list[str]:
    command = [
        RAY,
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        f"--node-ip-address={plan.head_ip}",
        f"--port={plan.port}",
        f"--num-gpus={plan.gpus_per_node}",
        "--include-dashboard=false",
    ]
    return command + ([f"--num-cpus={num_cpus}"] if num_cpus is not None else [])


def workers_command(plan: Layout) -> list[str]:
    """One srun step over the other nodes, one task each, that joins them to the head and stays up."""
    count = str(len(plan.workers))
    return [
        "srun",
        f"--jobid={plan.job_id}",
        "--overlap",
        f"--nodes={count}",
        f"--ntasks={count}",
        "--ntasks-per-node=1",
        f"--nodelist={','.join(plan.workers)}",
        f"--gpus-per-node={plan.gpus_per_node}",
        "--kill-on-bad-exit=1",
        RAY,
        "start",
        "--block",
        "--disable-usage-stats",
        f"--address={plan.address}",
        f"--num-gpus={plan.gpus_per_node}",
    ]


@dataclass(frozen=True)
class Cluster:
    """A running Ray cluster: its address and what a driver's environment needs to join it."""

    address: str
    env: Mapping[str, str]

    def driver_env(self) -> dict[str, str]:
        return {**os.environ, **self.env, "RAY_ADDRESS": self.address}


def job_token() -> dict[str, str]:
    """Ray's token authentication with a fresh secret for this job.

    Ray 2.60 turns token auth on by itself whenever ~/.ray/auth_token exists, and a head and a driver
    that disagree about it never connect. A token of the job's own, given explicitly to the head, the
    workers (srun passes the environment on) and every driver, makes them agree and keeps the cluster
    closed to other users of the nodes.
    """
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


_RESOURCES = (
    "import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
    "print(json.dumps(ray.cluster_resources()))"
)


def cluster_resources(cluster: Cluster, timeout: float = 60.0) -> dict[str, float]:
    """What the cluster offers now ({} while it cannot be reached), asked from a child process: Ray keeps its
    authentication state per process, fixed at first use, so this process stays out of it."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _RESOURCES, cluster.address],
            env=cluster.driver_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:  # ray.init keeps retrying an address where nothing answers yet
        return {}
    return json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else {}


def wait_for_resources(
    cluster: Cluster,
    needed: Mapping[str, float],
    timeout: float,
    poll: float = 2.0,
    alive: Callable[[], bool] = lambda: True,
) -> dict[str, float]:
    """Block until the cluster offers `needed` (e.g. {'GPU': nodes x gpus}); its resources then."""
    deadline = time.monotonic() + timeout
    last: dict[str, float] = {}
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(
                f"a Ray process exited before the cluster at {cluster.address} was complete (had {last})"
            )
        last = cluster_resources(cluster)
        if all(last.get(name, 0) >= amount for name, amount in needed.items()):
            return last
        time.sleep(poll)
    raise TimeoutError(
        f"the Ray cluster at {cluster.address} offers {last} after {timeout:.0f} s, needs {dict(needed)}"
    )


@contextlib.contextmanager
def ray_cluster(
    plan: Layout, timeout: float, log_dir: str | os.PathLike, num_cpus: int | None = None
) -> Iterator[Cluster]:
    """Start head and workers, wait for all GPUs (or the head's CPU when no GPU is asked), yield the cluster."""
    os.makedirs(log_dir, exist_ok=True)
    cluster = Cluster(plan.address, job_token())
    processes: list[subprocess.Popen] = []
    with contextlib.ExitStack() as stack:  # on the way out: workers, then head (`ray start --block` stops its
        for name, command in [("head", head_command(plan, num_cpus))] + (  # own daemons), each before its log
            [("workers", workers_command(plan))] if plan.workers else []
        ):
            log = stack.enter_context(open(os.path.join(log_dir, f"ray_{name}.log"), "a"))
            processes.append(
                subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **cluster.env})
            )
            stack.callback(stop, processes[-1], grace=30.0)
        needed = {"GPU": plan.nodes * plan.gpus_per_node} if plan.gpus_per_node else {"CPU": 1}
        wait_for_resources(cluster, needed, timeout, alive=lambda: all(p.poll() is None for p in processes))
        yield cluster


def this_job(
    job_id: str | None = None, nodelist: str | None = None, run: Runner = run_command
) -> tuple[str, list[str]]:
    """The running job's id and host names: given, or from SLURM_JOB_ID (kept by the jobstep plugin) and scontrol."""
    job_id = job_id or os.environ.get("SLURM_JOB_ID")
    if not job_id:
        raise RuntimeError("trainer.backend verl runs inside a SLURM job: SLURM_JOB_ID is not set")
    return job_id, hostnames(nodelist or job_nodelist(job_id, run), run)


def local_address() -> tuple[str, str]:
    """This host's name and the address other nodes reach it at: that of the interface that routes outwards,
    as Ray picks it, since the host name often resolves to a loopback address (127.0.1.1 on Debian)."""
    host = socket.gethostname()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))  # a UDP connect sends nothing; it only picks the interface
            return host, probe.getsockname()[0]
    except OSError:  # no route at all: a single machine
        return host, socket.gethostbyname(host)
