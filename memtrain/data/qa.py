"""Downstream QA data, read in the formats their authors published, and our own tables between stages.

Published files drop in unchanged: HotpotQA (original JSON and the hotpotqa/hotpot_qa parquet),
MemAgent's RULER-HotpotQA eval JSON and training parquet, FlashRAG question jsonl, the verl-format
question files Search-R1 and MEM1 train from (jsonl or parquet), plain [{question, answer}] JSON
lists, and wiki-18 style corpora. Every malformed record is an InputError naming the file, the record
and the field; nothing is dropped silently, because a quietly shrunken eval set changes the numbers a
paper is compared on.
Our own stage outputs (long-context and QA items here, multi-objective questions in qa_builders) are
parquet tables written atomically.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.parquet as pq

from memtrain.errors import InputError
from memtrain.io import read_json, read_jsonl, write_parquet
from memtrain.retriever.protocol import split_contents

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Paragraph:
    title: str
    sentences: tuple[str, ...]

    @property
    def text(self) -> str:
        """Sentences joined with nothing between them: HotpotQA sentences carry their own leading spaces."""
        return "".join(self.sentences)


@dataclass(frozen=True)
class HotpotQuestion:
    id: str
    question: str
    answer: str
    type: str
    level: str
    supporting_facts: tuple[tuple[str, int], ...]
    context: tuple[Paragraph, ...]

    @property
    def gold_titles(self) -> tuple[str, ...]:
        """Titles of the supporting paragraphs, in first-mention order, each once."""
        return tuple(dict.fromkeys(title for title, _ in self.supporting_facts))


@dataclass(frozen=True)
class QAItem:
    """One search-QA question (FlashRAG, verl or plain list); `answers` are its golden answers (any one counts)."""

    id: str
    question: str
    answers: tuple[str, ...]
    dataset: str


@dataclass(frozen=True)
class LongContextItem:
    """A question over numbered documents; gold_titles is empty where the source does not say (MemAgent files)."""

    id: str
    question: str
    answers: tuple[str, ...]
    context: str
    num_docs: int
    gold_titles: tuple[str, ...]


@dataclass(frozen=True)
class CorpusPassage:
    id: str
    title: str
    text: str


class _Record:
    """Typed access to one published record, so that every error names its file, record and field."""

    def __init__(self, value: Any, file: PathLike, where: str) -> None:
        self.file, self.where = file, where
        if not isinstance(value, Mapping):
            self.fail("expected an object (a JSON object or parquet row)")
        self.value = value

    def fail(self, message: str, field: str | None = None) -> NoReturn:
        raise InputError(message, file=self.file, record=self.where, field=field)

    def name(self, field: str) -> str:
        """The record's id (a string or an integer, as published), added to its label for later errors."""
        value = self.value.get(field)
        if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
            self.fail("missing or not a string/integer id", field)
        self.where = f"{self.where} (id {value})"
        return str(value)

    def text(self, field: str) -> str:
        value = self.value.get(field)
        if not isinstance(value, str) or not value.strip():
            self.fail("missing, empty or not a string", field)
        return value

    def integer(self, field: str) -> int:
        value = self.value.get(field)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail("missing or not an integer", field)
        return value

    def strings(self, field: str, nested: Mapping | None = None) -> tuple[str, ...]:
        """A non-empty list of non-empty strings (an answer list: an empty one could never be scored).

        `nested` is the struct holding a dotted field such as reward_model.ground_truth.
        """
        return self.string_list((self.value if nested is None else nested).get(field.rpartition(".")[2]), field)

    def string_list(self, value: Any, field: str) -> tuple[str, ...]:
        """`value`, already taken from the record, checked as strings() checks its field."""
        if not isinstance(value, (list, tuple)) or not value:
            self.fail("missing, empty or not a list", field)
        if not all(isinstance(item, str) and item.strip() for item in value):
            self.fail("every entry must be a non-empty string", field)
        return tuple(value)

    def answers(self, value: Any, field: str) -> tuple[str, ...]:
        """Golden answers published as one string or a list of strings, as a tuple.

        A list of lists is MEM1's already composed multi-objective question (one answer list per part),
        which composing again would garble: it is refused rather than flattened.
        """
        if isinstance(value, (list, tuple)) and any(isinstance(item, (list, tuple)) for item in value):
            self.fail(
                "a list of answer lists, as in MEM1's already composed multi-objective files; "
                "give the single-question file",
                field,
            )
        return self.string_list([value] if isinstance(value, str) else value, field)

    def optional_text(self, value: Any, field: str) -> str | None:
        """A non-empty string, or None where the record does not carry the field (absent or null)."""
        if value is not None and (not isinstance(value, str) or not value.strip()):
            self.fail("empty or not a string", field)
        return value


