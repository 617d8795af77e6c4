"""How MemTrain combines its two rewards (paper Eqs. 1-2), per ablation variant."""

from __future__ import annotations

from collections.abc import Sequence

VARIANTS = ("full", "e2e", "decoupled")


def end_to_end_rewards(
    exact_matches: Sequence[float], recall_matches: Sequence[Sequence[float]], variant: str, recall_coef: float
) -> list[float]:
    """R^E of each trajectory of one G1 group, from its EM and its IMR rewards (empty: no recall question).

    full: EM + lambda/G2 * sum of its IMR rewards (memories that serve later recall are rewarded);
    decoupled: EM only, IMR still trained as its own groups; e2e: EM only and no IMR at all.
    A group where some trajectory has no recall question (a document too short to ask one after the memories
    it wrote) is scored by EM alone throughout, so that rewards in [0, 1] never meet rewards in [0, 1 + lambda]
    in one group's baseline; its IMR groups are still trained.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown MemTrain variant {variant!r} (known: {', '.join(VARIANTS)})")
    if len(exact_matches) != len(recall_matches):
        raise ValueError(f"{len(exact_matches)} exact matches but {len(recall_matches)} recall results")
    if variant == "full" and all(recall_matches):
        return [em + recall_coef * sum(recall) / len(recall) for em, recall in zip(exact_matches, recall_matches)]
    return list(exact_matches)


def uses_recall(variant: str) -> bool:
    return variant in ("full", "decoupled")
