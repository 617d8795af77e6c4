"""The retrieval server the MEM1 search agent queries (Search-R1-compatible HTTP API), and its client.

Importing this package loads only the standard-library client; the server side (`server`, torch,
FAISS) loads when `python -m memtrain.retriever` runs or `memtrain.retriever.server` is imported.
"""

from memtrain.retriever.client import (
    Hit,
    RetrieverClient,
    RetrieverError,
    ServedClient,
    passages_to_string,
    serve,
)
from memtrain.retriever.protocol import format_contents, split_contents

__all__ = [
    "Hit",
    "RetrieverClient",
    "RetrieverError",
    "ServedClient",
    "format_contents",
    "passages_to_string",
    "serve",
    "split_contents",
]
