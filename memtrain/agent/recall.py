"""Intermediate memory recall (IMR, paper section 3.3): questions about an earlier section, asked of a later memory.

For a trajectory that wrote memories m_1..m_n after reading chunks c_1..c_n, IMR takes a memory
m_k (k >= 2) and an earlier chunk c_l (l < k), hides one entity of c_l (not the masked answer y)
behind [TARGET] everywhere in c_l, and asks the policy to recover it from m_k and the masked chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from memtrain.agent.answers import normalize
from memtrain.agent.chunks import Chunk
from memtrain.data.documents import mention_pattern


@dataclass(frozen=True)
class RecallQuestion:
    memory_index: int  # k, 1-based: the memory written after reading chunk k
    chunk_index: int  # l, 1-based, l < k
    target: str  # the hidden entity, the reward's reference answer
    section: str  # chunk l with every occurrence of target replaced by the placeholder


def mask_entity(text: str, entity: str, placeholder: str) -> str:
    """Hide the entity as the document masking hides y: whole words only ('Parisian' keeps its 'Paris'), any case
    ('PARIS' in a heading would give the target away)."""
    return mention_pattern(entity).sub(lambda _: placeholder, text)


def candidates(chunk: Chunk, answer: str, mask_token: str, placeholder: str) -> list[str]:
    """Entities of a chunk that can be asked about: not the answer y, not touching a mask, really present."""
    answer_key = normalize(answer)
    found = []
    for entity in chunk.entities:
        key = normalize(entity)
        if not key or key == answer_key or mask_token in entity or placeholder in entity:
            continue
        if mask_entity(chunk.text, entity, placeholder) != chunk.text:
            found.append(entity)
    return found


def choose(
    chunks: Sequence[Chunk],
    num_memories: int,
    answer: str,
    rng: np.random.Generator,
    mask_token: str = "[MASK]",
    placeholder: str = "[TARGET]",
) -> RecallQuestion | None:
    """Draw k, then l < k, then the entity, uniformly among the choices that admit a question.

    None when no memory k >= 2 has an earlier chunk with a usable entity (a short document, or
    one whose early chunks hold no entity but the answer): that trajectory gets no IMR group.
    """
    usable = {
        l: candidates(chunks[l - 1], answer, mask_token, placeholder)
        for l in range(1, min(num_memories, len(chunks)) + 1)
    }
    memories = [k for k in range(2, num_memories + 1) if any(usable[l] for l in range(1, k) if l in usable)]
    if not memories:
        return None
    k = int(rng.choice(memories))
    chunk_index = int(rng.choice([l for l in range(1, k) if usable.get(l)]))
    target = usable[chunk_index][int(rng.integers(len(usable[chunk_index])))]
    section = mask_entity(chunks[chunk_index - 1].text, target, placeholder)
    return RecallQuestion(k, chunk_index, target, section)
