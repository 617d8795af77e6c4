"""The veRL stage's files and its final export: what runs before and after the GPU part."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from memtrain.data.qa import LongContextItem
from memtrain.distributed import export, train, verl_config
from memtrain.errors import InputError
from memtrain.models import load_policy

DOCUMENT = {"doc_id": "d0", "answer": "Ada", "text": "Ada met Charles in London.", "entities": [("Charles", 8, 15)]}


def test_prepare_writes_dataset_settings_registry_and_a_validated_config(cfg, tiny_policy, tmp_path):
    path = train.prepare(
        cfg,
        "memtrain",
        cfg["memtrain"],
        [DOCUMENT] * 3,
        str(tiny_policy),
        tmp_path / "ckpt",
        "memtrain-full",
        variant="full",
        mask_token="[MASK]",
    )
    saved = OmegaConf.load(path)
    verl_config.validate(saved)  # what the cluster side checks again before it runs
    assert saved.trainer.default_local_dir == str((tmp_path / "ckpt").resolve())
    registry = yaml.safe_load((tmp_path / "ckpt" / "agent_loops.yaml").read_text())
    assert [entry["name"] for entry in registry] == ["memtrain_agent", "memagent_agent", "mem1_agent"]
    assert {entry["_target_"] for entry in registry} == {"memtrain.distributed.agent_loops.TaskAgentLoop"}
    settings = json.loads((tmp_path / "ckpt" / "agent_settings.json").read_text())
    assert settings["variant"] == "full" and settings["memtrain"]["group_size"] == cfg["memtrain"]["group_size"]
    assert settings["kind"] == "memtrain"


def fsdp_checkpoint(policy, root):
    """A veRL actor checkpoint as its FSDP engine writes one on a single rank (world size 1)."""
    actor = root / "global_step_2" / "actor"
    (actor / "huggingface").mkdir(parents=True)
    model = load_policy(policy, device=torch.device("cpu"), dtype="float32")
    torch.save(model.state_dict(), actor / "model_world_size_1_rank_0.pt")
    (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": 1}))
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        if (policy / name).exists():
            (actor / "huggingface" / name).write_bytes((policy / name).read_bytes())
    (root / train.LATEST).write_text("2")
    return model


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_final_actor_checkpoint_becomes_our_policy_folder_in_the_runs_dtype(tiny_policy, tmp_path, dtype):
    model = fsdp_checkpoint(tiny_policy, tmp_path / "ckpt")
    actor = train.finished_checkpoint(tmp_path / "ckpt", steps=2) / "actor"
    export.export_policy(actor, tmp_path / "final", {"steps": 2, "backend": "verl"}, dtype)
    assert json.loads((tmp_path / "final" / "training.json").read_text())["backend"] == "verl"
    exported = load_policy(tmp_path / "final", device=torch.device("cpu"), dtype=dtype)
    for name, tensor in model.state_dict().items():  # exactly the checkpoint's weights, rounded to the run's dtype
        assert torch.equal(exported.state_dict()[name], tensor.to(getattr(torch, dtype))), name
    assert json.loads((tmp_path / "final" / "config.json").read_text())["dtype"] == dtype
    assert (tmp_path / "final" / "tokenizer_config.json").exists()
    with pytest.raises(InputError, match="newest is step 2"):
        train.finished_checkpoint(tmp_path / "ckpt", steps=3)
    with pytest.raises(InputError, match="newest is none"):
        train.finished_checkpoint(tmp_path / "empty", steps=2)


def test_a_continued_run_starts_from_the_finished_run_until_it_has_checkpoints_of_its_own(cfg, tiny_policy, tmp_path):
    source = tmp_path / "source"
    fsdp_checkpoint(tiny_policy, source)
    items = [LongContextItem("q", "Who?", ("Ada",), "Ada.", 2, ())]
    path = train.prepare(
        cfg,
        "memagent",
        {**cfg["posttrain"]["memagent"], "seed": 1},
        items,
        str(tiny_policy),
        tmp_path / "ckpt",
        "memagent-seed1",
        resume_from=train.finished_checkpoint(source, 2),
    )
    saved = OmegaConf.load(path)
    assert (saved.trainer.resume_mode, saved.trainer.resume_from_path) == (
        "resume_path",
        str((source / "global_step_2").resolve()),
    )
    path = train.prepare(
        cfg,
        "memagent",
        {**cfg["posttrain"]["memagent"], "seed": 1},
        items,
        str(tiny_policy),
        tmp_path / "ckpt",
        "memagent-seed1",
    )
    assert OmegaConf.load(path).trainer.resume_mode == "auto"
