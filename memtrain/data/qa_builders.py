"""Long-context and multi-objective QA sets built from published questions.

RULER-HotpotQA (as MemAgent builds it) hides a HotpotQA question's paragraphs among random
paragraphs of the same split and numbers them "Document i:\\n{title}\\n{text}", separated by blank
lines; MemAgent trains on the same construction at 200 documents. MEM1's multi-objective task asks
k FlashRAG questions at once, joined with "; ". Every random choice here comes from a generator
seeded by (seed, size, question id), so an item is the same whatever order or shard it is built in.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from memtrain.data.qa import HotpotQuestion, LongContextItem, Paragraph, PathLike, QAItem, read_records, write_records
from memtrain.errors import InputError

MULTI_OBJECTIVE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("targets", pa.list_(pa.list_(pa.string()))),
        ("dataset", pa.string()),
    ]
)


@dataclass(frozen=True)
class MultiObjectiveQuestion:
    """k questions asked at once (MEM1's multi-objective task); targets[i] are the answers to the i-th."""

    id: str
    question: str
    targets: tuple[tuple[str, ...], ...]
    dataset: str


def derived_rng(*parts: object) -> random.Random:
    """A generator seeded by a stable hash of `parts` (Python's hash() of a string changes per process)."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def format_documents(paragraphs: Sequence[Paragraph]) -> str:
    """MemAgent's layout: "Document i:\\n{title}\\n{text}" numbered from 1, separated by a blank line."""
    return "\n\n".join(f"Document {i}:\n{p.title}\n{p.text}" for i, p in enumerate(paragraphs, start=1))


def gold_paragraphs(question: HotpotQuestion) -> list[Paragraph]:
    """The context paragraphs whose title is a supporting title, in context order.

    A supporting title absent from the context (HotpotQA's fullwiki files, whose context is retrieved)
    is an error: the item could not be answered from its own documents.
    """
    gold = set(question.gold_titles)
    missing = gold - {p.title for p in question.context}
    if missing:
        raise InputError(
            f"supporting title(s) {sorted(missing)} are not among the context paragraphs "
            "(use the distractor-setting files)",
            record=question.id,
            field="supporting_facts",
        )
    return [p for p in question.context if p.title in gold]


class ParagraphPool:
    """Unique paragraphs (by title and text) in a canonical order, so draws do not depend on input order."""

    def __init__(self, paragraphs: Iterable[Paragraph]) -> None:
        unique: dict[tuple[str, str], Paragraph] = {}
        for paragraph in sorted(paragraphs, key=lambda p: (p.title, p.text, p.sentences)):
            unique.setdefault((paragraph.title, paragraph.text), paragraph)
        self.paragraphs = list(unique.values())
        self.title_counts = Counter(p.title for p in self.paragraphs)

    def sample(self, rng: random.Random, count: int, exclude_titles: set[str], question_id: str) -> list[Paragraph]:
        """`count` distinct paragraphs drawn uniformly from those whose title is not excluded.

        Draws count + (number of excluded paragraphs) indices and keeps the first `count` allowed
        ones, which is uniform over the allowed paragraphs and costs O(count) rather than a pass
        over a pool of hundreds of thousands for every question.
        """
        excluded = sum(self.title_counts[title] for title in exclude_titles)
        available = len(self.paragraphs) - excluded
        if count > available:
            raise InputError(
                f"needs {count} random paragraphs but the pool has only {available} outside this "
                "question's own titles; lower num_docs or pass a larger pool",
                record=question_id,
                field="num_docs",
            )
        drawn = (self.paragraphs[i] for i in rng.sample(range(len(self.paragraphs)), count + excluded))
        return [p for p in drawn if p.title not in exclude_titles][:count]


def _long_context(
    question: HotpotQuestion, num_docs: int, seed: int, pool: ParagraphPool, own_distractors_first: bool
) -> LongContextItem:
    """The question's gold paragraphs, then (optionally) its own HotpotQA distractors, then random
    pool paragraphs excluding every title already used, up to num_docs, shuffled."""
    rng = derived_rng(seed, num_docs, question.id)
    chosen = gold_paragraphs(question)
    if num_docs < len(chosen):
        raise InputError(
            f"num_docs {num_docs} is smaller than the question's {len(chosen)} gold paragraphs",
            record=question.id,
            field="num_docs",
        )
    used_titles = set(question.gold_titles)
    if own_distractors_first:
        own = [p for p in question.context if p.title not in used_titles]
        chosen += rng.sample(own, min(len(own), num_docs - len(chosen)))
        used_titles |= {p.title for p in question.context}
    chosen += pool.sample(rng, num_docs - len(chosen), used_titles, question.id)
    rng.shuffle(chosen)
    return LongContextItem(
        id=question.id,
        question=question.question,
        answers=(question.answer,),
        context=format_documents(chosen),
        num_docs=num_docs,
        gold_titles=question.gold_titles,
    )


def _build(
    questions: Sequence[HotpotQuestion],
    num_docs: int,
    seed: int,
    pool: Sequence[Paragraph] | None,
    own_distractors_first: bool,
) -> list[LongContextItem]:
    if num_docs < 1:
        raise InputError(f"num_docs must be at least 1, got {num_docs}", field="num_docs")
    paragraphs = ParagraphPool(pool if pool is not None else (p for q in questions for p in q.context))
    return [_long_context(question, num_docs, seed, paragraphs, own_distractors_first) for question in questions]


def ruler_hotpotqa(
    questions: Sequence[HotpotQuestion],
    num_docs: int,
    seed: int,
    pool: Sequence[Paragraph] | None = None,
    own_distractors: bool = True,
) -> list[LongContextItem]:
    """RULER-HotpotQA eval items of num_docs documents: each question's gold paragraphs among random
    ones from `pool` (pass every paragraph of the split; default: those of `questions`).

    MemAgent's published eval files (different_docs_eval.py) keep the question's own eight HotpotQA
    distractors before drawing random ones, which makes the task harder than gold plus random alone;
    that is the default here so that built and published files measure the same thing.
    `own_distractors=False` gives the plain gold-among-random construction.
    """
    return _build(questions, num_docs, seed, pool, own_distractors_first=own_distractors)


def memagent_training(
    questions: Sequence[HotpotQuestion], num_docs: int, seed: int, pool: Sequence[Paragraph] | None = None
) -> list[LongContextItem]:
    """MemAgent's construction (processing.py; 200 documents at paper scale): gold paragraphs, then the
    question's own HotpotQA distractors, then random pool paragraphs with none of the question's titles."""
    return _build(questions, num_docs, seed, pool, own_distractors_first=True)


def as_question(text: str) -> str:
    """A question ending in '?', as MEM1 writes each part so the joined parts stay separable."""
    text = text.strip()
    return text if text.endswith("?") else text + "?"


def compose_multi_objective(items: Sequence[QAItem], k: int, seed: int | None) -> list[MultiObjectiveQuestion]:
    """MEM1's multi-objective questions: groups of k questions of one dataset joined with "; ".

    Items are grouped by dataset (in order of first appearance), shuffled with a generator derived
    from (seed, k, dataset), and cut into consecutive groups of k; the last len % k questions of each
    dataset are dropped, as MEM1 drops them. seed=None keeps file order, which is exactly MEM1's grouping.
    """
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}", field="k")
    by_dataset: dict[str, list[QAItem]] = {}
    for item in items:
        by_dataset.setdefault(item.dataset, []).append(item)
    composed = []
    for dataset, group in by_dataset.items():
        if seed is not None:
            derived_rng(seed, k, dataset).shuffle(group)
        for start in range(0, len(group) - len(group) % k, k):
            chunk = group[start : start + k]
            composed.append(
                MultiObjectiveQuestion(
                    id="+".join(item.id for item in chunk),
                    question="; ".join(as_question(item.question) for item in chunk),
                    targets=tuple(item.answers for item in chunk),
                    dataset=dataset,
                )
            )
    return composed


def write_multi_objective(questions: Iterable[MultiObjectiveQuestion], path: PathLike) -> None:
    write_records(questions, MULTI_OBJECTIVE_SCHEMA, path)


def read_multi_objective(path: PathLike) -> list[MultiObjectiveQuestion]:
    return [
        MultiObjectiveQuestion(
            id=row["id"],
            question=row["question"],
            targets=tuple(tuple(target) for target in row["targets"]),
            dataset=row["dataset"],
        )
        for row in read_records(path, MULTI_OBJECTIVE_SCHEMA)
    ]
