"""MemTrain's veRL trainer step on CPU: `MemTrainSyncTrainer._compute_advantage` against a real TransferQueue.

The rows reach TransferQueue as they do on the cluster: our agent loops' outputs
(memtrain.distributed.agent_loops.outputs) are written by veRL's own `AgentLoopWorkerTQ` post-processing,
one put per session under `{uid}_{session}_{index}`, and the batch is padded by veRL's
`upsample_batch_to_divisible_size` as `_balance_batch` does. The trainer then reads the rows' response masks
and extra fields, scores every row in its own group and writes `advantages` and `returns` back, which
the test reads as veRL's actor update would. Only the trainer's worker groups and GPUs are missing.

TransferQueue runs on Ray: a private local instance (never one another process started), with the
two logical CPUs TransferQueue's controller and one storage unit reserve (`@ray.remote(num_cpus=1)` each).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile

import pytest
import ray
import torch
import transfer_queue as tq
from omegaconf import OmegaConf

from memtrain.distributed import agent_loops, verl_config
from memtrain.rl.samples import Group, Member, Rollout, Sample

PARTITION = "train"
EOS = 2


@pytest.fixture(scope="module")
def transfer_queue():
    """A local Ray instance and TransferQueue as veRL's task runner starts it (`tq.init(config.transfer_queue)`)."""
    temp_dir = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths live under it
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        namespace="memtrain_test",
        _temp_dir=temp_dir,
        _system_config={"enable_worker_prestart": False},
    )
    try:
        conf = OmegaConf.load(f"{verl_config.config_dir()}/transfer_queue/transfer_queue.yaml")
        conf.backend.SimpleStorage.num_data_storage_units = 1
        conf.backend.SimpleStorage.total_storage_size = 64
        tq.init(conf)
        yield tq
    finally:
        tq.close()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def turns(count: int, length: int) -> tuple[Sample, ...]:
    return tuple(Sample((1, 5, 6), tuple(range(10, 10 + length))) for _ in range(count))


def recall(*rewards: float) -> Group:
    """An IMR group: one two-token answer per member."""
    members = tuple(Member(reward, (Sample((1, 7), (20 + m, 21)),)) for m, reward in enumerate(rewards))
    return Group(0, "recall", members)


# Two items x two sessions. Every session has its E2E trajectory (its turns share the session's reward,
# grouped with the item's other session); some also answer IMR recall questions (a group inside the session).
ROLLOUTS = {
    ("item0", 0): Rollout(groups=[Group(0, "e2e", (Member(1.0, turns(2, 3)),)), recall(1.0, 0.0)]),
    ("item0", 1): Rollout(groups=[Group(0, "e2e", (Member(0.0, turns(3, 2)),)), recall(0.5, 0.5)]),
    ("item1", 0): Rollout(groups=[Group(0, "e2e", (Member(0.25, turns(1, 4)),))]),
    ("item1", 1): Rollout(groups=[Group(0, "e2e", (Member(0.75, turns(2, 3)),)), recall(1.0, 0.0, 0.5)]),
}
# Tokens the policy did not write (e.g. a tool's reply inside a turn) are masked out of the loss.
MASKS = {"item0_1_3": [1, 0], "item1_0_0": [1, 0, 0, 1]}
# Hand-computed Dr. GRPO: reward minus its group's mean. E2E item0: (1.0, 0.0) -> +-0.5 on every turn;
# item1: (0.25, 0.75) -> -+0.25. Recall groups: (1, 0) -> +-0.5; (0.5, 0.5) -> 0; (1, 0, 0.5) -> 0.5, -0.5, 0.
EXPECTED = {
    "item0_0_0": 0.5,
    "item0_0_1": -0.5,
    "item0_0_2": 0.5,
    "item0_0_3": 0.5,
    "item0_1_0": 0.0,
    "item0_1_1": 0.0,
    "item0_1_2": -0.5,
    "item0_1_3": -0.5,
    "item0_1_4": -0.5,
    "item1_0_0": -0.25,
    "item1_1_0": 0.5,
    "item1_1_1": -0.5,
    "item1_1_2": 0.0,
    "item1_1_3": 0.25,
    "item1_1_4": 0.25,
}


def store_rollouts() -> list[str]:
    """Write every session's sequences through veRL's agent-loop worker post-processing; their keys."""
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

    worker = object.__new__(AgentLoopWorkerTQ.__ray_actor_class__)
    worker.reward_loop_worker_handles, worker.processor, worker.distillation_enabled = None, None, False
    keys = []
    for (uid, session), rollout in ROLLOUTS.items():
        outputs = agent_loops.outputs(rollout, session=session, seconds=0.1, weight_versions=[1])
        for index, output in enumerate(outputs):
            key = f"{uid}_{session}_{index}"
            if key in MASKS:
                output.response_mask = MASKS[key]
            keys.append(key)
        asyncio.run(
            worker._agent_loop_postprocess(
                outputs, validate=False, uid=uid, session_id=session, global_steps=1, index=0
            )
        )
    return keys


