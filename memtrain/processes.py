"""Child processes the stages start and must never leave behind (the search and generation servers, Ray's daemons,
MLflow's UI)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

Ready = TypeVar("Ready")


class NotReady(Exception):
    """Raised by a readiness check that can say why the server is not ready yet (its /health refused, say): the
    last reason goes into wait_ready's timeout error, where a bare None would leave only the log to go on."""


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


def http_ready(url: str, timeout: float) -> bool:
    """True once a GET of `url` succeeds (a server's health route); NotReady with the error until then."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except OSError as failure:  # refused, timed out, or an HTTP error status (urllib's HTTPError is an OSError)
        raise NotReady(f"{url}: {failure}") from failure


def package_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this environment) with the package on PYTHONPATH, so that `python -m memtrain...` imports it
    from any cwd."""
    import memtrain

    env = dict(os.environ if base is None else base)
    package_root = str(Path(memtrain.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def running(
    command: Sequence[str], log: str | os.PathLike, grace: float, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """`command` as a child for the length of the block, its output appended to `log`, in `env` (default: this
    environment) with the package importable (package_env); stopped however the block ends: SIGTERM, then SIGKILL
    after `grace` seconds."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, env=package_env(env)
        )
    try:
        yield process
    finally:
        stop(process, grace)


def wait_ready(
    ready: Callable[[], Ready | None],
    process: subprocess.Popen,
    name: str,
    log: str | os.PathLike,
    timeout: float,
    error: type[Exception] = RuntimeError,
    poll: float = 0.2,
) -> Ready:
    """What `ready()` returns once it is not None (a server's address, True once /health passes), polled every
    `poll` seconds; `error`, naming `name` and the end of its log, as soon as the process exits or after `timeout`
    seconds, instead of waiting on a server that will never answer. `ready()` may raise NotReady to say why not:
    the timeout error then ends with the last reason."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise error(
                f"{name} exited with code {process.returncode} before it was ready; its log ({log}) ends:\n"
                f"{log_tail(log, 40)}"
            )
        try:
            found = ready()
        except NotReady as reason:
            found, last = None, reason
        if found is not None:
            return found
        time.sleep(poll)
    why = f"\nthe last check: {last}" if last is not None else ""
    raise error(f"{name} not ready after {timeout:.0f} s; its log ({log}) ends:\n{log_tail(log, 40)}{why}")
