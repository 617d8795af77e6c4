"""Training checkpoints that let a killed or pre-empted job continue exactly where it stopped.

A checkpoint is a folder `step_000123/` holding the policy weights (safetensors), the optimizer and
scheduler states, every random generator the run draws from, and the trainer's JSON state
(step, data cursor, config hash). It is written to a temporary folder and renamed into place, so
a crash mid-write leaves the previous checkpoint as the latest complete one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from memtrain.errors import InputError
from memtrain.io import atomic_dir

_STEP = re.compile(r"^step_(\d+)$")
STATE_FILE = "trainer_state.json"
# What either trainer writes per checkpoint: ours (step_N/), veRL's (global_step_N/ and its newest-step marker).
_PRUNABLE = re.compile(r"^(step_\d+|global_step_\d+|latest_checkpointed_iteration\.txt)$")
PRUNED_NOTE = "PRUNED"


def save(
    root: str | os.PathLike,
    step: int,
    model,
    optimizer,
    scheduler,
    state: Mapping[str, Any],
    rng: Mapping[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint `step` under `root` and prune all but the newest `keep`."""
    from safetensors.torch import save_model

    path = Path(root) / f"step_{step:06d}"
    with atomic_dir(path) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": dict(rng)},
            tmp / "training.pt",
        )
        (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1, sort_keys=True))
    for old in checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return path


def checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under `root`, oldest first (temporary folders of an interrupted write are not listed)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and (p / STATE_FILE).is_file()]
    return [path for _, path in sorted(found)]


def latest(root: str | os.PathLike, config_hash: str) -> Path | None:
    """Newest checkpoint written under the same training config; one from another config is never resumed."""
    for path in reversed(checkpoints(root)):
        if read_state(path).get("config_hash") == config_hash:
            return path
    return None


def prune(root: str | os.PathLike, export: str | os.PathLike) -> int:
    """Delete the checkpoints under `root` of a run whose final `export` is written; the bytes freed.

    Each checkpoint holds fp32 weights, optimizer state and random states: the embedded default's 17 runs
    would keep about 10 GB of them for nothing once their exports exist (trainer.prune_checkpoints). Logs under
    `root` stay, and a note records the pruning so that a later reader of `root` (a continued run) can say
    why there is nothing to continue from instead of reporting a missing step.
    """
    root, export = Path(root), Path(export)
    if not export.is_dir():
        raise InputError("refusing to prune checkpoints before the run's final export is written", file=export)
    if not root.is_dir():
        return 0
    freed = 0
    for path in sorted(p for p in root.iterdir() if _PRUNABLE.match(p.name)):
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        freed += sum(f.stat().st_size for f in files)
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (root / PRUNED_NOTE).write_text(
        f"checkpoints deleted after the final export {export} was written "
        f"(trainer.prune_checkpoints); {freed} bytes freed\n"
    )
    return freed


def pruned(root: str | os.PathLike) -> bool:
    """Whether `root` was pruned and holds no checkpoint written since."""
    root = Path(root)
    return (root / PRUNED_NOTE).is_file() and not any(_PRUNABLE.match(p.name) for p in root.iterdir())


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"unreadable trainer state: {error}", file=Path(path) / STATE_FILE) from error


def load(path: str | os.PathLike, model, optimizer, scheduler) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore model, optimizer and scheduler in place; return (trainer state, rng states)."""
    from safetensors.torch import load_model

    path = Path(path)
    try:
        load_model(model, str(path / "model.safetensors"))
        saved = torch.load(path / "training.pt", weights_only=False)
    except (OSError, RuntimeError) as error:
        raise InputError(f"cannot restore checkpoint: {error}", file=path) from error
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return read_state(path), saved["rng"]
