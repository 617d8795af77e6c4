"""Downstream QA readers on small files in each published format, and the long-context / multi-objective builders."""

import json
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memtrain.data import qa, qa_builders
from memtrain.data.qa import HotpotQuestion, LongContextItem, Paragraph, QAItem
from memtrain.data.qa_builders import MultiObjectiveQuestion
from memtrain.errors import InputError

HOTPOT_RECORDS = [
    {
        "_id": "5a8b57f25542995d1e6f1371",
        "answer": "yes",
        "question": "Were Scott Derrickson and Ed Wood of the same nationality?",
        "supporting_facts": [["Scott Derrickson", 0], ["Ed Wood", 0]],
        "type": "comparison",
        "level": "hard",
        "context": [
            ["Ed Wood (film)", ["Ed Wood is a 1994 American biographical film.", " It stars Johnny Depp."]],
            ["Scott Derrickson", ["Scott Derrickson (born July 16, 1966) is an American director."]],
            ["Ed Wood", ["Edward Davis Wood Jr. was an American filmmaker."]],
        ],
    },
    {
        "_id": "5a8c7595554299585d9e36b6",
        "answer": "Chief of Protocol",
        "question": "What government position was held by the woman?",
        "supporting_facts": [["Kiss and Tell (1945 film)", 0], ["Shirley Temple", 0], ["Shirley Temple", 1]],
        "type": "bridge",
        "level": "medium",
        "context": [
            ["Kiss and Tell (1945 film)", ["Kiss and Tell is a 1945 comedy film."]],
            ["Shirley Temple", ["Shirley Temple Black was an actress.", " She was Chief of Protocol."]],
        ],
    },
]


def write_json(path, value):
    path.write_text(json.dumps(value))
    return path


def write_jsonl(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def raises_naming(call, *parts):
    with pytest.raises(InputError) as error:
        call()
    for part in parts:
        assert str(part) in str(error.value), (part, str(error.value))
    return error.value


# --- HotpotQA ---------------------------------------------------------------------------------


def test_hotpotqa_json_reads_questions_paragraphs_and_gold_titles(tmp_path):
    questions = qa.read_hotpotqa(write_json(tmp_path / "hotpot_dev_distractor_v1.json", HOTPOT_RECORDS))
    first, second = questions
    assert first.id == "5a8b57f25542995d1e6f1371" and first.answer == "yes" and first.type == "comparison"
    assert first.supporting_facts == (("Scott Derrickson", 0), ("Ed Wood", 0))
    assert first.context[0] == Paragraph(
        "Ed Wood (film)", ("Ed Wood is a 1994 American biographical film.", " It stars Johnny Depp.")
    )
    assert first.context[0].text == "Ed Wood is a 1994 American biographical film. It stars Johnny Depp."
    assert first.gold_titles == ("Scott Derrickson", "Ed Wood")
    assert second.gold_titles == ("Kiss and Tell (1945 film)", "Shirley Temple")


def hf_table(records):
    """The records in the hotpotqa/hotpot_qa parquet schema (Sequence features as structs of lists)."""
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("question", pa.string()),
            ("answer", pa.string()),
            ("type", pa.string()),
            ("level", pa.string()),
            ("supporting_facts", pa.struct([("title", pa.list_(pa.string())), ("sent_id", pa.list_(pa.int32()))])),
            ("context", pa.struct([("title", pa.list_(pa.string())), ("sentences", pa.list_(pa.list_(pa.string())))])),
        ]
    )
    rows = [
        {
            "id": r["_id"],
            "question": r["question"],
            "answer": r.get("answer"),
            "type": r.get("type"),
            "level": r.get("level"),
            "supporting_facts": {
                "title": [t for t, _ in r.get("supporting_facts", [])],
                "sent_id": [s for _, s in r.get("supporting_facts", [])],
            },
            "context": {"title": [t for t, _ in r["context"]], "sentences": [s for _, s in r["context"]]},
        }
        for r in records
    ]
    return pa.Table.from_pylist(rows, schema=schema)


