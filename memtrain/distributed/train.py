"""A training stage on the veRL back-end: files veRL reads, Ray over the SLURM job, veRL, our output folder.

Called by the MemTrain and post-training stages when `trainer.backend` is `verl`. Everything veRL
needs lands in the run's checkpoints folder (its config, the agent-loop registry, the settings our
agent loops read, the items as a veRL dataset), so a pre-empted job that Snakemake restarts finds
veRL's own checkpoints beside them and resumes (veRL's resume_mode auto). The output is the same
Hugging Face folder the local trainer writes: weights, tokenizer, training.json.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from memtrain.distributed import data, export, ray_slurm, verl_config
from memtrain.errors import InputError
from memtrain.io import atomic_path, write_json
from memtrain.rl import kinds
from memtrain.tracking import config_hash

LATEST = "latest_checkpointed_iteration.txt"  # veRL's marker of its newest complete checkpoint


def agent_settings(
    params: Mapping[str, Any],
    kind: str,
    schedule: Mapping[str, Any],
    variant: str | None = None,
    mask_token: str | None = None,
    retriever_url: str | None = None,
) -> dict[str, Any]:
    """What our agent loops read: the kind's run settings, and for a searching kind where its server is."""
    settings = kinds.run_settings(params, kind, schedule, variant, mask_token)
    if kinds.get(kind).uses_search:
        settings.update(retriever=params["retriever"], retriever_url=retriever_url)
    return settings


RUN_HASH = "run_config_hash.txt"  # the settings the checkpoints beside it were trained under


def run_hash(params: Mapping[str, Any], kind: str, schedule: Mapping[str, Any], variant: str | None) -> str:
    """What shapes a veRL run's checkpoints: as the local trainer's checkpoint key, plus the cluster shape
    (veRL's FSDP checkpoints are sharded per GPU)."""
    return config_hash(
        {
            "kind": kind,
            "variant": variant,
            "rl": params["rl"],
            "agent": params["agent"],
            "schedule": dict(schedule),
            "verl": {k: v for k, v in params["trainer"]["verl"].items() if k not in ("loggers", "ray_start_timeout")},
        }
    )


def claim_checkpoints(root: Path, key: str) -> None:
    """Refuse to resume checkpoints written under other settings (veRL's resume_mode auto would take them)."""
    marker = root / RUN_HASH
    if latest_step(root) is not None and marker.exists() and marker.read_text().strip() != key:
        raise InputError(
            "these checkpoints were written under other settings (rl, agent, the training's section or "
            "trainer.verl): delete the folder to train again, or restore the settings to resume",
            file=root,
        )
    marker.write_text(key + "\n")


def prepare(
    params: Mapping[str, Any],
    kind: str,
    schedule: Mapping[str, Any],
    items: Sequence[Any],
    policy: str,
    checkpoints: str | os.PathLike,
    experiment: str,
    variant: str | None = None,
    mask_token: str | None = None,
    retriever_url: str | None = None,
    resume_from: str | os.PathLike | None = None,
    stop_after: int | None = None,
    threads: int = 1,
) -> Path:
    """Write the dataset, the agent settings and registry, and the validated veRL config; the config's path.

    `stop_after` ends veRL's run at that step (a pre-empted job, in tests) without changing the settings the
    checkpoints are keyed by, so that the next run resumes them.
    """
    from memtrain.distributed.agent_loops import loop_registry

    root = Path(checkpoints).resolve()
    root.mkdir(parents=True, exist_ok=True)
    claim_checkpoints(root, run_hash(params, kind, schedule, variant))
    paths = verl_config.Paths(
        policy=str(Path(policy).resolve()),
        train_file=str(root / "train.parquet"),
        checkpoints=str(root),
        agent_loops=str(root / "agent_loops.yaml"),
        resume_from=str(Path(resume_from).resolve()) if resume_from else None,
    )
    settings_path = root / "agent_settings.json"
    write_json(agent_settings(params, kind, schedule, variant, mask_token, retriever_url), settings_path)
    with atomic_path(paths.agent_loops) as tmp:
        tmp.write_text(yaml.safe_dump(loop_registry(settings_path), sort_keys=False))
    count = data.write(kind, items, paths.train_file)
    steps = schedule["steps"] if stop_after is None else min(stop_after, schedule["steps"])
    config = verl_config.build(params, kind, {**schedule, "steps": steps}, paths, count, experiment, threads)
    return verl_config.save(config, root / "verl.yaml")


