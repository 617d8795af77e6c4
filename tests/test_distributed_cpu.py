"""veRL's own trainer loop, end to end on this machine's CPU: the paper-scale back-end run for real.

memtrain.distributed.train.run on config/test.yaml + config/test-verl.yaml (the CPU platform, the
Hugging Face rollout replica, one FSDP2 worker, veRL's private Ray instance), a random 2-layer Llama
over the real SmolLM2 vocabulary and MemTrain's agent loop: rollouts, our advantages, the update,
checkpoints, pre-emption and resume, the export into our policy folder, and veRL's metrics in our MLflow store.
A random policy never scores, so the run without group filtering trains on zero advantages (the KL term only):
what is checked is the machinery, step by step. MEM1 on veRL, with its search server and a refill round, runs as
a DAG job (tests/test_dag.py); the parity of the update with the local trainer is tests/test_distributed_parity.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from masked_document import DOCUMENT

from memtrain import config as memtrain_config
from memtrain.distributed import train
from memtrain.errors import InputError
from memtrain.models import load_policy

ROOT = Path(__file__).resolve().parent.parent


def cpu_config(**rl) -> dict:
    overlay = yaml.safe_load((ROOT / "config" / "test-verl.yaml").read_text())
    return memtrain_config.load(ROOT / "config" / "test.yaml", {**overlay, "rl": rl})


def run(cfg, schedule, root: Path, policy, **kwargs) -> dict:
    params = {"agent": cfg["agent"], "rl": cfg["rl"], "trainer": cfg["trainer"]}
    return train.run(
        params,
        "memtrain",
        schedule,
        [DOCUMENT] * 4,
        str(policy),
        root / "ckpt",
        root / "final",
        "memtrain-full",
        root / "logs",
        variant="full",
        mask_token="[MASK]",
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        **kwargs,
    )


def metric_histories(root: Path, *names: str) -> list[dict[str, dict[int, float]]]:
    """Per veRL run (oldest first): each metric by step."""
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    found = client.search_runs([e.experiment_id for e in client.search_experiments()], order_by=["start_time ASC"])
    return [
        {name: {m.step: m.value for m in client.get_metric_history(r.info.run_id, name)} for name in names}
        for r in found
    ]


@pytest.mark.slow
def test_a_preempted_run_resumes_from_veRL_checkpoints_with_one_optimizer_step_per_item_mini_batch(
    tiny_policy, tmp_path
):
    cfg = cpu_config(filter={"enabled": False})
    schedule = {**cfg["memtrain"], "steps": 2, "batch_size": 2, "mini_batch_size": 1}
    first = run(cfg, schedule, tmp_path, tiny_policy, stop_after=1)  # pre-empted after step 1
    assert not first["finished"] and train.latest_step(tmp_path / "ckpt") == 1 and not (tmp_path / "final").exists()
    second = run(cfg, schedule, tmp_path, tiny_policy)
    assert second["finished"] and second["device"] == "cpu" and train.latest_step(tmp_path / "ckpt") == 2
    assert json.loads((tmp_path / "final" / "training.json").read_text())["steps"] == 2
    load_policy(tmp_path / "final", device="cpu", dtype="float32")  # a complete Hugging Face policy

    names = ("memtrain/optimizer_steps", "memtrain/trained_rows", "actor/grad_norm")
    before, after = metric_histories(tmp_path, *names)
    assert set(before["memtrain/optimizer_steps"]) == {1} and set(after["memtrain/optimizer_steps"]) == {2}
    # 2 items, mini_batch_size 1: two optimizer steps per step, each over every row of its item's sessions
    assert before["memtrain/optimizer_steps"][1] == after["memtrain/optimizer_steps"][2] == 2
    assert after["memtrain/trained_rows"][2] >= 2 * 2 * 2  # 2 items x 2 sessions x at least 2 turns each

    with pytest.raises(InputError, match="other settings"):  # as the local trainer, never someone else's state
        run(cfg, {**schedule, "lr": 5e-6}, tmp_path, tiny_policy)