def test_hotpotqa_parquet_in_the_hf_schema_matches_the_json_reading(tmp_path):
    pq.write_table(hf_table(HOTPOT_RECORDS[:1]), tmp_path / "validation-00000-of-00001.parquet")
    pq.write_table(hf_table(HOTPOT_RECORDS[1:]), tmp_path / "validation-00001-of-00001.parquet")
    from_parquet = qa.read_hotpotqa(sorted(tmp_path.glob("*.parquet")))
    from_json = qa.read_hotpotqa(write_json(tmp_path / "dev.json", HOTPOT_RECORDS))
    assert from_parquet == from_json


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda r: r.pop("answer"), ["index 1 (id 5a8c7595554299585d9e36b6)", "field answer", "test-set"]),
        (lambda r: r.update(supporting_facts=[["Shirley Temple", "0"]]), ["index 1", "field supporting_facts"]),
        (lambda r: r.update(context=[["Shirley Temple", "not a list"]]), ["index 1", "field context"]),
        (lambda r: r.update(context=[]), ["index 1", "field context"]),
        (lambda r: r.pop("_id"), ["record index 1", "field _id"]),
        (lambda r: r.update(question=""), ["index 1", "field question"]),
        (lambda r: r.pop("level"), ["index 1", "field level"]),
    ],
)
def test_malformed_hotpotqa_json_names_file_record_and_field(tmp_path, change, expected):
    records = json.loads(json.dumps(HOTPOT_RECORDS))
    change(records[1])
    path = write_json(tmp_path / "hotpot.json", records)
    raises_naming(lambda: qa.read_hotpotqa(path), path, *expected)


def test_hotpotqa_test_split_and_bad_files_are_rejected(tmp_path):
    test_record = {key: value for key, value in HOTPOT_RECORDS[0].items() if key in ("_id", "question", "context")}
    pq.write_table(hf_table([test_record]), tmp_path / "test.parquet")
    raises_naming(lambda: qa.read_hotpotqa(tmp_path / "test.parquet"), "row 0", "field answer", "unlabelled")
    raises_naming(lambda: qa.read_hotpotqa(tmp_path / "x.csv"), "x.csv", ".json or .parquet")
    (tmp_path / "broken.json").write_text("[{")
    raises_naming(lambda: qa.read_hotpotqa(tmp_path / "broken.json"), "broken.json", "not valid JSON")
    pq.write_table(hf_table(HOTPOT_RECORDS).drop_columns(["level"]), tmp_path / "nolevel.parquet")
    raises_naming(lambda: qa.read_hotpotqa(tmp_path / "nolevel.parquet"), "nolevel.parquet", "missing column(s) level")


# --- MemAgent ---------------------------------------------------------------------------------


def memagent_context(*documents):
    return "\n\n".join(f"Document {i}:\n{d}" for i, d in enumerate(documents, start=1))


EVAL_RECORDS = [
    {
        "context": memagent_context("Ed Wood\nEdward Davis Wood Jr. was a filmmaker.", "Scott Derrickson\nA director."),
        "input": "Were Scott Derrickson and Ed Wood of the same nationality?",
        "answers": ["yes"],
        "num_docs": 2,
        "index": 0,
    },
    {
        "context": memagent_context("Shirley Temple\nShe was Chief of Protocol.", "Kiss and Tell\nA film."),
        "input": "What government position was held by the woman?",
        "answers": ["Chief of Protocol"],
        "num_docs": 2,
        "index": 1,
    },
]


def test_memagent_eval_json(tmp_path):
    items = qa.read_memagent_eval(write_json(tmp_path / "eval_2.json", EVAL_RECORDS))
    assert items[1] == LongContextItem(
        id="1",
        question="What government position was held by the woman?",
        answers=("Chief of Protocol",),
        context=EVAL_RECORDS[1]["context"],
        num_docs=2,
        gold_titles=(),
    )


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda r: r.update(answers=[]), ["index 1 (id 1)", "field answers"]),
        (lambda r: r.update(answers="Chief of Protocol"), ["index 1 (id 1)", "field answers"]),
        (lambda r: r.pop("input"), ["index 1 (id 1)", "field input"]),
        (lambda r: r.update(num_docs="2"), ["index 1 (id 1)", "field num_docs"]),
        (lambda r: r.pop("index"), ["record index 1", "field index"]),
        (lambda r: r.update(context=[5, 17]), ["index 1 (id 1)", "field context", "document numbers"]),
    ],
)
def test_malformed_memagent_eval_names_file_record_and_field(tmp_path, change, expected):
    records = json.loads(json.dumps(EVAL_RECORDS))
    change(records[1])
    path = write_json(tmp_path / "eval_2.json", records)
    raises_naming(lambda: qa.read_memagent_eval(path), path, *expected)


