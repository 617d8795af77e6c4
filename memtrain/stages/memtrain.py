"""Stages of the MemTrain rules (rules/memtrain.smk, paper sections 3-4.1): the base policies, then GRPO per
backbone and variant (full, e2e, decoupled) on the local trainer or on veRL (trainer.backend)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from memtrain import rules
from memtrain.settings import RL, MemTrain, section
from memtrain.stages.job import Job, prune_checkpoints


def prepare_model(job: Job, run) -> None:
    """Materialise a base policy once as safetensors (dequantised from GGUF, or fetched when downloads are allowed)."""
    from memtrain.models import prepare_policy

    backbone, cfg = job.wildcards["backbone"], job.config
    summary = prepare_policy(
        backbone, cfg["backbones"][backbone], cfg["allow_downloads"], job.output.model, dtype=cfg["rl"]["dtype"]
    )
    run.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    run.log_dict(summary, "outputs/policy.json")


def memtrain_train(job: Job, run) -> None:
    """MemTrain GRPO of one backbone and variant: E2E masked reconstruction with (or without) IMR."""
    from memtrain.rl import kinds, launch, policies

    params, variant = job.config, job.wildcards["variant"]
    mask_token = params["data"]["documents"]["mask_token"]
    training = section(MemTrain, params)
    settings = dataclasses.asdict(training)  # what the checkpoint key hashes and veRL's agent loops read
    documents = kinds.MEMTRAIN.items(job.input.documents)
    if params["trainer"]["backend"] == "verl":
        from memtrain.distributed import train as distributed
        from memtrain.tracking import tracking_uri

        summary = distributed.run(
            params,
            "memtrain",
            settings,
            documents,
            job.input.policy,
            job.params.checkpoints,
            job.output.final,
            f"memtrain-{variant}",
            Path(job.params.checkpoints) / "logs",
            variant=variant,
            mask_token=mask_token,
            tracking_uri=tracking_uri(job.results_dir),
            threads=job.threads,
        )
        run.log_dict(summary, "outputs/training.json")
        prune_checkpoints(run, job, summary, job.output.final)
        return
    rl = RL.of(params)
    policy = policies.load(job.input.policy, rl.runtime, training.seed, threads=job.threads, kl_coef=rl.loss.kl_coef)
    task = kinds.MEMTRAIN.task(
        policy.engine,
        policy.tokenizer,
        kinds.run_settings(params, "memtrain", settings, variant, mask_token),
        training.group_size,
        None,
    )
    summary = launch.train(
        policy,
        task,
        documents,
        params,
        {**settings, "variant": variant},
        job.params.checkpoints,
        job.output.final,
        launch.step_logger(run, kinds.MEMTRAIN.logged, training.steps),
        resume=True,
        on_resume=lambda step: run.set_tags({"memtrain.resumed_from_step": step}),
    )
    run.log_dict(summary, "outputs/training.json")
    prune_checkpoints(run, job, summary, job.output.final)


STAGES = {rules.PREPARE_MODEL: prepare_model, rules.MEMTRAIN_TRAIN: memtrain_train}
