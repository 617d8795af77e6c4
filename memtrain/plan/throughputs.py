"""The numbers a plan turns work into time and bytes with: the shipped throughputs.yaml, a user's overrides.

Every entry carries a `source`, so a plan can always say what its hours rest on; a user's file
replaces whole entries (value and source together) and may add models, but may not invent other
names, which would otherwise be silently ignored typos.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from memtrain.errors import InputError

DEFAULT_FILE = Path(__file__).with_name("throughputs.yaml")
SCALAR_SECTIONS = ("throughputs", "sizes", "workload", "qa_splits")
MODEL_FIELDS = {"params_b": float, "context_window": int, "dim": int}


@dataclass(frozen=True)
class Model:
    params_b: float
    context_window: int | None
    dim: int | None
    source: str


@dataclass(frozen=True)
class Throughputs:
    values: Mapping[str, float]  # every entry of the scalar sections, by name
    sources: Mapping[str, str]
    models: Mapping[str, Model]
    files: tuple[str, ...]  # where they came from, default first

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def model(self, reference: str, what: str) -> Model:
        """A model by its full reference or the basename of its path (a GGUF's without extension and quant tag)."""
        base = os.path.basename(reference.rstrip("/"))
        stem = base.removesuffix(".gguf").rsplit(".", 1)[0] if base.endswith(".gguf") else base
        for name in (reference, base, stem):
            if name in self.models:
                return self.models[name]
        raise InputError(
            f"no size known for {what} {reference!r}: add it under `models:` (by {base!r}) in a --throughputs file",
            file=self.files[-1],
            field=f"models.{base}",
        )


def _read(path: str | os.PathLike) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"cannot read throughputs: {error}", file=path) from error
    if not isinstance(loaded, dict):
        raise InputError("a throughputs file must hold a mapping of sections", file=path)
    unknown = sorted(set(loaded) - {*SCALAR_SECTIONS, "models"})
    if unknown:
        raise InputError(
            f"unknown section(s) {', '.join(unknown)} (known: {', '.join([*SCALAR_SECTIONS, 'models'])})", file=path
        )
    return loaded


def _source(entry: Any, path, field: str) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("source"), str) or not entry["source"].strip():
        raise InputError(
            "every entry needs a non-empty `source` saying where its number comes from", file=path, field=field
        )
    return entry["source"]


def _scalar(entry: Any, path, field: str) -> tuple[float, str]:
    source = _source(entry, path, field)
    value = entry.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InputError(f"`value` must be a positive number, got {value!r}", file=path, field=f"{field}.value")
    unknown = sorted(set(entry) - {"value", "source"})
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(unknown)}", file=path, field=field)
    return float(value), source


def _model(entry: Any, path, field: str) -> Model:
    source = _source(entry, path, field)
    unknown = sorted(set(entry) - {*MODEL_FIELDS, "source"})
    if unknown:
        raise InputError(
            f"unknown key(s) {', '.join(unknown)} (known: {', '.join(MODEL_FIELDS)}, source)", file=path, field=field
        )
    values = {}
    for key, kind in MODEL_FIELDS.items():
        value = entry.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value <= 0
            or (kind is int and value != int(value))
        ):
            raise InputError(f"must be a positive {kind.__name__}, got {value!r}", file=path, field=f"{field}.{key}")
        values[key] = None if value is None else kind(value)
    if values["params_b"] is None:
        raise InputError("a model needs `params_b`", file=path, field=f"{field}.params_b")
    return Model(values["params_b"], values["context_window"], values["dim"], source)


def load(override: str | os.PathLike | None = None) -> Throughputs:
    """The shipped numbers, with the entries of `override` (a user's file) put in their place."""
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    models: dict[str, Model] = {}
    section_of: dict[str, str] = {}
    files = [DEFAULT_FILE, *([Path(override)] if override is not None else [])]
    for position, path in enumerate(files):
        loaded = _read(path)
        for section in SCALAR_SECTIONS:
            entries = loaded.get(section) or {}
            if not isinstance(entries, dict):
                raise InputError("must be a mapping of entries", file=path, field=section)
            for name, entry in entries.items():
                if position and section_of.get(name) != section:
                    known = sorted(n for n, s in section_of.items() if s == section)
                    raise InputError(
                        f"unknown entry (known in {section}: {', '.join(known)})", file=path, field=f"{section}.{name}"
                    )
                values[name], sources[name] = _scalar(entry, path, f"{section}.{name}")
                section_of[name] = section
        entries = loaded.get("models") or {}
        if not isinstance(entries, dict):
            raise InputError("must be a mapping of models", file=path, field="models")
        models.update({str(name): _model(entry, path, f"models.{name}") for name, entry in entries.items()})
    return Throughputs(values, sources, models, tuple(map(str, files)))
