"""veRL's trainer config, generated from ours: the same GRPO settings the local trainer uses, at cluster scale.

The result is veRL's own hydra config (`ppo_trainer`) composed with our overrides and passed through
veRL's `validate_config`, so a key that veRL does not know, or a combination it rejects, fails here,
on the login node, rather than an hour into a GPU job. Only veRL's v1 trainer is targeted: it is the
one whose agent loops may return several sequences per rollout (one per memory-update turn).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memtrain.errors import InputError
from memtrain.rl import kinds
from memtrain.rl.trainer import Schedule
from memtrain.settings import RL

# Our v1 trainer (memtrain.distributed.verl_trainer): veRL's sync trainer with per-group advantages.
TRAINER_MODE = "memtrain_sync"
# The reward_extra_info field DAPO's group filter reads (memtrain.distributed.agent_loops.dapo_signal).
FILTER_METRIC = "dapo_signal"
# Our additions to veRL, loaded in every veRL process (its VERL_USE_EXTERNAL_MODULES hook): the CPU platform
# and the Hugging Face rollout replica. Importing them on a GPU node registers them and changes nothing else.
EXTERNAL_MODULES = ("memtrain.distributed.cpu_platform", "memtrain.distributed.hf_rollout")


def environment(cluster: Mapping[str, Any], threads: int = 1) -> dict[str, str]:
    """Environment of every veRL process (driver and Ray workers) for the cluster section `trainer.verl`.

    On the CPU platform each process computes with the job's `threads`: the rollout replica and the actor's
    worker take turns (hybrid mode), so both can have them all. One thread each made a SmolLM2-135M step
    1.54x slower on 2 cores (bench/verl_step.py)."""
    env = {"VERL_USE_EXTERNAL_MODULES": ",".join(EXTERNAL_MODULES), "TOKENIZERS_PARALLELISM": "false"}
    if cluster["device"] == "cpu":
        # veRL's FSDP engine registers itself for cuda and npu devices only; on the CPU platform it runs as is
        env.update(VERL_PLATFORM="cpu", VERL_ENGINE_DEVICE="cuda", OMP_NUM_THREADS=str(threads))
    return env


def _filter_settings(rl: RL, schedule: Schedule) -> dict[str, Any]:
    """DAPO group filtering with the local trainer's bounded refill (memtrain.distributed.replay)."""
    if not rl.filter.enabled:
        return {}
    return {
        "trainer.v1.sampler.custom_sampler.path": "pkg://memtrain.distributed.replay",
        "trainer.v1.sampler.custom_sampler.name": "BoundedRefillReplayBuffer",
        "+trainer.v1.sampler.sampler_kwargs.metric": FILTER_METRIC,
        "+trainer.v1.sampler.sampler_kwargs.train_batch_size": schedule.batch_size,
        "+trainer.v1.sampler.sampler_kwargs.max_refill_rounds": rl.filter.max_refill_rounds,
    }


