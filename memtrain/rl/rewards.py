"""How MemTrain combines its two rewards (paper Eqs. 1-2), per ablation variant."""

from __future__ import annotations

from collections.abc import Sequence

VARIANTS = ("full", "e2e", "decoupled")


def end_to_end_reward(exact_match: float, recall_matches: Sequence[float], variant: str, recall_coef: float) -> float:
    """R^E of one trajectory.

    full: EM + lambda/G2 * sum of its IMR rewards (memories that serve later recall are rewarded);
    decoupled: EM only, IMR still trained as its own groups; e2e: EM only and no IMR at all.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown MemTrain variant {variant!r} (known: {', '.join(VARIANTS)})")
    if variant == "full" and recall_matches:
        return exact_match + recall_coef * sum(recall_matches) / len(recall_matches)
    return exact_match


def uses_recall(variant: str) -> bool:
    return variant in ("full", "decoupled")
