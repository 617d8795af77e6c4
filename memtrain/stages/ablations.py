"""Stages of the ablation rules (rules/ablations.smk, paper section 5): the post-training scaling run carried on
from a finished MemAgent run, and the evaluation of each step it exports. The ablations proper (MemAgent from
each MemTrain variant) are jobs of the downstream rules."""

from __future__ import annotations

from memtrain import rules
from memtrain.stages.downstream import eval_long_context, posttrain
from memtrain.stages.job import Job


def posttrain_continue(job: Job, run) -> None:
    """MemAgent carried on from its finished run's last checkpoint for posttrain.scaling.steps more steps (Figure 4),
    the KL reference still the run's starting model; the last export is the last of the rule's outputs."""
    posttrain(job, run, "memagent", job.output.exports[-1], continue_from=job.params.source)


STAGES = {
    rules.POSTTRAIN_CONTINUE: posttrain_continue,
    # Long-context QA of one exported step: the evaluation of rules/downstream.smk, in memory mode.
    rules.EVAL_SCALING: eval_long_context,
}
