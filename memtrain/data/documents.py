"""Masked long documents for MemTrain (paper section 3.2).

A document is a pivot passage with an eligible entity y, its n1 most similar passages and random
others, concatenated in random order, with every whole-word, case-insensitive occurrence of y replaced
by the mask token, so that y can only be inferred by aggregating information across the document.

Two guarantees that the paper leaves implicit are enforced here: the answer string survives nowhere in
the document (a passage where y remains inside a longer word, e.g. 'Paris' in 'Parisian', is replaced
by the next neighbour or random passage), and held-out pivots never appear in any training document.
Each passage keeps its character span and its (re-based) entities so later stages can choose
intermediate-recall targets inside any chunk.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from memtrain.data.entities import ENTITY_TYPE
from memtrain.errors import InputError

PASSAGE_TYPE = pa.struct(
    [
        ("passage_id", pa.string()),
        ("role", pa.string()),
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("entities", pa.list_(ENTITY_TYPE)),
    ]
)
DOCUMENT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("split", pa.string()),
        ("pivot_id", pa.string()),
        ("answer", pa.string()),
        ("answer_label", pa.string()),
        ("text", pa.string()),
        ("num_tokens", pa.int32()),
        ("num_masks", pa.int32()),
        ("passages", pa.list_(PASSAGE_TYPE)),
    ]
)

TokenCounter = Callable[[Sequence[str]], list[int]]


def mention_pattern(entity: str) -> re.Pattern[str]:
    """Whole-word, case-insensitive occurrences of `entity` (word edges only where the entity has word chars)."""
    left = r"(?<!\w)" if entity[:1].isalnum() or entity[:1] == "_" else ""
    right = r"(?!\w)" if entity[-1:].isalnum() or entity[-1:] == "_" else ""
    return re.compile(left + re.escape(entity) + right, re.IGNORECASE)


@dataclass(frozen=True)
class MaskedPassage:
    index: int
    text: str
    entities: list[dict]
    num_masks: int


def mask_passage(
    index: int, text: str, entities: Sequence[Mapping[str, Any]], pattern: re.Pattern[str], answer: str, mask_token: str
) -> MaskedPassage | None:
    """The passage with every mention replaced, its entities re-based; None if the answer still shows.

    Entities that overlap a replaced mention are dropped: they contain the answer.
    """
    pieces, spans, cursor = [], [], 0
    for match in pattern.finditer(text):
        pieces.append(text[cursor : match.start()])
        spans.append((match.start(), match.end()))
        pieces.append(mask_token)
        cursor = match.end()
    pieces.append(text[cursor:])
    masked = "".join(pieces)
    if answer.lower() in masked.lower():
        return None
    shift_at = [(end, len(mask_token) - (end - start)) for start, end in spans]
    rebased = []
    for entity in entities:
        if any(entity["start"] < end and start < entity["end"] for start, end in spans):
            continue
        shift = sum(delta for end, delta in shift_at if end <= entity["start"])
        rebased.append({**entity, "start": entity["start"] + shift, "end": entity["end"] + shift})
    return MaskedPassage(index, masked, rebased, len(spans))


def answer_candidates(text: str, entities: Sequence[Mapping[str, Any]], mask_token: str) -> list[tuple[str, str]]:
    """Distinct (entity text, label) pairs of a pivot, first label per case-folded text, in text order."""
    seen: dict[str, tuple[str, str]] = {}
    for entity in entities:
        surface = entity["text"]
        if mask_token.lower() in surface.lower() or surface.lower() in mask_token.lower():
            continue
        seen.setdefault(surface.lower(), (surface, entity["label"]))
    return list(seen.values())


@dataclass
class Corpus:
    """Passages in index order with their entities and embeddings, as the assembler needs them."""

    ids: list[str]
    texts: list[str]
    entities: list[list[dict]]
    embeddings: np.ndarray

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.texts) == len(self.entities) == len(self.embeddings)):
            raise InputError(
                f"passages ({len(self.ids)}), entities ({len(self.entities)}) and embeddings "
                f"({len(self.embeddings)}) are not aligned: rerun the ner and embed stages"
            )


@dataclass
class AssemblyStats:
    skipped: Counter = field(default_factory=Counter)
    leaking_replaced: int = 0
    pivots_tried: int = 0


class Assembler:
    """Builds documents one pivot at a time; all randomness comes from one seeded generator."""

    def __init__(
        self,
        corpus: Corpus,
        neighbours: Callable[[np.ndarray], np.ndarray],
        count_tokens: TokenCounter,
        settings: Mapping[str, Any],
        rng: np.random.Generator,
    ) -> None:
        self.corpus, self.neighbours, self.count_tokens = corpus, neighbours, count_tokens
        self.settings, self.rng = settings, rng
        self.stats = AssemblyStats()
        self.separator_tokens = count_tokens([settings["separator"]])[0] if settings["separator"] else 0
        if len(corpus.ids) < settings["num_passages"]:
            raise InputError(
                f"the corpus has {len(corpus.ids)} passages but a document needs "
                f"num_passages = {settings['num_passages']}",
                field="data.documents.num_passages",
            )

    def build(self, pivots: Sequence[int], count: int, banned: set[int], split: str) -> list[dict]:
        """Up to `count` documents from `pivots` (tried in order); passages in `banned` are never used."""
        documents: list[dict] = []
        batch = 256
        for start in range(0, len(pivots), batch):
            chunk = [p for p in pivots[start : start + batch] if p not in banned]
            if not chunk:
                continue
            for pivot, row in zip(chunk, self.neighbours(np.asarray(chunk))):
                self.stats.pivots_tried += 1
                document = self._document(pivot, row, banned)
                if document is not None:
                    document["doc_id"] = f"{split}-{len(documents):07d}"
                    document["split"] = split
                    documents.append(document)
                    if len(documents) == count:
                        return documents
        return documents

    def _document(self, pivot: int, neighbour_row: np.ndarray, banned: set[int]) -> dict | None:
        s, corpus = self.settings, self.corpus
        candidates = answer_candidates(corpus.texts[pivot], corpus.entities[pivot], s["mask_token"])
        if not candidates:
            self.stats.skipped["pivot_without_entity"] += 1
            return None
        pivot_masked, answer, label = None, None, None
        for choice in self.rng.permutation(len(candidates)):
            answer, label = candidates[choice]
            pattern = mention_pattern(answer)
            pivot_masked = self._mask(pivot, pattern, answer)
            if pivot_masked is not None and pivot_masked.num_masks > 0:
                break
            pivot_masked = None
        if pivot_masked is None:
            self.stats.skipped["answer_survives_in_pivot"] += 1
            return None

        used = {pivot} | banned
        related = []
        for index in (int(i) for i in neighbour_row):
            if len(related) == s["num_related"]:
                break
            if index < 0 or index in used:
                continue
            used.add(index)
            masked = self._mask(index, pattern, answer)
            if masked is None:
                self.stats.leaking_replaced += 1
                continue
            related.append(masked)
        if len(related) < s["num_related"]:
            self.stats.skipped["too_few_related"] += 1
            return None

        members = [("pivot", pivot_masked)] + [("related", m) for m in related]
        sizes = self.count_tokens([m.text for _, m in members])
        random_pool = self._random_passages(used)

        def total() -> int:
            return sum(sizes) + self.separator_tokens * (len(members) - 1)

        # N passages first, then more random ones until min_tokens, then drop random ones above max_tokens.
        while len(members) < s["num_passages"] or total() < s["min_tokens"]:
            masked = self._next_random(random_pool, pattern, answer)
            if masked is None:
                self.stats.skipped["corpus_too_small_for_min_tokens"] += 1
                return None
            members.append(("random", masked))
            sizes.append(self.count_tokens([masked.text])[0])
        while total() > s["max_tokens"]:
            droppable = [
                i
                for i, (role, _) in enumerate(members)
                if role == "random" and total() - sizes[i] - self.separator_tokens >= s["min_tokens"]
            ]
            if not droppable:
                self.stats.skipped["length_out_of_range"] += 1
                return None
            drop = int(self.rng.choice(droppable))
            members.pop(drop)
            sizes.pop(drop)
        document = self._join(members)
        if not s["min_tokens"] <= document["num_tokens"] <= s["max_tokens"]:
            self.stats.skipped["length_out_of_range"] += 1
            return None
        document.update(pivot_id=corpus.ids[pivot], pivot_index=pivot, answer=answer, answer_label=label)
        return document

    def _random_passages(self, used: set[int]) -> Iterator[int]:
        """Distinct random passages outside `used`, drawn lazily: shuffling the whole corpus for every
        document would cost O(corpus) each time, hours at paper scale (tens of millions of passages)."""
        drawn = set(used)
        while len(drawn) < len(self.corpus.ids):
            index = int(self.rng.integers(len(self.corpus.ids)))
            if index not in drawn:
                drawn.add(index)
                yield index

    def _mask(self, index: int, pattern: re.Pattern[str], answer: str) -> MaskedPassage | None:
        return mask_passage(
            index, self.corpus.texts[index], self.corpus.entities[index], pattern, answer, self.settings["mask_token"]
        )

    def _next_random(self, pool: Iterator[int], pattern: re.Pattern[str], answer: str) -> MaskedPassage | None:
        for index in pool:
            masked = self._mask(index, pattern, answer)
            if masked is not None:
                return masked
            self.stats.leaking_replaced += 1
        return None

    def _join(self, members: list[tuple[str, MaskedPassage]]) -> dict:
        """Concatenate in random order, recording each passage's span and its entities in document offsets."""
        separator = self.settings["separator"]
        parts, passages, cursor = [], [], 0
        for position in self.rng.permutation(len(members)):
            role, masked = members[position]
            if parts:
                parts.append(separator)
                cursor += len(separator)
            parts.append(masked.text)
            passages.append(
                {
                    "passage_id": self.corpus.ids[masked.index],
                    "role": role,
                    "start": cursor,
                    "end": cursor + len(masked.text),
                    "entities": [
                        {**e, "start": e["start"] + cursor, "end": e["end"] + cursor} for e in masked.entities
                    ],
                }
            )
            cursor += len(masked.text)
        text = "".join(parts)
        return {
            "text": text,
            "num_tokens": self.count_tokens([text])[0],
            "num_masks": sum(m.num_masks for _, m in members),
            "passages": passages,
        }


