"""Load and validate the pipeline config against workflow/schemas/config.schema.yaml.

Snakemake and the package share this validator so a config is judged the same way everywhere;
defaults are filled in place (as snakemake.utils.validate does) and every error names the file and
the dotted key at fault, which jsonschema's own messages do not.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from memtrain.errors import InputError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


def _with_defaults(validator_class: type) -> type:
    """A validator that fills `default` of absent properties before validating them."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def fill_then_validate(validator, properties, instance, schema):
        if isinstance(instance, MutableMapping):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": fill_then_validate})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


# libyaml's loader where PyYAML was built with it: the schema is read by every snakemake parse and stage job,
# and the pure-Python loader takes ~0.3 CPU-s for it.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def load_schema() -> dict[str, Any]:
    """The config schema, read once per process (callers must not modify it)."""
    return yaml.load(SCHEMA_PATH.read_text(), Loader=_YAML_LOADER)


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(part) for part in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        hint = f" (allowed here: {', '.join(allowed)})" if allowed else ""
        return f"unknown key(s) {', '.join(unknown)} under {key}{hint}"
    return f"{key}: {error.message}"


def _errors(schema: Mapping[str, Any], instance: MutableMapping[str, Any]) -> list[jsonschema.ValidationError]:
    """Every problem of `instance` against `schema` (defaults filled in place), in the order of their keys."""
    return sorted(_Validator(schema).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))


def validate(config: MutableMapping[str, Any], source: str | os.PathLike = "<config>") -> MutableMapping[str, Any]:
    """Fill defaults into `config` in place and raise InputError naming every problem found."""
    schema = load_schema()
    errors = _errors(schema, config)
    if errors:
        raise InputError("invalid config:\n  " + "\n  ".join(_describe(e) for e in errors), file=source)
    backbones = config["backbones"]
    tokenizer_backbone = config["data"]["tokenizer_backbone"]
    if tokenizer_backbone is not None and tokenizer_backbone not in backbones:
        raise InputError(
            f"names no backbone (known: {', '.join(backbones)})", file=source, field="data.tokenizer_backbone"
        )
    documents = config["data"]["documents"]
    if documents["num_related"] + 1 > documents["num_passages"]:
        raise InputError("num_related + 1 (pivot) exceeds num_passages", file=source, field="data.documents")
    if documents["min_tokens"] > documents["max_tokens"]:
        raise InputError("min_tokens exceeds max_tokens", file=source, field="data.documents")
    if config["data"]["passages"]["min_words"] > config["data"]["passages"]["max_words"]:
        raise InputError("min_words exceeds max_words", file=source, field="data.passages")
    budgets = config["agent"]["budgets"]
    if documents["max_tokens"] > budgets["chunk"] * budgets["max_chunks"]:
        raise InputError(
            f"documents of up to {documents['max_tokens']} tokens do not fit max_chunks x chunk = "
            f"{budgets['max_chunks'] * budgets['chunk']} tokens",
            file=source,
            field="agent.budgets",
        )
    if budgets["memory"] > budgets["response"]:
        raise InputError(
            "a memory is a reply cut to its budget: memory cannot exceed response",
            file=source,
            field="agent.budgets.memory",
        )
    loss = config["rl"]["loss"]
    if loss["normaliser"] == "document" and loss["aggregation"] != "seq-mean-token-sum":
        raise InputError(
            "a per-document normaliser divides token sums: it needs aggregation seq-mean-token-sum",
            file=source,
            field="rl.loss.normaliser",
        )
    memtrain = config["memtrain"]
    unknown = sorted(set(memtrain["backbones"] or []) - set(backbones))
    if unknown:
        raise InputError(
            f"names unknown backbone(s) {', '.join(unknown)} (known: {', '.join(backbones)})",
            file=source,
            field="memtrain.backbones",
        )
    if memtrain["mini_batch_size"] > memtrain["batch_size"]:
        raise InputError("mini_batch_size exceeds batch_size", file=source, field="memtrain.mini_batch_size")
    for algorithm in ("memagent", "mem1"):
        settings = config["posttrain"][algorithm]
        settings["rl"] = _training_rl(
            schema["properties"]["rl"], config["rl"], settings["rl"], f"posttrain.{algorithm}.rl", source
        )
        if settings["mini_batch_size"] > settings["batch_size"]:
            raise InputError(
                "mini_batch_size exceeds batch_size", file=source, field=f"posttrain.{algorithm}.mini_batch_size"
            )
    search = config["qa"]["search"]
    if search["flashrag"] == "offline":
        for key in ("train_datasets", "eval_datasets"):
            wrong = {
                name: split for name, split in search[key].items() if name != "offline" or split not in ("train", "dev")
            }
            if wrong:
                raise InputError(
                    f"the offline FlashRAG set has one dataset, 'offline', with splits train and dev; got {wrong}",
                    file=source,
                    field=f"qa.search.{key}",
                )
    report = config["report"]
    unknown = sorted(set(report["paper_backbones"]) - set(backbones))
    if unknown:
        raise InputError(f"names unknown backbone(s) {', '.join(unknown)}", file=source, field="report.paper_backbones")
    if report["paper_lengths"] and len(report["paper_lengths"]) != len(config["qa"]["long_context"]["lengths"]):
        raise InputError(
            "needs one paper length per entry of qa.long_context.lengths", file=source, field="report.paper_lengths"
        )
    for field, inits in (
        ("posttrain.inits", config["posttrain"]["inits"]),
        ("posttrain.scaling.inits", config["posttrain"]["scaling"]["inits"]),
    ):
        untrained = sorted(
            {init.removeprefix("memtrain-") for init in inits if init != "base"} - set(memtrain["variants"])
        )
        if untrained:
            raise InputError(
                f"starts from MemTrain variant(s) {', '.join(untrained)} that memtrain.variants does not train",
                file=source,
                field=field,
            )
    return config


