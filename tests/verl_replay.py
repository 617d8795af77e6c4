"""An agent loop that hands veRL recorded rollouts instead of generating: the veRL side of the parity test.

veRL imports it in its agent-loop worker (the test puts tests/ on the workers' PYTHONPATH and names the
class in the agent-loop registry). Each (item, session) gets the group-size-1 rollout the test recorded
for it, turned into veRL sequences by the production `agent_loops.outputs`, so everything after generation
(filter, refill, advantages, mini-batches, old and reference log-probs, the update) is veRL's and ours.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput

from memtrain.distributed.agent_loops import outputs

WEIGHT_VERSION = 0  # what the rollouts were "generated" with: the initial weights, before veRL's step 1


class ReplayAgentLoop(AgentLoopBase):
    def __init__(self, *args, settings_path: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sessions = pickle.loads(Path(settings_path).read_bytes())  # item index -> one Rollout per session

    async def run(self, sampling_params, **kwargs) -> list[AgentLoopOutput]:
        index, session = int(kwargs["extra_info"]["index"]), int(kwargs["session_id"])
        return outputs(self.sessions[index][session], session, 0.0, [WEIGHT_VERSION])
