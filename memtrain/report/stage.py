"""`python -m memtrain report`: Tables 1 and 2 of the reproduction beside the paper's, with their provenance."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memtrain.cli import arg, stage


def paper_backbones(backbones: Mapping[str, Mapping[str, Any]]) -> dict[str, str | None]:
    """Our backbone names to the paper's: the model id's basename (Qwen/Qwen3-4B-Instruct-2507 -> Qwen3-4B-Instruct-2507).

    A GGUF backbone (the embedded SmolLM2) is not one of the paper's, so its paper columns stay empty.
    """
    return {name: Path(spec["path"]).name if "path" in spec else None for name, spec in backbones.items()}


def _runs(results_dir: str, experiment: str, rule: str) -> dict[tuple[str, str, str, int], str]:
    from memtrain.tracking import finished_job_runs

    return {(w["backbone"], w["trained"], w["init"], int(w["seed"])): run_id
            for key, run_id in finished_job_runs(results_dir, experiment, rule).items() for w in [dict(key)]}


@stage("report", arg("--eval-dir", required=True), arg("--output-dir", required=True))
def report(args, params, run) -> None:
    """Tables 1 (long-context QA by length) and 2 (search QA) with the paper's values, differences and run ids."""
    from memtrain.io import atomic_path
    from memtrain.report import results, tables

    backbones = paper_backbones(params["backbones"])
    built = {
        "table1_long_context_qa": (tables.table1(results.long_context(args.eval_dir), backbones), "eval_long_context"),
        "table2_search_qa": (tables.table2(results.search_qa(args.eval_dir), backbones), "eval_search_qa"),
    }
    for name, (table, rule) in built.items():
        stem = Path(args.output_dir) / name
        tables.write_tables(table, stem)
        trace = tables.provenance(table, _runs(args.results_dir, args.experiment, rule))
        with atomic_path(f"{stem}_provenance.csv") as tmp:
            trace.to_csv(tmp, index=False)
        run.log_table(table, f"{name}.json")
        run.log_table(trace, f"{name}_provenance.json")
        averages = table[table["column"] == tables.AVG]
        run.log_metrics({f"{name}/{r.backbone}/{r.variant.replace('+', '-plus-')}/avg": r.mean
                         for r in averages.itertuples()})


FIGURE3_BACKBONE = "Qwen3-4B-Instruct-2507"  # the only backbone the paper's Figure 3 shows


def _training_runs(results_dir: str, experiment: str) -> dict[str, tuple[str, str]]:
    """Every finished training job as label -> (run id, kind), for the reward curves."""
    from memtrain.tracking import finished_job_runs

    labelled = {}
    for key, run_id in finished_job_runs(results_dir, experiment, "memtrain_train").items():
        w = dict(key)
        labelled[f"memtrain/{w['backbone']}/{w['variant']}"] = (run_id, "memtrain")
    for key, run_id in finished_job_runs(results_dir, experiment, "posttrain_train").items():
        w = dict(key)
        labelled[f"{w['algorithm']}/{w['backbone']}/{w['init']}/seed{w['seed']}"] = (run_id, w["algorithm"])
    return labelled


@stage("figures", arg("--eval-dir", required=True), arg("--ablations", nargs="+", required=True),
       arg("--curves", required=True))
def figures(args, params, run) -> None:
    """Figure 3 (MemAgent from the Full, End-to-End and Decoupled MemTrain variants) and the training curves."""
    from mlflow import MlflowClient

    from memtrain.report import figures as draw
    from memtrain.report import paper, results
    from memtrain.tracking import tracking_uri

    long_context = results.long_context(args.eval_dir)
    names = paper_backbones(params["backbones"])
    for output in args.ablations:
        backbone = Path(output).stem.removeprefix("fig3_ablations_")
        figure = draw.ablation_figure(long_context, backbone, paper.figures() if names[backbone] == FIGURE3_BACKBONE
                                      else None)
        draw.save(figure, output)
        run.log_figure(figure, Path(output).name)
    histories = draw.training_histories(MlflowClient(tracking_uri(args.results_dir)),
                                        _training_runs(args.results_dir, args.experiment))
    curves = draw.training_curves(histories)
    draw.save(curves, args.curves)
    run.log_figure(curves, Path(args.curves).name)
