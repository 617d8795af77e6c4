"""What a rule hands its stage: its named inputs, outputs and params as the rule declares them, and its config
slice at the same dotted paths as in the config file.

A rule writes its files once, in `input:` and `output:`; `rules/common.smk::stage_job` serialises them, and the
config slice with the rule's other params, into two JSON arguments (--files, --settings), and the stage reads
`job.input.documents`, `job.config["rl"]["dtype"]`.
Nothing is retyped as a command-line flag, and nothing is renamed between the config and the code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memtrain.errors import InputError


class Named(Mapping[str, Any]):
    """A rule's named inputs, outputs or params, read as attributes; a name the rule does not declare is an error
    that names the rule and what it does declare, not a KeyError deep in a stage."""

    def __init__(self, rule: str, kind: str, values: Mapping[str, Any]):
        self._rule, self._kind, self._values = rule, kind, dict(values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            declared = ", ".join(sorted(self._values)) or "none"
            raise InputError(f"rule {self._rule} declares no {self._kind} named {name!r} (it declares: {declared})")

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"{self._kind}({self._values!r})"


@dataclass(frozen=True)
class Job:
    """One job of a rule, as its stage sees it."""

    rule: str
    config: Mapping[str, Any]
    input: Named
    output: Named
    params: Named
    wildcards: Mapping[str, str] = field(default_factory=dict)
    threads: int = 1
    results_dir: str = "results"
    experiment: str = "memtrain"

    @classmethod
    def create(
        cls,
        rule: str,
        config: Mapping[str, Any],
        input: Mapping[str, Any] | None = None,
        output: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        **rest: Any,
    ) -> Job:
        """A job from plain mappings: what the command line parses, and what tests build by hand."""
        return cls(
            rule,
            config,
            Named(rule, "input", input or {}),
            Named(rule, "output", output or {}),
            Named(rule, "params", params or {}),
            **rest,
        )

    @classmethod
    def from_json(cls, rule: str, settings: str, files: str, threads: int = 1) -> Job:
        """The job from the two arguments a rule passes (settings_json, files_json)."""
        fields = {}
        for name, text, allowed in (
            ("--settings", settings, {"config", "params", "wildcards", "results_dir", "experiment"}),
            ("--files", files, {"input", "output"}),
        ):
            try:
                part = json.loads(text)
            except json.JSONDecodeError as error:
                raise InputError(f"{name} is not JSON: {error}") from error
            if unknown := set(part) - allowed:
                raise InputError(f"{name} takes only {sorted(allowed)}; unknown: {sorted(unknown)}")
            fields.update(part)
        if "config" not in fields:
            raise InputError("--settings needs the rule's 'config' slice")
        return cls.create(rule, threads=threads, **fields)


def settings_json(
    config: Mapping[str, Any],
    params: Mapping[str, Any],
    wildcards: Mapping[str, str],
    results_dir: str,
    experiment: str,
) -> str:
    """What a job's results depend on besides its files: its config slice, params and wildcards. Snakemake reruns
    the job when this changes. Sorted, so that an unchanged config reruns nothing."""
    return json.dumps(
        {
            "config": config,
            "params": params,
            "wildcards": wildcards,
            "results_dir": results_dir,
            "experiment": experiment,
        },
        sort_keys=True,
    )


def files_json(input: Mapping[str, Any], output: Mapping[str, Any]) -> str:
    """A job's named input and output files."""
    return json.dumps({"input": input, "output": output}, sort_keys=True)


def config_slice(config: Mapping[str, Any], *paths: str) -> dict[str, Any]:
    """The parts of `config` at the dotted `paths`, kept at those paths: ("rl", "posttrain.memagent") gives
    {"rl": ..., "posttrain": {"memagent": ...}}, so a stage reads the keys a user writes."""
    sliced: dict[str, Any] = {}
    for path in paths:
        *parents, last = path.split(".")
        source, target = config, sliced
        for key in parents:
            source, target = source[key], target.setdefault(key, {})
        target[last] = source[last]
    return sliced


def output_summary(path: str | os.PathLike) -> dict[str, Any]:
    """What a reader of the MLflow run wants to know about an output file without opening it."""
    path = Path(path)
    summary: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size}
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        metadata = pq.read_metadata(path)
        summary.update(rows=metadata.num_rows, columns=metadata.schema.to_arrow_schema().names)
    return summary


def prune_checkpoints(run, job: Job, summary: Mapping[str, Any], output: str, *more: str | None) -> None:
    """With params.prune (trainer.prune_checkpoints, where nothing downstream reads them), delete a finished
    training's checkpoints and those of `more` (the run a continuation carried on); the bytes freed go to MLflow."""
    from memtrain.rl import checkpoint

    if job.params.get("prune") and summary["finished"]:
        folders = [job.params.checkpoints, *(folder for folder in more if folder)]
        run.log_metrics({"pruned_checkpoint_bytes": sum(checkpoint.prune(f, output) for f in folders)})