def memagent_train_frame(with_num_docs=True):
    """Rows as MemAgent's processing.py builds them, after filter2.py's LLM-filtering columns and row selection."""
    rows = []
    for record in EVAL_RECORDS:
        extra = {"index": record["index"] + 10, "question": record["input"]}
        if with_num_docs:
            extra["num_docs"] = record["num_docs"]
        rows.append(
            {
                "data_source": "hotpotqa",
                "prompt": [{"role": "user", "content": record["input"]}],
                "context": record["context"],
                "ability": "memory",
                "reward_model": {"style": "rule", "ground_truth": record["answers"]},
                "extra_info": extra,
                "score_boxed_instruct": [0.0, 0.0],
            }
        )
    return pd.DataFrame(rows, index=[3, 7])


def test_memagent_train_parquet_written_by_pandas(tmp_path):
    memagent_train_frame().to_parquet(tmp_path / "hotpotqa_train.parquet")
    memagent_train_frame(with_num_docs=False).to_parquet(tmp_path / "counted.parquet")
    items = qa.read_memagent_train(tmp_path / "hotpotqa_train.parquet")
    assert [item.id for item in items] == ["10", "11"]
    assert items[0] == LongContextItem(
        id="10",
        question=EVAL_RECORDS[0]["input"],
        answers=("yes",),
        context=EVAL_RECORDS[0]["context"],
        num_docs=2,
        gold_titles=(),
    )
    assert qa.read_memagent_train(tmp_path / "counted.parquet") == items


@pytest.mark.parametrize(
    "column, value, expected",
    [
        ("reward_model", {"style": "rule", "ground_truth": []}, "field reward_model.ground_truth"),
        ("prompt", [], "field prompt"),
        ("extra_info", {"question": "q", "num_docs": 2}, "field extra_info.index"),
        ("context", "", "field context"),
    ],
)
def test_malformed_memagent_train_names_file_row_and_field(tmp_path, column, value, expected):
    frame = memagent_train_frame()
    frame.at[7, column] = value
    path = tmp_path / "train.parquet"
    frame.to_parquet(path)
    raises_naming(lambda: qa.read_memagent_train(path), path, "row 1", expected)
    raises_naming(lambda: qa.read_memagent_train(tmp_path / "absent.parquet"), "absent.parquet", "cannot read")


# --- FlashRAG and corpora ---------------------------------------------------------------------


def test_flashrag_jsonl(tmp_path):
    path = write_jsonl(
        tmp_path / "test.jsonl",
        [
            {
                "id": "test_0",
                "question": "who got the first nobel prize in physics",
                "golden_answers": ["Wilhelm Conrad Röntgen"],
            },
            "",
            {
                "id": 1,
                "question": "which mode is used for short wave broadcast service",
                "golden_answers": ["Olivia", "MFSK"],
                "metadata": {"source": "nq"},
            },
        ],
    )
    assert qa.read_flashrag(path, "nq") == [
        QAItem("test_0", "who got the first nobel prize in physics", ("Wilhelm Conrad Röntgen",), "nq"),
        QAItem("1", "which mode is used for short wave broadcast service", ("Olivia", "MFSK"), "nq"),
    ]


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"id": "a", "question": "q?", "golden_answers": []}', ["line 2 (id a)", "field golden_answers"]),
        ('{"id": "a", "question": "q?", "golden_answers": [3]}', ["line 2 (id a)", "field golden_answers"]),
        ('{"id": "a", "golden_answers": ["x"]}', ["line 2 (id a)", "field question"]),
        ('{"question": "q?", "golden_answers": ["x"]}', ["record line 2", "field id"]),
        ('{"id": "a", "question": "q?"', ["record line 2", "not valid JSON"]),
        ('["a", "b"]', ["record line 2", "expected an object"]),
    ],
)
def test_malformed_flashrag_names_file_line_and_field(tmp_path, line, expected):
    path = write_jsonl(tmp_path / "dev.jsonl", ['{"id": "ok", "question": "q?", "golden_answers": ["x"]}', line])
    raises_naming(lambda: qa.read_flashrag(path, "hotpotqa"), path, *expected)


