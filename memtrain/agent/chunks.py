"""A document cut into the fixed-size sections the memory agent reads one per turn.

Sections are cut on policy-token boundaries (so each fits the chunk budget exactly) but kept as
text spans of the original document, so the entities that NER found in the document stay
attached to the section they fall in: intermediate memory recall masks them there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    text: str
    num_tokens: int
    entities: tuple[str, ...]  # distinct entity strings whose whole span lies inside this chunk


def chunk_document(
    tokenizer, text: str, chunk_tokens: int, entities: Sequence[tuple[str, int, int]] = ()
) -> list[Chunk]:
    """Cut `text` into consecutive chunks of at most `chunk_tokens` policy tokens.

    `entities` are (text, start, end) character spans of the document; an entity crossing a chunk
    boundary belongs to neither chunk, as no single section shows it whole.
    """
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be positive")
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    chunks = []
    for first in range(0, len(offsets), chunk_tokens):
        last = min(first + chunk_tokens, len(offsets))
        start = 0 if first == 0 else offsets[first][0]
        end = len(text) if last == len(offsets) else offsets[last][0]
        inside = dict.fromkeys(name for name, s, e in entities if start <= s and e <= end)
        chunks.append(Chunk(text[start:end], last - first, tuple(inside)))
    return chunks
