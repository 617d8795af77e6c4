"""Child processes the stages start and must never leave behind (the search and generation servers, Ray's daemons,
MLflow's UI)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path


def stop(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM, and SIGKILL if the process is still there after `grace` seconds; reaped either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_loopback_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now, for a server this process is about to start."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def log_tail(path: str | os.PathLike, lines: int = 30) -> str:
    """The last `lines` of a child's log, for an error that says why it failed."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