EVAN_MORRIS = "Evan Morris Evan L. Morris (January 26, 1977 – July 9, 2015) was a lobbyist."


def test_wiki18_corpus_splits_the_quoted_title(tmp_path):
    path = write_jsonl(
        tmp_path / "wiki-18.jsonl",
        [
            {"id": "0", "contents": f'"Evan Morris"\n{EVAN_MORRIS}'},
            {"id": 1, "contents": '"Weird "Al" Yankovic"\nAlfred Matthew Yankovic is a musician.\nSecond line.'},
            {"id": "2", "contents": "Plain title\nUnquoted text."},
            {"id": "3", "contents": "No title at all."},
        ],
    )
    assert list(qa.read_corpus(path)) == [
        qa.CorpusPassage("0", "Evan Morris", EVAN_MORRIS),
        qa.CorpusPassage("1", 'Weird "Al" Yankovic', "Alfred Matthew Yankovic is a musician.\nSecond line."),
        qa.CorpusPassage("2", "Plain title", "Unquoted text."),
        qa.CorpusPassage("3", "", "No title at all."),
    ]
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"id": "0", "contents": "\\"A\\"\\nx"}', '{"id": "1", "text": "x"}'])
    raises_naming(lambda: list(qa.read_corpus(bad)), bad, "line 2 (id 1)", "field contents")


def test_gzipped_corpus_is_read_as_published(tmp_path):
    import gzip

    path = tmp_path / "wiki-18.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "0", "contents": f'"Evan Morris"\n{EVAN_MORRIS}'}) + "\n")
    assert list(qa.read_corpus(path)) == [qa.CorpusPassage("0", "Evan Morris", EVAN_MORRIS)]


# --- verl-format (Search-R1, MEM1) and plain question lists ------------------------------------


def search_r1_prompt(question):
    """Search-R1's instruction template (make_prefix, shortened) around the question."""
    return f"Answer the given question. Search with <search> query </search> when needed. Question: {question}\n"


def search_r1_row(data_source, index, question, answers):
    """A row as Search-R1's nq_search.py writes it: FlashRAG's columns kept, verl's added by datasets.map."""
    return {
        "id": f"train_{index}",
        "question": question,
        "golden_answers": answers,
        "data_source": data_source,
        "prompt": [{"role": "user", "content": search_r1_prompt(question)}],
        "ability": "fact-reasoning",
        "reward_model": {"style": "rule", "ground_truth": {"target": answers}},
        "extra_info": {"split": "train", "index": index},
    }


SEARCH_R1_ROWS = [
    search_r1_row("nq", 0, "total number of death row inmates in the us?", ["2,718"]),
    search_r1_row("nq", 1, "big little lies season 2 how many episodes?", ["seven"]),
    search_r1_row(
        "hotpotqa", 0, "Which magazine was started first Arthur's Magazine or First for Women?", ["Arthur's Magazine"]
    ),
]
SEARCH_R1_ITEMS = [
    QAItem("nq-0", "total number of death row inmates in the us?", ("2,718",), "nq_hotpotqa"),
    QAItem("nq-1", "big little lies season 2 how many episodes?", ("seven",), "nq_hotpotqa"),
    QAItem(
        "hotpotqa-0",
        "Which magazine was started first Arthur's Magazine or First for Women?",
        ("Arthur's Magazine",),
        "nq_hotpotqa",
    ),
]


def test_verl_parquet_as_search_r1_publishes_it(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(SEARCH_R1_ROWS), path)
    assert qa.read_verl(path, "nq_hotpotqa") == SEARCH_R1_ITEMS
    assert qa.read_qa_file(path, "nq_hotpotqa") == SEARCH_R1_ITEMS


