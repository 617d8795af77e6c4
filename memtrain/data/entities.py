"""Named entities per passage with spaCy: the candidates for the masked answer y and for recall targets.

Only the `ner` component runs (the tagger, parser and lemmatizer add nothing here and cost most of the
time), texts stream through nlp.pipe in batches, and n_process follows the job's threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pyarrow as pa

from memtrain.errors import InputError

ENTITY_TYPE = pa.struct([("text", pa.string()), ("label", pa.string()), ("start", pa.int32()), ("end", pa.int32())])
ENTITIES_SCHEMA = pa.schema([("passage_id", pa.string()), ("entities", pa.list_(ENTITY_TYPE))])


def load_pipeline(model: str):
    """A spaCy pipeline (installed package name or path) with everything but `ner` disabled."""
    import spacy

    try:
        nlp = spacy.load(model, enable=["ner"])
    except OSError as error:
        raise InputError(f"cannot load spaCy model {model!r}: {error}", field="data.ner.model") from error
    if "ner" not in nlp.pipe_names:
        raise InputError(f"spaCy model {model!r} has no 'ner' component", field="data.ner.model")
    return nlp


def extract(
    nlp, texts: Iterable[str], labels: Sequence[str], min_chars: int, batch_size: int = 256, n_process: int = 1
) -> list[list[dict]]:
    """Per text, its entities with an eligible label and at least min_chars characters, as char spans."""
    eligible = set(labels)
    result = []
    for doc in nlp.pipe(texts, batch_size=batch_size, n_process=n_process):
        result.append(
            [
                {"text": ent.text, "label": ent.label_, "start": ent.start_char, "end": ent.end_char}
                for ent in doc.ents
                if ent.label_ in eligible and len(ent.text.strip()) >= min_chars and ent.text == ent.text.strip()
            ]
        )
    return result


def entities_table(passage_ids: Sequence[str], entities: Sequence[list[dict]]) -> pa.Table:
    return pa.table({"passage_id": list(passage_ids), "entities": list(entities)}, schema=ENTITIES_SCHEMA)
