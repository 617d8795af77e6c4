"""veRL on a CPU: a platform for veRL's platform registry (`VERL_PLATFORM=cpu`).

veRL asks its platform for the device module, the collective backend and the Ray resource to schedule
workers on; it knows CUDA, NPU and a few vendors' accelerators. This platform answers for the CPU (gloo,
`torch.cpu`, no-op memory and profiling calls), which lets the test suite run veRL's own trainer loop
(rollout, advantages, FSDP2 update, weight sync, checkpoint, resume) on the machines the project is
developed on. Workers are still scheduled on Ray's "GPU" resource, which veRL's resource checks read:
memtrain.distributed.verl_config declares one per CPU "device" in ray_init.

Loaded in every veRL process through VERL_USE_EXTERNAL_MODULES (memtrain.distributed.verl_config).
"""

from __future__ import annotations

import contextlib
import os
from types import ModuleType
from typing import Any, ClassVar

import torch
import torch.distributed
from verl.plugin.platform import PlatformBase, PlatformRegistry

NAME = "cpu"


def device_count() -> int:
    """CPU "devices" veRL may place workers on (one unless MEMTRAIN_CPU_DEVICES says more)."""
    return int(os.environ.get("MEMTRAIN_CPU_DEVICES", "1"))


class _DeviceModule(ModuleType):
    """What veRL calls through get_torch_device(): torch.cpu, and the torch.cuda calls it lacks as CPU answers."""

    _ANSWERS: ClassVar[dict[str, Any]] = {
        "is_available": lambda: True,
        "device_count": device_count,
        "current_device": lambda: "cpu",
        "get_device_name": lambda *args, **kwargs: "cpu",
        "mem_get_info": lambda *args, **kwargs: (0, 0),  # unknown; veRL only logs it
        "memory_allocated": lambda *args, **kwargs: 0,
        "memory_reserved": lambda *args, **kwargs: 0,
        "max_memory_allocated": lambda *args, **kwargs: 0,
        "max_memory_reserved": lambda *args, **kwargs: 0,
        "reset_peak_memory_stats": lambda *args, **kwargs: None,
        "empty_cache": lambda: None,
        "synchronize": lambda *args, **kwargs: None,
        "set_device": lambda *args, **kwargs: None,
        "get_rng_state": lambda *args, **kwargs: torch.get_rng_state(),
        "set_rng_state": lambda state, *args, **kwargs: torch.set_rng_state(state),
        "manual_seed": torch.manual_seed,
        "manual_seed_all": torch.manual_seed,
    }

    def __getattr__(self, name: str) -> Any:
        if name in self._ANSWERS:
            return self._ANSWERS[name]
        if hasattr(torch.cpu, name):
            return getattr(torch.cpu, name)
        raise AttributeError(f"veRL asked the CPU platform for torch.cuda.{name}, which it does not provide")


DEVICE_MODULE = _DeviceModule("memtrain_cpu_device")


@PlatformRegistry.register(platform=NAME)
class CPUPlatform(PlatformBase):
    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def current_device(self) -> str:
        return "cpu"  # veRL moves tensors with .to(current device): an int would mean cuda:N

    def device_count(self) -> int:
        return device_count()

    def set_device(self, device_index) -> None:
        pass

    def synchronize(self, device_index: int | None = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0) -> tuple[None, None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> None:
        return None


def _patch_torch_for_veRL_on_cpu() -> None:
    """Two calls veRL 0.9.1 makes that torch refuses on a CPU-only machine; patched here and nowhere else.

    - veRL initialises process groups with "cpu:gloo,{device}:{backend}", which on this platform names the
      CPU twice ("cpu:gloo,cpu:gloo") and torch rejects (verl/workers/engine_workers.py); one "gloo" is meant.
    - FSDP2 wraps forward-only engines (the reference policy) in CPUOffloadPolicy(pin_memory=True)
      (verl/workers/engine/fsdp/transformer_impl.py); pinning needs an accelerator and means nothing here.
    Only where no accelerator exists, and only for veRL 0.9.x, whose calls these are.
    """
    import verl

    if torch.cuda.is_available() or not verl.__version__.startswith("0.9."):
        return
    init_process_group = torch.distributed.init_process_group
    if getattr(init_process_group, "memtrain_cpu", False):
        return

    def init_on_cpu(*args, **kwargs):
        if args:
            kwargs["backend"], args = args[0], args[1:]
        if isinstance(kwargs.get("backend"), str) and kwargs["backend"].replace(" ", "") == "cpu:gloo,cpu:gloo":
            kwargs["backend"] = "gloo"
        return init_process_group(*args, **kwargs)

    init_on_cpu.memtrain_cpu = True
    torch.distributed.init_process_group = init_on_cpu
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self


if os.environ.get("VERL_PLATFORM", "").strip().lower() == NAME:
    _patch_torch_for_veRL_on_cpu()