def test_verl_parquet_without_a_raw_question_falls_back_to_the_user_message(tmp_path):
    path = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist(SEARCH_R1_ROWS).drop_columns(["question"]), path)
    items = qa.read_verl(path, "nq_hotpotqa")
    assert [item.question for item in items] == [search_r1_prompt(item.question) for item in SEARCH_R1_ITEMS]
    assert [item.id for item in items] == ["nq-0", "nq-1", "hotpotqa-0"]


VERL_LINES = [
    {
        "data_source": "nq",
        "prompt": [
            {"role": "system", "content": "You can search."},
            {"role": "user", "content": "Question: who wrote hamlet?"},
        ],
        "reward_model": {"style": "rule", "ground_truth": "William Shakespeare"},
    },
    "",
    {
        "data_source": "nq",
        "prompt": [{"role": "user", "content": "Answer. Question: capital of france?"}],
        "reward_model": {"ground_truth": ["Paris", "City of Paris"]},
        "extra_info": {"index": 7, "question": "capital of france?"},
    },
]


def test_verl_jsonl_takes_string_or_list_answers_and_the_raw_question_where_given(tmp_path):
    path = write_jsonl(tmp_path / "mem1_train.jsonl", VERL_LINES)
    expected = [
        QAItem("nq-0", "Question: who wrote hamlet?", ("William Shakespeare",), "mine"),
        QAItem("nq-7", "capital of france?", ("Paris", "City of Paris"), "mine"),
    ]
    assert qa.read_verl(path, "mine") == expected
    assert qa.read_qa_file(path, "mine") == expected
    assert qa.read_qa_file(path, "mine") == qa.read_qa_file(path, "mine")  # ids derive from the file alone


def good_verl_line():
    return json.loads(json.dumps(SEARCH_R1_ROWS[1]))


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda r: r.pop("data_source"), ["record line 2", "field data_source"]),
        (lambda r: r.pop("reward_model"), ["line 2 (id nq-1)", "field reward_model"]),
        (
            lambda r: r.update(reward_model={"ground_truth": {"target": []}}),
            ["(id nq-1)", "field reward_model.ground_truth.target"],
        ),
        (lambda r: r.update(reward_model={"ground_truth": 42}), ["(id nq-1)", "field reward_model.ground_truth"]),
        (
            lambda r: r.update(reward_model={"ground_truth": {"target": [["a"], ["b"]]}}),
            ["(id nq-1)", "field reward_model.ground_truth.target", "multi-objective"],
        ),
        (lambda r: r.update(extra_info={"index": "1"}), ["record line 2", "field extra_info.index"]),
        (lambda r: r.update(extra_info="train"), ["record line 2", "field extra_info"]),
        (lambda r: r.update(extra_info={"index": 1, "question": ""}), ["(id nq-1)", "field extra_info.question"]),
        (lambda r: r.update(question=5), ["(id nq-1)", "field question"]),
        (lambda r: (r.pop("question"), r.pop("prompt")), ["(id nq-1)", "field prompt"]),
        (
            lambda r: (r.pop("question"), r.update(prompt=[{"role": "system", "content": "x"}])),
            ["(id nq-1)", "field prompt"],
        ),
    ],
)
def test_malformed_verl_jsonl_names_file_line_and_field(tmp_path, change, expected):
    bad = good_verl_line()
    change(bad)
    path = write_jsonl(tmp_path / "train.jsonl", [SEARCH_R1_ROWS[0], bad])
    raises_naming(lambda: qa.read_verl(path, "nq"), path, *expected)


def test_malformed_verl_parquet_names_file_row_and_field(tmp_path):
    bad = good_verl_line()
    bad["reward_model"]["ground_truth"]["target"] = []
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([SEARCH_R1_ROWS[0], bad]), path)
    raises_naming(lambda: qa.read_verl(path, "nq"), path, "row 1 (id nq-1)", "field reward_model.ground_truth.target")
    pq.write_table(pa.Table.from_pylist(SEARCH_R1_ROWS).drop_columns(["reward_model"]), path)
    raises_naming(lambda: qa.read_verl(path, "nq"), path, "missing column(s) reward_model")


PLAIN_RECORDS = [
    {"question": "Who wrote Hamlet?", "answer": "William Shakespeare"},
    {"question": "What is the capital of France?", "answer": ["Paris", "City of Paris"]},
]