def assemble(
    corpus: Corpus,
    neighbours: Callable[[np.ndarray], np.ndarray],
    count_tokens: TokenCounter,
    settings: Mapping[str, Any],
    seed: int,
) -> tuple[pa.Table, pa.Table, AssemblyStats]:
    """Held-out documents first, then training documents whose passages exclude every held-out pivot."""
    rng = np.random.default_rng(seed)
    assembler = Assembler(corpus, neighbours, count_tokens, settings, rng)
    pivots = [int(i) for i in rng.permutation(len(corpus.ids)) if corpus.entities[int(i)]]
    if not pivots:
        raise InputError("no passage has an eligible entity: check data.ner.labels", field="data.ner.labels")
    heldout = assembler.build(pivots, settings["num_heldout"], set(), "heldout") if settings["num_heldout"] else []
    heldout_pivots = {d["pivot_index"] for d in heldout}
    train = assembler.build(pivots, settings["num_train"], heldout_pivots, "train")
    wanted = settings["num_train"], settings["num_heldout"]
    if (len(train), len(heldout)) != wanted:
        raise InputError(
            f"built {len(train)} train / {len(heldout)} held-out documents of the {wanted[0]} / "
            f"{wanted[1]} asked for (skips: {dict(assembler.stats.skipped)}): the corpus is too small "
            "for these settings",
            field="data.documents",
        )
    return _table(train), _table(heldout), assembler.stats


def _table(documents: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [{name: d[name] for name in DOCUMENT_SCHEMA.names} for d in documents], schema=DOCUMENT_SCHEMA
    )
