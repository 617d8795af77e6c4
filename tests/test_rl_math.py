"""Rewards, group filtering, advantage broadcast and the Eq. 4 normaliser, checked by hand."""

import dataclasses

import pytest
import torch

from memtrain.rl.grpo import document_weights, is_informative, policy_objective, scored_samples
from memtrain.rl.rewards import end_to_end_rewards
from memtrain.rl.samples import Group, Member, Rollout, Sample
from memtrain.settings import Loss

LOSS = Loss(
    clip_ratio_low=0.2,
    clip_ratio_high=0.28,
    clip_ratio_c=3.0,
    kl_coef=0.0,
    kl_type="low_var_kl",
    aggregation="seq-mean-token-sum",
    normaliser="mini_batch",
)


def test_three_reward_modes():
    # full: EM + 0.5 x mean IMR; 1 + 0.5 x 3/4 = 1.375, 0 + 0.5 x 1 = 0.5
    assert end_to_end_rewards([1.0, 0.0], [[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]], "full", 0.5) == pytest.approx(
        [1.375, 0.5]
    )
    # a trajectory without a recall question: the whole group by EM alone, never 1.0 beside 1.5 for the same EM
    assert end_to_end_rewards([1.0, 1.0], [[], [1.0, 1.0]], "full", 0.5) == [1.0, 1.0]
    assert end_to_end_rewards([0.0, 1.0], [[1.0, 1.0], [0.0, 1.0]], "decoupled", 0.5) == [0.0, 1.0]
    assert end_to_end_rewards([1.0], [[]], "e2e", 0.5) == [1.0]
    with pytest.raises(ValueError, match="unknown MemTrain variant"):
        end_to_end_rewards([1.0], [[]], "nope", 0.5)


def _sample(tag: int, turns: int = 1) -> tuple[Sample, ...]:
    return tuple(Sample((tag, t), (tag, t, 0)) for t in range(turns))


def test_filter_keeps_only_groups_with_different_rewards():
    assert not is_informative(Group(0, "e2e", (Member(0.0, ()), Member(0.0, ()))))
    assert not is_informative(Group(0, "e2e", (Member(1.0, ()), Member(1.0, ()))))
    assert is_informative(Group(0, "e2e", (Member(0.0, ()), Member(0.5, ()))))


def test_dr_grpo_advantages_are_group_centred_unscaled_and_broadcast_to_turns():
    e2e = Group(
        0, "e2e", (Member(1.5, _sample(1, turns=3)), Member(0.0, _sample(2, turns=3)), Member(0.0, _sample(3, turns=3)))
    )
    recall = Group(0, "recall", (Member(1.0, _sample(4)), Member(0.0, _sample(5))))
    scored = scored_samples([e2e, recall])
    assert len(scored) == 3 * 3 + 2
    # E2E mean 0.5: +1.0 for the first trajectory, -0.5 for the others, on every one of their 3 turns
    assert [s.advantage for s in scored[:9]] == pytest.approx([1.0] * 3 + [-0.5] * 6)
    # the IMR group is its own group: mean 0.5, no division by its std (which would give +-0.707)
    assert [s.advantage for s in scored[9:]] == pytest.approx([0.5, -0.5])
    assert {s.kind for s in scored[:9]} == {"e2e"} and scored[9].kind == "recall"


def test_eq4_weighs_every_sample_once_whatever_the_micro_batching():
    """On-policy (ratio 1) the loss is -(sum over samples of A_i * tokens_i) / number of samples."""
    log_prob = torch.zeros(3, 4, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float)
    advantages = torch.tensor([1.0, -2.0, 0.5])
    loss, metrics = policy_objective(log_prob, log_prob.detach(), None, advantages, mask, LOSS, 3, int(mask.sum()))
    assert loss.item() == pytest.approx(-(1.0 * 4 - 2.0 * 2 + 0.5 * 1) / 3)
    assert metrics["clip_fraction"] == 0.0
    # the same mini-batch in two micro-batches sums to the same loss when both use the global count
    first, _ = policy_objective(log_prob[:1], log_prob[:1].detach(), None, advantages[:1], mask[:1], LOSS, 3, 7)
    rest, _ = policy_objective(log_prob[1:], log_prob[1:].detach(), None, advantages[1:], mask[1:], LOSS, 3, 7)
    assert (first + rest).item() == pytest.approx(loss.item())


def test_eq4_per_document_divides_each_documents_token_sums_by_its_own_samples_then_averages_documents():
    """Document 0 has 3 samples (token sums 4, 2, 1 at A = 1, -2, 0.5), document 1 one (3 tokens at A = 1).
    Per document: -(4 - 4 + 0.5) / 3 and -(3) / 1, averaged: -(0.5 / 3 + 3) / 2. Per mini-batch: -(0.5 + 3) / 4."""
    assert document_weights([0, 0, 0, 1]) == pytest.approx([4 / 6, 4 / 6, 4 / 6, 2.0])  # N / (D n_d)
    log_prob = torch.zeros(4, 4, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.float)
    advantages = torch.tensor([1.0, -2.0, 0.5, 1.0])
    weights = torch.tensor(document_weights([0, 0, 0, 1]))
    per_document, _ = policy_objective(log_prob, log_prob.detach(), None, advantages, mask, LOSS, 4, 10, weights)
    assert per_document.item() == pytest.approx(-(0.5 / 3 + 3) / 2)
    per_batch, _ = policy_objective(log_prob, log_prob.detach(), None, advantages, mask, LOSS, 4, 10)
    assert per_batch.item() == pytest.approx(-(0.5 + 3) / 4)
    # the KL term is weighted alike: a reference 0.1 below on every token of document 1 only
    ref = torch.tensor([[0.0] * 4] * 3 + [[-0.1] * 4])
    settings = dataclasses.replace(LOSS, kl_coef=1.0)
    with_kl, _ = policy_objective(log_prob, log_prob.detach(), ref, advantages, mask, settings, 4, 10, weights)
    kl_token = float(torch.exp(torch.tensor(-0.1)) + 0.1 - 1)  # low_var_kl of ref - logp = -0.1
    assert with_kl.item() == pytest.approx(per_document.item() + (3 * kl_token / 1) / 2, rel=1e-5)


def test_clip_higher_and_kl_term():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    mask = torch.ones(1, 2)
    loss, metrics = policy_objective(new, old, None, torch.tensor([1.0]), mask, LOSS, 1, 2)
    # positive advantage: ratio capped at 1 + 0.28 above, unclipped below (min of the two terms)
    assert loss.item() == pytest.approx(-(1.28 + 0.5))
    assert metrics["clip_fraction"] == pytest.approx(0.5)
    ref = torch.zeros(1, 2)
    with_kl, metrics = policy_objective(
        new, old, ref, torch.tensor([1.0]), mask, dataclasses.replace(LOSS, kl_coef=0.1), 1, 2
    )
    low_var_kl = sum(float(torch.exp(-v) + v - 1) for v in new[0])  # exp(ref - logp) - (ref - logp) - 1
    assert with_kl.item() == pytest.approx(loss.item() + 0.1 * low_var_kl, rel=1e-5)
    assert metrics["kl"] == pytest.approx(low_var_kl / 2, rel=1e-5)


def test_rollout_extend_renumbers_items():
    first = Rollout([Group(0, "e2e", ())], {"em": [1.0]}, [{"a": 1}])
    first.extend(Rollout([Group(0, "e2e", ()), Group(1, "recall", ())], {"em": [0.0]}, []), item_offset=2)
    assert [g.item for g in first.groups] == [0, 2, 3]
    assert first.values == {"em": [1.0, 0.0]}
