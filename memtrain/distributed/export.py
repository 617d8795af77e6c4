"""veRL's sharded FSDP actor checkpoint as our policy folder, in the dtype the run trained in.

veRL 0.9.1's FSDPModelMerger casts every shard to bf16 while merging (`_load_and_merge_state_dicts`) and
builds the saved model in bf16 (`save_hf_model_and_tokenizer`), whatever the run's precision: an fp32 run
would come back rounded to 8 mantissa bits, unlike the local trainer's export of the same run. This merger
keeps veRL's reading of the checkpoint layout (world size, device mesh, placements, replicated entries) and
replaces those two steps.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.distributed.tensor import DTensor
from verl.model_merger.base_model_merger import ModelMergerConfig
from verl.model_merger.fsdp_model_merger import FSDPModelMerger, merge_non_dtensor_shards

from memtrain.io import atomic_dir, write_json


class _DtypeKeepingMerger(FSDPModelMerger):
    def __init__(self, config: ModelMergerConfig, dtype: torch.dtype) -> None:
        super().__init__(config)
        self.dtype = dtype

    def _load_and_merge_state_dicts(
        self, world_size: int, total_shards: int, mesh_shape: tuple[int, ...], mesh_dim_names: tuple[str, ...]
    ) -> dict[str, torch.Tensor]:
        if len(mesh_shape) != 1:
            raise NotImplementedError(
                f"FSDP checkpoints with tensor parallelism (mesh {mesh_dim_names}) are not "
                "supported, as in veRL's merger"
            )
        shards = [
            torch.load(
                Path(self.config.local_dir) / f"model_world_size_{world_size}_rank_{rank}.pt",
                map_location="cpu",
                weights_only=False,
            )
            for rank in range(total_shards)
        ]
        merged = {}
        for key, first in shards[0].items():
            pieces = [shard[key] for shard in shards]
            if isinstance(first, DTensor):
                placements = tuple(first.placements)
                if mesh_dim_names[0] in ("dp", "ddp"):  # replicated across the data-parallel dimension
                    placements = placements[1:]
                (placement,) = placements
                merged[key] = self._merge_by_placement([piece._local_tensor for piece in pieces], placement)
            else:
                merged[key] = merge_non_dtensor_shards(key, pieces)
        return {key: tensor.to(self.dtype) for key, tensor in merged.items()}

    def save_hf_model_and_tokenizer(self, state_dict: dict[str, torch.Tensor]) -> None:
        from accelerate import init_empty_weights
        from transformers import AutoTokenizer

        with init_empty_weights():
            model = self.get_transformers_auto_model_class().from_config(self.model_config, dtype=self.dtype)
        model.to_empty(device="cpu")
        model.load_state_dict(state_dict, strict=False, assign=True)
        model.tie_weights()  # the checkpoint may hold a tied weight under one name only
        missing = [name for name, parameter in model.named_parameters() if parameter.is_meta]
        if missing:
            raise ValueError(f"{self.config.local_dir}: the checkpoint has no weights for {', '.join(missing)}")
        model = self.patch_model_generation_config(model)
        model.save_pretrained(self.config.target_dir)
        AutoTokenizer.from_pretrained(self.hf_model_config_path).save_pretrained(self.config.target_dir)


def export_policy(actor: str | os.PathLike, output: str | os.PathLike, summary: Mapping[str, Any], dtype: str) -> None:
    """The actor checkpoint as a policy folder: merged Hugging Face weights in `dtype`, tokenizer, training.json."""
    actor = Path(actor)
    with atomic_dir(output) as tmp:
        merger = _DtypeKeepingMerger(
            ModelMergerConfig(
                operation="merge",
                backend="fsdp",
                local_dir=str(actor),
                target_dir=str(tmp),
                hf_model_config_path=str(actor / "huggingface"),
            ),
            getattr(torch, dtype),
        )
        merger.merge_and_save()
        write_json(dict(summary), Path(tmp) / "training.json")
