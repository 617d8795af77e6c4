"""veRL's sync replay buffer with the local trainer's DAPO rule: at most `max_refill_rounds` extra rounds.

veRL 0.9.1's sync buffer refills filtered groups until it has a full batch, with no bound (its
`max_num_gen_batches` is ignored), so a policy that never scores generates forever. The local trainer
(memtrain.rl.trainer.Trainer.collect) rolls out a batch, then up to `max_refill_rounds` more batches
while fewer than `batch_size` items have an informative group, then trains on the informative ones it
has (a step with none is logged as skipped). This buffer does the same through veRL's custom-sampler hook
(trainer.v1.sampler.custom_sampler, set by memtrain.distributed.verl_config); when no group at all is
informative it hands over the uninformative batch, which our trainer then does not update on
(memtrain.distributed.verl_trainer).
"""

from __future__ import annotations

import time

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer


class BoundedRefillReplayBuffer(ReplayBuffer):
    def __init__(self, *, sampler_kwargs, **kwargs) -> None:
        self.max_refill_rounds = int(sampler_kwargs["max_refill_rounds"])
        super().__init__(
            sampler_kwargs=sampler_kwargs,
            filter_groups_metric=sampler_kwargs["metric"],
            train_batch_size=int(sampler_kwargs["train_batch_size"]),
            gen_batch_size=1,
            max_inflight_gen_batches=1,
            **kwargs,
        )

    def _wait_for_generation(self, partition_id: str) -> None:
        """Poll until every prompt sent for this step has finished or failed."""
        last_debug = time.time()
        while True:
            self._sync_metadata_from_transfer_queue()
            if not self.pending_keys[partition_id] and not self.running_keys[partition_id]:
                return
            last_debug = self._wait_for_next_poll(partition_id, last_debug)

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        if partition_id == "val":
            return super().sample(global_steps, partition_id, batch_size)
        rounds = 1
        while True:
            self._wait_for_generation(partition_id)
            terminal = self.finished_keys[partition_id] | self.failure_keys[partition_id]
            _, uninformative, _, _ = self._terminal_eviction_reasons(global_steps, partition_id)
            informative = terminal - uninformative
            if len(informative) >= batch_size or rounds > self.max_refill_rounds:
                break
            self.refill_fn(batch_size)  # one more round of a whole batch, as the local trainer rolls out
            rounds += 1
        chosen_from = informative or terminal  # nothing informative: the step is skipped by the trainer
        selected, snapshot, _ = self._select_prompt_uids(partition_id, chosen_from, batch_size)
        surplus = terminal - set(selected)
        if surplus:
            self._clear_groups(partition_id, surplus)
        prefix = self._metrics_prefix(partition_id)
        metrics = {
            f"{prefix}/filter_groups/rollout_rounds": rounds,
            f"{prefix}/filter_groups/informative_items": len(informative),
            f"{prefix}/filter_groups/filtered_item_fraction": 1 - len(informative) / max(len(terminal), 1),
            f"{prefix}/filter_groups/skipped": float(not informative),
        }
        return self._materialize_batch(partition_id, selected, snapshot), metrics
