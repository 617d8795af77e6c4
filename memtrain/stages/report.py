"""Stages of the report rules (rules/report.smk): Tables 1 and 2 beside the paper's with their provenance, Figures
3 and 4 with the training curves, and the case study (Table 3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from memtrain import rules
from memtrain.errors import InputError
from memtrain.stages.job import Job


def paper_backbones(
    backbones: Mapping[str, Mapping[str, Any]], stand_ins: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """Our backbone names to the paper's: a declared stand-in (config report.paper_backbones), else the model
    id's basename (Qwen/Qwen3-4B-Instruct-2507 -> Qwen3-4B-Instruct-2507).

    Without a stand-in a GGUF backbone (the embedded SmolLM2) is not one of the paper's, so its paper columns
    stay empty.
    """
    stand_ins = stand_ins or {}
    return {
        name: stand_ins.get(name) or (Path(spec["path"]).name if "path" in spec else None)
        for name, spec in backbones.items()
    }


def length_stand_ins(lengths: Sequence[int], report: Mapping[str, Any]) -> dict[int, str]:
    """Our numbers of documents (qa.long_context.lengths) -> the paper's lengths they stand in for, in order."""
    return dict(zip(lengths, report["paper_lengths"]))


def stand_in_sentences(config: Mapping[str, Any]) -> list[str]:
    """What report.* declares, in words, for the index page."""
    report = config["report"]
    sentences = [
        f"backbone `{ours}` is compared with the paper's {theirs}" for ours, theirs in report["paper_backbones"].items()
    ]
    sentences += [
        f"long-context QA with {docs} documents per question is compared with the paper's {length} column"
        for docs, length in length_stand_ins(config["qa"]["long_context"]["lengths"], report).items()
    ]
    sentences += [
        f"search dataset `{ours}` is compared with the paper's {theirs} column"
        for ours, theirs in report["paper_benchmarks"].items()
    ]
    return sentences


def _runs(results_dir: str, experiment: str, rule: str) -> dict[tuple[str, str, str, int], str]:
    from memtrain.tracking import finished_job_runs

    return {
        (w["backbone"], w["trained"], w["init"], int(w["seed"])): run_id
        for key, run_id in finished_job_runs(results_dir, experiment, rule).items()
        for w in [dict(key)]
    }


