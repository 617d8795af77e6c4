"""The typed settings against the schema: the same fields, the schema's defaults, the schema's descriptions."""

from __future__ import annotations

import dataclasses

import pytest

from memtrain import config as memtrain_config
from memtrain.rl import kinds
from memtrain.settings import (
    RL,
    Agent,
    Budgets,
    Filter,
    Loss,
    Mem1,
    MemAgent,
    MemTrain,
    Optimizer,
    Prompts,
    Runtime,
    Sampling,
    build,
    schema_node,
    section,
)

# every class whose fields are the whole of its schema section
WHOLE = [RL, Sampling, Filter, Loss, Optimizer, Budgets, Prompts, Agent, MemAgent, Mem1]
# the keys of `memtrain` that choose which trainings run rather than how one trains (rules/memtrain.smk)
MEMTRAIN_CHOICES = ("backbones", "variants")


@pytest.mark.parametrize("cls", WHOLE, ids=lambda c: c.schema_path)
def test_a_typed_section_has_exactly_the_keys_of_its_schema_section(cls):
    assert [f.name for f in dataclasses.fields(cls)] == list(schema_node(cls.schema_path)["properties"])


def test_memtrain_is_its_section_but_the_choice_of_trainings():
    keys = [key for key in schema_node("memtrain")["properties"] if key not in MEMTRAIN_CHOICES]
    assert [f.name for f in dataclasses.fields(MemTrain)] == keys


def test_runtime_is_the_part_of_rl_an_evaluation_receives():
    assert {f.name for f in dataclasses.fields(Runtime)} < set(schema_node("rl")["properties"])


def test_the_defaults_build_typed_nested_sections_and_the_docs_come_from_the_schema():
    config = memtrain_config.validate({})
    rl = RL.of(config)
    assert rl.loss.clip_ratio_high == 0.28 and rl.optimizer.betas == (0.9, 0.999) and rl.filter.enabled is True
    assert rl.runtime == Runtime.of(config) == Runtime("auto", "float32", 64, "auto")
    assert build(Budgets, config["agent"]["budgets"]).context == 1024 + 5120 + 1024 + 1024
    assert "kl_coef:" in Loss.__doc__ and schema_node("rl.ppo_epochs")["description"] in RL.__doc__


def test_a_section_missing_a_key_is_a_key_error_naming_it():
    with pytest.raises(KeyError, match="grad_clip"):
        build(Optimizer, {"weight_decay": 0.0, "betas": [0.9, 0.99], "eps": 1e-8, "warmup_steps": 0})


def test_each_training_kind_is_scheduled_by_its_typed_section():
    assert {name: kind.section for name, kind in kinds.KINDS.items()} == {
        "memtrain": MemTrain,
        "memagent": MemAgent,
        "mem1": Mem1,
    }


def test_sections_are_read_at_their_dotted_paths():
    config = memtrain_config.validate({"memtrain": {"group_size": 3}, "posttrain": {"mem1": {"max_turns": 4}}})
    assert section(MemTrain, config).group_size == 3
    mem1 = section(Mem1, config)
    assert mem1.max_turns == 4 and mem1.reward == "sum"
    # validation merges each post-training's overlay into a complete rl section
    assert RL.of({"rl": mem1.rl}).loss == RL.of(config).loss
    agent = section(Agent, config)
    assert agent.budgets == build(Budgets, config["agent"]["budgets"]) and agent.prompts.search is None
    assert agent.no_memory == "No previous memory."


def test_a_sections_fields_turn_back_into_the_config_slice_it_was_read_from():
    """Stages hash `dataclasses.asdict` of a training's section as its checkpoint key: the same JSON as the
    config slice, so checkpoints written before the typed sections still resume."""
    import json

    config = memtrain_config.validate({})
    training = {key: value for key, value in config["memtrain"].items() if key not in MEMTRAIN_CHOICES}
    for cls, values in [(MemTrain, training), (Mem1, config["posttrain"]["mem1"])]:
        assert json.dumps(dataclasses.asdict(section(cls, config)), sort_keys=True) == json.dumps(
            values, sort_keys=True
        )
