"""Which kernel runs the policy's linear layers while the engine decodes (`rl.engine_linear`).

On CPU, torch sends `F.linear` to MKL's sgemm (float32) or to oneDNN with the weight in its plain layout
(bfloat16). At a decode step's shapes (1 to a few dozen rows against every weight matrix once) both stream
the weights well below the memory bandwidth. oneDNN's linear op with each weight reordered once into its
blocked layout (what torch.compile's CPU backend does to frozen weights) streams them faster: SmolLM2-135M's
211 linear layers at one and at eight rows ran 1.7x and 2.1x faster than MKL in float32 (1.0x and 1.5x
faster than oneDNN unpacked) and 1.4x and 1.6x faster than torch's kernel in bfloat16, with results bit
for bit torch's at those shapes in bfloat16 (throw-away timings on this project's 2-core machine;
`bench/rollout_throughput.py` measures both kernels in one run).

A packed copy is valid only for the weights it was made from, and training changes them between calls.
Every in-place update (an optimizer step, `load_state_dict`) bumps a tensor's version counter, so a packed
weight is kept with the version it was packed at and repacked when that moved: once per policy update in
training, once per engine in evaluation. The cost is a second copy of the weights in memory for as long as
the engine lives, and one reorder per update (about 80 ms in bfloat16, 260 ms in float32 for SmolLM2-135M
on 2 cores).

The switch swaps each `nn.Linear` of the model for a `PackedLinear` holding the same Parameter objects for
the span of a generate call (module swaps are how torchao and bitsandbytes put in their kernels), so the
trainer's passes, its optimizer and `state_dict` see the model unchanged. A TorchFunctionMode would scope it
without a swap, but it runs Python for every torch call of the forward, not just the linear ones: at batch 1
in float32 it added about 10 ms to a 50-ms decode step, the swap about 3. The oneDNN ops,
`torch.ops.mkldnn._linear_pointwise` and `_reorder_linear_weight`, are private: they are what torch.compile's
CPU backend emits for linear layers, hence present in every CPU build with oneDNN since torch 2.0; they are
looked up here and nowhere else, and `auto` falls back to torch's kernel when they are missing.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

import torch
import torch.nn.functional as F

# bfloat16 needs oneDNN's bfloat16 inner product (AVX-512 or AMX on x86); float32 runs everywhere.
ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def _onednn_ops() -> tuple[Any, Any] | None:
    if not torch.backends.mkldnn.is_available():
        return None
    linear = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    reorder = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)
    return None if linear is None or reorder is None else (linear, reorder)


def onednn_dtypes() -> tuple[torch.dtype, ...]:
    """The weight dtypes oneDNN's packed linear runs in on this CPU and build (none without the ops)."""
    if _onednn_ops() is None:
        return ()
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return ONEDNN_DTYPES if supported is not None and supported() else (torch.float32,)


class LinearKernel(Protocol):
    def scope(self, model: torch.nn.Module) -> AbstractContextManager[None]:
        """The span in which `model`'s linear layers run on this kernel."""


class TorchLinear:
    """torch's own kernel (MKL or oneDNN on CPU, cuBLAS on CUDA): nothing to switch."""

    def __init__(self, rows: int = 1) -> None:
        del rows

    def scope(self, model: torch.nn.Module) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


class OneDNNLinear:
    """Runs CPU linear layers without autograd in float32 or bfloat16 (where the CPU has it) on oneDNN with
    packed weights; other calls take torch's kernel.

    One instance per engine: its packed weights outlive a generate call. `rows` is the batch the blocked
    layout is chosen for (the engine's slot count); any batch runs on it.
    """

    def __init__(self, rows: int = 1) -> None:
        ops = _onednn_ops()
        if ops is None:
            raise RuntimeError(
                "rl.engine_linear: onednn needs torch.ops.mkldnn._linear_pointwise and _reorder_linear_weight, "
                f"which this torch {torch.__version__} build lacks (use blas or auto)"
            )
        self.onednn_linear, self.reorder = ops
        self.dtypes = onednn_dtypes()
        self.rows = rows
        # id(weight) -> (the weight, its version when packed, the packed copy); an entry leaves with its weight.
        self.packed: dict[int, tuple[weakref.ref[torch.Tensor], int, torch.Tensor]] = {}

    def packed_weight(self, weight: torch.Tensor) -> torch.Tensor:
        key = id(weight)
        entry = self.packed.get(key)
        if entry is not None and entry[0]() is weight and entry[1] == weight._version:
            return entry[2]
        packed = self.reorder(weight.detach(), self.rows)
        self.packed[key] = (weakref.ref(weight, lambda _, key=key: self.packed.pop(key, None)), weight._version, packed)
        return packed

    def runs(self, weight: torch.Tensor) -> bool:
        """Whether this kernel takes a layer with this weight (CPU, a dtype oneDNN has here, 2-D)."""
        return weight.device.type == "cpu" and weight.dtype in self.dtypes and weight.dim() == 2

    def linear(self, inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """`F.linear` on oneDNN for a weight that `runs` takes, outside autograd; torch's kernel otherwise."""
        if inputs.dtype == weight.dtype and not torch.is_grad_enabled() and self.runs(weight):
            return self.onednn_linear(inputs, self.packed_weight(weight), bias, "none", [], "")
        return F.linear(inputs, weight, bias)

    @contextlib.contextmanager
    def scope(self, model: torch.nn.Module) -> Iterator[None]:
        """Swaps the model's nn.Linear layers that this kernel takes for PackedLinear, and back on exit."""
        swapped = [
            (model.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2], module)
            for name, module in model.named_modules()
            # subclasses (LoRA, quantized) keep their own forward
            if type(module) is torch.nn.Linear and self.runs(module.weight)
        ]
        try:
            for parent, attribute, module in swapped:
                setattr(parent, attribute, PackedLinear(module, self))
            yield
        finally:
            for parent, attribute, module in swapped:
                setattr(parent, attribute, module)


class PackedLinear(torch.nn.Linear):
    """Stands in for one nn.Linear within OneDNNLinear.scope: the same Parameter objects (so parameters()
    and state_dict() are the model's), a forward on the kernel."""

    def __init__(self, layer: torch.nn.Linear, kernel: OneDNNLinear) -> None:
        torch.nn.Module.__init__(self)  # nn.Linear's own __init__ would allocate fresh weights
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.weight, self.bias = layer.weight, layer.bias
        self.training = layer.training
        self.kernel = kernel

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.kernel.linear(inputs, self.weight, self.bias)


LINEAR_KERNELS: dict[str, Callable[[int], LinearKernel]] = {"blas": TorchLinear, "onednn": OneDNNLinear}


def resolve(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """`auto` is oneDNN where it was measured to pay (CPU, float32 or bfloat16 where the CPU has oneDNN's
    bfloat16 kernels, ops present), torch's default elsewhere."""
    if name != "auto":
        if name not in LINEAR_KERNELS:
            raise ValueError(f"unknown engine linear kernel {name!r} (known: auto, {', '.join(LINEAR_KERNELS)})")
        return name
    return "onednn" if device.type == "cpu" and dtype in onednn_dtypes() else "blas"
