"""`python -m memtrain plan`: jobs from snakemake's real dry run, work and hours checked against hand computation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from memtrain import config as memtrain_config
from memtrain import stages
from memtrain.errors import InputError
from memtrain.plan import dag, estimate, throughputs, work

ROOT = Path(__file__).resolve().parent.parent
TEST_CONFIG = ROOT / "config" / "test.yaml"
PAPER_CONFIG = ROOT / "config" / "paper.yaml"
TEST_PROFILE = ROOT / "tests" / "slurm"
# Round CPU rates so that the expected seconds below can be worked out by hand.
ROUND_RATES = {
    "cpu_prefill_tokens_per_s": 1000,
    "cpu_decode_tokens_per_s": 100,
    "cpu_train_tokens_per_s": 200,
    "cpu_job_overhead_s": 10,
    "ner_words_per_s_per_process": 1000,
    "response_fill": 0.75,
}


@pytest.fixture(scope="module")
def test_run(tmp_path_factory) -> tuple[str, list[dag.Job]]:
    text = dag.dry_run(TEST_CONFIG, TEST_PROFILE, "all", tmp_path_factory.mktemp("plan"))
    return text, dag.parse_jobs(text)


@pytest.fixture(scope="module")
def paper_jobs(tmp_path_factory) -> list[dag.Job]:
    return dag.parse_jobs(dag.dry_run(PAPER_CONFIG, ROOT / "slurm", "all", tmp_path_factory.mktemp("paper")))


@pytest.fixture(scope="module")
def round_numbers(tmp_path_factory) -> throughputs.Throughputs:
    path = tmp_path_factory.mktemp("rates") / "rates.yaml"
    sections = {"throughputs": {}, "workload": {}}
    for name, value in ROUND_RATES.items():
        sections["workload" if name == "response_fill" else "throughputs"][name] = {"value": value, "source": "test"}
    path.write_text(yaml.safe_dump(sections))
    return throughputs.load(path)


def _job(jobs: list[dag.Job], rule: str, **wildcards: str) -> dag.Job:
    return next(j for j in jobs if j.rule == rule and all(j.wildcards.get(k) == v for k, v in wildcards.items()))


def test_jobs_and_resources_are_the_dry_runs(test_run):
    text, jobs = test_run
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", text.split("Job stats:")[1].split("\n\n")[0], re.MULTILINE))
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.rule] = counts.get(job.rule, 0) + 1
    assert int(stats.pop("total")) == 41 and stats.pop("all") == "1"
    assert counts == {rule: int(count) for rule, count in stats.items()}
    embed = _job(jobs, "embed")
    assert (embed.gpus, embed.resources["slurm_partition"], embed.runtime_hours) == (1, "gpu", 20 / 60)
    assert _job(jobs, "memtrain_train", variant="full").gpus == 0


def test_memtrain_work_and_hours_by_hand(test_run, round_numbers):
    _, jobs = test_run
    config = memtrain_config.load(TEST_CONFIG)
    # budgets 320/400/48/48, 3 chunks; documents of (600 + 1100) / 2 = 850 tokens: 3 chunks + the answer turn,
    # replies 0.75 x 48 = 36 tokens. Trajectory: 4 x (320 + 36) + 850 = 2274 prompt, 4 x 36 = 144 generated;
    # recall: 320 + 36 + 400 = 756 prompt, 36 generated, x G2 = 2. G1 = 2, 1 step of 1 document, no refill.
    full = work.job_work(_job(jobs, "memtrain_train", variant="full"), config, round_numbers)
    per_document = (2274 + 2 * 756) * 2, (144 + 2 * 36) * 2
    kept = sum(per_document)
    assert (full.prefill, full.decode, full.train) == (per_document[0] + kept, per_document[1], kept)
    e2e = work.job_work(_job(jobs, "memtrain_train", variant="e2e"), config, round_numbers)
    assert (e2e.prefill, e2e.decode, e2e.train) == (4548 + 4836, 288, 4836)
    # SmolLM2-135M is the CPU reference size: the measured-style rates apply unscaled, one job per CPU device.
    seconds = estimate.seconds(full, _job(jobs, "memtrain_train", variant="full"), round_numbers)
    assert seconds == pytest.approx(10 + full.prefill / 1000 + full.decode / 100 + full.train / 200)
    # fp32 weights 0.135e9 x 4 bytes; each of the keep_checkpoints = 2 the plan budgets (a bound: this one-step run
    # writes one) adds AdamW's two moments; one export.
    assert full.disk_bytes == pytest.approx(0.135e9 * 4 * (2 * 3 + 1))


def test_data_work_by_hand(test_run, round_numbers):
    _, jobs = test_run
    config = memtrain_config.load(TEST_CONFIG)
    shard = work.job_work(_job(jobs, "ner"), config, round_numbers)
    assert (shard.ner_words, shard.ner_processes) == (240 * 77 / 2, 1)  # 240 summaries of 77 words, 2 shards
    assert estimate.seconds(shard, _job(jobs, "ner"), round_numbers) == pytest.approx(10 + 240 * 77 / 2 / 1000)
    embedded = work.job_work(_job(jobs, "embed"), config, round_numbers)
    assert embedded.embed_passages == pytest.approx(240 * 77 / ((60 + 160) / 2) / 2)
    assert embedded.disk_bytes == pytest.approx(embedded.embed_passages * 384 * 4)


def test_paper_jobs_are_sized_by_backbone(paper_jobs):
    config, numbers = memtrain_config.load(PAPER_CONFIG), throughputs.load()
    assert {job.rule for job in paper_jobs} <= set(work.FORMULAS)
    hours = {}
    for backbone in ("qwen3-4b", "qwen2.5-7b"):
        job = _job(paper_jobs, "memtrain_train", backbone=backbone, variant="full")
        assert (job.gpus, job.cpus) == (8, 8)
        hours[backbone] = (
            estimate.seconds(work.job_work(job, config, numbers), job, numbers) - numbers["gpu_job_overhead_s"]
        )
    assert hours["qwen2.5-7b"] / hours["qwen3-4b"] == pytest.approx(7.6 / 4.0)
    # base models read whole contexts, cut to the window: Qwen2.5-7B's 32k against Qwen3-4B's 262k
    base = {
        b: work.job_work(
            _job(paper_jobs, "eval_long_context", backbone=b, trained="none", init="base"), config, numbers
        )
        for b in ("qwen3-4b", "qwen2.5-7b")
    }
    assert base["qwen2.5-7b"].prefill < base["qwen3-4b"].prefill


def test_schedules_of_a_small_dag():
    hours = {1: 2.0, 2: 3.0, 3: 1.0, 4: 4.0}
    needs = {1: set(), 2: {1}, 3: {1}, 4: set()}
    assert dag.critical_path(hours, needs) == 5.0
    assert dag.makespan(hours, needs, 1) == 10.0
    assert dag.makespan(hours, needs, 2) == 5.0  # 1 then 2 on one slot, 4 then 3 on the other
    assert dag.depths(needs) == {1: 0, 2: 1, 3: 1, 4: 0}


def _benchmark(path: Path, *seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{s}\t0:00:{int(s):02d}\t100\t200\t90\t95\t1.0\t2.0\t50.0\t{s}\n" for s in seconds)
    path.write_text("\t".join(estimate.BENCHMARK_COLUMNS) + "\n" + rows)


def test_calibration_from_benchmarks(test_run, tmp_path, capsys):
    _, jobs = test_run
    config, numbers = memtrain_config.load(TEST_CONFIG), throughputs.load()
    job = _job(jobs, "memtrain_train", variant="full")
    predicted = estimate.seconds(work.job_work(job, config, numbers), job, numbers)
    results = tmp_path / "finished"
    _benchmark(results / "benchmarks" / "memtrain" / "smollm2-tiny" / "full.tsv", 2 * predicted - 1, 2 * predicted + 1)
    works = {j.jobid: work.job_work(j, config, numbers) for j in jobs}
    calibration = estimate.calibrate(jobs, works, results, "results", numbers)
    assert list(calibration) == ["memtrain_train"] and calibration["memtrain_train"].factor == pytest.approx(2.0)
    assert calibration["memtrain_train"].rate == pytest.approx(works[job.jobid].tokens / (2 * predicted))

    assert (
        stages.main(
            [
                "plan",
                "--config",
                str(TEST_CONFIG),
                "--profile",
                str(TEST_PROFILE),
                "--format",
                "json",
                "--calibrate",
                str(results),
                "--calibrate-config",
                str(TEST_CONFIG),
            ]
        )
        == 0
    )
    plan = json.loads(capsys.readouterr().out)
    planned = next(j for j in plan["jobs"] if j["rule"] == "memtrain_train" and j["wildcards"]["variant"] == "full")
    assert planned["hours"] == pytest.approx(2 * predicted / 3600)
    assert plan["totals"]["jobs"] == 40 and plan["calibration"]["memtrain_train"]["jobs"] == 1


@pytest.mark.parametrize(
    "entry, field",
    [
        (
            {"throughputs": {"gpu_decode_tokens_per_s": {"value": -1, "source": "x"}}},
            "throughputs.gpu_decode_tokens_per_s.value",
        ),
        ({"throughputs": {"gpu_decode_tokens_per_s": {"value": 10}}}, "throughputs.gpu_decode_tokens_per_s"),
        (
            {"throughputs": {"gpu_decode_tokens_per_sec": {"value": 10, "source": "x"}}},
            "throughputs.gpu_decode_tokens_per_sec",
        ),
        ({"models": {"Mine-1B": {"source": "x"}}}, "models.Mine-1B.params_b"),
    ],
)
def test_bad_throughput_files_name_the_field(tmp_path, entry, field):
    path = tmp_path / "rates.yaml"
    path.write_text(yaml.safe_dump(entry))
    with pytest.raises(InputError) as raised:
        throughputs.load(path)
    assert raised.value.field == field and str(path) in str(raised.value)


def test_bad_inputs_are_reported(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert stages.main(["plan", "--config", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert stages.main(["plan", "--config", str(TEST_CONFIG), "--profile", str(tmp_path)]) == 2
    assert "not a snakemake profile" in capsys.readouterr().err
    broken = tmp_path / "broken.tsv"
    broken.write_text("seconds\n1\n")
    with pytest.raises(InputError, match="benchmark TSV") as raised:
        estimate.benchmark_seconds(broken)
    assert raised.value.field == "s"
