import json
import re
import string
from collections import Counter

import pytest
import yaml

from memtrain.data import offline_qa
from memtrain.errors import InputError

HOTPOT_KEYS = ["_id", "question", "answer", "type", "level", "supporting_facts", "context"]


def normalize(text: str) -> str:
    """SQuAD/HotpotQA answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def contains(text: str, answer: str) -> bool:
    """Whether the normalised answer occurs in the normalised text as whole words."""
    return f" {normalize(answer)} " in f" {normalize(text)} "


def bare_title(title: str) -> str:
    return re.sub(r"\s*\([^)]*\)$", "", title)


@pytest.fixture(scope="module")
def questions():
    return offline_qa.load_questions()


@pytest.fixture(scope="module")
def summaries():
    return offline_qa.load_summaries()


@pytest.fixture(scope="module")
def built():
    return offline_qa.build(seed=0)


def test_question_file_validates_with_both_types_in_both_splits(questions):
    assert len(questions) >= 72
    assert len({q["id"] for q in questions}) == len(questions)
    counts = Counter((q["type"], q["split"]) for q in questions)
    assert set(counts) == {(t, s) for t in offline_qa.TYPES for s in offline_qa.SPLITS}
    by_type = Counter(q["type"] for q in questions)
    assert by_type["bridge"] == by_type["comparison"]
    assert 0.25 <= sum(q["split"] == "dev" for q in questions) / len(questions) <= 0.4
    assert len({q["question"] for q in questions}) == len(questions)


def test_bridge_answers_are_stated_in_the_supporting_summaries(questions, summaries):
    for q in (q for q in questions if q["type"] == "bridge"):
        first, second = (summaries[s["title"]].text for s in q["supporting"])
        answers = [q["answer"], *q["aliases"]]
        assert any(contains(first + " " + second, a) for a in answers), q["id"]


def test_bridge_questions_need_both_summaries(questions, summaries):
    """The first summary names the bridge entity but not the answer; the second does not name the first."""
    for q in (q for q in questions if q["type"] == "bridge"):
        first, second = (s["title"] for s in q["supporting"])
        assert not any(contains(summaries[first].text, a) for a in [q["answer"], *q["aliases"]]), q["id"]
        assert bare_title(first) not in summaries[second].text, q["id"]


def test_comparison_answers_are_yes_no_or_one_of_the_compared_entities(questions, summaries):
    for q in (q for q in questions if q["type"] == "comparison"):
        titles = [s["title"] for s in q["supporting"]]
        if q["answer"] in ("yes", "no"):
            continue
        assert normalize(q["answer"]) in {normalize(bare_title(t)) for t in titles} or any(
            contains(summaries[t].text, q["answer"]) for t in titles
        ), q["id"]
        assert all(
            normalize(bare_title(t)) in normalize(q["question"])
            or normalize(bare_title(t)).split()[0] in normalize(q["question"])
            for t in titles
        ), q["id"]


def test_yes_and_no_are_both_answers(questions):
    answers = Counter(q["answer"] for q in questions if q["type"] == "comparison")
    assert answers["yes"] >= 5 and answers["no"] >= 5


def test_sentences_concatenate_back_and_keep_abbreviations_whole(summaries):
    for summary in summaries.values():
        assert "".join(offline_qa.split_sentences(summary.text)) == summary.text
    text = "Harry Potter is by J. K. Rowling. The Symphony No. 9, Op. 125, was first played in 1824. It is famous!"
    assert offline_qa.split_sentences(text) == [
        "Harry Potter is by J. K. Rowling.",
        " The Symphony No. 9, Op. 125, was first played in 1824.",
        " It is famous!",
    ]
    assert offline_qa.split_sentences("") == [""]


def test_records_are_hotpotqa_distractor_records(built, questions, summaries):
    by_id = {q["id"]: q for q in questions}
    assert [len(built[split]) for split in offline_qa.SPLITS] == [
        sum(q["split"] == split for q in questions) for split in offline_qa.SPLITS
    ]
    for split, records in built.items():
        for record in records:
            question = by_id[record["_id"]]
            assert list(record) == HOTPOT_KEYS and record["level"] == "easy"
            assert question["split"] == split and record["type"] == question["type"]
            assert record["answer"] == question["answer"] and record["question"] == question["question"]
            titles = [title for title, _ in record["context"]]
            assert len(titles) == 2 + 8 and len(set(titles)) == len(titles)
            context = {title: sentences for title, sentences in record["context"]}
            for title, sentences in context.items():
                assert all(isinstance(s, str) for s in sentences)
                assert "".join(sentences) == summaries[title].text
            for support in question["supporting"]:
                assert support["title"] in context
                indices = [i for title, i in record["supporting_facts"] if title == support["title"]]
                assert indices and indices == sorted(set(indices))
                pointed = "".join(context[support["title"]][i] for i in indices)
                assert offline_qa.evidence_pattern(support["evidence"]).search(pointed), record["_id"]
            assert {title for title, _ in record["supporting_facts"]} == {s["title"] for s in question["supporting"]}


def test_supporting_paragraphs_are_not_always_first(built):
    positions = Counter(
        min(i for i, (title, _) in enumerate(r["context"]) if title in {t for t, _ in r["supporting_facts"]})
        for records in built.values()
        for r in records
    )
    assert len(positions) > 3


def test_build_is_deterministic_and_seed_sensitive(built):
    assert offline_qa.build(seed=0) == built
    other = offline_qa.build(seed=1)
    assert other != built
    assert [r["_id"] for r in other["dev"]] == [r["_id"] for r in built["dev"]]


def test_distractors_resemble_the_question(built, summaries):
    """Distractors are drawn from summaries sharing words or a topic with the question's articles, not at random."""
    shared = 0
    total = 0
    for record in built["train"] + built["dev"]:
        support = {t for t, _ in record["supporting_facts"]}
        topics = {summaries[t].topic for t in support}
        for title, _ in record["context"]:
            if title not in support:
                total += 1
                shared += summaries[title].topic in topics
    assert shared / total > 0.5


