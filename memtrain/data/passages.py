"""Split articles into passages of a bounded number of words, the units that retrieval and masking work on.

Long articles are cut at paragraph boundaries (then sentence, then word boundaries for monster
paragraphs), so a piece may fall under min_words where its paragraph cannot join a neighbour within
max_words; articles shorter than min_words (most vital-article summaries are 40-150 words) are
joined with the following short articles, so that every passage carries enough context to be worth
retrieving. Passage ids are '<first article id>#<k>': stable across runs and traceable to the article.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import pyarrow as pa

PASSAGE_SCHEMA = pa.schema(
    [
        ("passage_id", pa.string()),
        ("article_ids", pa.list_(pa.string())),
        ("title", pa.string()),
        ("text", pa.string()),
        ("num_words", pa.int32()),
    ]
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def word_count(text: str) -> int:
    return len(text.split())


def _units(text: str, max_words: int) -> Iterator[str]:
    """Paragraphs, with any paragraph over max_words broken into sentences, and sentences into word runs."""
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n|\n", text)):
        if not paragraph:
            continue
        if word_count(paragraph) <= max_words:
            yield paragraph
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            words = sentence.split()
            for start in range(0, len(words), max_words):
                yield " ".join(words[start : start + max_words])


def split_article(text: str, min_words: int, max_words: int) -> list[str]:
    """Pack units into as few pieces as max_words allows, each filled to about the same size.

    Balancing (close a piece once it reaches total / pieces) rather than filling greedily avoids a
    short last piece; one that still falls under min_words is merged back when it fits.
    """
    units = list(_units(text, max_words))
    total = sum(map(word_count, units))
    target = total / max(1, math.ceil(total / max_words))
    pieces: list[list[str]] = []
    sizes: list[int] = []
    for unit in units:
        size = word_count(unit)
        if pieces and sizes[-1] < target and sizes[-1] + size <= max_words:
            pieces[-1].append(unit)
            sizes[-1] += size
        else:
            pieces.append([unit])
            sizes.append(size)
    if len(pieces) > 1 and sizes[-1] < min_words and sizes[-2] + sizes[-1] <= max_words:
        pieces[-2].extend(pieces.pop())
        sizes[-2] += sizes.pop()
    return ["\n".join(piece) for piece in pieces]


def passages(articles: pa.Table, min_words: int, max_words: int) -> pa.Table:
    """Passages of all articles in corpus order: short articles pooled until min_words, long ones split."""
    rows: dict[str, list] = {name: [] for name in PASSAGE_SCHEMA.names}

    def emit(passage_id: str, article_ids: list[str], titles: list[str], text: str) -> None:
        rows["passage_id"].append(passage_id)
        rows["article_ids"].append(article_ids)
        rows["title"].append(" / ".join(titles))
        rows["text"].append(text)
        rows["num_words"].append(word_count(text))

    pool: list[tuple[str, str, str]] = []  # short articles waiting to reach min_words together

    def flush_pool() -> None:
        if pool:
            emit(f"{pool[0][0]}#0", [a for a, _, _ in pool], [t for _, t, _ in pool], "\n".join(x for _, _, x in pool))
            pool.clear()

    for article_id, title, text in zip(*(articles.column(c).to_pylist() for c in ("id", "title", "text"))):
        size = word_count(text)
        if size < min_words:
            if pool and sum(word_count(x) for _, _, x in pool) + size > max_words:
                flush_pool()
            pool.append((article_id, title, text))
            if sum(word_count(x) for _, _, x in pool) >= min_words:
                flush_pool()
            continue
        for k, piece in enumerate(split_article(text, min_words, max_words)):
            emit(f"{article_id}#{k}", [article_id], [title], piece)
    flush_pool()
    return pa.table(rows, schema=PASSAGE_SCHEMA)
