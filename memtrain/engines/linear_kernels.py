"""Which kernel runs the policy's linear layers while the engine decodes (`rl.engine_linear`).

On CPU, torch sends `F.linear` to MKL's sgemm. At a decode step's shapes (1 to a few dozen rows against
every weight matrix once) that streams the weights well below the memory bandwidth: on this project's
2-core machine 11 GB/s at one row against 33 GB/s for a plain read, while oneDNN's linear op streams
them at 15-20 GB/s. Switched for the engine's forward passes only, it makes a SmolLM2-135M decode step
15% faster at batch 1 and at batch 8, with prefill unchanged and the same greedy tokens
(`bench/rollout_throughput.py` measures both kernels in one run).

The switch is a TorchFunctionMode, PyTorch's extension point for rerouting a function within a scope,
so that neither the model's modules nor the trainer (whose log-prob and update passes keep torch's
default) are touched. The oneDNN op, `torch.ops.mkldnn._linear_pointwise`, is private: it is what
torch.compile's CPU backend emits for linear layers, hence present in every CPU build with oneDNN
since torch 2.0; it is looked up here and nowhere else, and `auto` falls back to the default kernel
when it is missing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _onednn_linear() -> Any:
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


class OneDNNLinear(TorchFunctionMode):
    """Routes float32 CPU `F.linear` calls without autograd to oneDNN; everything else runs unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = _onednn_linear()
        if self.linear is None:
            raise RuntimeError(
                "rl.engine_linear: onednn needs torch.ops.mkldnn._linear_pointwise, which this "
                f"torch {torch.__version__} build lacks (use blas or auto)"
            )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            inputs, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if (
                inputs.device.type == "cpu"
                and inputs.dtype == weight.dtype == torch.float32
                and weight.dim() == 2
                and not torch.is_grad_enabled()
            ):
                rows = self.linear(inputs.reshape(-1, inputs.shape[-1]), weight, bias, "none", [], "")
                return rows.reshape(*inputs.shape[:-1], weight.shape[0])
        return func(*args, **kwargs)


LINEAR_KERNELS: dict[str, Callable[[], AbstractContextManager[Any]]] = {
    "blas": contextlib.nullcontext,
    "onednn": OneDNNLinear,
}


def resolve(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """`auto` is oneDNN where it was measured to pay (float32 on CPU, op present), torch's default elsewhere."""
    if name != "auto":
        if name not in LINEAR_KERNELS:
            raise ValueError(f"unknown engine linear kernel {name!r} (known: auto, {', '.join(LINEAR_KERNELS)})")
        return name
    return "onednn" if device.type == "cpu" and dtype == torch.float32 and _onednn_linear() is not None else "blas"
