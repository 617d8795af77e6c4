"""The GRPO trainer end to end on CPU: it learns a learnable toy task, and a resumed run equals an uninterrupted one.

The toy task rewards a reply whose first token falls in a fixed tenth of the vocabulary: a randomly
initialised model starts near 0.1, and only the policy-gradient signal can push it up.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from memtrain import config as memtrain_config
from memtrain.agent.chat import encode_user
from memtrain.engines import Sampling
from memtrain.rl import checkpoint, launch, policies
from memtrain.rl.samples import Group, Member, Rollout, Sample
from memtrain.rl.trainer import DataCursor, Schedule, StepLogger, Trainer
from memtrain.settings import RL


class FirstTokenTask:
    def __init__(self, engine, vocab_size: int, group_size: int) -> None:
        self.engine, self.group_size = engine, group_size
        self.targets = set(range(0, vocab_size, 10))

    def rollout(self, items, rng) -> Rollout:
        prompts = [item for item in items for _ in range(self.group_size)]
        generations = self.engine.generate(prompts, Sampling(max_new_tokens=2, temperature=1.0))
        rollout = Rollout()
        for i in range(len(items)):
            members = []
            for g in generations[i * self.group_size : (i + 1) * self.group_size]:
                reward = float(g.token_ids[0] in self.targets)
                members.append(Member(reward, (Sample(tuple(items[i]), g.token_ids),)))
                rollout.values.setdefault("reward", []).append(reward)
            rollout.groups.append(Group(i, "toy", tuple(members)))
        return rollout


def rl_settings(**changes) -> dict:
    """The schema's `rl` defaults with test overrides: the `rl` section as a stage receives it."""
    return {**memtrain_config.validate({})["rl"], **changes}


def make_trainer(tiny_policy, tokenizer, tmp_path, steps, lr=2e-2, **rl_changes) -> tuple[Trainer, list]:
    rl = RL.of({"rl": rl_settings(device="cpu", checkpoint_every=1, keep_checkpoints=10, micro_batch_tokens=4096,
                                  **rl_changes)})  # fmt: skip
    policy = policies.load(tiny_policy, rl.runtime, seed=3, kl_coef=rl.loss.kl_coef)
    prompts = [encode_user(tokenizer, f"Say something about the number {n}.") for n in range(12)]
    task = FirstTokenTask(policy.engine, len(tokenizer), group_size=8)
    history: list = []
    logger = StepLogger(
        metrics=lambda values, step: history.append((step, dict(values))), rollouts=lambda records, step: None
    )
    trainer = Trainer(
        policy.model,
        policy.reference,
        task,
        prompts,
        rl,
        Schedule(steps, 4, 2, lr, 5),
        policy.generator,
        policy.pad_token_id,
        tmp_path / "checkpoints",
        "toy",
        logger,
    )
    return trainer, history


def test_data_cursor_walks_seeded_epochs_and_resumes():
    cursor = DataCursor(5, seed=1)
    taken = cursor.take(3) + cursor.take(4)
    assert sorted(taken[:5]) == list(range(5)) and cursor.state() == {"epoch": 1, "position": 2}
    again = DataCursor(5, seed=1, epoch=1, position=2)
    assert again.take(3) == DataCursor(5, seed=1).take(10)[7:10]


