"""GRPO for multi-turn agents: groups of rollouts, rewards, advantages, the clipped loss, and the trainer.

The algorithmic pieces (advantages, policy loss, KL, loss aggregation) are veRL's
`core_algos` functions; this package decides what a group, a sample and a step are.
"""
