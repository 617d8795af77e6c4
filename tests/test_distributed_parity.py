"""The same step on both back-ends: local trainer and veRL's actor, fed the same recorded rollouts, agree.

Four items, two sessions each (G1 = 2), two recall answers per session (G2 = 2), rewards chosen so that
one step shows every rule the two back-ends must share:
- item 1 and item 3 are uninformative (equal rewards everywhere): dropped by the DAPO filter;
- batch 2 with only item 0 informative after the first round: one refill round (items 2, 3);
- item 0's first recall group is uninformative: its rows are not trained, its item is;
- mini_batch_size 1: two optimizer steps, item 0 then item 2.
veRL runs its real v1 trainer on CPU (memtrain.distributed.verl_trainer) with tests/verl_replay.py in place
of generation; the local trainer runs its `train_step` with the same rollouts. Both start from the same
random tiny Llama (fp32) and must end with the same parameters, under the paper's Eq. 4 and under the token-mean
loss with a warm-up that MemAgent and MEM1 train with.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from masked_document import DOCUMENT
from omegaconf import OmegaConf

from memtrain import config as memtrain_config
from memtrain import processes
from memtrain.distributed import export, train, verl_config
from memtrain.models import load_policy
from memtrain.rl import kinds
from memtrain.rl.samples import Group, Member, Rollout, Sample
from memtrain.rl.trainer import Schedule, StepLogger, Trainer
from memtrain.settings import RL

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

# item -> session -> (trajectory reward, recall rewards)
REWARDS = {
    0: [(1.0, [1.0, 1.0]), (0.0, [0.0, 1.0])],
    1: [(0.0, [0.0, 0.0]), (0.0, [1.0, 1.0])],
    2: [(1.5, [1.0, 0.0]), (0.5, [0.0, 0.0])],
    3: [(1.0, [0.0, 0.0]), (1.0, [0.0, 0.0])],
}


def _sample(rng: np.random.Generator, prompt: int, response: int) -> Sample:
    return Sample(
        tuple(int(t) for t in rng.integers(100, 40_000, prompt)),
        tuple(int(t) for t in rng.integers(100, 40_000, response)),
    )


def recorded_sessions() -> dict[int, list[Rollout]]:
    """Per item, one group-size-1 rollout per session: a recall group and a trajectory of 2-3 turns."""
    rng = np.random.default_rng(7)
    sessions = {}
    for item, rewards in REWARDS.items():
        sessions[item] = []
        for trajectory_reward, recall_rewards in rewards:
            turns = tuple(
                _sample(rng, int(rng.integers(12, 30)), int(rng.integers(3, 9))) for _ in range(int(rng.integers(2, 4)))
            )
            recall = tuple(
                Member(r, (_sample(rng, int(rng.integers(8, 20)), int(rng.integers(2, 6))),)) for r in recall_rewards
            )
            sessions[item].append(
                Rollout(groups=[Group(0, "recall", recall), Group(0, "e2e", (Member(trajectory_reward, turns),))])
            )
    return sessions


class ReplayTask:
    """The local trainer's task over the recorded sessions: the G1 sessions of an item form its E2E group."""

    def __init__(self, sessions: dict[int, list[Rollout]]) -> None:
        self.sessions = sessions

    def rollout(self, documents, rng) -> Rollout:
        rollout = Rollout()
        for d, document in enumerate(documents):
            sessions = self.sessions[int(document["doc_id"][1:])]
            rollout.groups.append(Group(d, "e2e", tuple(s.groups[-1].members[0] for s in sessions)))
            rollout.groups.extend(Group(d, "recall", s.groups[0].members) for s in sessions)
        return rollout


class InOrder:
    """Items in dataset order, as veRL's dataloader gives them with data.shuffle false."""

    def __init__(self) -> None:
        self.position = 0

    def take(self, count: int) -> list[int]:
        taken = list(range(self.position, self.position + count))
        self.position += count
        return taken


# The paper's MemTrain loss (Eq. 4, clip-higher), and MemAgent's and MEM1's (token-mean, symmetric clip, a warm-up
# whose first step is taken at learning rate 0, config/paper.yaml's posttrain.<kind>.rl).
LOSSES = {
    "eq4": ({"aggregation": "seq-mean-token-sum", "clip_ratio_high": 0.28}, 0),
    "token_mean": ({"aggregation": "token-mean", "clip_ratio_high": 0.2}, 1),
}


def settings(loss: str = "eq4") -> tuple[dict, dict]:
    overlay = yaml.safe_load((ROOT / "config" / "test-verl.yaml").read_text())
    terms, warmup = LOSSES[loss]
    overlay["rl"] = {
        "filter": {"enabled": True, "max_refill_rounds": 1},
        "loss": {"kl_coef": 0.1, **terms},
        "optimizer": {"warmup_steps": warmup},
    }
    cfg = memtrain_config.load(ROOT / "config" / "test.yaml", overlay)
    schedule = {
        **cfg["memtrain"],
        "steps": 1,
        "batch_size": 2,
        "mini_batch_size": 1,
        "group_size": 2,
        "recall_group_size": 2,
        "lr": 1e-3,
    }
    return cfg, schedule


