"""A short masked document with its entities and a config whose budgets cut it into several chunks,
shared by the memory-agent tests of the local trainer and of the veRL agent loops."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memtrain import config as memtrain_config

TEXT = (
    "Ada Lovelace worked with Charles Babbage on the Analytical Engine in London. [MASK] wrote the first "
    "published algorithm. Babbage designed the Difference Engine at Cambridge. Later, [MASK] corresponded "
    "with Michael Faraday about science. The Analytical Engine was never completed in London."
)
NAMES = [
    "Charles Babbage",
    "Analytical Engine",
    "London",
    "Babbage",
    "Difference Engine",
    "Cambridge",
    "Michael Faraday",
]
DOCUMENT = {
    "doc_id": "d0",
    "answer": "Ada Lovelace",
    "text": TEXT,
    "entities": [(n, i, i + len(n)) for n in NAMES for i in range(len(TEXT)) if TEXT.startswith(n, i)],
}
BUDGETS = {"instruction": 320, "chunk": 16, "memory": 12, "response": 16, "max_chunks": 3}


def small_config(memtrain: Mapping[str, Any], **sections: Any) -> dict:
    """The validated config of a CPU run with BUDGETS, documents of 10-48 tokens and the given sections."""
    return memtrain_config.validate(
        {
            "agent": {"budgets": BUDGETS},
            "rl": {"device": "cpu"},
            "data": {"documents": {"min_tokens": 10, "max_tokens": 48}},
            "memtrain": dict(memtrain),
            **sections,
        }
    )
