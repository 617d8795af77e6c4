"""A Hugging Face rollout replica for veRL (`rollout.name: hf`): our HFEngine behind veRL's server interface.

veRL ships vLLM, SGLang and TensorRT-LLM replicas, all GPU-only. This one serves veRL's agent loops from
the same batched engine the local trainer samples with, so the veRL back-end runs on a CPU (the test
suite, a laptop) and on a GPU node without vLLM; there it still decodes on the node's CPU cores (it asks
Ray for no GPU, and holds the policy in float32 in host memory), which suits a small policy or a trial of
the pipeline, not the paper's rollouts. Hybrid mode: one Ray actor per replica holds its own copy of the
policy, and the actor's rank-0 worker pushes the trained weights to it after every update (veRL's naive
checkpoint engine calls `update_weights`), tagged with veRL's global step so that its staleness metrics
see which weights produced each sequence.

Loaded in every veRL process through VERL_USE_EXTERNAL_MODULES (memtrain.distributed.verl_config).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import ray
import torch
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry, TokenOutput

NAME = "hf"
# How long an idle replica waits for the rest of a turn's requests before decoding (RequestBatcher.wait): the
# sessions' requests of one turn reach it over a few milliseconds, and each call then lasts seconds.
BURST_WAIT = 0.05


def server_name(replica_rank: int) -> str:
    return f"memtrain_hf_rollout_{replica_rank}"


@ray.remote(num_cpus=0)
class HFRolloutServer:
    """One replica: the policy in an HFEngine. veRL sends one prompt per request; the requests that arrive
    while an engine call runs are served together by the next one (memtrain.engines.request_batcher)."""

    def __init__(self, model_path: str, max_model_len: int, seed: int) -> None:
        from memtrain.engines.hf import HFEngine
        from memtrain.engines.request_batcher import RequestBatcher
        from memtrain.models import load_policy, load_saved_tokenizer

        # Threads: OMP_NUM_THREADS, the job's cores on the CPU platform (verl_config.environment).
        self.model = load_policy(model_path, device="cpu", dtype="float32")
        tokenizer = load_saved_tokenizer(model_path)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        engine = HFEngine(self.model, pad_token_id=pad, generator=torch.Generator().manual_seed(seed))
        self.max_model_len, self.eos = max_model_len, tokenizer.eos_token_id
        self.global_steps = 0  # the version of the weights held: 0 until the first push
        self.batcher = RequestBatcher(engine, tag=lambda: self.global_steps, wait=BURST_WAIT)

    def get_server_address(self) -> str:
        return f"{ray.util.get_node_ip_address()}:hf"

    def _sampling(self, params: dict[str, Any], prompt_length: int):
        from memtrain.engines import Sampling

        if (params.get("top_k") or -1) > 0:
            raise ValueError(f"the hf rollout samples with temperature and top_p only; got top_k={params['top_k']}")
        room = self.max_model_len - prompt_length
        if room < 1:
            raise ValueError(
                f"a prompt of {prompt_length} tokens leaves no room under max_model_len {self.max_model_len}"
            )
        wanted = params.get("max_tokens") or params.get("max_new_tokens") or room
        stop = tuple(dict.fromkeys([*(params.get("stop_token_ids") or []), self.eos]))
        return Sampling(
            min(int(wanted), room), float(params.get("temperature", 1.0)), float(params.get("top_p", 1.0)), stop
        )

    async def generate(
        self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str, **kwargs
    ) -> TokenOutput:
        sampling = self._sampling(dict(sampling_params), len(prompt_ids))
        generation, steps = await self.batcher.generate(prompt_ids, sampling)
        return TokenOutput(
            token_ids=list(generation.token_ids),
            log_probs=list(generation.logprobs),
            stop_reason="completed",
            extra_fields={"global_steps": steps},
        )

    async def load_weights(self, named: dict[str, torch.Tensor], global_steps: int | None) -> int:
        """Take the trained weights; every name must be one of the model's (a mismatch would sample stale weights)."""
        async with self.batcher.lock:
            own = self.model.state_dict()
            unknown = sorted(set(named) - set(own))
            if unknown:
                raise KeyError(f"pushed weights the rollout model does not have: {unknown[:5]}")
            self.model.load_state_dict(named, strict=False)
            if global_steps is not None:
                self.global_steps = int(global_steps)
        return len(named)

    async def _nothing(self, *args, **kwargs) -> None:
        """Memory management and profiling calls veRL makes of GPU servers: nothing to do for this one."""

    wake_up = sleep = clear_kv_cache = release_kv_cache = resume_kv_cache = _nothing
    abort_all_requests = resume_generation = start_profile = stop_profile = _nothing


class HFReplica(RolloutReplica):
    """veRL's replica interface: launches the server actor beside the hybrid workers."""

    def get_ray_class_with_init_args(self):
        raise NotImplementedError(
            "the hf rollout runs in hybrid mode only (rollout.mode async, colocated with the actor)"
        )

    def rollout_worker_use_gpu(self) -> bool:
        return False

    async def launch_servers(self) -> None:
        path = self.model_config.path if hasattr(self.model_config, "path") else self.model_config["path"]
        server = HFRolloutServer.options(name=server_name(self.replica_rank)).remote(
            path,
            self.config.max_model_len or self.config.prompt_length + self.config.response_length,
            self.config.seed + self.replica_rank,
        )
        self._server_address = await server.get_server_address.remote()
        self.servers, self._server_handle = [server], server


class HFServerAdapter(BaseRollout):
    """The worker side: gathers the actor's (sharded) weights and hands them to its replica's server."""

    def __init__(self, config, model_config, device_mesh, *args, **kwargs) -> None:
        super().__init__(config, model_config, device_mesh)
        world = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.replica_rank, self.leader = rank // world, rank % world == 0

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(
        self, weights: Iterable[tuple[str, torch.Tensor]], wire_format: str = "named_tensors", **kwargs
    ) -> None:
        if wire_format != "named_tensors":
            raise ValueError(f"the hf rollout takes full named tensors, not {wire_format!r}")
        named = {}
        for name, tensor in weights:  # every rank takes part in gathering a sharded tensor
            tensor = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            named[name] = tensor.detach().to("cpu", copy=True)
        if self.leader:
            server = ray.get_actor(server_name(self.replica_rank))
            await server.load_weights.remote(named, kwargs.get("global_steps"))


# veRL's worker-side rollout classes are looked up in a module dict with no registration function
# (verl/workers/rollout/base.py, 0.9.1); the replica side has RolloutReplicaRegistry.register.
rollout_base._ROLLOUT_REGISTRY[(NAME, "async")] = f"{__name__}.{HFServerAdapter.__qualname__}"
RolloutReplicaRegistry.register(NAME, lambda: HFReplica)
