"""Chunking with the real tokenizer, and the constraints of intermediate-memory-recall questions."""

import numpy as np
import pytest

from memtrain.agent.chunks import Chunk, chunk_document
from memtrain.agent.recall import candidates, choose, mask_entity

TEXT = (
    "Marie Curie was born in Warsaw. [MASK] studied in Paris with Pierre Curie. "
    "Warsaw was then part of Russia. Later [MASK] won two Nobel Prizes, and Paris honoured her."
)


def _spans(text, names):
    return [
        (name, start, start + len(name))
        for name in names
        for start in [i for i in range(len(text)) if text.startswith(name, i)]
    ]


def test_chunks_cover_the_text_within_the_budget(tokenizer):
    chunks = chunk_document(tokenizer, TEXT, 9, _spans(TEXT, ["Warsaw", "Paris", "Pierre Curie", "Russia"]))
    assert "".join(c.text for c in chunks) == TEXT
    assert all(c.num_tokens <= 9 for c in chunks) and sum(c.num_tokens for c in chunks) == len(
        tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    )
    for chunk in chunks:
        assert all(name in chunk.text for name in chunk.entities)
    assert chunks[0].entities == ("Warsaw",) and "Warsaw" in chunks[0].text
    with pytest.raises(ValueError):
        chunk_document(tokenizer, TEXT, 0)


def test_an_entity_cut_by_a_chunk_boundary_belongs_to_neither_chunk(tokenizer):
    text = "alpha beta gamma Pierre Curie delta"
    chunks = chunk_document(tokenizer, text, 4, _spans(text, ["Pierre Curie"]))
    assert [c.text for c in chunks][:2] == ["alpha beta gamma Pierre", " Curie delta"]
    assert all(c.entities == () for c in chunks)


def test_mask_entity_replaces_whole_words_only():
    assert mask_entity("Paris and Parisian Paris.", "Paris", "[TARGET]") == "[TARGET] and Parisian [TARGET]."
    # any case, as the document masking: a heading in capitals would otherwise give the target away
    assert (
        mask_entity("PARIS, the capital; paris by night.", "Paris", "[TARGET]")
        == "[TARGET], the capital; [TARGET] by night."
    )


def test_candidates_exclude_the_answer_masks_and_absent_entities():
    chunk = Chunk("Curie met Pierre in Paris near [MASK] Lab.", 10, ("Paris", "pierre", "Curie", "[MASK] Lab", "Ghost"))
    # 'pierre' is present in another case (found as the masking finds it); 'Ghost' is absent
    assert candidates(chunk, "the curie", "[MASK]", "[TARGET]") == ["Paris", "pierre"]


def test_recall_questions_respect_l_before_k_and_hide_a_present_non_answer_entity():
    chunks = [
        Chunk("A [MASK] met Bohr.", 5, ("Bohr",)),
        Chunk("Nothing here.", 3, ()),
        Chunk("Einstein and Bohr.", 4, ("Einstein", "Bohr")),
        Chunk("Tail.", 2, ()),
    ]
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        question = choose(chunks, 4, "Curie", rng)
        k, l = question.memory_index, question.chunk_index
        assert 2 <= k <= 4 and 1 <= l < k
        assert question.target in chunks[l - 1].entities and question.target != "Curie"
        assert "[TARGET]" in question.section and question.target not in question.section
        seen.add((k, l, question.target))
    # every admissible choice occurs: chunk 2 has no entity; chunk 3 is only earlier than memory 4
    assert seen == {(2, 1, "Bohr"), (3, 1, "Bohr"), (4, 1, "Bohr"), (4, 3, "Einstein"), (4, 3, "Bohr")}


def test_no_question_without_a_usable_earlier_chunk():
    rng = np.random.default_rng(0)
    chunks = [Chunk("Only Curie here.", 3, ("Curie",)), Chunk("Bohr.", 2, ("Bohr",))]
    assert choose(chunks, 2, "Curie", rng) is None  # chunk 1 holds only the answer
    assert choose(chunks, 1, "Nobody", rng) is None  # one memory: no k >= 2
    assert choose(chunks, 2, "Nobody", rng).target == "Curie"
