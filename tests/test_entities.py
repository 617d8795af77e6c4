import pytest

from memtrain.data import entities
from memtrain.errors import InputError


def test_ner_only_pipeline_finds_the_same_entities_as_the_full_pipeline(nlp, passages, test_config):
    import spacy

    full = spacy.load(test_config["data"]["ner"]["model"])
    texts = passages.column("text").to_pylist()[:20]
    labels, min_chars = test_config["data"]["ner"]["labels"], test_config["data"]["ner"]["min_chars"]
    fast = entities.extract(nlp, texts, labels, min_chars, batch_size=8)
    slow = [
        [
            {"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
            for e in full(t).ents
            if e.label_ in labels and len(e.text.strip()) >= min_chars
        ]
        for t in texts
    ]
    assert fast == slow
    assert sum(map(len, fast)) > 20


def test_entities_carry_exact_char_spans_and_only_eligible_labels(passages, passage_entities, test_config):
    texts = passages.column("text").to_pylist()
    eligible = set(test_config["data"]["ner"]["labels"])
    for text, found in zip(texts, passage_entities):
        for entity in found:
            assert text[entity["start"] : entity["end"]] == entity["text"]
            assert entity["label"] in eligible and len(entity["text"]) >= test_config["data"]["ner"]["min_chars"]


def test_label_filter_can_leave_a_passage_without_entities(nlp):
    found = entities.extract(nlp, ["Paris is the capital of France.", "It rained."], ["GPE"], 3)
    assert [e["text"] for e in found[0]] == ["Paris", "France"] and found[1] == []


def test_numbers_enter_the_answer_pool_by_default(nlp, passage_entities, test_config):
    """The paper's y is "an entity (e.g., a number or location)": numeric labels are eligible, short numbers kept."""
    ner = test_config["data"]["ner"]
    assert {"CARDINAL", "QUANTITY", "MONEY", "PERCENT"} <= set(ner["labels"]) and ner["min_chars"] == 2
    (found,) = entities.extract(
        nlp, ["The tower is 330 metres tall and drew 7 million visitors in 2019."], ner["labels"], ner["min_chars"]
    )
    assert {"QUANTITY", "CARDINAL"} & {e["label"] for e in found}, found
    assert any(e["label"] in ("CARDINAL", "QUANTITY", "MONEY", "PERCENT") for p in passage_entities for e in p)


def test_two_processes_give_the_same_entities(nlp, passages, passage_entities, test_config):
    ner = test_config["data"]["ner"]
    texts = passages.column("text").to_pylist()[:40]
    assert entities.extract(nlp, texts, ner["labels"], ner["min_chars"], n_process=2) == passage_entities[:40]


def test_missing_spacy_model_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="data.ner.model"):
        entities.load_pipeline(str(tmp_path / "no_model"))
