"""The memory agent: prompts, multi-turn rollouts over chunked documents, answer extraction and scoring.

Everything here talks to a generation engine only through `memtrain.engines.Engine`, so the same
rollout code serves the local trainer and a distributed back-end.
"""
