"""Real snakemake runs of every target on config/test.yaml, in temporary working directories (see dag_runs)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest
from dag_runs import (
    DETERMINISTIC_OUTPUTS,
    LOCAL,
    ROOT,
    SLURM_PROFILE,
    Started,
    clone_workdir,
    job_counts,
    runs,
    snakemake,
    start_beside,
)

from memtrain import tracking
from memtrain.rl import checkpoint


@pytest.mark.slow
def test_data_target_writes_documents_card_and_figure(data_run):
    data = data_run / "results" / "data"
    train = pq.read_table(data / "documents.parquet").to_pylist()
    heldout = pq.read_table(data / "documents_heldout.parquet").to_pylist()
    assert (len(train), len(heldout)) == (8, 2)
    for doc in train + heldout:
        assert "[MASK]" in doc["text"] and doc["answer"].lower() not in doc["text"].lower()
        assert sum(p["role"] == "related" for p in doc["passages"]) >= 3
        assert 600 <= doc["num_tokens"] <= 1100
    card = json.loads((data / "dataset_card.json").read_text())
    assert card["train"]["documents"] == 8 and card["train"]["answer_labels"]
    assert (data / "document_lengths.png").read_bytes()[:4] == b"\x89PNG"
    for rule in ("wiki_download", "passages", "index", "assemble", "dataset_card"):
        assert (data_run / "results" / "benchmarks" / f"{rule}.tsv").exists()
        assert (data_run / "results" / "logs" / f"{rule}.log").exists()


@pytest.mark.slow
def test_mlflow_has_one_parent_and_a_child_per_job(data_run):
    all_runs = runs(data_run)
    parents = [
        r
        for r in all_runs
        if r.data.tags.get("memtrain.kind") == "invocation" and r.data.tags["memtrain.targets"].endswith(" data")
    ]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 10  # wiki_download, passages, 2 ner, 2 embed, index, tokenizer, assemble, card
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(c.info.status == "FINISHED" for c in children)
    ner = [c for c in children if c.data.tags["memtrain.rule"] == "ner"]
    assert sorted(json.loads(c.data.tags["memtrain.wildcards"])["scatteritem"] for c in ner) == ["1-of-2", "2-of-2"]
    assemble = next(c for c in children if c.data.tags["memtrain.rule"] == "assemble")
    assert assemble.data.metrics["train_documents"] == 8 and assemble.data.params["data.documents.num_related"] == "3"
    assert all("memtrain.host" in c.data.tags and "memtrain.config_hash" in c.data.tags for c in children)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_mlflow_ui_opens_on_the_runs_table_with_the_pipeline_run(data_run, tmp_path):
    """In a real headless browser: the address `make ui` prints shows the runs table (not MLflow 3's GenAI view)
    listing the snakemake invocation, its rule runs counted under it."""
    from memtrain import ui

    all_runs = runs(data_run)
    experiment = all_runs[0].info.experiment_id
    with ui.serving(data_run / "results", tmp_path / "mlflow-ui.log") as base:
        browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                   "--window-size=1600,1000"]  # fmt: skip
        page = ui.runs_page(base, experiment)
        dom = subprocess.run(  # one page load gives both the DOM and the screenshot
            [*browser, "--dump-dom", f"--screenshot={tmp_path / 'runs.png'}", page],
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
    invocations = [r.info.run_name for r in all_runs if r.data.tags.get("memtrain.kind") == "invocation"]
    assert invocations and all(f">{name}<" in dom.stdout for name in invocations)
    assert re.search(r"<h2[^>]*>Runs</h2>", dom.stdout), "not the runs table (MLflow's GenAI view says Overview)"
    assert f"<strong>{len(all_runs)}</strong> matching runs" in dom.stdout  # the invocation and its rule runs
    assert (tmp_path / "runs.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_up_to_date_dag_plans_nothing_and_a_forced_stage_plans_its_downstream(data_run):
    assert "Nothing to be done" in snakemake(data_run, "-n", "data").stdout
    plan = snakemake(data_run, "-n", "data", "--forcerun", "assemble").stdout
    assert "assemble" in plan and "dataset_card" in plan and "wiki_download" not in plan
    # a changed config key reruns the jobs whose config slice holds it, and what they feed
    counts = job_counts(snakemake(data_run, "-n", "data", "--config", "seed=8").stdout)
    assert counts == {"assemble": 1, "dataset_card": 1, "data": 1}, counts  # `seed` is in assemble's slice only


@pytest.mark.slow
def test_failing_job_marks_the_invocation_failed_and_names_the_bad_record(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "1", "title": "A", "text": "fine"}\n{"id": "2", "title": "B"}\n')
    result = snakemake(
        tmp_path,
        "-c1",
        "results/data/articles.parquet",  # the failing job alone: snakemake would wait for the tokenizer job too
        "--config",
        f"data={{'source': {{'kind': 'jsonl', 'path': '{corpus}'}}}}",
        check=False,
    )
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "wiki_download.log").read_text()
    assert "record line 2, field text" in log and str(corpus) in log
    assert not (tmp_path / "results" / "data" / "articles.parquet").exists()
    by_name = {r.data.tags.get("memtrain.rule", "invocation"): r for r in runs(tmp_path)}
    assert by_name["invocation"].info.status == "FAILED"
    assert by_name["wiki_download"].info.status == "FAILED"
    assert "record line 2" in by_name["wiki_download"].data.tags["memtrain.error"]


@pytest.mark.slow
def test_unknown_config_key_stops_snakemake_with_a_clear_message(tmp_path):
    result = snakemake(tmp_path, "-n", "data", "--config", "data={'passages': {'max_wordz': 3}}", check=False)
    assert result.returncode != 0
    assert "max_wordz" in result.stderr + result.stdout and "data.passages" in result.stderr + result.stdout


def test_threads_per_job_gives_each_training_job_its_share_of_a_local_runs_cores(tmp_path):
    def threads(value: int) -> list[int]:
        plan = snakemake(tmp_path, "-n", "--cores", "4", "memtrain", "--config", f"threads_per_job={value}").stdout
        blocks = re.findall(r"^rule memtrain_train:\n((?:\s+.*\n)+?)(?:\S|$)", plan, re.MULTILINE)
        return [int(m.group(1)) if (m := re.search(r"threads: (\d+)", b)) else 1 for b in blocks]

    assert threads(1) == [1, 1, 1] and threads(3) == [3, 3, 3]
    assert threads(8) == [4, 4, 4]  # at most the run's cores


@pytest.fixture(scope="module")
def memtrain_run(data_run) -> Path:
    snakemake(data_run, *LOCAL, "memtrain")
    return data_run


def _memtrain_runs(workdir: Path) -> dict:
    return {
        json.loads(r.data.tags["memtrain.wildcards"])["variant"]: r
        for r in runs(workdir)
        if r.data.tags.get("memtrain.rule") == "memtrain_train"
    }


@pytest.mark.slow
def test_memtrain_target_trains_three_variants_with_checkpoints_and_step_metrics(memtrain_run):
    train = memtrain_run / "results" / "train" / "memtrain" / "smollm2-tiny"
    by_variant = _memtrain_runs(memtrain_run)
    assert set(by_variant) == {"full", "e2e", "decoupled"}
    client = mlflow.MlflowClient(tracking.tracking_uri(memtrain_run / "results"))
    for variant, run in by_variant.items():
        final = train / variant / "final"
        assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()
        summary = json.loads((final / "training.json").read_text())
        assert summary["finished"] and summary["steps"] == 1
        # trainer.prune_checkpoints: nothing continues a MemTrain run, so its checkpoints go once `final` is written
        assert [p.name for p in (train / variant / "checkpoints").iterdir()] == ["PRUNED"]
        # its one checkpoint: the weights (a skipped step leaves no optimizer state) and the random states
        assert run.data.metrics["pruned_checkpoint_bytes"] > (final / "model.safetensors").stat().st_size
        assert run.info.status == "FINISHED"
        for metric in ("e2e_em", "filtered_fraction", "skipped", "rollout_tokens_per_second", "step_seconds"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1], (variant, metric)
        recall = client.get_metric_history(run.info.run_id, "recall_em")
        assert (variant == "e2e") == (recall == []), variant
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "rollouts")]
        assert artifacts == ["rollouts/step_000001.json"]
    assert "Nothing to be done" in snakemake(memtrain_run, "-n", "memtrain").stdout


@pytest.fixture(scope="module")
def evaluate_run(memtrain_run, request) -> Path:
    snakemake(memtrain_run, *LOCAL, "evaluate")
    start_beside(request, "verl_run_started")
    return memtrain_run


MODELS = {
    "long_context": [
        ("none", "base", 0),
        ("none", "memtrain-full", 0),
        ("memagent", "base", 1),
        ("memagent", "memtrain-full", 1),
    ],
    "search_qa": [("none", "base", 0), ("mem1", "base", 1), ("mem1", "memtrain-full", 1)],
}


@pytest.mark.slow
def test_evaluate_target_post_trains_from_base_and_memtrain_and_evaluates_every_model(evaluate_run):
    import psutil

    results = evaluate_run / "results"
    for algorithm in ("memagent", "mem1"):
        for init in ("base", "memtrain-full"):
            summary = json.loads(
                (
                    results / "train" / algorithm / "smollm2-tiny" / init / "seed1" / "final" / "training.json"
                ).read_text()
            )
            assert summary["finished"] and summary["steps"] == 1
    for task, models in MODELS.items():
        for trained, init, seed in models:
            rows = pq.read_table(
                results / "eval" / task / "smollm2-tiny" / trained / init / f"seed{seed}.parquet"
            ).to_pylist()
            if task == "long_context":  # 2 questions at each of 2 lengths; base reads everything at once
                assert sorted(r["num_docs"] for r in rows) == [3, 3, 6, 6]
                assert ("truncated" in rows[0]) == ((trained, init) == ("none", "base"))
                assert all({"prediction", "em", "sub_em", "f1", "reply"} <= set(r) for r in rows)
            else:  # 2 two-objective questions
                assert len(rows) == 2 and all(len(r["targets"]) == 2 and "; " in r["question"] for r in rows)
                assert all(0 <= r["em"] <= 1 and r["em_sum"] == 2 * r["em"] for r in rows)
    evaluations = [r for r in runs(evaluate_run) if r.data.tags.get("memtrain.rule", "").startswith("eval_")]
    assert len(evaluations) == 7 and all(r.info.status == "FINISHED" for r in evaluations)
    for run in evaluations:
        wildcards = json.loads(run.data.tags["memtrain.wildcards"])
        assert "em/avg" in run.data.metrics
        expected = (
            "train/memtrain/smollm2-tiny/full/final"
            if (wildcards["trained"], wildcards["init"]) == ("none", "memtrain-full")
            else "models/smollm2-tiny/base"
            if wildcards["trained"] == "none"
            else f"train/{wildcards['trained']}/smollm2-tiny/{wildcards['init']}/seed1/final"
        )
        assert run.data.tags["memtrain.policy"].endswith(expected)
    posttrain = [r for r in runs(evaluate_run) if r.data.tags.get("memtrain.rule") == "posttrain_train"]
    for run in posttrain:  # post-training from MemTrain starts from the MemTrain checkpoint
        init = json.loads(run.data.tags["memtrain.wildcards"])["init"]
        assert run.data.tags["memtrain.policy"].endswith(
            "train/memtrain/smollm2-tiny/full/final" if init == "memtrain-full" else "models/smollm2-tiny/base"
        )
    assert (results / "logs" / "retriever" / "eval_search_qa" / "smollm2-tiny" / "none" / "base" / "seed0.log").exists()
    servers = [  # of this run: other tests' retrieval servers may be running beside it
        p
        for p in psutil.process_iter(["cmdline", "cwd"])
        if "memtrain.retriever" in " ".join(p.info["cmdline"] or []) and p.info["cwd"] == str(evaluate_run.resolve())
    ]
    assert not servers
    assert "Nothing to be done" in snakemake(evaluate_run, "-n", "evaluate").stdout


@pytest.mark.slow
def test_a_rerun_job_resumes_from_the_checkpoints_kept_for_the_continuation(evaluate_run):
    """MemAgent from base, seed 1, is what the scaling continuation carries on: it keeps its checkpoints (every other
    run pruned its own), and a rerun of its job resumes from them instead of training again."""
    import shutil

    train = evaluate_run / "results" / "train"
    kept = train / "memagent" / "smollm2-tiny" / "base" / "seed1"
    assert [p.name for p in checkpoint.checkpoints(kept / "checkpoints")] == ["step_000001"]
    assert not checkpoint.checkpoints(train / "mem1" / "smollm2-tiny" / "base" / "seed1" / "checkpoints")
    shutil.rmtree(kept / "final")
    # the final folder itself as target: snakemake leaves a deleted intermediate alone while what it fed is current
    snakemake(evaluate_run, *LOCAL, str((kept / "final").relative_to(evaluate_run)))
    rerun = max(
        (r for r in runs(evaluate_run) if r.data.tags.get("memtrain.rule") == "posttrain_train"),
        key=lambda r: r.info.start_time,
    )
    assert json.loads(rerun.data.tags["memtrain.wildcards"]) == {
        "algorithm": "memagent",
        "backbone": "smollm2-tiny",
        "init": "base",
        "seed": "1",
    }
    assert rerun.data.tags["posttrain.resumed_from_step"] == "1"
    log = (
        evaluate_run / "results" / "logs" / "posttrain" / "memagent" / "smollm2-tiny" / "base" / "seed1.log"
    ).read_text()
    assert "step 1/" not in log  # nothing left to train: the final model is re-saved
    assert [p.name for p in checkpoint.checkpoints(kept / "checkpoints")] == ["step_000001"]


@pytest.mark.slow
def test_ablations_target_plans_only_the_ablation_branch(evaluate_run):
    """With the main DAG done, `-n ablations` plans MemAgent from e2e and decoupled and their evaluations, nothing else."""
    import re

    plan = snakemake(evaluate_run, "-n", "ablations").stdout
    counts = job_counts(plan)
    assert counts == {"posttrain_train": 2, "eval_long_context": 2, "ablations": 1}, plan[-2000:]
    planned_outputs = re.findall(r"^\s+output: (.*)$", plan, re.MULTILINE)
    assert all("memtrain-e2e" in o or "memtrain-decoupled" in o for o in planned_outputs if "results/" in o)


@pytest.mark.slow
def test_an_eval_setting_replans_every_evaluation_and_no_training(evaluate_run):
    overlay = evaluate_run.parent / "eval-batch.yaml"
    overlay.write_text(json.dumps({"eval": {"batch_size": 3}}))
    plan = snakemake(evaluate_run, "-n", "evaluate", configs=("test.yaml", str(overlay))).stdout
    assert job_counts(plan) == {"eval_long_context": 4, "eval_search_qa": 3, "evaluate": 1}


@pytest.fixture(scope="module")
def all_run(evaluate_run) -> Path:
    snakemake(evaluate_run, *LOCAL, "all")
    return evaluate_run


@pytest.mark.slow
def test_all_continues_memagent_and_evaluates_every_exported_step(all_run):
    results = all_run / "results"
    seed = results / "train" / "memagent" / "smollm2-tiny" / "base" / "seed1"
    for step in (2, 3):  # posttrain steps 1, continued by 2 with an evaluation every step
        assert (seed / "continued" / f"step{step}" / "model.safetensors").is_file()
        rows = pq.read_table(results / "eval" / "scaling" / "smollm2-tiny" / "base" / "seed1" / f"step{step}.parquet")
        assert sorted(rows.column("num_docs").to_pylist()) == [3, 3, 6, 6]
    assert json.loads((seed / "continued" / "step3" / "training.json").read_text())["steps"] == 3
    (run,) = [r for r in runs(all_run) if r.data.tags.get("memtrain.rule") == "posttrain_continue"]
    assert run.data.tags["posttrain.continued_from"].endswith("seed1/checkpoints/step_000001")
    # the continuation has what it needed: its own checkpoints and those of the run it carried on are pruned
    for checkpoints in (seed / "checkpoints", seed / "continued" / "checkpoints"):
        assert not checkpoint.checkpoints(checkpoints) and checkpoint.pruned(checkpoints), checkpoints
    assert run.data.metrics["pruned_checkpoint_bytes"] > 0
    client = mlflow.MlflowClient(tracking.tracking_uri(results))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "skipped")] == [2, 3]


@pytest.mark.slow
def test_all_ends_with_tables_beside_the_paper_figures_case_study_and_one_report_run(all_run):
    import pandas as pd

    from memtrain.report import paper

    report = all_run / "results" / "report"
    table1 = pd.read_csv(report / "table1_long_context_qa.csv")
    assert set(table1["variant"]) == {"base", "memtrain", "memagent", "memtrain+memagent"}
    assert set(table1["column"].astype(str)) == {"3", "6", "avg"}
    # config/test.yaml declares SmolLM2 a stand-in for Qwen3-4B, and 3 / 6 documents for the 7k / 14k columns
    reference = paper.table1().set_index(["backbone", "variant"])
    for row in table1[table1["column"].astype(str) != "avg"].itertuples():
        assert (
            row.paper_backbone == "Qwen3-4B-Instruct-2507"
            and row.paper_column == {"3": "7k", "6": "14k"}[str(row.column)]
        )
        assert row.paper == reference.loc[("Qwen3-4B-Instruct-2507", row.variant), row.paper_column]
        assert row.diff == pytest.approx(row.mean - row.paper)
    assert table1[table1["column"] == "avg"]["paper"].isna().all()  # two lengths do not make the paper's average
    table2 = pd.read_csv(report / "table2_search_qa.csv")
    assert set(table2["variant"]) == {"base", "mem1", "memtrain+mem1"}
    assert set(table2.loc[table2["column"] == "offline", "paper_column"]) == {"hotpotqa"}
    assert table2.loc[table2["column"] == "offline", "paper"].notna().all()
    assert set(table1["metric"]) == {"sub_em"} and set(table2["metric"]) == {"em"}  # the headlines, as upstream
    assert {"em_mean", "f1_mean"} <= set(table1.columns)
    for name, headline in (
        ("table1_long_context_qa", "sub-EM, MemAgent's accuracy"),
        ("table2_search_qa", "exact match (EM)"),
    ):
        text = (report / f"{name}.md").read_text()
        assert text.startswith("*Table") and headline in text.splitlines()[0] and "| backbone" in text
        assert headline in (report / f"{name}.tex").read_text()
    evaluations = {
        r.info.run_id: json.loads(r.data.tags["memtrain.wildcards"])
        for r in runs(all_run)
        if r.data.tags.get("memtrain.rule") == "eval_long_context" and r.info.status == "FINISHED"
    }
    trace = pd.read_csv(report / "table1_long_context_qa_provenance.csv")
    assert all(run_id in evaluations for ids in trace["run_ids"] for run_id in ids.split(";"))
    base = trace[(trace["variant"] == "base") & (trace["column"].astype(str) == "avg")]["run_ids"].item()
    assert evaluations[base] == {"backbone": "smollm2-tiny", "trained": "none", "init": "base", "seed": "0"}

    figures = ["fig3_ablations_smollm2-tiny.png", "fig4_posttrain_scaling_smollm2-tiny.png", "training_curves.png"]
    for name in figures:
        assert (report / name).read_bytes()[:4] == b"\x89PNG" and (report / name).stat().st_size > 10_000
    case = json.loads((report / "case_study_smollm2-tiny.json").read_text())
    assert set(case["models"]) == {"MemAgent", "MemTrain+MemAgent"}
    for model in case["models"].values():
        assert len(model["chunks"]) >= 1 and all(isinstance(c["memory"], str) for c in model["chunks"])
    assert case["question"] in (report / "case_study_smollm2-tiny.md").read_text()
    index = (report / "index.md").read_text()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    assert f"git commit: `{head}`" in index and "**Stand-ins.**" in index
    for name in [*figures, "case_study_smollm2-tiny.md", "table2_search_qa_provenance.csv"]:
        assert f"]({name})" in index, name

    (report_run,) = [r for r in runs(all_run) if r.data.tags.get("memtrain.rule") == "report"]
    client = mlflow.MlflowClient(tracking.tracking_uri(all_run / "results"))

    def artifacts(path=None):
        return {a.path for a in client.list_artifacts(report_run.info.run_id, path)}

    assert artifacts() >= {
        "table1_long_context_qa.json",
        "table2_search_qa_provenance.json",
        "index.md",
        "figures",
        "case_study",
        "tables",
    }
    assert artifacts("figures") == {f"figures/{name}" for name in figures}
    assert artifacts("case_study") == {
        "case_study/case_study_smollm2-tiny.md",
        "case_study/case_study_smollm2-tiny.json",
    }
    assert "Nothing to be done" in snakemake(all_run, "-n", "all").stdout


@pytest.mark.slow
def test_figures_and_scaling_targets_rerun_only_their_own_jobs(all_run):
    assert job_counts(snakemake(all_run, "-n", "-f", "figures").stdout) == {"figures": 1}
    forced = job_counts(snakemake(all_run, "-n", "scaling", "-R", "posttrain_continue").stdout)
    assert forced == {"posttrain_continue": 1, "eval_scaling": 2, "scaling": 1}, forced


VERL_TARGET = "results/eval/search_qa/smollm2-tiny/mem1/base/seed1.parquet"
VERL_CONFIGS = ("test.yaml", "test-verl.yaml")
VERL_SERVER_LOG = "results/logs/retriever/posttrain/smollm2-tiny/base/seed1.log"
# MEM1 on veRL with one refill round: a random policy never scores, so every group is uninformative, the step
# draws one more batch, still finds nothing to train on and is skipped.
VERL_REFILL = {"posttrain": {"mem1": {"rl": {"filter": {"enabled": True, "max_refill_rounds": 1}}}}}


@pytest.fixture(scope="module")
def verl_run_started(memtrain_run, request, tmp_path_factory):
    """MEM1's post-training on veRL's trainer (its search server started by the stage) and its evaluation, in a
    copy of the evaluated DAG taken before `all` continues it: through the SLURM executor on the suite's cluster
    where one starts, locally otherwise. evaluate_run starts it as soon as `evaluate` is done in memtrain_run's
    working directory (veRL's start-up and the scheduler's polling are mostly waiting), so it runs beside the tests
    on the evaluated and full DAG."""
    import slurm_cluster as local_slurm

    workdir = clone_workdir(memtrain_run, tmp_path_factory.mktemp("verl") / "dag")
    (workdir / VERL_SERVER_LOG).unlink()  # the local run's: the veRL job must write its own
    overlay = workdir.parent / "refill.yaml"
    overlay.write_text(json.dumps(VERL_REFILL))
    configs = (*VERL_CONFIGS, str(overlay))
    through_slurm = local_slurm.unavailable_reason() is None
    if through_slurm:
        request.getfixturevalue("slurm_cluster")
    plan = snakemake(workdir, "-n", VERL_TARGET, configs=configs).stdout
    started = Started(
        workdir, *(("--profile", str(SLURM_PROFILE)) if through_slurm else LOCAL), VERL_TARGET, configs=configs
    )
    yield workdir, through_slurm, plan, started
    started.stop()


@pytest.fixture(scope="module")
def verl_run(evaluate_run, verl_run_started):  # evaluate_run first: it starts verl_run_started
    workdir, through_slurm, plan, started = verl_run_started
    started.wait()
    return workdir, through_slurm, plan


@pytest.mark.slow
def test_a_MEM1_job_on_veRL_refills_once_skips_and_exports_a_policy_the_evaluation_reads(verl_run):
    workdir, through_slurm, plan = verl_run
    assert job_counts(plan) == {"posttrain_train": 1, "eval_search_qa": 1}  # the trainer changed, nothing else

    final = workdir / "results" / "train" / "mem1" / "smollm2-tiny" / "base" / "seed1" / "final"
    summary = json.loads((final / "training.json").read_text())
    assert (summary["backend"], summary["device"], summary["steps"], summary["finished"]) == ("verl", "cpu", 1, True)
    assert (final / "model.safetensors").is_file() and (workdir / VERL_SERVER_LOG).is_file()
    rows = pq.read_table(workdir / VERL_TARGET).to_pylist()
    assert len(rows) == 2 and all(len(r["targets"]) == 2 for r in rows)

    found = runs(workdir)
    (trained,) = [r for r in found if "memtrain/optimizer_steps" in r.data.metrics]
    client = mlflow.MlflowClient(tracking.tracking_uri(workdir / "results"))
    history = {
        name: {m.step: m.value for m in client.get_metric_history(trained.info.run_id, name)}
        for name in ("training/filter_groups/rollout_rounds", "memtrain/skipped", "memtrain/optimizer_steps")
    }
    assert history == {  # at most max_refill_rounds more rounds, then the step is skipped: no update
        "training/filter_groups/rollout_rounds": {1: 2.0},
        "memtrain/skipped": {1: 1.0},
        "memtrain/optimizer_steps": {1: 0.0},
    }
    job = max(
        (r for r in found if r.data.tags.get("memtrain.rule") == "posttrain_train"), key=lambda r: r.info.start_time
    )
    assert job.info.status == "FINISHED" and ("memtrain.slurm_job_id" in job.data.tags) == through_slurm
    evaluation = max(
        (r for r in found if r.data.tags.get("memtrain.rule") == "eval_search_qa"), key=lambda r: r.info.start_time
    )
    assert evaluation.data.tags["memtrain.policy"].endswith("train/mem1/smollm2-tiny/base/seed1/final")


@pytest.mark.slow
def test_same_config_gives_byte_identical_outputs(data_run, data_rerun):
    """The second run goes through the local SLURM cluster where one can start: same bytes either way. Last in
    this file: the rerun starts once `data_run` is done and runs beside the DAG tests above."""
    for name in DETERMINISTIC_OUTPUTS:
        first, second = data_run / "results" / "data" / name, data_rerun.workdir / "results" / "data" / name
        assert first.read_bytes() == second.read_bytes(), name