@pytest.mark.slow
def test_grpo_raises_the_reward_of_a_learnable_task(tiny_policy, tokenizer, tmp_path):
    trainer, history = make_trainer(tiny_policy, tokenizer, tmp_path, steps=30)
    trainer.fit()
    rewards = [m["reward"] for _, m in history]
    print("mean reward per step:", " ".join(f"{r:.2f}" for r in rewards))
    assert np.mean(rewards[:3]) < 0.2
    assert np.mean(rewards[-3:]) > 0.7
    trained = [m for _, m in history if not m["skipped"]]
    # one optimizer step per mini-batch of 2 kept items
    assert trained and all(m["optimizer_steps"] == -(-m["kept_items"] // 2) for m in trained)
    assert all(np.isfinite(m["kl"]) and m["kl"] >= 0 for m in trained)


def test_resumed_training_equals_an_uninterrupted_run(tiny_policy, tokenizer, tmp_path):
    straight, _ = make_trainer(tiny_policy, tokenizer, tmp_path / "straight", steps=4)
    straight.fit()

    first, _ = make_trainer(tiny_policy, tokenizer, tmp_path / "resumed", steps=4)
    first.fit(stop_after=2)
    assert [p.name for p in checkpoint.checkpoints(tmp_path / "resumed" / "checkpoints")] == [
        "step_000001",
        "step_000002",
    ]
    second, history = make_trainer(tiny_policy, tokenizer, tmp_path / "resumed", steps=4)
    assert second.resume() and second.step == 2
    second.fit()
    assert [step for step, _ in history] == [3, 4]
    for (name, a), b in zip(straight.policy.named_parameters(), second.policy.parameters(), strict=True):
        assert torch.equal(a, b), name
    straight_state = straight.optimizer.state_dict()["state"]
    for key, value in second.optimizer.state_dict()["state"].items():
        assert torch.equal(value["exp_avg"], straight_state[key]["exp_avg"])


def test_a_checkpoint_of_another_config_is_not_resumed(tiny_policy, tokenizer, tmp_path):
    trainer, _ = make_trainer(tiny_policy, tokenizer, tmp_path, steps=1)
    trainer.fit()
    other, _ = make_trainer(tiny_policy, tokenizer, tmp_path, steps=1)
    other.config_hash = "different"
    assert not other.resume() and other.step == 0


def test_a_step_where_every_group_is_filtered_is_skipped_not_fatal(tiny_policy, tokenizer, tmp_path):
    trainer, history = make_trainer(tiny_policy, tokenizer, tmp_path, steps=2)
    trainer.task.targets = set()  # every reward 0: every group uninformative
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    trainer.fit()
    assert [m["skipped"] for _, m in history] == [1.0, 1.0]
    assert all(m["filtered_fraction"] == 1.0 and m["rollout_rounds"] == 3 for _, m in history)  # 1 + 2 refills
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))


def continued_training(tiny_policy, tokenizer, root, steps, resume=False, continue_from=None, exports=None):
    """launch.train of the toy task for `steps` steps, as the posttrain stage runs it."""
    rl = rl_settings(device="cpu", checkpoint_every=1, keep_checkpoints=10, micro_batch_tokens=4096)
    policy = policies.load(tiny_policy, RL.of({"rl": rl}).runtime, seed=3, kl_coef=rl["loss"]["kl_coef"])
    prompts = [encode_user(tokenizer, f"Say something about the number {n}.") for n in range(12)]
    task = FirstTokenTask(policy.engine, len(tokenizer), group_size=8)
    schedule = {"steps": steps, "batch_size": 4, "mini_batch_size": 2, "lr": 2e-2, "seed": 5}
    steps_run: list[int] = []
    logger = StepLogger(metrics=lambda values, step: steps_run.append(step), rollouts=lambda records, step: None)
    launch.train(
        policy,
        task,
        prompts,
        {"rl": rl, "agent": {}},
        schedule,
        root / "checkpoints",
        root / f"step{steps}",
        logger,
        resume=resume,
        continue_from=continue_from,
        exports=exports,
    )
    return policy, steps_run


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_a_continued_run_equals_one_run_of_all_the_steps(tiny_policy, tokenizer, tmp_path):
    """Post-training scaling: 2 steps, then 2 more from the last checkpoint, is the same training as 4 steps at once,
    and the export at step 3 is the policy the 4-step run had at step 3."""
    continued_training(tiny_policy, tokenizer, tmp_path / "straight", 4)
    continued_training(tiny_policy, tokenizer, tmp_path / "first", 2)
    source = checkpoint.checkpoints(tmp_path / "first" / "checkpoints")[-1]
    exports = {3: tmp_path / "more" / "step3"}
    _, steps_run = continued_training(
        tiny_policy, tokenizer, tmp_path / "more", 4, resume=True, continue_from=source, exports=exports
    )
    assert steps_run == [3, 4]
    final, at_three = weights(tmp_path / "more" / "step4"), weights(exports[3])
    for name, value in weights(tmp_path / "straight" / "step4").items():
        assert torch.equal(final[name], value), name
    three = weights(checkpoint.checkpoints(tmp_path / "straight" / "checkpoints")[2])
    shared = set(three) & set(at_three)
    assert len(shared) >= len(at_three) - 1  # a tied embedding may be stored under one name only
    assert all(torch.equal(three[name], at_three[name]) for name in shared)
    assert json.loads((exports[3] / "training.json").read_text()) == {"step": 3}

    # snakemake deleted the outputs of a failed job: the export is gone but the run's own checkpoints went past it
    import shutil

    shutil.rmtree(exports[3])
    _, steps_run = continued_training(
        tiny_policy, tokenizer, tmp_path / "more", 4, resume=True, continue_from=source, exports=exports
    )
    assert steps_run == [3, 4] and (exports[3] / "model.safetensors").is_file()
    again = weights(tmp_path / "more" / "step4")
    assert all(torch.equal(again[name], value) for name, value in final.items())