class VerlStep:
    """veRL's trainer for one step on the recorded rollouts, started in its own process; `result` waits for it and
    gives its step metrics and the updated weights."""

    def __init__(self, cfg, schedule, items, policy: Path, root: Path) -> None:
        params = {"agent": cfg["agent"], "rl": cfg["rl"], "trainer": cfg["trainer"]}
        config_path = train.prepare(
            params,
            "memtrain",
            schedule,
            items,
            str(policy),
            root / "ckpt",
            "parity",
            variant="full",
            mask_token="[MASK]",
        )
        replay = root / "sessions.pkl"
        replay.write_bytes(pickle.dumps(recorded_sessions()))
        registry = root / "replay_loops.yaml"
        registry.write_text(
            yaml.safe_dump(
                [
                    {
                        "name": kinds.MEMTRAIN.agent_loop,
                        "_target_": "verl_replay.ReplayAgentLoop",
                        "settings_path": str(replay),
                    }
                ]
            )
        )
        config = OmegaConf.load(config_path)
        config.data.shuffle = False
        config.actor_rollout_ref.rollout.agent.agent_loop_config_path = str(registry)
        path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
        config.ray_kwargs.ray_init.runtime_env.env_vars.PYTHONPATH = path
        OmegaConf.save(config, config_path)
        self.root, self.uri = root, f"sqlite:///{root / 'mlflow.db'}"
        env = {
            **os.environ,
            **verl_config.environment(cfg["trainer"]["verl"]),
            "PYTHONPATH": path,
            "MLFLOW_TRACKING_URI": self.uri,
        }
        self.process = subprocess.Popen([sys.executable, "-m", "memtrain.distributed", str(config_path)], env=env)

    def result(self) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        assert self.process.wait() == 0, f"veRL's trainer exited with {self.process.returncode}"
        export.export_policy(self.root / "ckpt" / "global_step_1" / "actor", self.root / "verl_policy", {}, "float32")
        client = mlflow.MlflowClient(self.uri)
        (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
        weights = load_policy(self.root / "verl_policy", device="cpu", dtype="float32").state_dict()
        return run.data.metrics, weights


def parity_items() -> list[dict]:
    return [{**DOCUMENT, "doc_id": f"d{i}"} for i in range(len(REWARDS))]


@pytest.fixture(scope="module")
def verl_steps(tiny_policy, tmp_path_factory):
    """Both losses' veRL steps, started together: each veRL start-up keeps one core busy, one after the other, so
    two of them side by side take little longer than one."""
    steps = {
        loss: VerlStep(*settings(loss), parity_items(), tiny_policy, tmp_path_factory.mktemp(loss)) for loss in LOSSES
    }
    yield steps
    for step in steps.values():
        processes.stop(step.process, grace=30)


def run_local(cfg, schedule, items, policy: Path, root: Path) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    model = load_policy(policy, device="cpu", dtype="float32")
    reference = load_policy(policy, device="cpu", dtype="float32")
    trainer = Trainer(
        model,
        reference,
        ReplayTask(recorded_sessions()),
        items,
        RL.of(cfg),
        Schedule.from_config(schedule),
        torch.Generator().manual_seed(0),
        0,
        root / "local",
        "parity",
        StepLogger(lambda *_: None, lambda *_: None),
    )
    trainer.cursor = InOrder()
    return trainer.train_step(), model.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("loss", list(LOSSES))
def test_one_step_on_veRL_equals_the_local_trainer_step(verl_steps, tiny_policy, tmp_path, loss):
    cfg, schedule = settings(loss)
    verl_metrics, verl_weights = verl_steps[loss].result()
    local_metrics, local_weights = run_local(cfg, schedule, parity_items(), tiny_policy, tmp_path)
    initial = load_policy(tiny_policy, device="cpu", dtype="float32").state_dict()

    assert local_metrics["rollout_rounds"] == verl_metrics["training/filter_groups/rollout_rounds"] == 2
    assert local_metrics["optimizer_steps"] == verl_metrics["memtrain/optimizer_steps"] == 2
    # item 0 without its uninformative recall group (2 rows), and item 2 whole
    assert local_metrics["train_samples"] == verl_metrics["memtrain/trained_rows"]
    for local, verl in (("pg_loss", "actor/pg_loss"), ("kl_loss", "actor/kl_loss"), ("grad_norm", "actor/grad_norm")):
        print(f"{local}: local {local_metrics[local]:.9g}, veRL {verl_metrics[verl]:.9g}")
        assert local_metrics[local] == pytest.approx(verl_metrics[verl], rel=1e-4, abs=1e-9), local

    local_update = torch.cat([(local_weights[k] - initial[k]).flatten() for k in initial])
    verl_update = torch.cat([(verl_weights[k] - initial[k]).flatten() for k in initial])
    apart = float((local_update - verl_update).abs().max())
    relative = float((local_update - verl_update).norm() / local_update.norm())
    print(
        f"update: largest {float(local_update.abs().max()):.3e}, back-ends apart by at most {apart:.3e} "
        f"(relative norm {relative:.2e})"
    )
    assert float(local_update.abs().max()) > 1e-3 / 2  # the step moved the weights (lr 1e-3, two Adam steps or one)
    assert relative < 1e-4 and apart < 1e-2 * float(local_update.abs().max())