def latest_step(checkpoints: str | os.PathLike) -> int | None:
    """The step of veRL's newest complete checkpoint in `checkpoints`, or None before the first one."""
    marker = Path(checkpoints) / LATEST
    if not marker.exists():
        return None
    try:
        return int(marker.read_text().strip())
    except (OSError, ValueError) as error:
        raise InputError(f"veRL's checkpoint marker is unreadable: {error}", file=marker) from error


def finished_checkpoint(checkpoints: str | os.PathLike, steps: int) -> Path:
    """The global_step folder of a run that has done all its `steps` (what a continued run starts from)."""
    step = latest_step(checkpoints)
    if step != steps:
        found = "none" if step is None else f"step {step}"
        raise InputError(
            f"needs veRL's checkpoint of step {steps}; the newest is {found}", file=Path(checkpoints) / LATEST
        )
    return Path(checkpoints) / f"global_step_{steps}"


def _run_trainer(command: Sequence[str], env: Mapping[str, str], log_dir: str | os.PathLike) -> None:
    """veRL's trainer in its own process; a failure names the command and where its output went."""
    done = subprocess.run(list(command), env=dict(env), check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"veRL's trainer failed (exit {done.returncode}): {' '.join(command)}; its output is "
            f"in this job's log, Ray's under {log_dir}"
        )


def run(
    params: Mapping[str, Any],
    kind: str,
    schedule: Mapping[str, Any],
    items: Sequence[Any],
    policy: str,
    checkpoints: str | os.PathLike,
    output: str | os.PathLike,
    experiment: str,
    log_dir: str | os.PathLike,
    variant: str | None = None,
    mask_token: str | None = None,
    retriever_url: str | None = None,
    continue_from: str | os.PathLike | None = None,
    exports: Mapping[int, str | os.PathLike] | None = None,
    tracking_uri: str | None = None,
    stop_after: int | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """The whole training on the SLURM job's nodes (or this machine); its summary, as the local trainer's.

    `continue_from` is a finished run's global_step folder that a run with no checkpoint of its own
    starts from, optimizer, schedule and data order included (post-training scaling); `exports` maps
    steps to folders that receive the policy of that step, which the run must checkpoint. veRL's MLflow
    logger writes its step metrics to `tracking_uri`, the pipeline's own store. `threads` are the job's
    cores, which each veRL process computes with on the CPU platform.
    """
    cluster = params["trainer"]["verl"]
    started = time.perf_counter()
    resume_from = continue_from if latest_step(checkpoints) is None else None
    config_path = prepare(
        params,
        kind,
        schedule,
        items,
        policy,
        checkpoints,
        experiment,
        variant,
        mask_token,
        retriever_url,
        resume_from,
        stop_after,
        threads,
    )
    env = {
        **os.environ,
        **verl_config.environment(cluster, threads),
        **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}),
    }
    command = [sys.executable, "-m", "memtrain.distributed", str(config_path)]
    if "SLURM_JOB_ID" in os.environ and cluster["device"] != "cpu":  # Ray over the job's nodes; veRL's driver joins it
        job_id, nodes = ray_slurm.this_job()
        if len(nodes) != cluster["nodes"]:
            raise InputError(
                f"the job has {len(nodes)} nodes, trainer.verl.nodes says {cluster['nodes']}",
                field="trainer.verl.nodes",
            )
        host, address = ray_slurm.local_address()
        plan = ray_slurm.layout(job_id, nodes, host, address, cluster["ray_port"], cluster["gpus_per_node"])
        with ray_slurm.ray_cluster(plan, cluster["ray_start_timeout"], log_dir) as ray:
            _run_trainer(command, {**env, **ray.driver_env()}, log_dir)
    else:  # one machine: veRL starts a Ray instance of its own (ray_kwargs) and stops it at the end
        if cluster["nodes"] != 1:
            raise InputError(
                f"trainer.verl.nodes is {cluster['nodes']}: several nodes need a SLURM job", field="trainer.verl.nodes"
            )
        _run_trainer(command, env, log_dir)
    reached = latest_step(checkpoints) or 0
    summary = {
        "steps": reached,
        "backend": "verl",
        "nodes": cluster["nodes"],
        "gpus": cluster["nodes"] * cluster["gpus_per_node"],
        "device": cluster["device"],
        "seconds_this_run": time.perf_counter() - started,
        "finished": reached >= schedule["steps"],
    }
    for step, folder in sorted((exports or {}).items()):
        if step <= reached:
            export.export_policy(
                Path(checkpoints) / f"global_step_{step}" / "actor",
                folder,
                {"step": step, "backend": "verl"},
                params["rl"]["dtype"],
            )
    if summary["finished"]:
        export.export_policy(
            finished_checkpoint(checkpoints, schedule["steps"]) / "actor", output, summary, params["rl"]["dtype"]
        )
    return summary
