"""veRL's v1 sync trainer with MemTrain's advantages, and the entry point that runs it on a Ray cluster.

`python -m memtrain.distributed.verl_trainer <verl.yaml>` is what memtrain.distributed.train runs once
the cluster is up. veRL's own GRPO step takes one reward per session and one group per item; ours
scores every row in its own group (E2E across sessions, IMR inside one) with the same
`compute_grpo_outcome_advantage` (memtrain.distributed.advantages). Everything else (rollout, old and
reference log-probs, the clipped loss with seq-mean-token-sum, checkpoints) is veRL's.

Needs veRL's v1 dependencies (TransferQueue) and GPUs: it is the cluster side of the back-end.
"""

from __future__ import annotations

import sys

import ray
import torch
import transfer_queue as tq
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer

from memtrain.distributed import verl_config
from memtrain.distributed.advantages import row_advantages


@register_trainer(verl_config.TRAINER_MODE)
class MemTrainSyncTrainer(PPOTrainerSync):
    def _compute_advantage(self, batch, metrics: dict):
        """Per-row GRPO advantages from our group fields, written back as veRL's advantages and returns."""
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["response_mask", "extra_fields"])
        extras = [getattr(extra, "data", extra) for extra in data["extra_fields"]]
        values = row_advantages(batch.keys, extras, self.config.algorithm.norm_adv_by_std_in_grpo)
        masks = list(data["response_mask"].unbind(0))
        advantages = torch.nested.as_nested_tensor(
            [value * mask.float() for value, mask in zip(values, masks, strict=True)], layout=torch.jagged)
        # veRL's padding rows (_balance_batch) copy a real row's fields into a group of their own: no loss
        # tokens, but a value of their own, so the metric leaves them out as veRL's _compute_metrics does.
        real = [abs(v) for v, tag in zip(values, batch.tags, strict=True) if not tag.get("is_padding", False)]
        metrics["memtrain/advantage_abs"] = float(sum(real) / max(len(real), 1))
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                               fields=TensorDict({"advantages": advantages, "returns": advantages.clone()},
                                                 batch_size=len(batch)))


@ray.remote
class MemTrainTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """veRL's v1 task runner, defined here so that the Ray actor imports this module and our trainer."""


def main(path: str) -> None:
    config = OmegaConf.load(path)
    verl_config.validate(config)
    run_ppo(config, task_runner_class=MemTrainTaskRunner)


if __name__ == "__main__":
    main(sys.argv[1])
