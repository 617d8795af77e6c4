"""`python -m memtrain <rule> --threads N --settings JSON --files JSON`: the one entry point of every Snakemake rule.

Each stage is named exactly as the rule that runs it, and lives in the module named after that rule's file
(rules/data.smk -> memtrain.stages.data). The registry below is built from the families explicitly, so what runs
does not depend on what happened to be imported. A stage reads its job (memtrain.stages.job), writes its outputs
atomically and records itself as an MLflow child run of the snakemake invocation: its config slice as params,
its figures as metrics, a summary of its outputs as artifacts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from memtrain.errors import InputError
from memtrain.stages import ablations, data, downstream, report
from memtrain.stages import memtrain as memtrain_training
from memtrain.stages.job import Job

Stage = Callable[[Job, object], None]

STAGES: dict[str, Stage] = {
    **data.STAGES,
    **memtrain_training.STAGES,
    **downstream.STAGES,
    **ablations.STAGES,
    **report.STAGES,
}


def run(job: Job) -> None:
    """The job's stage inside its MLflow run; downloads stay off unless the job's config allows them."""
    if not job.config.get("allow_downloads", False):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from memtrain import tracking

    with tracking.stage_run(
        job.rule, job.config, job.results_dir, job.experiment, rule=job.rule, wildcards=job.wildcards
    ) as mlflow_run:
        STAGES[job.rule](job, mlflow_run)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m memtrain", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="rule", required=True, metavar="<rule>")
    for name, function in STAGES.items():
        command = commands.add_parser(name, help=(function.__doc__ or "").split("\n")[0] or None)
        command.add_argument("--settings", required=True, help="JSON of the job's config slice, params and wildcards")
        command.add_argument("--files", required=True, help="JSON of the job's named input and output files")
        command.add_argument("--threads", type=int, default=1)
    return root


def main(argv: list[str] | None = None) -> int:
    """Run one rule's stage; a bad input (a file, record or config key at fault) exits with 2 and says which."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plan"]:  # a planning tool, not a stage: no job, no MLflow run
        from memtrain.plan.command import main as plan

        return plan(argv[1:])
    args = parser().parse_args(argv)
    try:
        run(Job.from_json(args.rule, args.settings, args.files, threads=args.threads))
    except InputError as error:
        print(f"memtrain {args.rule}: {error}", file=sys.stderr)
        return 2
    return 0
