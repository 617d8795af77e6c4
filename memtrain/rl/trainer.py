"""The local GRPO trainer: rollout, filter and refill, advantages, clipped updates, checkpoints.

One step draws `batch_size` items, lets the task roll them out (the task owns the agent and the
engine), drops groups whose rewards are all equal (DAPO) and draws more items for at most
`max_refill_rounds` extra rounds to keep the update batch full. A step where every group is still
uninformative (a weak base model scoring all zeros) is logged as skipped; training goes on. The
kept samples are split into mini-batches of `mini_batch_size` items, one optimizer step each,
accumulated over micro-batches under a token budget.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from verl.utils.torch_functional import get_constant_schedule_with_warmup

from memtrain.rl import checkpoint
from memtrain.rl.batching import collate, micro_batches, pad_rows, response_logprobs
from memtrain.rl.grpo import (
    OBJECTIVE_TERMS,
    ScoredSample,
    document_weights,
    is_informative,
    policy_objective,
    scored_samples,
)
from memtrain.rl.samples import Group, Rollout
from memtrain.settings import RL


class Task(Protocol):
    def rollout(self, items: Sequence[Any], rng: np.random.Generator) -> Rollout: ...


@dataclass(frozen=True)
class StepLogger:
    """Where each step's metrics and sample rollouts go (MLflow in the pipeline, lists in tests)."""

    metrics: Callable[[Mapping[str, float], int], None]
    rollouts: Callable[[list[dict[str, Any]], int], None]


class DataCursor:
    """Endless epochs over the items, each epoch in its own seeded order; resumable from two integers."""

    def __init__(self, num_items: int, seed: int, epoch: int = 0, position: int = 0) -> None:
        self.num_items, self.seed, self.epoch, self.position = num_items, seed, epoch, position

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)

    def take(self, count: int) -> list[int]:
        taken = []
        while len(taken) < count:
            order = self._order()
            part = order[self.position : self.position + count - len(taken)]
            taken.extend(int(i) for i in part)
            self.position += len(part)
            if self.position >= self.num_items:
                self.epoch, self.position = self.epoch + 1, 0
        return taken

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}


@dataclass(frozen=True)
class Schedule:
    """What differs between trainings that share the `rl` settings: length, batch sizes, learning rate, seed."""

    steps: int
    batch_size: int
    mini_batch_size: int
    lr: float
    seed: int

    @classmethod
    def from_config(cls, settings: Mapping[str, Any]) -> Schedule:
        return cls(**{name: settings[name] for name in ("steps", "batch_size", "mini_batch_size", "lr", "seed")})


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


