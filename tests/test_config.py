from pathlib import Path

import pytest

from memtrain import config
from memtrain.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["config.yaml", "test.yaml"])
def test_shipped_configs_validate_and_get_defaults(name):
    loaded = config.load(ROOT / "config" / name)
    assert loaded["tracking"]["experiment"] == "memtrain"
    assert loaded["data"]["index"]["nprobe"] == 64  # filled from the schema
    assert loaded["data"]["documents"]["mask_token"] == "[MASK]"


def test_defaults_fill_an_empty_config():
    loaded = config.validate({})
    assert list(loaded["backbones"]) == ["smollm2-135m"]
    assert loaded["data"]["source"]["kind"] == "vital_articles"
    assert config.tokenizer_backbone(loaded) == "smollm2-135m"


def test_unknown_key_is_named_with_its_path_and_the_allowed_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  passages:\n    max_wordz: 3\n")
    with pytest.raises(InputError) as error:
        config.load(path)
    message = str(error.value)
    assert str(path) in message and "max_wordz" in message and "data.passages" in message and "max_words" in message


def test_wrong_type_and_range_are_reported_together():
    with pytest.raises(InputError) as error:
        config.validate({"seed": "x", "data": {"ner": {"shards": 0}, "index": {"type": "annoy"}}})
    message = str(error.value)
    assert "seed" in message and "data.ner.shards" in message and "data.index.type" in message


@pytest.mark.parametrize(
    "override, field",
    [
        ({"data": {"documents": {"num_related": 10, "num_passages": 5}}}, "data.documents"),
        ({"data": {"documents": {"min_tokens": 10, "max_tokens": 5}}}, "data.documents"),
        ({"data": {"passages": {"min_words": 10, "max_words": 5}}}, "data.passages"),
        ({"data": {"tokenizer_backbone": "nope"}}, "data.tokenizer_backbone"),
        ({"posttrain": {"mem1": {"batch_size": 4, "mini_batch_size": 8}}}, "posttrain.mem1.mini_batch_size"),
        ({"memtrain": {"variants": ["full"]}, "posttrain": {"inits": ["base", "memtrain-e2e"]}}, "posttrain.inits"),
        ({"qa": {"search": {"eval_datasets": {"nq": "test"}}}}, "qa.search.eval_datasets"),
        (
            {"memtrain": {"variants": ["full"]}, "posttrain": {"scaling": {"inits": ["memtrain-e2e"]}}},
            "posttrain.scaling.inits",
        ),
        ({"report": {"paper_backbones": {"qwen": "Qwen2.5-7B-Instruct"}}}, "report.paper_backbones"),
        ({"qa": {"long_context": {"lengths": [3, 6]}}, "report": {"paper_lengths": ["7k"]}}, "report.paper_lengths"),
    ],
)
def test_cross_field_checks(override, field):
    with pytest.raises(InputError) as error:
        config.validate(config.deep_merge({}, override))
    assert error.value.field == field


def test_backbone_needs_exactly_one_source():
    with pytest.raises(InputError, match="backbones.x"):
        config.validate({"backbones": {"x": {"path": "a/b", "gguf": "c.gguf"}}})


def test_unreadable_config_file_is_named(tmp_path):
    with pytest.raises(InputError, match="missing.yaml"):
        config.load(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "memagent_steps, steps, every, expected",
    [
        (500, 300, 50, [550, 600, 650, 700, 750, 800]),  # the paper's continuation, every 50 steps
        (500, 300, 200, [700, 800]),  # the last step is evaluated even off the grid
        (1, 2, 1, [2, 3]),
    ],
)
def test_scaling_steps_are_the_continued_runs_evaluated_steps(memagent_steps, steps, every, expected):
    settings = config.validate(
        {"posttrain": {"memagent": {"steps": memagent_steps}, "scaling": {"steps": steps, "eval_every": every}}}
    )
    assert config.scaling_steps(settings) == expected


def test_a_post_training_overlays_the_shared_rl_section_and_a_wrong_key_is_named():
    cfg = config.validate(
        {
            "rl": {"loss": {"clip_ratio_high": 0.3}},
            "posttrain": {"memagent": {"rl": {"loss": {"aggregation": "token-mean"}}}},
        }
    )
    memagent, mem1 = cfg["posttrain"]["memagent"]["rl"], cfg["posttrain"]["mem1"]["rl"]
    assert memagent["loss"]["aggregation"] == "token-mean" and memagent["loss"]["clip_ratio_high"] == 0.3
    assert mem1 == cfg["rl"] and cfg["rl"]["loss"]["aggregation"] == "seq-mean-token-sum"
    assert config.validate(cfg)["posttrain"]["memagent"]["rl"] == memagent  # validating again changes nothing
    assert config.posttrain_params(cfg, "memagent")["rl"] == memagent
    with pytest.raises(InputError, match=r"posttrain\.mem1\.rl: unknown key\(s\) clip_ratio_hihg under loss"):
        config.validate({"posttrain": {"mem1": {"rl": {"loss": {"clip_ratio_hihg": 0.2}}}}})
    with pytest.raises(InputError, match=r"posttrain\.memagent\.rl: filter\.enabled"):
        config.validate({"posttrain": {"memagent": {"rl": {"filter": {"enabled": "no"}}}}})