def _json_list(path: PathLike) -> list:
    expected = "a JSON list of records"
    data = read_json(path, expected)
    if isinstance(data, dict):
        raise InputError(f"holds one JSON object (JSON lines of a single line?), expected {expected}", file=path)
    if not isinstance(data, list):
        raise InputError(f"holds a single JSON value, expected {expected}", file=path)
    return data


def _jsonl_records(path: PathLike) -> Iterator[_Record]:
    """Each line of a JSON-lines file as a record labelled "line N".

    A first line holding a whole list is a JSON list file given for JSON lines, and is named as such
    rather than as a record that is not an object.
    """
    first = True
    for line_number, value in read_jsonl(path):
        if first and isinstance(value, list):
            raise InputError(
                "holds a JSON list, expected JSON lines (one JSON object per line)",
                file=path,
                record=f"line {line_number}",
            )
        first = False
        yield _Record(value, path, f"line {line_number}")


def _parquet_rows(
    path: PathLike, columns: Sequence[str], optional: Sequence[str] = ()
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row) of the named columns, streamed in batches; other columns are never read.

    `optional` columns are read where the file has them; a row of a file without one has no such key.
    """
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"cannot read as parquet: {error}", file=path) from error
    names = parquet.schema_arrow.names
    missing = [name for name in columns if name not in names]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}", file=path)
    row = 0
    for batch in parquet.iter_batches(
        batch_size=1024, columns=[*columns, *(name for name in optional if name in names)]
    ):
        for record in batch.to_pylist():
            yield row, record
            row += 1


# --- HotpotQA ---------------------------------------------------------------------------------

HOTPOT_HF_COLUMNS = ("id", "question", "answer", "type", "level", "supporting_facts", "context")


def _pairs(record: _Record, field: str, first: type, second: type) -> list[tuple[Any, Any]]:
    value = record.value.get(field)
    if not isinstance(value, (list, tuple)) or not value:
        record.fail("missing, empty or not a list", field)
    for pair in value:
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or not isinstance(pair[0], first)
            or isinstance(pair[1], bool)
            or not isinstance(pair[1], second)
        ):
            record.fail(f"every entry must be a [{first.__name__}, {second.__name__}] pair, got {pair!r}", field)
    return [tuple(pair) for pair in value]


def _hotpot_question(record: _Record, id_field: str) -> HotpotQuestion:
    """One HotpotQA question, its supporting facts and context as [title, ...] pairs in either published form.

    Supporting sentence indices are not checked against paragraph lengths: a few published records
    point past the end of a paragraph, which is harmless here since only supporting titles are used.
    """
    question_id = record.name(id_field)
    if not isinstance(record.value.get("answer"), str) or not record.value["answer"].strip():
        record.fail(
            "no answer: HotpotQA test-set records are unlabelled and cannot be scored; use the train or dev files",
            "answer",
        )
    for field in ("type", "level"):
        if not isinstance(record.value.get(field), str):
            record.fail("missing or not a string", field)
    supporting = _pairs(record, "supporting_facts", str, int)
    context = []
    for title, sentences in _pairs(record, "context", str, list):
        if not all(isinstance(sentence, str) for sentence in sentences):
            record.fail(f"paragraph {title!r} has a non-string sentence", "context")
        context.append(Paragraph(title, tuple(sentences)))
    return HotpotQuestion(
        id=question_id,
        question=record.text("question"),
        answer=record.value["answer"],
        type=record.value["type"],
        level=record.value["level"],
        supporting_facts=tuple(supporting),
        context=tuple(context),
    )


def _hotpot_json(path: PathLike) -> Iterator[HotpotQuestion]:
    for index, value in enumerate(_json_list(path)):
        yield _hotpot_question(_Record(value, path, f"index {index}"), "_id")


def _hotpot_parquet(path: PathLike) -> Iterator[HotpotQuestion]:
    """Rows of the HF form, whose supporting_facts and context are structs of parallel lists."""
    for row_number, row in _parquet_rows(path, HOTPOT_HF_COLUMNS):
        record = _Record(row, path, f"row {row_number}")
        for field, keys in (("supporting_facts", ("title", "sent_id")), ("context", ("title", "sentences"))):
            value = row[field]
            if (
                not isinstance(value, Mapping)
                or not all(isinstance(value.get(key), list) for key in keys)
                or len(value[keys[0]]) != len(value[keys[1]])
            ):
                record.fail(f"expected a struct of equally long lists {keys}", field)
            row[field] = list(zip(value[keys[0]], value[keys[1]]))
        yield _hotpot_question(record, "id")


def read_hotpotqa(paths: PathLike | Sequence[PathLike]) -> list[HotpotQuestion]:
    """Questions of one or more HotpotQA files, in file order: `.json` as published by the authors
    (hotpot_train_v1.1.json, hotpot_dev_distractor_v1.json, ...), `.parquet` as in hotpotqa/hotpot_qa.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    questions: list[HotpotQuestion] = []
    for path in paths:
        suffix = Path(path).suffix
        if suffix == ".json":
            questions.extend(_hotpot_json(path))
        elif suffix == ".parquet":
            questions.extend(_hotpot_parquet(path))
        else:
            raise InputError("expected a HotpotQA .json or .parquet file", file=path)
    return questions