class Trainer:
    def __init__(
        self,
        policy,
        reference,
        task: Task,
        items: Sequence[Any],
        settings: RL,
        schedule: Schedule,
        generator: torch.Generator,
        pad_token_id: int,
        checkpoint_dir: str | Path,
        config_hash: str,
        logger: StepLogger,
    ) -> None:
        """`settings` is the typed `rl` config section; `generator` is the one the engine samples with."""
        self.policy, self.reference, self.task, self.items = policy, reference, task, items
        self.settings, self.schedule, self.generator = settings, schedule, generator
        self.pad_token_id, self.checkpoint_dir = pad_token_id, Path(checkpoint_dir)
        self.config_hash, self.logger = config_hash, logger
        self.device = next(policy.parameters()).device
        self.rng = np.random.default_rng([schedule.seed, 1])
        self.cursor = DataCursor(len(items), schedule.seed)
        optim = settings.optimizer
        self.optimizer = torch.optim.AdamW(
            policy.parameters(), lr=schedule.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay
        )
        # veRL's schedule (its actor's default), so that both back-ends take the same steps: the first of a
        # warm-up is taken at learning rate 0
        self.scheduler = get_constant_schedule_with_warmup(self.optimizer, num_warmup_steps=optim.warmup_steps)
        self.step = 0
        if reference is not None:
            reference.eval().requires_grad_(False)

    # --- state -----------------------------------------------------------------------------------
    def _rng_state(self) -> dict[str, Any]:
        state = {
            "torch": torch.get_rng_state(),
            "engine": self.generator.get_state(),
            "numpy": self.rng.bit_generator.state,
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _set_rng_state(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        self.generator.set_state(state["engine"])
        self.rng.bit_generator.state = state["numpy"]
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def save_checkpoint(self) -> Path:
        state = {"config_hash": self.config_hash, "cursor": self.cursor.state()}
        return checkpoint.save(
            self.checkpoint_dir,
            self.step,
            self.policy,
            self.optimizer,
            self.scheduler,
            state,
            self._rng_state(),
            keep=self.settings.keep_checkpoints,
        )

    def resume(self) -> bool:
        """Continue from the newest checkpoint of this config, if any; True when one was found."""
        path = checkpoint.latest(self.checkpoint_dir, self.config_hash)
        if path is None:
            return False
        self.restore(path)
        return True

    def restore(self, path: str | Path) -> None:
        """Take over the complete state of checkpoint `path`: weights, optimizer, schedule, data order, random draws.

        Also used to continue another, finished run for more steps (post-training scaling), which is
        why the checkpoint's config hash is not checked here.
        """
        state, rng = checkpoint.load(path, self.policy, self.optimizer, self.scheduler)
        self._set_rng_state(rng)
        self.cursor = DataCursor(len(self.items), self.schedule.seed, **state["cursor"])
        self.step = state["step"]

    # --- loop ------------------------------------------------------------------------------------
    def fit(self, stop_after: int | None = None) -> list[dict[str, float]]:
        """Train until `schedule.steps` (or `stop_after`, to simulate pre-emption); the metrics of each step run."""
        history = []
        every = self.settings.checkpoint_every
        while self.step < self.schedule.steps and (stop_after is None or self.step < stop_after):
            self.step += 1
            metrics = self.train_step()
            history.append(metrics)
            self.logger.metrics(metrics, self.step)
            if self.step % every == 0 or self.step == self.schedule.steps:
                self.save_checkpoint()
        return history

    def collect(self) -> tuple[Rollout, list[Group], list[int], dict[str, float]]:
        """Roll out items until `batch_size` of them have an informative group (or the refill rounds run out)."""
        settings, batch_size = self.settings.filter, self.schedule.batch_size
        rollout, items, rounds = Rollout(), [], 0
        while True:
            chosen = self.cursor.take(batch_size)
            rollout.extend(self.task.rollout([self.items[i] for i in chosen], self.rng), len(items))
            items.extend(chosen)
            rounds += 1
            kept = [g for g in rollout.groups if is_informative(g)] if settings.enabled else list(rollout.groups)
            kept_items = list(dict.fromkeys(g.item for g in kept))
            if not settings.enabled or len(kept_items) >= batch_size or rounds > settings.max_refill_rounds:
                break
        kept_items = kept_items[:batch_size]
        chosen = set(kept_items)
        groups = [g for g in kept if g.item in chosen]
        stats = {
            "filtered_fraction": 1 - len(kept) / max(len(rollout.groups), 1),
            "rollout_rounds": rounds,
            "kept_items": len(kept_items),
            "items_drawn": len(items),
        }
        return rollout, groups, kept_items, stats

    def train_step(self) -> dict[str, float]:
        started = time.perf_counter()
        rollout, groups, kept_items, stats = self.collect()
        rollout_seconds = time.perf_counter() - started
        generated = sum(len(s.response_ids) for g in rollout.groups for m in g.members for s in m.samples)
        metrics: dict[str, float] = {
            name: value for name, values in rollout.values.items() if (value := _mean(values)) is not None
        }
        metrics.update(
            stats,
            rollout_seconds=rollout_seconds,
            rollout_tokens_per_second=generated / rollout_seconds,
            skipped=float(not groups),
            lr=self.scheduler.get_last_lr()[0],
        )
        for kind in sorted({g.kind for g in rollout.groups}):
            of_kind = [g for g in rollout.groups if g.kind == kind]
            metrics[f"{kind}_groups_filtered"] = sum(not is_informative(g) for g in of_kind) / len(of_kind)
        if self.step % self.settings.log_rollouts_every == 0 or self.step == 1:
            self.logger.rollouts(rollout.records[: self.settings.rollouts_logged], self.step)
        if groups:
            train_started = time.perf_counter()
            metrics.update(self.update(scored_samples(groups), kept_items))
            metrics["train_seconds"] = time.perf_counter() - train_started
            metrics["train_tokens_per_second"] = metrics["train_tokens"] / metrics["train_seconds"]
        metrics["step_seconds"] = time.perf_counter() - started
        return metrics

    def _score(self, model, samples: list[ScoredSample]) -> list[torch.Tensor]:
        """Per-sample response log-probs under `model`, without gradients (reference, or old policy)."""
        out: list[torch.Tensor] = [torch.empty(0)] * len(samples)
        temperature = self.settings.sampling.temperature
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for indices in micro_batches([s.sample for s in samples], self.settings.micro_batch_tokens):
                batch = collate([samples[i].sample for i in indices], self.pad_token_id).to(self.device)
                log_probs, _ = response_logprobs(model, batch, temperature)
                for row, i in enumerate(indices):
                    out[i] = log_probs[row, : len(samples[i].sample.response_ids)].float().cpu()
        model.train(was_training)
        return out

    def update(self, samples: list[ScoredSample], items: list[int]) -> dict[str, float]:
        settings, loss_settings = self.settings, self.settings.loss
        size = self.schedule.mini_batch_size
        minis = []
        for start in range(0, len(items), size):
            chosen = set(items[start : start + size])
            minis.append([i for i, s in enumerate(samples) if s.item in chosen])
        epochs = settings.ppo_epochs
        old = self._score(self.policy, samples) if epochs > 1 or len(minis) > 1 else None
        use_kl = self.reference is not None and loss_settings.kl_coef > 0
        ref = self._score(self.reference, samples) if use_kl else None
        temperature = settings.sampling.temperature
        sums: dict[str, float] = {}  # token-weighted diagnostics
        losses: dict[str, list[float]] = {}  # each optimizer step's objective terms (summed over micro-batches)
        weight = 0.0
        grad_norms = []
        self.policy.train()
        for _ in range(epochs):
            for mini in minis:
                num_tokens = sum(len(samples[i].sample.response_ids) for i in mini)
                weights = (
                    dict(zip(mini, document_weights([samples[i].item for i in mini]), strict=True))
                    if loss_settings.normaliser == "document"
                    else None
                )
                step_losses: dict[str, float] = {}
                for local in micro_batches([samples[i].sample for i in mini], settings.micro_batch_tokens):
                    chosen = [mini[j] for j in local]
                    batch = collate([samples[i].sample for i in chosen], self.pad_token_id).to(self.device)
                    width = batch.responses.shape[1]
                    log_probs, entropy = response_logprobs(self.policy, batch, temperature, with_entropy=True)
                    old_log_probs = (
                        pad_rows([old[i] for i in chosen], width).to(self.device)
                        if old is not None
                        else log_probs.detach()
                    )
                    ref_log_probs = (
                        pad_rows([ref[i] for i in chosen], width).to(self.device) if ref is not None else None
                    )
                    advantages = torch.tensor([samples[i].advantage for i in chosen], device=self.device)
                    factors = (
                        torch.tensor([weights[i] for i in chosen], device=self.device) if weights is not None else None
                    )
                    loss, values = policy_objective(
                        log_probs,
                        old_log_probs,
                        ref_log_probs,
                        advantages,
                        batch.response_mask,
                        loss_settings,
                        len(mini),
                        num_tokens,
                        factors,
                    )
                    loss.backward()
                    tokens = float(batch.response_mask.sum())
                    values["entropy"] = float((entropy * batch.response_mask).sum() / max(tokens, 1.0))
                    for name, value in values.items():
                        if name in OBJECTIVE_TERMS:
                            step_losses[name] = step_losses.get(name, 0.0) + value
                        else:
                            sums[name] = sums.get(name, 0.0) + value * tokens
                    weight += tokens
                for name, value in step_losses.items():
                    losses.setdefault(name, []).append(value)
                grad_norms.append(
                    float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), settings.optimizer.grad_clip))
                )
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        metrics = {name: total / max(weight, 1.0) for name, total in sums.items()}
        metrics.update({name: float(np.mean(values)) for name, values in losses.items()})  # as veRL reports them
        metrics.update(
            grad_norm=float(np.mean(grad_norms)),
            optimizer_steps=len(grad_norms),
            train_samples=len(samples),
            advantage_abs=float(np.mean([abs(s.advantage) for s in samples])),
            train_tokens=float(epochs * sum(s.sample.num_tokens for s in samples)),
        )
        return metrics
