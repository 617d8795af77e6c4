"""veRL's config generated from ours, composed from veRL's packaged hydra config and checked by veRL itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from memtrain import config as memtrain_config
from memtrain.distributed import verl_config
from memtrain.errors import InputError
from memtrain.rl import kinds

ROOT = Path(__file__).resolve().parent.parent
PATHS = verl_config.Paths("/models/policy", "/data/train.parquet", "/ckpt", "/ckpt/agent_loops.yaml")


def schedules(cfg):
    posttrain = cfg["posttrain"]
    return {
        "memtrain": cfg["memtrain"],
        "memagent": {**posttrain["memagent"], "seed": 1},
        "mem1": {**posttrain["mem1"], "seed": 1},
    }


def test_every_training_kind_composes_and_passes_veRL_validation(cfg):
    cfg["trainer"]["verl"].update(nodes=2, gpus_per_node=4, rollout_engine="sglang", param_offload=True)
    for kind, schedule in schedules(cfg).items():
        built = verl_config.build(cfg, kind, schedule, PATHS, num_items=8, experiment=kind)
        actor, rollout = built.actor_rollout_ref.actor, built.actor_rollout_ref.rollout
        assert built.algorithm.adv_estimator == "grpo" and built.algorithm.norm_adv_by_std_in_grpo is False
        assert built.algorithm.use_kl_in_reward is False and built.algorithm.filter_groups.enable is True
        assert (actor.clip_ratio_low, actor.clip_ratio_high) == (0.2, 0.28)
        assert actor.loss_agg_mode == "seq-mean-token-sum" and actor.use_kl_loss and actor.kl_loss_type == "low_var_kl"
        assert actor.kl_loss_coef == cfg["rl"]["loss"]["kl_coef"] and actor.optim.lr == schedule["lr"]
        assert actor.fsdp_config.param_offload is True and rollout.name == "sglang"
        assert rollout.n == schedule["group_size"] and built.data.train_batch_size == schedule["batch_size"]
        assert rollout.agent.default_agent_loop == kinds.get(kind).agent_loop
        assert (built.trainer.nnodes, built.trainer.n_gpus_per_node) == (2, 4)
        assert built.trainer.use_v1 and built.trainer.v1.trainer_mode == verl_config.TRAINER_MODE
        assert built.trainer.total_training_steps == schedule["steps"] and built.trainer.default_local_dir == "/ckpt"
        prompt, response = kinds.get(kind).turn_lengths(cfg, schedule)
        assert (rollout.prompt_length, rollout.response_length) == (prompt, response)
    budgets = cfg["agent"]["budgets"]
    assert kinds.MEMTRAIN.turn_lengths(cfg, cfg["memtrain"]) == (
        budgets["instruction"] + budgets["chunk"] + budgets["memory"],
        budgets["response"],
    )


def test_a_key_veRL_does_not_know_fails_composition(cfg):
    settings = verl_config.overrides(cfg, "memtrain", cfg["memtrain"], PATHS, 8, "x")
    with pytest.raises(ConfigCompositionException):
        verl_config.compose(settings + ["actor_rollout_ref.actor.clip_ratio_hihg=0.3"])


def test_veRL_validation_rejects_what_it_cannot_run(cfg):
    settings = verl_config.overrides(cfg, "memtrain", cfg["memtrain"], PATHS, 8, "x")
    composed = verl_config.compose(settings + ["actor_rollout_ref.actor.loss_agg_mode='seq-mean-nonsense'"])
    with pytest.raises(Exception, match="loss_agg_mode|seq-mean-nonsense"):
        verl_config.validate(composed)


def test_override_values_survive_hydra_quoting(cfg):
    odd = verl_config.Paths("/data/it's here/p", "/d/t=1.parquet", "/c", "/c/a.yaml")
    built = verl_config.compose(verl_config.overrides(cfg, "memagent", schedules(cfg)["memagent"], odd, 8, "x"))
    assert built.actor_rollout_ref.model.path == "/data/it's here/p" and built.data.train_files == "/d/t=1.parquet"


def test_trainer_section_defaults_and_rejects_unknown_keys(cfg):
    assert cfg["trainer"]["backend"] == "local" and cfg["trainer"]["verl"]["rollout_engine"] == "vllm"
    with pytest.raises(InputError, match="unknown key"):
        memtrain_config.validate({"trainer": {"verl": {"gpus": 8}}})


def test_the_paper_config_builds_a_valid_veRL_config_for_every_training(cfg):
    """config/paper.yaml as the SLURM profile runs it: 8 GPUs, batch 32, G1 = 8 / MemAgent 16, 8k-token turns."""
    paper = memtrain_config.load(ROOT / "config" / "paper.yaml")
    assert paper["trainer"]["backend"] == "verl"
    for kind, schedule in schedules(paper).items():
        params = paper if kind == "memtrain" else memtrain_config.posttrain_params(paper, kind)
        built = verl_config.build(params, kind, schedule, PATHS, num_items=30000, experiment=kind)
        assert (built.trainer.nnodes, built.trainer.n_gpus_per_node) == (1, 8)
        assert built.data.train_batch_size == 32 and built.actor_rollout_ref.rollout.n == schedule["group_size"]
        assert built.trainer.total_training_steps == {"memtrain": 300, "memagent": 500, "mem1": 200}[kind]
        actor = built.actor_rollout_ref.actor
        if kind == "memtrain":  # the paper's own settings: clip-higher, Eq. 4, DAPO
            assert (actor.clip_ratio_high, actor.loss_agg_mode, built.algorithm.filter_groups.enable) == (
                0.28,
                "seq-mean-token-sum",
                True,
            )
        else:  # the upstream run scripts' (config/paper.yaml's posttrain.<kind>.rl)
            assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.loss_agg_mode) == (0.2, 0.2, "token-mean")
            assert built.algorithm.filter_groups.enable is False and actor.kl_loss_coef == 1e-3
            assert actor.optim.lr_warmup_steps == {"memagent": 20, "mem1": 10}[kind]
            assert built.actor_rollout_ref.rollout.top_p == {"memagent": 1.0, "mem1": 0.95}[kind]
    assert kinds.MEMTRAIN.turn_lengths(paper, paper["memtrain"]) == (1024 + 5120 + 1024, 1024)


def test_a_micro_batch_too_small_for_one_turn_is_a_config_error(cfg):
    """veRL would assert it in a worker after the rollouts; the config names the field before anything starts."""
    prompt, reply = kinds.MEMTRAIN.turn_lengths(cfg, cfg["memtrain"])
    cfg["trainer"]["verl"]["max_tokens_per_gpu"] = prompt + reply
    verl_config.build(cfg, "memtrain", cfg["memtrain"], PATHS, num_items=8, experiment="x")
    cfg["trainer"]["verl"]["max_tokens_per_gpu"] = prompt + reply - 1
    with pytest.raises(InputError, match="cannot hold one memtrain turn") as error:
        verl_config.build(cfg, "memtrain", cfg["memtrain"], PATHS, num_items=8, experiment="x")
    assert "trainer.verl.max_tokens_per_gpu" in str(error.value)


def test_dapo_refill_is_bounded_by_our_sampler_and_not_by_a_concurrency_limit(cfg):
    cfg["rl"]["filter"]["max_refill_rounds"] = 3
    built = verl_config.build(cfg, "memtrain", cfg["memtrain"], PATHS, num_items=8, experiment="x")
    sampler = built.trainer.v1.sampler
    assert (sampler.custom_sampler.path, sampler.custom_sampler.name) == (
        "pkg://memtrain.distributed.replay",
        "BoundedRefillReplayBuffer",
    )
    assert dict(sampler.sampler_kwargs) == {
        "metric": verl_config.FILTER_METRIC,
        "max_refill_rounds": 3,
        "train_batch_size": cfg["memtrain"]["batch_size"],
    }
    from verl.utils.import_utils import load_extern_type

    from memtrain.distributed.replay import BoundedRefillReplayBuffer

    assert load_extern_type(sampler.custom_sampler.path, sampler.custom_sampler.name) is BoundedRefillReplayBuffer
    cfg["rl"]["filter"]["enabled"] = False
    unfiltered = verl_config.build(cfg, "memtrain", cfg["memtrain"], PATHS, num_items=8, experiment="x")
    assert unfiltered.trainer.v1.sampler.custom_sampler.path is None


def test_the_cpu_overlay_builds_a_valid_veRL_config_on_the_cpu_platform():
    import yaml

    cfg = memtrain_config.load(
        ROOT / "config" / "test.yaml", yaml.safe_load((ROOT / "config" / "test-verl.yaml").read_text())
    )
    built = verl_config.build(cfg, "memtrain", cfg["memtrain"], PATHS, num_items=8, experiment="x", threads=3)
    actor = built.actor_rollout_ref.actor
    assert built.trainer.device == "cpu" and actor.strategy == "fsdp2" and built.actor_rollout_ref.rollout.name == "hf"
    assert dict(actor.fsdp_config.mixed_precision) == {
        "param_dtype": "fp32",
        "reduce_dtype": "fp32",
        "buffer_dtype": "fp32",
    }
    env = built.ray_kwargs.ray_init.runtime_env.env_vars
    assert env.VERL_PLATFORM == "cpu" and env.VERL_USE_EXTERNAL_MODULES == ",".join(verl_config.EXTERNAL_MODULES)
    # Every Ray worker, and the driver, computes with the job's threads; on GPUs the threads are Ray's to set.
    assert env.OMP_NUM_THREADS == "3" and verl_config.environment(cfg["trainer"]["verl"], 3) == dict(env)
    assert "OMP_NUM_THREADS" not in verl_config.environment({**cfg["trainer"]["verl"], "device": "cuda"}, 3)
    assert built.ray_kwargs.ray_init.num_gpus == 1
    cfg["trainer"]["verl"]["gpus_per_node"] = 2
    with pytest.raises(InputError, match="gpus_per_node 1"):
        verl_config.build(cfg, "memtrain", cfg["memtrain"], PATHS, num_items=8, experiment="x")


def test_the_per_document_normaliser_is_refused_on_veRL_and_needs_token_sums(cfg):
    cfg["rl"]["loss"]["normaliser"] = "document"
    with pytest.raises(InputError, match="local trainer only"):
        verl_config.overrides(cfg, "memtrain", cfg["memtrain"], PATHS, 8, "x")
    with pytest.raises(InputError, match="seq-mean-token-sum"):
        memtrain_config.validate({"rl": {"loss": {"normaliser": "document", "aggregation": "token-mean"}}})
