"""veRL's v1 sync trainer with MemTrain's advantages and update, and the task runner that runs it on Ray.

`python -m memtrain.distributed <verl.yaml>` (memtrain/distributed/__main__.py) is what
memtrain.distributed.train runs once Ray is up. veRL's own GRPO step takes one reward per session and one
group per item, and cuts a step's rows into fixed-size mini-batches; ours scores every row in its own group
(E2E across sessions, IMR inside one) with veRL's `compute_grpo_outcome_advantage`
(memtrain.distributed.advantages) and takes one optimizer step per `mini_batch_size` items
(memtrain.distributed.minibatches). Everything else (rollout, old and reference log-probs, the clipped loss
with seq-mean-token-sum, weight sync, checkpoints) is veRL's. Runs on GPUs, or on a CPU through
memtrain.distributed.cpu_platform.
"""

from __future__ import annotations

import ray
import torch
import transfer_queue as tq
from omegaconf import OmegaConf, open_dict
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.utils.metric import reduce_metrics
from verl.utils.py_functional import rename_dict

from memtrain.distributed import minibatches, verl_config
from memtrain.distributed.advantages import row_advantages


@register_trainer(verl_config.TRAINER_MODE)
class MemTrainSyncTrainer(PPOTrainerSync):
    """Selected through veRL's trainer registry (trainer.v1.trainer_mode), then run as veRL's "sync" trainer.

    veRL picks the trainer class by trainer_mode and, inside the trainer, takes its synchronous paths only
    where the mode is literally "sync" (replay buffer, refill, checkpoint contents); "sync" itself belongs to
    PPOTrainerSync and cannot be registered twice. So the mode names our class in the config file, and
    the trainer runs under "sync".
    """

    def __init__(self, config) -> None:
        with open_dict(config):
            config.trainer.v1.trainer_mode = "sync"
        super().__init__(config)

    # --- optimizer steps: one per mini_batch_size items, over all their rows (memtrain.distributed.minibatches) ---
    def _get_required_batch_multiple(self, dp_size: int) -> int:
        """Each item mini-batch is padded on its own, to the data-parallel size only (see _balance_batch)."""
        return dp_size

    def _balance_batch(self, batch: KVBatchMeta, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        """veRL's padding and length balancing inside each item mini-batch, the mini-batches kept in order.

        veRL would pad and balance the whole step's rows and later cut them into fixed row counts,
        mixing items across optimizer steps; here every later stage (old and reference log-probs,
        advantages, the update) sees the step as consecutive mini-batches whose sizes are remembered.
        """
        parts = [
            super(MemTrainSyncTrainer, self)._balance_batch(
                batch.select_keys([batch.keys[i] for i in rows]), metrics, logging_prefix
            )
            for rows in minibatches.item_minibatches(batch.keys, self._items_per_update())
        ]
        self._minibatch_sizes = [len(part) for part in parts]
        merged = KVBatchMeta.concat(parts)
        merged.extra_info = batch.extra_info
        return merged

    def _items_per_update(self) -> int:
        return int(self.config.actor_rollout_ref.actor.ppo_mini_batch_size)

    def _update_actor(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        """One actor update call, hence one optimizer step and one scheduler step, per item mini-batch, per epoch.

        Eq. 4 divides by the rows trained in the mini-batch (veRL's global_batch_size in seq-mean-token-sum),
        which leaves out veRL's padding rows and the rows of uninformative groups (their mask is zeroed in
        _compute_advantage), as the local trainer does.
        """
        actor = self.config.actor_rollout_ref.actor
        if self.config.get("distillation") and self.config.distillation.get("enabled", False):
            raise ValueError("the MemTrain trainer does not distil: distillation.enabled must be false")
        start, parts = 0, []
        for size in self._minibatch_sizes:
            parts.append(batch.select_keys(batch.keys[start : start + size]))
            start += size
        if start != len(batch):
            raise RuntimeError(f"the step has {len(batch)} rows, its mini-batches {self._minibatch_sizes}")
        collected: dict[str, list] = {}
        if not self._trained_keys:  # no informative group even after the refill rounds: no update, as locally
            metrics.update({"memtrain/skipped": 1.0, "memtrain/optimizer_steps": 0})
            return batch
        for _ in range(actor.ppo_epochs):
            for part in parts:
                trained = sum(key in self._trained_keys for key in part.keys)
                part.extra_info = {
                    **batch.extra_info,
                    "calculate_entropy": bool(actor.calculate_entropy or actor.entropy_coeff != 0.0),
                    "distillation_use_topk": False,
                    "distillation_only": False,
                    "global_batch_size": max(trained, 1),
                    "mini_batch_size": len(part),
                    "epochs": 1,
                    "seed": actor.data_loader_seed,
                    "dataloader_kwargs": {"shuffle": False},
                    "temperature": self.config.actor_rollout_ref.rollout.temperature,
                }
                output = rename_dict(self.actor_rollout_wg.update_actor(part)["metrics"], "actor/")
                output["perf/mfu/actor"] = output.pop("actor/mfu")
                for name, values in output.items():
                    collected.setdefault(name, []).extend(values if isinstance(values, list) else [values])
        metrics.update(reduce_metrics(collected))
        metrics.update({"memtrain/skipped": 0.0, "memtrain/optimizer_steps": actor.ppo_epochs * len(parts)})
        return batch

    # --- advantages over our groups ---------------------------------------------------------------------------
    def _compute_advantage(self, batch, metrics: dict):
        """Per-row GRPO advantages from our group fields, written back as veRL's advantages and returns.

        With group filtering, rows of uninformative groups get an empty response mask: they are not trained.
        """
        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=["response_mask", "extra_fields"]
        )
        extras = [getattr(extra, "data", extra) for extra in data["extra_fields"]]
        values = row_advantages(batch.keys, extras, self.config.algorithm.norm_adv_by_std_in_grpo)
        padding = [tag.get("is_padding", False) for tag in batch.tags]
        trained = minibatches.trained_rows(batch.keys, extras, self.config.algorithm.filter_groups.enable)
        trained = [row and not pad for row, pad in zip(trained, padding, strict=True)]
        self._trained_keys = {key for key, row in zip(batch.keys, trained, strict=True) if row}
        masks = [
            mask if row else torch.zeros_like(mask)
            for mask, row in zip(data["response_mask"].unbind(0), trained, strict=True)
        ]
        advantages = torch.nested.as_nested_tensor(
            [value * mask.float() for value, mask in zip(values, masks, strict=True)], layout=torch.jagged
        )
        # veRL's padding rows (_balance_batch) copy a real row's fields into a group of their own: no loss
        # tokens, but a value of their own, so the metric leaves them out as veRL's _compute_metrics does.
        real = [abs(v) for v, pad in zip(values, padding, strict=True) if not pad]
        metrics["memtrain/advantage_abs"] = float(sum(real) / max(len(real), 1))
        metrics["memtrain/trained_rows"] = len(self._trained_keys)
        # veRL's rollout stores a copy of each row's mask as loss_mask, from which its worker counts the mini-batch's
        # tokens (token-mean's divisor): both must leave the untrained rows out.
        response_mask = torch.nested.as_nested_tensor(masks, layout=torch.jagged)
        fields = {
            "advantages": advantages,
            "returns": advantages.clone(),
            "response_mask": response_mask,
            "loss_mask": response_mask.clone(),
        }
        return tq.kv_batch_put(
            keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict(fields, batch_size=len(batch))
        )


@ray.remote
class MemTrainTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """veRL's v1 task runner, in a process that has registered our trainer.

    Ray sends an actor class by value, so nothing in it imports this module by itself; without the
    import the runner's process would not know trainer_mode "memtrain_sync".
    """

    def __init__(self) -> None:
        import memtrain.distributed.verl_trainer  # noqa: F401, PLW0406  (registers MemTrainSyncTrainer here)

        super().__init__()


def main(path: str) -> None:
    config = OmegaConf.load(path)
    verl_config.validate(config)
    run_ppo(config, task_runner_class=MemTrainTaskRunner)
