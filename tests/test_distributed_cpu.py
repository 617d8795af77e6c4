"""veRL's own trainer loop, end to end on this machine's CPU: the paper-scale back-end run for real.

memtrain.distributed.train.run on config/test.yaml + config/test-verl.yaml (the CPU platform, the
Hugging Face rollout replica, one FSDP2 worker, veRL's private Ray instance), a random 2-layer Llama
over the real SmolLM2 vocabulary, two steps of MemTrain: rollouts through our agent loops, our
advantages, the update, checkpoints, the export into our policy folder, and veRL's metrics in MLflow.
"""

from __future__ import annotations

import json

import mlflow
import pytest
import yaml
from masked_document import DOCUMENT

from memtrain import config as memtrain_config
from memtrain.distributed import train
from memtrain.models import load_policy

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def cpu_config() -> dict:
    overlay = yaml.safe_load((ROOT / "config" / "test-verl.yaml").read_text())
    overlay["trainer"]["verl"]["loggers"] = ["console", "mlflow"]
    return memtrain_config.load(ROOT / "config" / "test.yaml", overlay)


@pytest.mark.slow
def test_memtrain_trains_two_steps_on_veRL_and_exports_our_policy_folder(tiny_policy, tmp_path):
    cfg = cpu_config()
    params = {"agent": cfg["agent"], "rl": cfg["rl"], "trainer": cfg["trainer"]}
    schedule = {**cfg["memtrain"], "steps": 2, "batch_size": 2, "mini_batch_size": 2}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = train.run(params, "memtrain", schedule, [DOCUMENT] * 4, str(tiny_policy), tmp_path / "ckpt",
                        tmp_path / "final", "memtrain-full", tmp_path / "logs", variant="full", mask_token="[MASK]",
                        tracking_uri=uri)
    assert summary["finished"] and summary["device"] == "cpu"
    assert train.latest_step(tmp_path / "ckpt") == 2
    assert json.loads((tmp_path / "final" / "training.json").read_text())["steps"] == 2
    load_policy(tmp_path / "final", device="cpu", dtype="float32")  # a complete Hugging Face policy

    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    history = {key: [m.value for m in client.get_metric_history(run.info.run_id, key)]
               for key in ("memtrain/optimizer_steps", "memtrain/skipped", "memtrain/trained_rows")}
    # one optimizer step per step (mini_batch_size = batch_size), or none when nothing was informative
    assert len(history["memtrain/optimizer_steps"]) == 2
    for steps, skipped in zip(history["memtrain/optimizer_steps"], history["memtrain/skipped"], strict=True):
        assert steps == (0 if skipped else 1)