def _device_settings(rl: RL, cluster: Mapping[str, Any], threads: int) -> dict[str, Any]:
    """Overrides that follow from the device and from our dtype rather than from the algorithm."""
    actor, ref = "actor_rollout_ref.actor", "actor_rollout_ref.ref"
    settings: dict[str, Any] = {"+ray_kwargs.ray_init.runtime_env.env_vars": environment(cluster, threads)}
    if rl.dtype == "float32":  # veRL's default computes in bf16 with fp32 master weights; ours asks for fp32
        precision = {"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}
        settings.update(
            {f"+{actor}.fsdp_config.mixed_precision": precision, f"+{ref}.fsdp_config.mixed_precision": precision}
        )
    if cluster["device"] == "cpu":
        if cluster["nodes"] != 1 or cluster["gpus_per_node"] != 1 or cluster["rollout_engine"] != "hf":
            raise InputError(
                "trainer.verl.device cpu runs one worker on one node with the hf rollout: set nodes 1, "
                "gpus_per_node 1 and rollout_engine hf",
                field="trainer.verl",
            )
        if cluster["param_offload"] or cluster["optimizer_offload"]:
            raise InputError(
                "offloading moves state off a GPU: it has no meaning with trainer.verl.device cpu",
                field="trainer.verl.param_offload",
            )
        settings.update(
            {
                "trainer.device": "cpu",
                f"{actor}.strategy": "fsdp2",
                f"{ref}.strategy": "fsdp2",
                f"{actor}.fsdp_config.use_torch_compile": False,
                f"{ref}.fsdp_config.use_torch_compile": False,
                "+actor_rollout_ref.model.override_config.attn_implementation": "sdpa",
                "transfer_queue.backend.SimpleStorage.num_data_storage_units": 1,
                "reward.num_workers": 1,
                "data.dataloader_num_workers": 0,
                # a private Ray instance, never one found through RAY_ADDRESS or a stale /tmp/ray/ray_current_cluster
                "+ray_kwargs.ray_init.address": "local",
                "ray_kwargs.ray_init.num_cpus": 16,  # Ray's scheduling units, not cores: veRL's actors each ask for some
                "+ray_kwargs.ray_init.num_gpus": 1,  # the CPU platform schedules its one worker on Ray's "GPU" resource
                "+ray_kwargs.ray_init.include_dashboard": False,
            }
        )
    return settings


@dataclass(frozen=True)
class Paths:
    """Files and folders a veRL run reads and writes."""

    policy: str  # HF folder of the initial policy
    train_file: str  # veRL-format parquet of the training items (memtrain.distributed.data)
    checkpoints: str  # veRL's default_local_dir: global_step_N/actor/... and the latest-step marker
    agent_loops: str  # YAML that registers our agent loops in every agent-loop worker
    resume_from: str | None = None  # another run's global_step_N folder to start from (post-training scaling)


def _value(value: Any) -> str:
    """A value in hydra's override grammar (strings quoted, so paths and odd characters survive)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ",".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as a hydra override")


def overrides(
    params: Mapping[str, Any],
    kind: str,
    schedule: Mapping[str, Any],
    paths: Paths,
    num_items: int,
    experiment: str,
    threads: int = 1,
) -> list[str]:
    """hydra overrides of veRL's ppo_trainer for one training.

    `params` holds the `agent`, `rl` and `trainer` config sections; `schedule` the training's own section
    (memtrain, posttrain.memagent or posttrain.mem1, with its seed). Plain `key=value` overrides, so that
    hydra rejects a key veRL's config does not have (a typo), except the few `+key` that veRL's config
    leaves out on purpose (mixed precision, Ray's resources).
    """
    rl, cluster = RL.of(params), params["trainer"]["verl"]
    loss, optim, sampling = rl.loss, rl.optimizer, rl.sampling
    # `schedule` is the training's section with its seed, as the local trainer gets it
    plan = Schedule.from_config(schedule)
    group_size = kinds.get(kind).typed(schedule).group_size
    if loss.normaliser != "mini_batch":  # veRL's KL term takes no per-row weights
        raise InputError(
            "veRL's loss divides by the mini-batch's samples: rl.loss.normaliser document runs on the "
            "local trainer only",
            field="rl.loss.normaliser",
        )
    prompt_length, response_length = kinds.get(kind).turn_lengths(params, schedule)
    if cluster["max_tokens_per_gpu"] < prompt_length + response_length:
        # veRL's dynamic batching asserts this inside a worker, after the step's rollouts have run
        raise InputError(
            f"{cluster['max_tokens_per_gpu']} tokens per micro-batch cannot hold one {kind} turn of up to "
            f"{prompt_length} prompt + {response_length} reply tokens: veRL never splits a sequence",
            field="trainer.verl.max_tokens_per_gpu",
        )
    epochs = math.ceil(plan.steps * plan.batch_size / num_items)
    actor, rollout = "actor_rollout_ref.actor", "actor_rollout_ref.rollout"
    settings = {
        "algorithm.adv_estimator": "grpo",
        "algorithm.norm_adv_by_std_in_grpo": False,  # Dr. GRPO
        "algorithm.use_kl_in_reward": False,
        "algorithm.filter_groups.enable": rl.filter.enabled,
        "algorithm.filter_groups.metric": FILTER_METRIC,
        "data.train_files": paths.train_file,
        "data.val_files": paths.train_file,
        "data.train_batch_size": plan.batch_size,
        "data.max_prompt_length": prompt_length,
        "data.max_response_length": response_length,
        "data.seed": plan.seed,
        "actor_rollout_ref.model.path": paths.policy,
        "actor_rollout_ref.model.enable_gradient_checkpointing": cluster["gradient_checkpointing"],
        "actor_rollout_ref.model.use_remove_padding": True,
        f"{actor}.optim.lr": plan.lr,
        f"{actor}.optim.weight_decay": optim.weight_decay,
        f"{actor}.optim.betas": list(optim.betas),
        f"{actor}.optim.override_optimizer_config": {"eps": optim.eps},
        f"{actor}.optim.lr_warmup_steps": optim.warmup_steps,
        f"{actor}.optim.clip_grad": optim.grad_clip,
        f"{actor}.ppo_mini_batch_size": plan.mini_batch_size,
        f"{actor}.ppo_epochs": rl.ppo_epochs,
        f"{actor}.use_dynamic_bsz": True,
        f"{actor}.ppo_max_token_len_per_gpu": cluster["max_tokens_per_gpu"],
        f"{actor}.clip_ratio_low": loss.clip_ratio_low,
        f"{actor}.clip_ratio_high": loss.clip_ratio_high,
        f"{actor}.clip_ratio_c": loss.clip_ratio_c,
        f"{actor}.loss_agg_mode": loss.aggregation,  # seq-mean-token-sum = the paper's Eq. 4
        f"{actor}.use_kl_loss": loss.kl_coef > 0,
        f"{actor}.kl_loss_coef": loss.kl_coef,
        f"{actor}.kl_loss_type": loss.kl_type,
        f"{actor}.entropy_coeff": 0,
        f"{actor}.ulysses_sequence_parallel_size": cluster["ulysses_sequence_parallel_size"],
        f"{actor}.data_loader_seed": plan.seed,
        f"{actor}.fsdp_config.param_offload": cluster["param_offload"],
        f"{actor}.fsdp_config.optimizer_offload": cluster["optimizer_offload"],
        "actor_rollout_ref.ref.fsdp_config.param_offload": cluster["param_offload"],
        f"{rollout}.name": cluster["rollout_engine"],
        f"{rollout}.mode": "async",
        f"{rollout}.n": group_size,
        f"{rollout}.temperature": sampling.temperature,
        f"{rollout}.top_p": sampling.top_p,
        f"{rollout}.seed": plan.seed,
        f"{rollout}.prompt_length": prompt_length,
        f"{rollout}.response_length": response_length,
        f"{rollout}.max_model_len": prompt_length + response_length,
        f"{rollout}.tensor_model_parallel_size": cluster["tensor_parallel_size"],
        f"{rollout}.gpu_memory_utilization": cluster["gpu_memory_utilization"],
        f"{rollout}.max_num_seqs": cluster["max_num_seqs"],
        f"{rollout}.calculate_log_probs": False,
        f"{rollout}.multi_turn.enable": True,
        f"{rollout}.agent.num_workers": cluster["agent_workers"],
        f"{rollout}.agent.default_agent_loop": kinds.get(kind).agent_loop,
        f"{rollout}.agent.agent_loop_config_path": paths.agent_loops,
        f"{rollout}.log_prob_use_dynamic_bsz": True,
        f"{rollout}.log_prob_max_token_len_per_gpu": cluster["max_tokens_per_gpu"],
        "actor_rollout_ref.ref.log_prob_use_dynamic_bsz": True,
        "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu": cluster["max_tokens_per_gpu"],
        "trainer.use_v1": True,
        "trainer.v1.trainer_mode": TRAINER_MODE,
        "trainer.nnodes": cluster["nodes"],
        "trainer.n_gpus_per_node": cluster["gpus_per_node"],
        "trainer.total_training_steps": plan.steps,
        "trainer.total_epochs": epochs,
        "trainer.save_freq": rl.checkpoint_every,
        "trainer.max_actor_ckpt_to_keep": rl.keep_checkpoints,
        "trainer.default_local_dir": paths.checkpoints,
        "trainer.resume_mode": "resume_path" if paths.resume_from else "auto",
        "trainer.resume_from_path": paths.resume_from,
        "trainer.val_before_train": False,
        "trainer.test_freq": -1,
        "trainer.logger": list(cluster["loggers"]),
        "trainer.project_name": "memtrain",
        "trainer.experiment_name": experiment,
        **_filter_settings(rl, plan),
        **_device_settings(rl, cluster, threads),
    }
    return [f"{key}={_value(value)}" for key, value in settings.items()]


def config_dir() -> str:
    """veRL's packaged hydra configs."""
    import verl

    return os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


def compose(settings: Sequence[str]):
    """veRL's ppo_trainer config with `settings` applied, exactly as `verl.trainer.main_ppo` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=list(settings))


def validate(config) -> None:
    """veRL's own checks: batch sizes against GPUs, and every section converted to its dataclass."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


def build(
    params: Mapping[str, Any],
    kind: str,
    schedule: Mapping[str, Any],
    paths: Paths,
    num_items: int,
    experiment: str,
    threads: int = 1,
):
    """The complete, validated veRL config of one training (`threads`: each process's, on the CPU platform)."""
    config = compose(overrides(params, kind, schedule, paths, num_items, experiment, threads))
    validate(config)
    return config


def save(config, path: str | os.PathLike) -> Path:
    """Write the config as YAML, interpolations kept, so veRL resolves it on the cluster as it would its own."""
    from omegaconf import OmegaConf

    from memtrain.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        OmegaConf.save(config, tmp)
    return path