def _training_rl(
    rl_schema: Mapping[str, Any],
    shared: Mapping[str, Any],
    overlay: Mapping[str, Any],
    field: str,
    source: str | os.PathLike,
) -> dict[str, Any]:
    """The complete `rl` section of one training: the shared one with the training's overlay, checked as `rl` is.

    The overlay may already be complete (a config validated before), which leaves it as it is.
    """
    merged = deep_merge(shared, overlay)
    errors = _errors(rl_schema, merged)
    if errors:
        raise InputError(
            "invalid overlay on rl:\n  " + "\n  ".join(f"{field}: {_describe(e)}" for e in errors), file=source
        )
    return merged


def posttrain_params(params: Mapping[str, Any], algorithm: str) -> dict[str, Any]:
    """A post-training's settings with its own complete `rl` section in place of the shared one."""
    return {**params, "rl": params["posttrain"][algorithm]["rl"]}


def scaling_steps(config: Mapping[str, Any]) -> list[int]:
    """Global steps of the continued MemAgent checkpoints that are evaluated (Figure 4's x positions after the start)."""
    start, scaling = config["posttrain"]["memagent"]["steps"], config["posttrain"]["scaling"]
    end = start + scaling["steps"]
    return sorted({*range(start + scaling["eval_every"], end, scaling["eval_every"]), end})


def load(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> MutableMapping[str, Any]:
    """Read a YAML config file, merge `overrides` on top (as snakemake --config does) and validate it."""
    try:
        config = yaml.load(Path(path).read_text(), Loader=_YAML_LOADER) or {}
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"cannot read config: {error}", file=path) from error
    if not isinstance(config, dict):
        raise InputError("a config file must hold a mapping", file=path)
    return validate(deep_merge(config, overrides or {}), path)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(copy.deepcopy(base))
    for key, value in update.items():
        merged[key] = (
            deep_merge(merged[key], value)
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
            else copy.deepcopy(value)
        )
    return merged


def tokenizer_backbone(config: Mapping[str, Any]) -> str:
    return config["data"]["tokenizer_backbone"] or next(iter(config["backbones"]))