def report(job: Job, run) -> None:
    """Tables 1 and 2 beside the paper's values with their run ids, and index.md; everything on this one run."""
    import datetime

    from memtrain.io import atomic_path
    from memtrain.report import index, results, tables
    from memtrain.tracking import config_hash, run_context_tags

    config = job.config
    evaluations, index_path = job.input.evaluations, job.output.index
    output_dir = Path(index_path).parent
    backbones = paper_backbones(config["backbones"], config["report"]["paper_backbones"])
    lengths = length_stand_ins(config["qa"]["long_context"]["lengths"], config["report"])
    built = {
        "table1_long_context_qa": (
            tables.table1(
                results.long_context(evaluations),
                backbones,
                stand_ins=lengths,
                metric=config["report"]["table1_metric"],
            ),
            rules.EVAL_LONG_CONTEXT,
        ),
        "table2_search_qa": (
            tables.table2(
                results.search_qa(evaluations),
                backbones,
                stand_ins=config["report"]["paper_benchmarks"],
                metric=config["report"]["table2_metric"],
            ),
            rules.EVAL_SEARCH_QA,
        ),
    }
    for name, (table, rule) in built.items():
        stem = output_dir / name
        tables.write_tables(table, stem)
        trace = tables.provenance(table, _runs(job.results_dir, job.experiment, rule))
        with atomic_path(f"{stem}_provenance.csv") as tmp:
            trace.to_csv(tmp, index=False)
        run.log_table(table, f"{name}.json")
        run.log_table(trace, f"{name}_provenance.json")
        run.log_artifact(f"{stem}.md", "tables")
        run.log_artifact(f"{stem}.tex", "tables")
        averages = table[table["column"] == tables.AVG]
        run.log_metrics(
            {f"{name}/{r.backbone}/{r.variant.replace('+', '-plus-')}/avg": r.mean for r in averages.itertuples()}
        )
    for figure in job.input.figures:
        run.log_artifact(figure, "figures")
    for case in job.input.case_studies:
        for path in (Path(case), Path(case).with_suffix(".json")):
            run.log_artifact(path, "case_study")
    context = run_context_tags()
    provenance = {
        "git_commit": context["memtrain.git_commit"],
        "git_dirty": context.get("memtrain.git_dirty"),
        "experiment": job.experiment,
        "run_id": run.run_id,
        "config_hash": config_hash(config),
        "written": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    text = index.render(
        index_path,
        [output_dir / f"{name}.md" for name in built],
        job.input.figures,
        job.input.case_studies,
        provenance,
        config,
        stand_in_sentences(config),
    )
    with atomic_path(index_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    run.log_artifact(index_path)


FIGURE_BACKBONE = "Qwen3-4B-Instruct-2507"  # the only backbone the paper's Figures 3 and 4 show


def _training_runs(results_dir: str, experiment: str) -> dict[str, tuple[str, str]]:
    """Every finished training job as label -> (run id, kind), for the reward curves."""
    from memtrain.tracking import finished_job_runs

    labelled = {}
    for key, run_id in finished_job_runs(results_dir, experiment, rules.MEMTRAIN_TRAIN).items():
        w = dict(key)
        labelled[f"memtrain/{w['backbone']}/{w['variant']}"] = (run_id, "memtrain")
    for key, run_id in finished_job_runs(results_dir, experiment, rules.POSTTRAIN_TRAIN).items():
        w = dict(key)
        labelled[f"{w['algorithm']}/{w['backbone']}/{w['init']}/seed{w['seed']}"] = (run_id, w["algorithm"])
    for key, run_id in finished_job_runs(results_dir, experiment, rules.POSTTRAIN_CONTINUE).items():
        w = dict(key)
        labelled[f"memagent-continued/{w['backbone']}/{w['init']}/seed{w['seed']}"] = (run_id, "memagent")
    return labelled


def figures(job: Job, run) -> None:
    """Figures 3 (MemAgent from each MemTrain variant) and 4 (post-training scaling), and the training curves."""
    from mlflow import MlflowClient

    from memtrain.report import figures as draw
    from memtrain.report import paper, results
    from memtrain.tracking import tracking_uri

    params = job.config
    names = paper_backbones(params["backbones"], params["report"]["paper_backbones"])

    def drawn(figure, output: str) -> None:
        draw.save(figure, output)
        run.log_figure(figure, Path(output).name)

    def backbone_of(output: str, prefix: str) -> str:
        return Path(output).stem.removeprefix(prefix)

    metric = params["report"]["table1_metric"]  # Figures 3 and 4 plot Table 1's metric
    long_context = results.long_context(job.input.evaluations)
    stand_ins = length_stand_ins(params["qa"]["long_context"]["lengths"], params["report"])
    for output in job.output.ablations:
        backbone = backbone_of(output, "fig3_ablations_")
        drawn(
            draw.ablation_figure(
                long_context,
                backbone,
                paper.figures() if names[backbone] == FIGURE_BACKBONE else None,
                stand_ins,
                metric,
            ),
            output,
        )
    points = results.scaling(job.input.evaluations, params["posttrain"]["memagent"]["steps"], metric)
    for output in job.output.scaling:
        backbone = backbone_of(output, "fig4_posttrain_scaling_")
        drawn(
            draw.scaling_figure(
                points, backbone, paper.figures() if names[backbone] == FIGURE_BACKBONE else None, metric
            ),
            output,
        )
    histories = draw.training_histories(
        MlflowClient(tracking_uri(job.results_dir)), _training_runs(job.results_dir, job.experiment)
    )
    drawn(draw.training_curves(histories), job.output.curves)


def case_study(job: Job, run) -> None:
    """Table 3: one question read by MemAgent and by MemTrain+MemAgent, with the memory each kept after every chunk.

    The question is picked from the two models' evaluation files (one MemTrain+MemAgent gets right and
    MemAgent does not, when there is one), then both models read it again with the evaluation's sampling.
    """
    import pandas as pd

    from memtrain.data import qa
    from memtrain.io import atomic_path, write_json
    from memtrain.report import case_study as case
    from memtrain.rl import policies

    params = job.config
    question, num_docs = case.pick(pd.read_parquet(job.input.baseline_eval), pd.read_parquet(job.input.ours_eval))
    items = [i for i in qa.read_long_context(job.input.data) if (i.id, i.num_docs) == (question, num_docs)]
    if not items:
        raise InputError(
            f"question {question} at {num_docs} documents is not in the evaluation set", file=job.input.data
        )
    traces = {}
    for label, path in (("MemAgent", job.input.baseline), ("MemTrain+MemAgent", job.input.ours)):
        sampling = params["eval"]["long_context_sampling"] or params["eval"]["sampling"]
        with policies.decoder(path, params, 0, threads=job.threads) as policy:
            traces[label] = case.trace(policies.memory_agent(policy, params, sampling), items[0])
    write_json(case.to_json(items[0], traces), job.output.json)
    with atomic_path(job.output.markdown) as tmp:
        tmp.write_text(case.to_markdown(items[0], traces), encoding="utf-8")
    run.set_tags({"case_study.question": question, "case_study.num_docs": str(num_docs)})
    run.log_metrics({f"em/{label.replace('+', '-plus-')}": trace.em for label, trace in traces.items()})
    run.log_artifact(job.output.markdown)


STAGES = {rules.CASE_STUDY: case_study, rules.FIGURES: figures, rules.REPORT: report}