# --- MemAgent RULER-HotpotQA ------------------------------------------------------------------

DOCUMENT_HEADER = re.compile(r"^Document \d+:$", re.MULTILINE)


def read_memagent_eval(path: PathLike) -> list[LongContextItem]:
    """MemAgent's eval_{num_docs}.json: a list of {context, input, answers, num_docs, index}.

    The id is `index`, the question's position in hotpot_dev_distractor_v1.json, the same across
    every num_docs file. Files MemAgent generates for more than 10,000 documents store a list of
    document numbers instead of text and are rejected: they cannot be read without the dev set.
    """
    items = []
    for position, value in enumerate(_json_list(path)):
        record = _Record(value, path, f"index {position}")
        index = record.integer("index")
        record.where = f"{record.where} (id {index})"
        if isinstance(record.value.get("context"), list):
            record.fail(
                "context is a list of document numbers (MemAgent's index-only format for "
                "more than 10,000 documents); build the items with qa_builders.ruler_hotpotqa",
                "context",
            )
        items.append(
            LongContextItem(
                id=str(index),
                question=record.text("input"),
                answers=record.strings("answers"),
                context=record.text("context"),
                num_docs=record.integer("num_docs"),
                gold_titles=(),
            )
        )
    return items


MEMAGENT_TRAIN_COLUMNS = ("prompt", "context", "reward_model", "extra_info")


def read_memagent_train(path: PathLike) -> list[LongContextItem]:
    """MemAgent's training parquet (hotpotqa_train*.parquet, hotpotqa_dev.parquet).

    Each row has prompt (a chat list whose first message's content is the question, as MemAgent's
    trainer reads it), context (the numbered documents), reward_model {style, ground_truth: answers}
    and extra_info {index, question, num_docs}. Other columns (the published file keeps its LLM
    filtering outputs) are ignored. Where extra_info lacks num_docs the documents are counted.
    """
    items = []
    for row_number, row in _parquet_rows(path, MEMAGENT_TRAIN_COLUMNS):
        record = _Record(row, path, f"row {row_number}")
        extra = row["extra_info"]
        if not isinstance(extra, Mapping):
            record.fail("missing or not a struct", "extra_info")
        index = extra.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            record.fail("missing or not an integer", "extra_info.index")
        record.where = f"{record.where} (id {index})"
        prompt = row["prompt"]
        if (
            not isinstance(prompt, list)
            or not prompt
            or not isinstance(prompt[0], Mapping)
            or not isinstance(prompt[0].get("content"), str)
            or not prompt[0]["content"].strip()
        ):
            record.fail("expected a chat list whose first message has a non-empty content", "prompt")
        reward = row["reward_model"]
        if not isinstance(reward, Mapping):
            record.fail("missing or not a struct", "reward_model")
        answers = record.strings("reward_model.ground_truth", reward)
        context = record.text("context")
        num_docs = extra.get("num_docs")
        if num_docs is None:
            num_docs = len(DOCUMENT_HEADER.findall(context))
        elif isinstance(num_docs, bool) or not isinstance(num_docs, int):
            record.fail("not an integer", "extra_info.num_docs")
        items.append(
            LongContextItem(
                id=str(index),
                question=prompt[0]["content"],
                answers=answers,
                context=context,
                num_docs=num_docs,
                gold_titles=(),
            )
        )
    return items