def make_trainer(norm_by_std: bool, filter_groups: bool = False):
    """The registered trainer with only what `_compute_advantage` reads (its __init__ builds worker groups)."""
    from verl.trainer.ppo.v1 import get_trainer_cls

    from memtrain.distributed.verl_trainer import MemTrainSyncTrainer

    assert get_trainer_cls(verl_config.TRAINER_MODE) is MemTrainSyncTrainer
    trainer = object.__new__(MemTrainSyncTrainer)
    trainer.config = OmegaConf.create(
        {
            "algorithm": {
                "adv_estimator": "grpo",
                "norm_adv_by_std_in_grpo": norm_by_std,
                "use_kl_in_reward": False,
                "filter_groups": {"enable": filter_groups},
            }
        }
    )
    return trainer


@pytest.mark.slow
def test_compute_advantage_writes_per_row_grpo_advantages_to_transfer_queue(transfer_queue):
    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size

    keys = store_rollouts()
    assert sorted(keys) == sorted(EXPECTED)
    listed = tq.kv_list(PARTITION)[PARTITION]
    order = keys[1:]
    random.Random(0).shuffle(order)  # _balance_batch reorders rows across items and sessions
    order = keys[:1] + order  # the first row (an IMR answer) is the padding template
    batch = KVBatchMeta(partition_id=PARTITION, keys=order, tags=[listed[key] for key in order])
    batch = upsample_batch_to_divisible_size(batch, batch_multiple=8, eos_token_id=EOS)
    padding = [key for key, tag in zip(batch.keys, batch.tags, strict=True) if tag.get("is_padding")]
    assert len(batch) == 16 and len(padding) == 1

    metrics: dict = {}
    returned = make_trainer(norm_by_std=False)._compute_advantage(batch, metrics)
    assert returned.keys == batch.keys and returned.partition_id == PARTITION
    assert {"advantages", "returns"} <= set(returned.fields)

    data = tq.kv_batch_get(
        keys=batch.keys, partition_id=PARTITION, select_fields=["advantages", "returns", "response_mask", "responses"]
    )
    assert data["advantages"].is_nested and data["advantages"].layout == torch.jagged
    rows = zip(
        batch.keys,
        data["advantages"].unbind(0),
        data["returns"].unbind(0),
        data["response_mask"].unbind(0),
        data["responses"].unbind(0),
        strict=True,
    )
    for key, advantage, returns, mask, response in rows:
        assert advantage.dtype == torch.float32 and advantage.shape == mask.shape == response.shape, key
        value = 0.0 if key in padding else EXPECTED[key]
        expected = torch.tensor([value * m for m in MASKS.get(key, [1] * len(mask))])
        torch.testing.assert_close(advantage, expected, msg=key)
        torch.testing.assert_close(returns, advantage, msg=key)
    # The padding row copies the IMR answer's fields into a group of its own, but has no loss tokens.
    assert data["response_mask"].unbind(0)[batch.keys.index(padding[0])].sum() == 0

    # The metric is the mean |advantage| over the real rows (the padding row is veRL's, not ours).
    assert metrics["memtrain/advantage_abs"] == pytest.approx(sum(map(abs, EXPECTED.values())) / len(EXPECTED))

    # With std normalisation (veRL's default GRPO), a group (1, 0) -> +-0.7071 (torch.std is unbiased).
    make_trainer(norm_by_std=True)._compute_advantage(batch, {})
    normed = tq.kv_batch_get(
        keys=["item0_0_0", "item0_0_1", "item0_1_4"], partition_id=PARTITION, select_fields="advantages"
    )["advantages"].unbind(0)
    torch.testing.assert_close(normed[0], torch.full((2,), 2**-0.5), atol=1e-4, rtol=0)
    torch.testing.assert_close(normed[1], torch.full((2,), -(2**-0.5)), atol=1e-4, rtol=0)
    torch.testing.assert_close(normed[2], torch.full((2,), -(2**-0.5)), atol=1e-4, rtol=0)

    # With group filtering, as the local trainer: item0's second recall group (0.5, 0.5) teaches nothing, so its
    # two answers leave the update (mask emptied, out of Eq. 4's count); item1's (1, 0, 0.5) stays, zero included.
    trainer = make_trainer(norm_by_std=False, filter_groups=True)
    trainer._compute_advantage(batch, metrics)
    assert trainer._trained_keys == set(EXPECTED) - {"item0_1_0", "item0_1_1"}
    masks = tq.kv_batch_get(
        keys=["item0_1_0", "item0_1_1", "item1_1_2"], partition_id=PARTITION, select_fields="response_mask"
    )["response_mask"].unbind(0)
    assert [int(mask.sum()) for mask in masks] == [0, 0, 2]
    assert metrics["memtrain/trained_rows"] == len(EXPECTED) - 2
