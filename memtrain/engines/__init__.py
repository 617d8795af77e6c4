"""Generation engines behind one protocol, so that rollout code never depends on a back-end's internals.

`HFEngine` (memtrain.engines.hf) decodes with the trainer's own Hugging Face model; a distributed
back-end can replace it later without any change to the rollout code.
"""

from memtrain.engines.base import Engine, Generation, Sampling

__all__ = ["Engine", "Generation", "Sampling"]
