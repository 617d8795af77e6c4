"""The typed settings against the schema: the same fields, the schema's defaults, the schema's descriptions."""

from __future__ import annotations

import dataclasses

import pytest

from memtrain import config as memtrain_config
from memtrain.agent.memory_agent import Budgets
from memtrain.settings import RL, Filter, Loss, Optimizer, Runtime, Sampling, build, schema_node

# every class whose fields are the whole of its schema section
WHOLE = [RL, Sampling, Filter, Loss, Optimizer, Budgets]


@pytest.mark.parametrize("cls", WHOLE, ids=lambda c: c.schema_path)
def test_a_typed_section_has_exactly_the_keys_of_its_schema_section(cls):
    assert [f.name for f in dataclasses.fields(cls)] == list(schema_node(cls.schema_path)["properties"])


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