@pytest.mark.parametrize("count", [0, 3])
def test_num_distractors_sets_the_context_size(count):
    records = offline_qa.build(seed=0, num_distractors=count)
    assert {len(r["context"]) for split in records.values() for r in split} == {2 + count}


def test_negative_num_distractors_is_an_error():
    with pytest.raises(InputError, match="num_distractors"):
        offline_qa.build(seed=0, num_distractors=-1)


def test_flashrag_records_keep_aliases(built, questions):
    by_id = {q["id"]: q for q in questions}
    lines = offline_qa.flashrag_records(built["dev"], "offline")
    assert [line["id"] for line in lines] == [r["_id"] for r in built["dev"]]
    for line in lines:
        question = by_id[line["id"]]
        assert set(line) == {"id", "question", "golden_answers", "metadata"}
        assert line["golden_answers"][0] == question["answer"]
        assert line["golden_answers"][1:] == [a for a in question["aliases"] if a != question["answer"]]
        assert line["metadata"]["type"] == question["type"]
        assert line["metadata"]["supporting_titles"] == [s["title"] for s in question["supporting"]]
    explicit = offline_qa.flashrag_records(built["dev"][:1], "offline", aliases={})
    assert explicit[0]["golden_answers"] == [built["dev"][0]["answer"]]


def test_write_is_atomic_and_reproducible(tmp_path):
    counts = offline_qa.write(tmp_path / "a", seed=3, num_distractors=2)
    offline_qa.write(tmp_path / "b", seed=3, num_distractors=2)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["flashrag_dev.jsonl", "flashrag_train.jsonl", "hotpot_dev.json", "hotpot_train.json"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for split in offline_qa.SPLITS:
        records = json.loads((tmp_path / "a" / f"hotpot_{split}.json").read_text(encoding="utf-8"))
        lines = (tmp_path / "a" / f"flashrag_{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(records) == len(lines) == counts[split] > 0
        assert [json.loads(line)["id"] for line in lines] == [r["_id"] for r in records]
        assert all(len(r["context"]) == 4 for r in records)


GOOD = {
    "id": "oqa-x01",
    "question": "In which city was the author of the Critique of Pure Reason born?",
    "answer": "Königsberg",
    "type": "bridge",
    "split": "train",
    "supporting": [
        {"title": "Critique of Pure Reason", "evidence": "German philosopher Immanuel Kant"},
        {"title": "Immanuel Kant", "evidence": "Born in Königsberg"},
    ],
}


def _with(**changes):
    entry = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if value is None:
            entry.pop(key)
        else:
            entry[key] = value
    return entry


def _support(index, **changes):
    supporting = json.loads(json.dumps(GOOD["supporting"]))
    supporting[index].update(changes)
    return supporting


@pytest.mark.parametrize(
    "entries, field",
    [
        ([_with(answer=None)], "answer"),
        ([_with(question="")], "question"),
        ([_with(type="multi-hop")], "type"),
        ([_with(split="test")], "split"),
        ([_with(alias=["x"])], "alias"),
        ([_with(aliases="Konigsberg")], "aliases"),
        ([_with(supporting=GOOD["supporting"][:1])], "supporting"),
        ([_with(supporting=_support(0, title="No Such Article"))], "supporting[0].title"),
        ([_with(supporting=_support(1, evidence="Born in Berlin"))], "supporting[1].evidence"),
        ([_with(supporting=[GOOD["supporting"][0], {"title": "Immanuel Kant"}])], "supporting[1].evidence"),
        ([GOOD, GOOD], "id"),
    ],
)
def test_bad_entries_name_the_file_record_and_field(tmp_path, entries, field):
    path = tmp_path / "questions.yaml"
    path.write_text(yaml.safe_dump(entries, allow_unicode=True), encoding="utf-8")
    with pytest.raises(InputError) as error:
        offline_qa.load_questions(path)
    message = str(error.value)
    assert f"record {GOOD['id']}" in message and f"field {field}" in message and str(path) in message
    assert error.value.record == GOOD["id"] and error.value.field == field


def test_entry_without_id_is_named_by_position(tmp_path):
    path = tmp_path / "questions.yaml"
    path.write_text(yaml.safe_dump([GOOD, _with(id=None)], allow_unicode=True), encoding="utf-8")
    with pytest.raises(InputError, match=r"record entry 1, field id"):
        offline_qa.load_questions(path)


@pytest.mark.parametrize("content", ["{not: a list}", "- [unclosed", ""])
def test_malformed_question_file_names_the_file(tmp_path, content):
    path = tmp_path / "questions.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(str(path))):
        offline_qa.load_questions(path)


def test_a_good_custom_file_builds(tmp_path):
    path = tmp_path / "questions.yaml"
    path.write_text(yaml.safe_dump([GOOD], allow_unicode=True), encoding="utf-8")
    records = offline_qa.build(seed=0, num_distractors=1, questions_path=path)
    assert records["dev"] == [] and [r["_id"] for r in records["train"]] == [GOOD["id"]]
    assert ["Immanuel Kant", 1] in records["train"][0]["supporting_facts"]