def test_pruning_a_finished_run_frees_its_checkpoints_and_keeps_its_logs(tiny_policy, tokenizer, tmp_path):
    from memtrain.errors import InputError
    from memtrain.stages.downstream import _finished_checkpoint

    root = tmp_path / "run"
    continued_training(tiny_policy, tokenizer, root, 2)
    checkpoints, export = root / "checkpoints", root / "step2"
    (checkpoints / "logs").mkdir()
    (checkpoints / "logs" / "ray.log").write_text("kept")
    (checkpoints / "global_step_2" / "actor").mkdir(parents=True)  # veRL's layout is pruned alike
    (checkpoints / "global_step_2" / "actor" / "model.pt").write_bytes(b"x" * 10)
    (checkpoints / "latest_checkpointed_iteration.txt").write_text("2")
    stored = sum(f.stat().st_size for f in checkpoints.rglob("*") if f.is_file() and "logs" not in f.parts)
    assert [p.name for p in checkpoint.checkpoints(checkpoints)] == ["step_000001", "step_000002"]

    with pytest.raises(InputError, match="before the run's final export"):
        checkpoint.prune(checkpoints, root / "no-export")
    assert checkpoint.prune(checkpoints, export) == stored
    assert sorted(p.name for p in checkpoints.iterdir()) == ["PRUNED", "logs"]
    assert (checkpoints / "logs" / "ray.log").read_text() == "kept" and checkpoint.pruned(checkpoints)
    # a continuation of the pruned run says why there is nothing to continue from
    with pytest.raises(InputError, match="pruned after its export"):
        _finished_checkpoint(str(checkpoints), 2, "memagent", on_verl=False)


def test_an_export_no_step_changed_shares_its_starting_weights_and_a_trained_one_does_not(tiny_policy, tmp_path):
    import os

    rl = rl_settings(device="cpu", micro_batch_tokens=4096)
    policy = policies.load(tiny_policy, RL.of({"rl": rl}).runtime, seed=3, kl_coef=rl["loss"]["kl_coef"])
    launch.save_policy(policy, tmp_path / "unchanged", {"steps": 0})
    assert os.path.samefile(tmp_path / "unchanged" / "model.safetensors", tiny_policy / "model.safetensors")
    with torch.no_grad():
        next(policy.model.parameters()).add_(1e-3)
    launch.save_policy(policy, tmp_path / "trained", {"steps": 1})
    assert not os.path.samefile(tmp_path / "trained" / "model.safetensors", tiny_policy / "model.safetensors")