def test_plain_question_list_ids_by_position(tmp_path):
    path = write_json(tmp_path / "mine.json", PLAIN_RECORDS)
    expected = [
        QAItem("0", "Who wrote Hamlet?", ("William Shakespeare",), "mine"),
        QAItem("1", "What is the capital of France?", ("Paris", "City of Paris"), "mine"),
    ]
    assert qa.read_qa_list(path, "mine") == expected
    assert qa.read_qa_file(path, "mine") == expected


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda r: r.pop("answer"), ["record index 1", "field answer"]),
        (lambda r: r.update(answer=3), ["record index 1", "field answer"]),
        (lambda r: r.update(answer=["Paris", ""]), ["record index 1", "field answer", "non-empty string"]),
        (lambda r: r.pop("question"), ["record index 1", "field question"]),
    ],
)
def test_malformed_plain_question_list_names_file_record_and_field(tmp_path, change, expected):
    records = json.loads(json.dumps(PLAIN_RECORDS))
    change(records[1])
    path = write_json(tmp_path / "mine.json", records)
    raises_naming(lambda: qa.read_qa_list(path, "mine"), path, *expected)


def test_question_files_are_told_apart_by_name_and_first_record(tmp_path):
    flashrag = write_jsonl(tmp_path / "dev.jsonl", [{"id": "d0", "question": "q?", "golden_answers": ["x"]}])
    assert qa.read_qa_file(flashrag, "nq") == [QAItem("d0", "q?", ("x",), "nq")]
    assert [
        qa.names_qa_file(ref)
        for ref in ("train", "dev", "hf://datasets/o/n/train.parquet", "a/b.jsonl.gz", "mine.json", "x.jsonl")
    ] == [False, False, True, True, True, True]
    raises_naming(
        lambda: qa.read_qa_file(tmp_path / "mine.csv", "mine"), "mine.csv", ".jsonl, .jsonl.gz, .json, .parquet"
    )


def test_json_list_and_json_lines_mix_ups_are_named(tmp_path):
    lines = write_jsonl(tmp_path / "mine.json", PLAIN_RECORDS)
    raises_naming(lambda: qa.read_qa_list(lines, "mine"), lines, "holds JSON lines", "expected a JSON list")
    one = write_json(tmp_path / "one.json", PLAIN_RECORDS[0])
    raises_naming(lambda: qa.read_qa_list(one, "mine"), one, "one JSON object", "expected a JSON list")
    listed = write_json(tmp_path / "dev.jsonl", [{"id": "d0", "question": "q?", "golden_answers": ["x"]}])
    raises_naming(
        lambda: qa.read_qa_file(listed, "nq"), listed, "record line 1", "holds a JSON list", "expected JSON lines"
    )
    raises_naming(lambda: qa.read_flashrag(listed, "nq"), listed, "holds a JSON list")


def test_non_utf8_bytes_name_the_line_or_the_byte_offset(tmp_path):
    flashrag = tmp_path / "dev.jsonl"
    flashrag.write_bytes(
        b'{"id": "a", "question": "q?", "golden_answers": ["x"]}\n'
        b'{"id": "b", "question": "caf\xe9?", "golden_answers": ["x"]}\n'
    )
    raises_naming(lambda: qa.read_flashrag(flashrag, "nq"), flashrag, "record line 2", "not UTF-8")
    hotpot = tmp_path / "hotpot.json"
    hotpot.write_bytes(json.dumps(HOTPOT_RECORDS).encode().replace(b"Ed Wood", b"Ed W\xf6od", 1))
    offset = json.dumps(HOTPOT_RECORDS).index("Ed Wood") + 4
    raises_naming(lambda: qa.read_hotpotqa(hotpot), hotpot, "not UTF-8", f"byte offset {offset} of the file")


def test_one_line_json_errors_give_a_character_offset(tmp_path):
    path = tmp_path / "eval_50.json"
    path.write_text(json.dumps(EVAL_RECORDS)[:-1])  # the closing ']' is missing: the error is at the end
    error = raises_naming(
        lambda: qa.read_memagent_eval(path), path, "not valid JSON", f"at character {len(json.dumps(EVAL_RECORDS)) - 1}"
    )
    assert "line 1" not in str(error)


