import numpy as np
import pytest

from memtrain.data import retrieval
from memtrain.errors import InputError

SETTINGS = {"type": "flat", "nlist": 8, "nprobe": 8, "hnsw_m": 16, "ef_search": 64}


def test_embeddings_are_normalised_float32(embeddings, passages):
    assert embeddings.dtype == np.float32 and embeddings.shape == (passages.num_rows, 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_prefix_changes_the_embedding(encoder):
    plain, prefixed = retrieval.embed(encoder, ["Paris"]), retrieval.embed(encoder, ["Paris"], prefix="query: ")
    assert not np.allclose(plain, prefixed)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_every_index_type_finds_each_passage_first_and_survives_a_round_trip(tmp_path, embeddings, kind):
    settings = {**SETTINGS, "type": kind}
    retrieval.save_index(retrieval.build_index(embeddings, settings), tmp_path / "index.faiss")
    index = retrieval.load_index(tmp_path / "index.faiss", settings)
    scores, ids = retrieval.search(index, embeddings[:20], 5)
    assert (ids[:, 0] == np.arange(20)).mean() >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_shards_concatenate_in_order(tmp_path, embeddings):
    retrieval.save_array(embeddings[:7], tmp_path / "1-of-2.npy")
    retrieval.save_array(embeddings[7:], tmp_path / "2-of-2.npy")
    np.testing.assert_array_equal(retrieval.load_arrays([tmp_path / "1-of-2.npy", tmp_path / "2-of-2.npy"]), embeddings)


def test_missing_model_path_and_hub_without_downloads_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        retrieval.load_encoder(str(tmp_path / "missing-model"), allow_downloads=False)
    with pytest.raises(InputError, match="downloads are disabled"):
        retrieval.load_encoder("intfloat/e5-base-v2", allow_downloads=False)


def test_corrupt_index_file_is_named(tmp_path):
    (tmp_path / "bad.faiss").write_bytes(b"not an index")
    with pytest.raises(InputError, match="bad.faiss"):
        retrieval.load_index(tmp_path / "bad.faiss", SETTINGS)
