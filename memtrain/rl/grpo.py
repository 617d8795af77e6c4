"""The GRPO pieces, each delegated to veRL's core_algos: group filtering, advantages and the loss.

Dr. GRPO advantages (group mean subtracted, no division by the std), DAPO's dynamic-sampling filter
(groups whose rewards are all equal carry no signal), the clipped policy loss with clip-higher, a
low-variance KL to the frozen reference, and veRL's `seq-mean-token-sum` aggregation, which is
the paper's Eq. 4: token losses summed per sample, averaged over every E2E turn and IMR sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import OmegaConf
from verl.trainer.ppo import core_algos

from memtrain.rl.samples import Group, Sample
from memtrain.settings import Loss


def is_informative(group: Group, tolerance: float = 1e-9) -> bool:
    """A group teaches something only when its members' rewards differ (DAPO dynamic sampling)."""
    rewards = group.rewards
    return max(rewards) - min(rewards) > tolerance


@dataclass(frozen=True)
class ScoredSample:
    sample: Sample
    advantage: float
    item: int
    kind: str


def scored_samples(groups: Sequence[Group]) -> list[ScoredSample]:
    """Every sample of every group with its member's Dr. GRPO advantage, broadcast over the member's turns."""
    members = [(g, index, member) for index, g in enumerate(groups) for member in g.members]
    if not members:
        return []
    rewards = torch.tensor([[member.reward] for _, _, member in members], dtype=torch.float32)
    advantages, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=rewards,
        response_mask=torch.ones_like(rewards),
        index=np.array([index for _, index, _ in members]),
        norm_adv_by_std_in_grpo=False,
    )
    return [
        ScoredSample(sample, float(advantage), group.item, group.kind)
        for (group, _, member), advantage in zip(members, advantages[:, 0].tolist(), strict=True)
        for sample in member.samples
    ]


def document_weights(items: Sequence[int]) -> list[float]:
    """Per-sample factors that turn seq-mean-token-sum over a mini-batch into Eq. 4 per document.

    seq-mean-token-sum divides the sum of every sample's token sum by N, the mini-batch's samples. Eq. 4 divides
    each document's token sums by its own n_d samples and the documents are then averaged (D of them): a sample of
    document d is weighted N / (D n_d). `items` gives each sample's document.
    """
    counts: dict[int, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return [len(items) / (len(counts) * counts[item]) for item in items]


def loss_config(settings: Loss, num_samples: int, num_tokens: int):
    """veRL's actor config for one mini-batch: clip ratios and the global normalisers.

    `global_batch_size` (samples, Eq. 4) and `batch_num_tokens` (for token-mean) count the whole
    mini-batch, so gradient accumulation over micro-batches sums to exactly its objective.
    """
    return OmegaConf.create(
        {
            "clip_ratio": settings.clip_ratio_low,
            "clip_ratio_low": settings.clip_ratio_low,
            "clip_ratio_high": settings.clip_ratio_high,
            "clip_ratio_c": settings.clip_ratio_c,
            "global_batch_info": {"dp_size": 1, "global_batch_size": num_samples, "batch_num_tokens": num_tokens},
        }
    )


# The diagnostics of policy_objective that are a micro-batch's share of its mini-batch's objective: they add up
# over micro-batches (the others are per-token means).
OBJECTIVE_TERMS = frozenset({"pg_loss", "kl_loss"})


def policy_objective(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor | None,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    settings: Loss,
    num_samples: int,
    num_tokens: int,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one micro-batch (to backpropagate as is) and its diagnostics.

    `advantages` is (batch,) per sample; `settings` is the typed `rl.loss` config section; `num_samples`
    and `num_tokens` count the whole mini-batch this micro-batch belongs to. `weights` (batch,), positive,
    scale each sample's terms (document_weights): the clipped term is linear in a positive advantage factor.
    """
    mode = settings.aggregation
    config = loss_config(settings, num_samples, num_tokens)
    if weights is not None:
        advantages = advantages * weights
    token_advantages = advantages[:, None].expand_as(log_prob) * response_mask
    pg_loss, pg_metrics = core_algos.compute_policy_loss_vanilla(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=token_advantages,
        response_mask=response_mask,
        loss_agg_mode=mode,
        config=config,
    )
    metrics = {
        "pg_loss": pg_loss.item(),
        "clip_fraction": pg_metrics["actor/pg_clipfrac"],
        "ppo_kl": pg_metrics["actor/ppo_kl"],
    }
    loss = pg_loss
    if ref_log_prob is not None and settings.kl_coef > 0:
        kl = core_algos.kl_penalty(log_prob, ref_log_prob, settings.kl_type)
        weighted = kl if weights is None else kl * weights[:, None]
        kl_loss = core_algos.agg_loss(
            loss_mat=weighted, loss_mask=response_mask, loss_agg_mode=mode, **config.global_batch_info
        )
        loss = loss + settings.kl_coef * kl_loss
        metrics["kl"] = float((kl.detach() * response_mask).sum() / response_mask.sum().clamp(min=1))
        metrics["kl_loss"] = kl_loss.item()
    return loss, metrics
