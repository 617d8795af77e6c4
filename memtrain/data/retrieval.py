"""Dense retrieval: sentence-transformers embeddings and a FAISS inner-product index over them.

Embeddings are L2-normalised float32, so inner product is cosine similarity whatever the index type;
flat is exact for small corpora, IVF and HNSW trade a little recall for speed on millions of passages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from memtrain import assets
from memtrain.errors import InputError
from memtrain.io import atomic_path


def load_encoder(reference: str, *, allow_downloads: bool, device: str = "cpu"):
    from sentence_transformers import SentenceTransformer

    path = assets.resolve(reference, allow_downloads=allow_downloads, field="data.embed.model")
    try:
        return SentenceTransformer(path, device=device, local_files_only=not allow_downloads)
    except (OSError, ValueError) as error:
        raise InputError(
            f"cannot load sentence-transformers model {path!r}: {error}", field="data.embed.model"
        ) from error


def embed(encoder, texts: Sequence[str], prefix: str = "", batch_size: int = 64) -> np.ndarray:
    vectors = encoder.encode(
        [prefix + text for text in texts],
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), -1)


def save_array(array: np.ndarray, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def load_arrays(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Shard embeddings concatenated in shard order, i.e. in passage order."""
    return np.concatenate([np.load(path, mmap_mode="r") for path in paths], axis=0)


def build_index(embeddings: np.ndarray, settings: Mapping[str, Any]):
    import faiss

    dim = embeddings.shape[1]
    kind = settings["type"]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
    else:
        nlist = max(1, min(settings["nlist"], len(embeddings) // 4))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(embeddings)
    index.add(embeddings)
    return index


def save_index(index, path: str | os.PathLike) -> None:
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def join_index_parts(parts: Sequence[str | os.PathLike], path: str | os.PathLike, expected_vectors: int) -> None:
    """Concatenate a published index's parts (MEM1 ships its 60 GB e5 index as part_aa, part_ab) into `path`,
    and refuse it unless it holds one vector per corpus passage: a mismatched corpus would make every search
    return the wrong passages without any error."""
    import shutil

    import faiss

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, length=64 << 20)
        try:
            vectors = faiss.read_index(str(tmp), faiss.IO_FLAG_MMAP).ntotal  # reads the header, not the vectors
        except RuntimeError as error:
            raise InputError(f"the concatenated parts are not a FAISS index: {error}", file=parts[0]) from error
        if vectors != expected_vectors:
            raise InputError(
                f"the index holds {vectors} vectors but the corpus has {expected_vectors} passages",
                file=parts[0],
                field="qa.index",
            )


def load_index(path: str | os.PathLike, settings: Mapping[str, Any]):
    """Read an index and apply the search-time knobs (nprobe, efSearch), which are not stored in the file."""
    import faiss

    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        raise InputError(f"cannot read FAISS index: {error}", file=path) from error
    if hasattr(index, "nprobe"):
        index.nprobe = settings["nprobe"]
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = max(settings["ef_search"], 1)
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) per query; ids are -1 where the index has fewer than k hits."""
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, index.ntotal))