def test_offline_summaries_json_errors_name_the_file(tmp_path):
    from memtrain.data import offline_qa

    path = tmp_path / "summaries.json"
    path.write_bytes(b'{"Caf\xe9": {"extract": "x"}}')
    raises_naming(lambda: offline_qa.load_summaries(path), path, "not UTF-8", "byte offset 5")
    path.write_text('{"A": {"extract": "x"}}\n{"B": {"extract": "y"}}\n')
    raises_naming(lambda: offline_qa.load_summaries(path), path, "holds JSON lines", "one JSON object")


# --- Stage-boundary tables --------------------------------------------------------------------


def test_parquet_helpers_round_trip(tmp_path):
    long = [
        LongContextItem("a", "q?", ("x", "y"), "Document 1:\nT\ntext", 1, ("T",)),
        LongContextItem("b", "r?", ("z",), "Document 1:\nU\ntext", 1, ()),
    ]
    items = [QAItem("1", "q?", ("x",), "nq"), QAItem("2", "r?", ("y", "z"), "nq")]
    multi = [MultiObjectiveQuestion("1+2", "q?; r?", (("x",), ("y", "z")), "nq")]
    qa.write_long_context(long, tmp_path / "long.parquet")
    qa.write_qa_items(items, tmp_path / "items.parquet")
    qa_builders.write_multi_objective(multi, tmp_path / "multi.parquet")
    assert qa.read_long_context(tmp_path / "long.parquet") == long
    assert qa.read_qa_items(tmp_path / "items.parquet") == items
    assert qa_builders.read_multi_objective(tmp_path / "multi.parquet") == multi
    assert pq.read_schema(tmp_path / "long.parquet").equals(qa.LONG_CONTEXT_SCHEMA)
    raises_naming(lambda: qa.read_long_context(tmp_path / "items.parquet"), "items.parquet", "missing column(s)")


# --- Builders ---------------------------------------------------------------------------------


def synthetic_questions(count=30):
    """HotpotQA-shaped questions: two gold and eight own distractor paragraphs each, some shared between questions."""
    questions = []
    for q in range(count):
        gold = [Paragraph(f"Gold {q}-{g}", (f"Gold fact {q}-{g}.", " More.")) for g in range(2)]
        distractors = [Paragraph(f"Topic {(q + d) % 40}", (f"About topic {(q + d) % 40}.",)) for d in range(8)]
        context = distractors[:4] + gold[:1] + distractors[4:] + gold[1:]
        questions.append(
            HotpotQuestion(
                id=f"q{q}",
                question=f"Question {q}?",
                answer=f"answer {q}",
                type="bridge",
                level="hard",
                supporting_facts=((gold[0].title, 0), (gold[1].title, 1)),
                context=tuple(context),
            )
        )
    return questions


def documents(context):
    """(number, title, text) of each "Document i:\\n{title}\\n{text}" in a built context."""
    return [
        (int(number), title, text)
        for number, title, text in re.findall(r"Document (\d+):\n(.*)\n(.*)(?:\n\n|$)", context)
    ]


@pytest.mark.parametrize("build", [qa_builders.ruler_hotpotqa, qa_builders.memagent_training])
@pytest.mark.parametrize("num_docs", [2, 5, 12, 50])
def test_built_items_hold_the_gold_paragraphs_among_exactly_num_docs_documents(build, num_docs):
    questions = synthetic_questions()
    for question, item in zip(questions, build(questions, num_docs, seed=3)):
        docs = documents(item.context)
        assert [number for number, _, _ in docs] == list(range(1, num_docs + 1)) and item.num_docs == num_docs
        assert item.context == qa_builders.format_documents([Paragraph(t, (x,)) for _, t, x in docs])
        assert len({(title, text) for _, title, text in docs}) == num_docs
        titles = [title for _, title, _ in docs]
        assert set(question.gold_titles) <= set(titles) and item.gold_titles == question.gold_titles
        assert all(titles.count(title) == 1 for title in question.gold_titles)
        gold = {p.title: p.text for p in question.context if p.title in question.gold_titles}
        assert all(text == gold[title] for _, title, text in docs if title in gold)
        assert (item.id, item.question, item.answers) == (question.id, question.question, (question.answer,))


