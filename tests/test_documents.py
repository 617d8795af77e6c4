import numpy as np
import pytest

from memtrain.data import documents, retrieval
from memtrain.errors import InputError

SETTINGS = {
    "num_train": 10,
    "num_heldout": 3,
    "num_passages": 8,
    "num_related": 3,
    "retrieval_margin": 6,
    "min_tokens": 450,
    "max_tokens": 900,
    "separator": "\n\n",
    "mask_token": "[MASK]",
}


def count_words(texts):
    """A deterministic stand-in for the policy tokenizer (the DAG test uses the real one)."""
    return [len(text.split()) for text in texts]


@pytest.fixture(scope="module")
def corpus(passages, passage_entities, embeddings):
    return documents.Corpus(
        passages.column("passage_id").to_pylist(), passages.column("text").to_pylist(), passage_entities, embeddings
    )


@pytest.fixture(scope="module")
def neighbours(corpus):
    index = retrieval.build_index(corpus.embeddings, {"type": "flat"})
    depth = SETTINGS["num_related"] + SETTINGS["retrieval_margin"] + 1
    return lambda pivots: retrieval.search(index, corpus.embeddings[pivots], depth)[1]


@pytest.fixture(scope="module")
def built(corpus, neighbours):
    return documents.assemble(corpus, neighbours, count_words, SETTINGS, seed=3)


def test_mask_is_whole_word_case_insensitive_and_rebases_entities():
    text = "Paris is big. PARIS, paris! Parisian food. Paris"
    entities = [
        {"text": "Paris", "label": "GPE", "start": 0, "end": 5},
        {"text": "food", "label": "X", "start": 37, "end": 41},
    ]
    pattern = documents.mention_pattern("Paris")
    assert documents.mask_passage(0, text, entities, pattern, "Paris", "[MASK]") is None  # 'Parisian' keeps it
    text = "Paris is big. PARIS, paris! French food. Paris"
    entities[1] = {"text": "food", "label": "X", "start": 35, "end": 39}
    masked = documents.mask_passage(0, text, entities, pattern, "Paris", "[MASK]")
    assert masked.text == "[MASK] is big. [MASK], [MASK]! French food. [MASK]" and masked.num_masks == 4
    assert masked.entities == [{"text": "food", "label": "X", "start": 38, "end": 42}]
    assert masked.text[38:42] == "food"


def test_entity_at_a_passage_boundary_is_masked():
    for text in ("Lisbon", "Lisbon is a city", "a city called Lisbon"):
        masked = documents.mask_passage(0, text, [], documents.mention_pattern("Lisbon"), "Lisbon", "[MASK]")
        assert masked.num_masks == 1 and "lisbon" not in masked.text.lower()


def test_entity_with_punctuation_edges_is_matched_literally():
    pattern = documents.mention_pattern("U.S.")
    assert pattern.sub("[MASK]", "The U.S. and the US") == "The [MASK] and the US"


def test_every_document_hides_its_answer_and_keeps_pivot_and_neighbours(built, corpus, neighbours):
    train, heldout, _stats = built
    assert (train.num_rows, heldout.num_rows) == (10, 3)
    index_of = {pid: i for i, pid in enumerate(corpus.ids)}
    for doc in train.to_pylist() + heldout.to_pylist():
        assert "[MASK]" in doc["text"] and doc["num_masks"] == doc["text"].count("[MASK]")
        assert doc["answer"].lower() not in doc["text"].lower()
        roles = [p["role"] for p in doc["passages"]]
        assert roles.count("pivot") == 1 and roles.count("related") == SETTINGS["num_related"]
        pivot = next(p for p in doc["passages"] if p["role"] == "pivot")
        assert pivot["passage_id"] == doc["pivot_id"]
        retrieved = {corpus.ids[i] for i in neighbours(np.asarray([index_of[doc["pivot_id"]]]))[0]}
        assert all(p["passage_id"] in retrieved for p in doc["passages"] if p["role"] == "related")
        assert SETTINGS["min_tokens"] <= doc["num_tokens"] <= SETTINGS["max_tokens"]
        assert doc["num_tokens"] == len(doc["text"].split())
        assert len({p["passage_id"] for p in doc["passages"]}) == len(doc["passages"])


def test_passage_spans_and_entities_point_into_the_document(built, corpus):
    train, _, _ = built
    texts = dict(zip(corpus.ids, corpus.texts))
    for doc in train.to_pylist():
        for passage in doc["passages"]:
            span = doc["text"][passage["start"] : passage["end"]]
            original = texts[passage["passage_id"]]
            assert span == documents.mention_pattern(doc["answer"]).sub("[MASK]", original)
            for entity in passage["entities"]:
                assert doc["text"][entity["start"] : entity["end"]] == entity["text"]
                assert passage["start"] <= entity["start"] < entity["end"] <= passage["end"]


def test_heldout_pivots_never_appear_in_training_documents(built):
    train, heldout, _ = built
    heldout_pivots = set(heldout.column("pivot_id").to_pylist())
    used_in_train = {p["passage_id"] for doc in train.column("passages").to_pylist() for p in doc}
    assert heldout_pivots and not heldout_pivots & used_in_train


def test_same_seed_same_documents_other_seed_other_documents(built, corpus, neighbours):
    again = documents.assemble(corpus, neighbours, count_words, SETTINGS, seed=3)
    assert again[0].equals(built[0]) and again[1].equals(built[1])
    other = documents.assemble(corpus, neighbours, count_words, SETTINGS, seed=4)
    assert not other[0].equals(built[0])


def test_pivots_without_entities_are_skipped_and_counted(corpus, neighbours):
    entities = [e if i % 2 else [] for i, e in enumerate(corpus.entities)]
    sparse = documents.Corpus(corpus.ids, corpus.texts, entities, corpus.embeddings)
    train, _, _stats = documents.assemble(sparse, neighbours, count_words, {**SETTINGS, "num_heldout": 0}, seed=1)
    assert train.num_rows == 10
    pivots = set(train.column("pivot_id").to_pylist())
    assert all(corpus.ids.index(p) % 2 == 1 for p in pivots)


def test_too_few_passages_for_n_is_a_clear_error(corpus, neighbours):
    small = documents.Corpus(corpus.ids[:5], corpus.texts[:5], corpus.entities[:5], corpus.embeddings[:5])
    with pytest.raises(InputError, match="num_passages"):
        documents.assemble(small, neighbours, count_words, SETTINGS, seed=1)


def test_unreachable_document_count_names_the_skip_reasons(corpus, neighbours):
    with pytest.raises(InputError, match="too small") as error:
        documents.assemble(corpus, neighbours, count_words, {**SETTINGS, "min_tokens": 100000, "max_tokens": 200000}, 1)
    assert "corpus_too_small_for_min_tokens" in str(error.value)


def test_unaligned_inputs_are_rejected(corpus):
    with pytest.raises(InputError, match="not aligned"):
        documents.Corpus(corpus.ids, corpus.texts, corpus.entities[:-1], corpus.embeddings)


def test_documents_table_schema(built):
    train, heldout, _ = built
    assert train.schema == documents.DOCUMENT_SCHEMA == heldout.schema
    assert set(train.column("split").to_pylist()) == {"train"}
