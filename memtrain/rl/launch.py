"""Wiring of a local training run: the trainer over a loaded policy (memtrain.rl.policies), and the final save.

Kept apart from the trainer so the loop stays readable top to bottom and the downstream trainers
(MemAgent, MEM1) can reuse the same setup with their own task.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from memtrain.errors import InputError
from memtrain.io import atomic_dir, link_if_identical, write_json
from memtrain.rl.policies import Policy
from memtrain.rl.trainer import Schedule, StepLogger, Task, Trainer
from memtrain.settings import RL
from memtrain.tracking import config_hash


def step_logger(run, logged: Sequence[str], steps: int) -> StepLogger:
    """Each step's metrics and sample rollouts into the stage's MLflow run; the `logged` ones also to the job log."""
    import pandas as pd

    def log_step(metrics: Mapping[str, float], step: int) -> None:
        run.log_metrics(metrics, step=step)
        print(f"step {step}/{steps}: " + " ".join(f"{k}={metrics[k]:.3g}" for k in logged if k in metrics), flush=True)

    return StepLogger(
        metrics=log_step,
        rollouts=lambda records, step: run.log_table(pd.DataFrame(records), f"rollouts/step_{step:06d}.json"),
    )


def train(
    policy: Policy,
    task: Task,
    items: list,
    config: Mapping[str, Any],
    schedule_settings: Mapping[str, Any],
    checkpoints: str | os.PathLike,
    output: str | os.PathLike,
    logger: StepLogger,
    resume: bool,
    stop_after: int | None = None,
    on_resume: Callable[[int], None] = lambda step: None,
    continue_from: str | os.PathLike | None = None,
    exports: Mapping[int, str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """Run (or continue) the training and, once all steps are done, save the policy as a Hugging Face folder.

    The checkpoint key is the hash of every setting that shapes the run, so a changed config starts
    afresh instead of resuming someone else's optimizer state. `continue_from` is a checkpoint of
    another, finished run to carry on from when this run has none of its own yet (post-training
    scaling); `exports` maps steps before the last to folders that get the policy as it was then.
    """
    trainer = Trainer(
        policy.model,
        policy.reference,
        task,
        items,
        RL.of(config),
        Schedule.from_config(schedule_settings),
        policy.generator,
        policy.pad_token_id,
        checkpoints,
        config_hash({"rl": config["rl"], "agent": config["agent"], "schedule": schedule_settings}),
        logger,
    )
    exports = dict(exports or {})
    if any(step >= trainer.schedule.steps for step in exports):
        raise ValueError(f"exports {sorted(exports)} must come before the last step {trainer.schedule.steps}")
    resumed = resume and trainer.resume()
    # Snakemake deletes the outputs of a failed job, so a resumed run may have passed exports that are gone:
    # then it starts again from where it continued, rather than miss them.
    lost = sorted(step for step in exports if step < trainer.step and not Path(exports[step]).is_dir())
    if lost and continue_from is None:
        raise InputError(
            f"the policies of steps {lost} are gone and the run has moved past them (step "
            f"{trainer.step}): delete {checkpoints} to train again",
            file=exports[lost[0]],
        )
    if resumed and not lost:
        on_resume(trainer.step)
    elif continue_from is not None:
        trainer.restore(continue_from)
    started = time.perf_counter()
    history = []
    for step in sorted(step for step in exports if step >= trainer.step):
        if stop_after is not None and step > stop_after:
            break
        history += trainer.fit(stop_after=step)
        save_policy(policy, exports[step], {"step": step})
    history += trainer.fit(stop_after=stop_after)
    summary = {
        "steps": trainer.step,
        "steps_this_run": len(history),
        "skipped_steps_this_run": int(sum(m.get("skipped", 0) for m in history)),
        "seconds_this_run": time.perf_counter() - started,
        "finished": trainer.step >= trainer.schedule.steps,
    }
    if summary["finished"]:
        save_policy(policy, output, summary)
    return summary


def save_policy(policy: Policy, path: str | os.PathLike, summary: Mapping[str, Any]) -> None:
    """The policy as a Hugging Face folder (weights, tokenizer, and how it was trained), written atomically.

    Weights byte-identical to those it started from (a run whose every step was skipped) share that file
    through a hard link instead of storing a second copy.
    """
    with atomic_dir(path) as tmp:
        policy.model.save_pretrained(str(tmp), safe_serialization=True)
        policy.tokenizer.save_pretrained(str(tmp))
        write_json(dict(summary), Path(tmp) / "training.json")
        for weights in Path(tmp).glob("*.safetensors"):
            link_if_identical(weights, policy.source / weights.name)
