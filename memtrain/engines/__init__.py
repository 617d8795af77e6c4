"""Generation engines behind one protocol, so that rollout code never depends on a back-end's internals.

`HFEngine` (memtrain.engines.hf) decodes with the trainer's own Hugging Face model; `CompletionsEngine`
(memtrain.engines.completions) with a vLLM or in-package server; veRL's agent loops reach its replicas
through the same protocol (memtrain.distributed.agent_loops), so the rollout code runs unchanged on all.
"""

from memtrain.engines.base import Engine, Generation, Sampling

__all__ = ["Engine", "Generation", "Sampling"]
