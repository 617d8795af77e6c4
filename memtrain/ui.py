"""`python -m memtrain.ui` (`make ui`): MLflow's UI on the pipeline's store, at the address that opens its runs table.

MLflow 3.17's UI starts every browser in its GenAI view (traces, an empty overview: nothing of a training
pipeline) until the user picks "Model training" in the sidebar; an address with `workflowType=machine_learning`
picks it. tracking.py also tags the experiment `mlflow.experimentKind: custom_model_development`, which is what
MLflow's experiment-kind logic reads where the sidebar switch is off.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from memtrain import tracking
from memtrain.processes import free_loopback_port, http_ready, running, wait_ready


def runs_page(base_url: str, experiment_id: str) -> str:
    return f"{base_url}/#/experiments/{experiment_id}?workflowType=machine_learning"


# MLflow 3.17's server also starts a job runner with seven huey consumers for GenAI jobs (scorers, trace roll-ups)
# that a training pipeline never submits: 8 more Python processes, ~1.5 GB, and 27 instead of 5 CPU-seconds before
# the UI answers (measured here). MLflow's own switch turns it off, unless the user's environment sets it; one web
# worker serves one person's browser.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _command(results_dir: str | os.PathLike, host: str, port: int) -> list[str]:
    store = tracking.tracking_uri(results_dir)
    address = ["--host", host, "--port", str(port), "--workers", "1"]
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, *address]


def _environment() -> dict[str, str]:
    return {**SERVER_ENV, **os.environ}


@contextlib.contextmanager
def serving(results_dir: str | os.PathLike, log: Path, startup_timeout: float = 120.0) -> Iterator[str]:
    """MLflow's UI on a free loopback port for the length of the block (what tests/test_dag.py looks at)."""
    port = free_loopback_port()
    base = f"http://127.0.0.1:{port}"
    with running(_command(results_dir, "127.0.0.1", port), log, grace=10.0, env=_environment()) as process:
        wait_ready(lambda: http_ready(f"{base}/health", 2.0), process, "mlflow server", log, startup_timeout, poll=0.5)
        yield base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memtrain.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--experiment", default="memtrain", help="tracking.experiment of the config")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    from mlflow import MlflowClient

    experiment = MlflowClient(tracking.tracking_uri(args.results_dir)).get_experiment_by_name(args.experiment)
    if experiment is None:
        print(
            f"no experiment {args.experiment!r} in {Path(args.results_dir) / 'mlflow.db'} yet: run the pipeline first"
        )
    else:
        print(f"runs of {args.experiment!r}: {runs_page(f'http://{args.host}:{args.port}', experiment.experiment_id)}")
    return subprocess.call(_command(args.results_dir, args.host, args.port), env=_environment())


if __name__ == "__main__":
    raise SystemExit(main())
