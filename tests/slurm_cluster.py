"""A real single-node SLURM cluster for the tests: munge, slurmctld and slurmd on this machine.

Debian's slurm-wlm (installed by .ci/install-slurm) reads /etc/slurm/slurm.conf: inside a job the
snakemake jobstep plugin drops SLURM_CONF, so the file has to sit at the default path. The cluster
therefore needs root, and it refuses to touch a slurm.conf it did not write (a real installation).
Every daemon is stopped by PID, and the files it wrote are removed, when the cluster stops.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = Path("/etc/slurm/gres.conf")
MARKER = "# written by memtrain's tests (tests/slurm_cluster.py)"
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")
BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")
PARTITIONS = ("cpu", "gpu")


def unavailable_reason() -> str | None:
    """Why a local cluster cannot be started here, or None when it can."""
    missing = [name for name in BINARIES if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing): run .ci/install-slurm as root"
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (its daemons run as root and its config is /etc/slurm/slurm.conf)"
    if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text():
        return f"{SLURM_CONF} belongs to another SLURM installation; the tests do not overwrite it"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def slurm_job(job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (the test cluster keeps finished jobs for an hour)."""
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True)
    return dict(item.split("=", 1) for item in shown.stdout.split() if "=" in item)


def _memory_mb() -> int:
    """Most of the machine's memory, leaving room for the daemons and snakemake itself."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 * 4 // 5
    raise RuntimeError("no MemTotal in /proc/meminfo")


# Named after this host, as a cluster's nodes are: code in a job looks itself up.
NODE = socket.gethostname().split(".")[0]


def slurm_conf(state: Path, cpus: int, memory_mb: int) -> str:
    """One node (this host, at 127.0.0.1) with every core and a fake GPU, in a CPU and a GPU partition.

    No accounting daemon: squeue and scontrol are the only record of a job, and MinJobAge keeps
    finished jobs in them for an hour, for snakemake's status checks and for the tests to inspect.
    """
    return "\n".join(
        [
            MARKER,
            "ClusterName=memtrain-test",
            "SlurmctldHost=localhost",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "MinJobAge=3600",
            "ReturnToService=2",
            f"StateSaveLocation={state / 'ctld'}",
            f"SlurmdSpoolDir={state / 'spool'}",
            f"SlurmctldPidFile={state / 'slurmctld.pid'}",
            f"SlurmdPidFile={state / 'slurmd.pid'}",
            f"SlurmctldLogFile={state / 'slurmctld.log'}",
            f"SlurmdLogFile={state / 'slurmd.log'}",
            "GresTypes=gpu",
            f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:fake:1 State=UNKNOWN",
            f"PartitionName=cpu Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName=gpu Nodes={NODE} MaxTime=INFINITE State=UP",
            "",
        ]
    )


class LocalSlurm:
    """Start with `start()`, always `stop()`; `state` holds the daemons' state, pids and logs."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.pids: dict[str, int] = {}

    def start(self, timeout: float = 30) -> None:
        """Bring the cluster up, or leave nothing running if any part of it fails to start."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        for folder in ("ctld", "spool"):
            (self.state / folder).mkdir(parents=True, exist_ok=True)
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(slurm_conf(self.state, os.cpu_count() or 1, _memory_mb()))
        GRES_CONF.write_text(f"{MARKER}\nNodeName={NODE} Name=gpu Type=fake File=/dev/null\n")
        self._start_munge()
        subprocess.run([_binary("slurmctld")], check=True)
        subprocess.run([_binary("slurmd"), "-N", NODE], check=True)
        for name in ("slurmctld", "slurmd"):
            self.pids[name] = self._read_pid(self.state / f"{name}.pid", timeout)
        self._wait_until_idle(timeout)

    def _start_munge(self) -> None:
        """munged must run as the munge user; an already running munged (a CI image's) is used as it is."""
        if subprocess.run(["munge", "-n"], capture_output=True, check=False).returncode == 0:
            return
        if not MUNGE_KEY.exists():
            subprocess.run(["mungekey", "--create", "--keyfile", str(MUNGE_KEY)], check=True)
            shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_RUN.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN, "munge", "munge")
        pid_file = MUNGE_RUN / "munged.pid"
        subprocess.run(["runuser", "-u", "munge", "--", _binary("munged"), "--pid-file", str(pid_file)], check=True)
        self.pids["munged"] = self._read_pid(pid_file, 10)

    @staticmethod
    def _read_pid(path: Path, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().strip():
                return int(path.read_text().split()[0])
            time.sleep(0.2)
        raise RuntimeError(f"no pid file {path} after {timeout} s")

    def _wait_until_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False
            ).stdout.split()
            if states and all(state == "idle" for state in states):
                return
            time.sleep(0.5)
        log = (self.state / "slurmctld.log").read_text()[-2000:] if (self.state / "slurmctld.log").exists() else ""
        raise RuntimeError(f"the SLURM node did not become idle in {timeout} s:\n{log}")

    def stop(self) -> None:
        subprocess.run(["scontrol", "shutdown"], capture_output=True, check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            if name in self.pids:
                _terminate(self.pids.pop(name))
        for path in (SLURM_CONF, GRES_CONF):
            if path.exists() and MARKER in path.read_text():
                path.unlink()


def _terminate(pid: int, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process outlives `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
