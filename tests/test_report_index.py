"""results/report/index.md: every output linked, the tables inline, and where the numbers came from."""

from __future__ import annotations

from memtrain.report import index


def test_index_links_everything_and_states_provenance_and_stand_ins(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "table1_long_context_qa.md").write_text(
        "| backbone | variant | 7k |\n|---|---|---|\n| s | base | 1.00 |\n"
    )
    provenance = {
        "git_commit": "abc123",
        "git_dirty": "true",
        "experiment": "memtrain",
        "run_id": "r1",
        "config_hash": "h9",
        "written": "2026-11-21 12:00 UTC",
    }
    text = index.render(
        report / "index.md",
        [report / "table1_long_context_qa.md"],
        [report / "fig3_ablations_s.png", report / "training_curves.png"],
        [report / "case_study_s.md"],
        provenance,
        {"seed": 1, "qa": {"long_context": {"lengths": [3, 6]}}},
        ["backbone `s` is compared with the paper's Qwen3-4B-Instruct-2507"],
    )
    assert "`abc123` (uncommitted changes)" in text and "run `r1`" in text and "`h9`" in text
    assert "## Table 1: long-context HotpotQA" in text and "| s | base | 1.00 |" in text
    assert (
        "[.csv](table1_long_context_qa.csv)" in text
        and "[_provenance.csv](table1_long_context_qa_provenance.csv)" in text
    )
    assert "![Figure 3: ablations of the memory-training objective (s)](fig3_ablations_s.png)" in text
    assert "![Training curves: reward against step for every run](training_curves.png)" in text
    assert "[case_study_s](case_study_s.md)" in text
    assert "**Stand-ins.**" in text and "- backbone `s` is compared with the paper's Qwen3-4B-Instruct-2507" in text
    assert "```yaml\nseed: 1\nqa:\n  long_context:\n    lengths:\n    - 3\n    - 6\n```" in text


def test_index_without_stand_ins_says_nothing_about_them(tmp_path):
    text = index.render(
        tmp_path / "index.md",
        [],
        [],
        [],
        {"git_commit": "c", "experiment": "e", "run_id": "r", "config_hash": "h", "written": "w"},
        {},
        [],
    )
    assert "Stand-ins" not in text and "uncommitted" not in text
