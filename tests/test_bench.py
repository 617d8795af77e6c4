"""The benchmarks under bench/ run end to end, as a user starts them, at sizes that take seconds.

Their figures are not checked (timings are the machine's); what is checked is that every code path of a
benchmark still runs against the package as it is now, and prints its summary, and that the formulas a report
derives from its timings give hand-computed values. bench/verl_step.py is left out:
it starts veRL on Ray (about 75 s); docs/testing.md says so.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memtrain.engines import linear_kernels

ROOT = Path(__file__).resolve().parent.parent


def bench(script: str, *arguments: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *arguments],
        cwd=ROOT,
        check=False,  # the assertion below shows the output
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_rollout_throughput_runs_in_both_dtypes(tiny_policy, dtype):
    out = bench(
        "rollout_throughput.py",
        *("--model", str(tiny_policy), "--dtype", dtype, "--batch", "2", "--prompt-tokens", "8"),
        *("--new-tokens", "3", "--turns", "1", "--threads", "1"),
    )
    assert f"({dtype})" in out and "batched / sequential:" in out and "batching ceiling:" in out
    assert "forward + backward:" in out
    kernels = {line.split()[0] for line in out.splitlines() if line.strip().startswith(("blas ", "onednn "))}
    onednn = linear_kernels.resolve("auto", torch.device("cpu"), getattr(torch, dtype)) == "onednn"
    assert kernels == ({"blas", "onednn"} if onednn else {"blas"})


def test_train_throughput_runs(tiny_policy):
    out = bench(
        "train_throughput.py",
        *("--model", str(tiny_policy), "--samples", "2", "--prompt-tokens", "16", "--response-tokens", "4"),
        *("--micro-batch-tokens", "64", "--threads", "1", "--repeats", "1"),
    )
    assert "ratio" in out


def test_retriever_throughput_runs():
    out = bench(
        "retriever_throughput.py",
        *("--config", str(ROOT / "config" / "test.yaml"), "--passages", "20", "--queries", "4", "--batch", "2"),
    )
    assert "ratio batched / sequential:" in out


def test_data_throughput_runs(tmp_path):
    out = bench(
        "data_throughput.py",
        *("--config", str(ROOT / "config" / "test.yaml"), "--passages", "60", "--naive-passages", "10"),
        *("--pivots", "5", "--results-dir", str(tmp_path), "--no-mlflow"),
    )
    assert (tmp_path / "benchmarks" / "data.json").is_file() and "projected" in out.lower()


def test_batching_ceiling_and_the_batch1_rate_it_allows_by_hand():
    """8 trajectories of 192 decode steps, R_seq = 23.2 s and R_batched = 14.64 s of prefills. At 20 tokens/s
    (s1 = 0.05 s): (23.2 + 8 x 9.6) / (14.64 + 9.6) = 100 / 24.24 = 4.1254. 5x needs
    s1 >= (5 x 14.64 - 23.2) / (3 x 192) = 50 / 576 s: at most 11.52 tokens/s, where the ceiling is exactly 5."""
    spec = importlib.util.spec_from_file_location("rollout_throughput", ROOT / "bench" / "rollout_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    limits = (23.2, 14.64, 8, 192)
    assert module.batching_ceiling(*limits, 20.0) == pytest.approx(100 / 24.24)
    assert module.batch1_rate_for(5.0, *limits) == pytest.approx(576 / 50)
    assert module.batching_ceiling(*limits, 576 / 50) == pytest.approx(5.0)
    assert module.batch1_rate_for(5.0, 23.2, 14.64, 4, 192) is None  # batch 4 never gives 5x
    assert module.batch1_rate_for(5.0, 23.2, 0.64, 8, 192) == float("inf")  # 5 x 0.64 < 23.2