# --- FlashRAG questions and corpora -----------------------------------------------------------


def read_flashrag(path: PathLike, dataset: str) -> list[QAItem]:
    """A FlashRAG split jsonl ({id, question, golden_answers, metadata?}), tagged with its dataset name."""
    return [
        QAItem(
            id=record.name("id"),
            question=record.text("question"),
            answers=record.strings("golden_answers"),
            dataset=dataset,
        )
        for record in _jsonl_records(path)
    ]


def read_corpus(path: PathLike) -> Iterator[CorpusPassage]:
    """Passages of a retrieval corpus jsonl ({id, contents}, wiki-18 style), streamed: wiki-18 has 21M lines."""
    for record in _jsonl_records(path):
        passage_id = record.name("id")
        title, text = split_contents(record.text("contents"))
        yield CorpusPassage(id=passage_id, title=title, text=text)


# --- verl-format (Search-R1, MEM1) and plain question lists -----------------------------------

VERL_COLUMNS = ("data_source", "prompt", "reward_model")
VERL_OPTIONAL_COLUMNS = ("extra_info", "question")
QA_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


def _verl_question(record: _Record, extra: Mapping) -> str:
    """The question as asked, without the instruction template Search-R1 and MEM1 wrap it in.

    Their prompt's user message is "Answer the given question. ... Question: {question}", and MEM1's
    agent adds its own instructions; so the raw question is taken from extra_info.question (MemAgent,
    verl's examples) or the top-level question column (Search-R1 and MEM1 keep FlashRAG's columns),
    and only a record carrying neither falls back to the last user message, template and all.
    """
    for value, field in ((extra.get("question"), "extra_info.question"), (record.value.get("question"), "question")):
        question = record.optional_text(value, field)
        if question is not None:
            return question
    prompt = record.value.get("prompt")
    if not isinstance(prompt, (list, tuple)) or not all(isinstance(message, Mapping) for message in prompt):
        record.fail("missing or not a list of chat messages {role, content}", "prompt")
    users = [message.get("content") for message in prompt if message.get("role") == "user"]
    if not users or not isinstance(users[-1], str) or not users[-1].strip():
        record.fail("no user message with a non-empty content", "prompt")
    return users[-1]


def _verl_item(record: _Record, position: int, dataset: str) -> QAItem:
    """One verl row {data_source, prompt, reward_model: {ground_truth}, extra_info?}.

    The id is "{data_source}-{extra_info.index}" (the record's position where there is no index):
    Search-R1 numbers each source's questions from 0 and concatenates the sources into one file, so
    the source keeps the ids unique, and both parts are fixed by the file, so every run derives the same.
    ground_truth may be {"target": answers} (Search-R1, MEM1) or the answers themselves.
    """
    source = record.text("data_source")
    extra = record.value.get("extra_info")
    if extra is None:
        extra = {}
    elif not isinstance(extra, Mapping):
        record.fail("not an object", "extra_info")
    index = extra.get("index")
    if index is None:
        index = position
    elif isinstance(index, bool) or not isinstance(index, int):
        record.fail("not an integer", "extra_info.index")
    record.where = f"{record.where} (id {source}-{index})"
    reward = record.value.get("reward_model")
    if not isinstance(reward, Mapping):
        record.fail("missing or not an object", "reward_model")
    truth, field = reward.get("ground_truth"), "reward_model.ground_truth"
    if isinstance(truth, Mapping):
        truth, field = truth.get("target"), f"{field}.target"
    return QAItem(
        id=f"{source}-{index}",
        question=_verl_question(record, extra),
        answers=record.answers(truth, field),
        dataset=dataset,
    )