def test_memagent_training_prefers_the_questions_own_distractors():
    questions = synthetic_questions()
    for question, item in zip(questions, qa_builders.memagent_training(questions, 6, seed=0)):
        assert {title for _, title, _ in documents(item.context)} <= {p.title for p in question.context}
    for question, item in zip(questions, qa_builders.memagent_training(questions, 20, seed=0)):
        titles = [title for _, title, _ in documents(item.context)]
        assert {p.title for p in question.context} <= set(titles) and len(set(titles)) == 20


def test_builders_are_deterministic_order_independent_and_seeded():
    questions = synthetic_questions()
    for build in (qa_builders.ruler_hotpotqa, qa_builders.memagent_training):
        first = build(questions, 25, seed=7)
        assert build(questions, 25, seed=7) == first
        assert build(questions[::-1], 25, seed=7) == first[::-1]
        assert build(questions[5:9], 25, seed=7, pool=[p for q in questions for p in q.context]) == first[5:9]
        other = build(questions, 25, seed=8)
        assert sum(a.context != b.context for a, b in zip(first, other)) > len(questions) // 2


def test_pool_is_deduplicated_and_impossible_sizes_are_errors():
    questions = synthetic_questions()
    unique = {(p.title, p.text) for q in questions for p in q.context}
    assert len(qa_builders.ParagraphPool(p for q in questions for p in q.context).paragraphs) == len(unique)
    largest = len(unique)  # the two gold paragraphs plus every other pool paragraph
    assert len(documents(qa_builders.ruler_hotpotqa(questions, largest, seed=0)[0].context)) == largest
    raises_naming(lambda: qa_builders.ruler_hotpotqa(questions, largest + 1, seed=0), "record q0", "field num_docs")
    raises_naming(lambda: qa_builders.ruler_hotpotqa(questions, 1, seed=0), "record q0", "field num_docs", "gold")
    raises_naming(lambda: qa_builders.memagent_training(questions, 0, seed=0), "field num_docs")
    fullwiki = HotpotQuestion(
        id="f",
        question="q?",
        answer="a",
        type="bridge",
        level="hard",
        supporting_facts=(("Elsewhere", 0),),
        context=questions[0].context,
    )
    raises_naming(lambda: qa_builders.ruler_hotpotqa([fullwiki], 3, seed=0), "record f", "field supporting_facts")


# --- Multi-objective composition --------------------------------------------------------------


def flashrag_items(dataset, count):
    return [
        QAItem(f"{dataset}{i}", f"question {i} of {dataset}" + ("?" if i % 2 else ""), (f"a{i}", f"b{i}"), dataset)
        for i in range(count)
    ]


def test_compose_joins_k_questions_of_one_dataset_with_aligned_targets():
    items = flashrag_items("nq", 10) + flashrag_items("hotpotqa", 7)
    composed = qa_builders.compose_multi_objective(items, 3, seed=1)
    assert [c.dataset for c in composed] == ["nq"] * 3 + ["hotpotqa"] * 2
    by_id = {item.id: item for item in items}
    used = []
    for question in composed:
        parts = question.id.split("+")
        assert len(parts) == 3 and len(question.targets) == 3
        assert question.question == "; ".join(qa_builders.as_question(by_id[p].question) for p in parts)
        assert question.question.count("?") == 3
        assert question.targets == tuple(by_id[p].answers for p in parts)
        assert all(by_id[p].dataset == question.dataset for p in parts)
        used += parts
    assert len(used) == len(set(used)) == 9 + 6
    assert qa_builders.compose_multi_objective(items, 3, seed=1) == composed
    assert qa_builders.compose_multi_objective(items, 3, seed=2) != composed


def test_compose_without_seed_keeps_mem1_file_order():
    items = flashrag_items("nq", 5)
    composed = qa_builders.compose_multi_objective(items, 2, seed=None)
    assert [c.id for c in composed] == ["nq0+nq1", "nq2+nq3"]
    assert composed[0].question == "question 0 of nq?; question 1 of nq?"
    assert composed[0].targets == (("a0", "b0"), ("a1", "b1"))
    raises_naming(lambda: qa_builders.compose_multi_objective(items, 0, seed=None), "field k")
