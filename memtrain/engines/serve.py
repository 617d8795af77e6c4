"""A generation server for the length of a stage: started for the job's model, health-checked, always stopped.

`eval.engine` picks the server from SERVERS: `vllm` runs `vllm serve` on the job's GPUs (paper scale),
`server` runs our Hugging Face engine behind the same API (memtrain.engines.http_server; CPU, or a GPU
without vLLM). Both listen on loopback only, on a port chosen here, and the stage talks to them
through CompletionsEngine. As with the retrieval server, a server that dies before it is healthy or
while it is used fails the stage with its exit code and log tail, and it never outlives the stage.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memtrain.engines.completions import CompletionsEngine, EngineError
from memtrain.engines.http_server import LOOPBACK
from memtrain.processes import free_loopback_port, http_ready, log_tail, running, wait_ready


@dataclass(frozen=True)
class ServerSpec:
    """What a server command needs to know about the job."""

    model: str  # folder of the saved policy
    port: int
    device: str
    dtype: str
    linear: str  # rl.engine_linear
    threads: int | None
    settings: Mapping[str, Any]  # the config's eval.server section


def _hf_command(spec: ServerSpec) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "memtrain.engines.http_server",
        "--model",
        spec.model,
        "--port",
        str(spec.port),
        "--device",
        spec.device,
        "--dtype",
        spec.dtype,
        "--max-batch-size",
        str(spec.settings["max_batch_size"]),
        "--linear",
        spec.linear,
    ]
    return command + (["--threads", str(spec.threads)] if spec.threads else [])


def _vllm_command(spec: ServerSpec) -> list[str]:
    executable = shutil.which("vllm")
    if executable is None:
        raise EngineError(
            "eval.engine: vllm needs the `vllm` command, which is not installed here "
            "(make setup-gpu installs it; eval.engine: server decodes with the Hugging Face engine)"
        )
    # --generation-config vllm: the request's sampling alone decides, not defaults (top_k, repetition
    # penalty) that vLLM would otherwise read from the model's generation_config.json.
    return [
        executable,
        "serve",
        spec.model,
        "--host",
        LOOPBACK,
        "--port",
        str(spec.port),
        "--served-model-name",
        spec.model,
        "--dtype",
        spec.dtype,
        "--generation-config",
        "vllm",
        "--tensor-parallel-size",
        str(spec.settings["tensor_parallel_size"]),
        *map(str, spec.settings["vllm_args"]),
    ]


SERVERS: dict[str, Callable[[ServerSpec], list[str]]] = {"server": _hf_command, "vllm": _vllm_command}


@contextlib.contextmanager
def serve(
    kind: str,
    model: str | os.PathLike,
    settings: Mapping[str, Any],
    *,
    device: str,
    dtype: str,
    seed: int,
    linear: str = "auto",
    threads: int | None = None,
    log_path: str | os.PathLike | None = None,
) -> Iterator[CompletionsEngine]:
    """A CompletionsEngine on a fresh `kind` server for `model`; the server is stopped however the block ends."""
    if kind not in SERVERS:
        raise ValueError(f"unknown generation server {kind!r} (known: {', '.join(SERVERS)})")
    workdir = Path(tempfile.mkdtemp(prefix="memtrain-generation-"))
    log = Path(log_path) if log_path else workdir / "server.log"
    spec = ServerSpec(str(model), free_loopback_port(), device, dtype, linear, threads, settings)
    command = SERVERS[kind](spec)
    try:
        with running(command, log, grace=30.0) as process:
            engine = CompletionsEngine(
                f"http://{LOOPBACK}:{spec.port}",
                spec.model,
                torch.Generator().manual_seed(seed),
                timeout=settings["request_timeout"],
                describe_failure=lambda: _failure(process, log),
            )
            wait_ready(
                lambda: http_ready(f"{engine.url}/health", 5.0),
                process,
                "generation server",
                log,
                settings["startup_timeout"],
                EngineError,
            )
            yield engine
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _failure(process: subprocess.Popen, log: Path) -> str:
    """The server's side of a failure: whether it is still running, and the end of its log."""
    # A server that just crashed may close its socket a moment before it exits: give it that moment.
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=2.0)
    state = "" if process.poll() is None else f"; the server exited with code {process.returncode}"
    return f"{state}; its log ({log}) ends:\n{log_tail(log)}"