def read_verl(path: PathLike, dataset: str) -> list[QAItem]:
    """A verl-format question file, parquet as Search-R1 and MEM1 publish it or jsonl, tagged with `dataset`
    (the name the config gives it, as for FlashRAG files; each record's data_source goes into its id)."""
    if str(path).endswith(".parquet"):
        records = (
            _Record(row, path, f"row {number}")
            for number, row in _parquet_rows(path, VERL_COLUMNS, VERL_OPTIONAL_COLUMNS)
        )
    else:
        records = _jsonl_records(path)
    return [_verl_item(record, position, dataset) for position, record in enumerate(records)]


def read_qa_list(path: PathLike, dataset: str) -> list[QAItem]:
    """A plain JSON list [{question, answer}], answer a string or a list of strings.

    Such lists carry no id, so a question's id is its position in the list: the same on every run.
    """
    items = []
    for index, value in enumerate(_json_list(path)):
        record = _Record(value, path, f"index {index}")
        items.append(
            QAItem(
                id=str(index),
                question=record.text("question"),
                answers=record.answers(record.value.get("answer"), "answer"),
                dataset=dataset,
            )
        )
    return items


def names_qa_file(reference: str) -> bool:
    """Whether a qa.search dataset entry names a question file rather than a FlashRAG split."""
    return reference.endswith(QA_FILE_SUFFIXES)


def _is_verl_jsonl(path: PathLike) -> bool:
    """Whether a JSON-lines question file is verl's rather than FlashRAG's, by its first record's fields."""
    with contextlib.closing(read_jsonl(path)) as lines:
        first = next(lines, None)
    return first is not None and isinstance(first[1], Mapping) and bool({"prompt", "reward_model"} & first[1].keys())


def read_qa_file(path: PathLike, dataset: str) -> list[QAItem]:
    """The questions of a file in any published question format, told by its name (and, for JSON lines,
    its first record): verl parquet or jsonl, FlashRAG jsonl, or a plain JSON list."""
    name = str(path)
    if name.endswith(".parquet"):
        return read_verl(path, dataset)
    if name.endswith(".json"):
        return read_qa_list(path, dataset)
    if name.endswith((".jsonl", ".jsonl.gz")):
        return read_verl(path, dataset) if _is_verl_jsonl(path) else read_flashrag(path, dataset)
    raise InputError(f"expected a question file ending in {', '.join(QA_FILE_SUFFIXES)}", file=path)


# --- Our stage-boundary tables ----------------------------------------------------------------

LONG_CONTEXT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("context", pa.string()),
        ("num_docs", pa.int32()),
        ("gold_titles", pa.list_(pa.string())),
    ]
)
QA_ITEM_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("dataset", pa.string()),
    ]
)


def write_records(rows: Iterable[Any], schema: pa.Schema, path: PathLike) -> None:
    """Dataclass instances as a parquet table with one column per schema field, written atomically."""
    columns: dict[str, list] = {name: [] for name in schema.names}
    for row in rows:
        for name in schema.names:
            columns[name].append(getattr(row, name))
    write_parquet(pa.table(columns, schema=schema), path)


def read_records(path: PathLike, schema: pa.Schema) -> list[dict[str, Any]]:
    """The schema's columns of one of our tables, as row dicts; a missing column names the file."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"cannot read as parquet: {error}", file=path) from error
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}", file=path)
    return table.select(schema.names).to_pylist()


def write_long_context(items: Iterable[LongContextItem], path: PathLike) -> None:
    write_records(items, LONG_CONTEXT_SCHEMA, path)


def read_long_context(path: PathLike) -> list[LongContextItem]:
    return [
        LongContextItem(
            id=row["id"],
            question=row["question"],
            answers=tuple(row["answers"]),
            context=row["context"],
            num_docs=row["num_docs"],
            gold_titles=tuple(row["gold_titles"]),
        )
        for row in read_records(path, LONG_CONTEXT_SCHEMA)
    ]


def write_qa_items(items: Iterable[QAItem], path: PathLike) -> None:
    write_records(items, QA_ITEM_SCHEMA, path)


def read_qa_items(path: PathLike) -> list[QAItem]:
    return [
        QAItem(id=row["id"], question=row["question"], answers=tuple(row["answers"]), dataset=row["dataset"])
        for row in read_records(path, QA_ITEM_SCHEMA)
    ]
