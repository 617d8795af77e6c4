"""Shared fixtures: small slices of the real bundled corpus, with real spaCy entities and real embeddings."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from memtrain import config as memtrain_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def test_config() -> dict:
    return memtrain_config.load(ROOT / "config" / "test.yaml")


@pytest.fixture
def cfg(test_config) -> dict:
    """A private copy of the validated test config that a test may modify."""
    return copy.deepcopy(test_config)


@pytest.fixture(scope="session")
def articles(test_config):
    from memtrain.data import sources

    source = {**test_config["data"]["source"], "max_articles": 160}
    return sources.articles(source, allow_downloads=False)


@pytest.fixture(scope="session")
def passages(articles):
    from memtrain.data.passages import passages as split

    return split(articles, min_words=60, max_words=160)


@pytest.fixture(scope="session")
def nlp(test_config):
    from memtrain.data import entities

    return entities.load_pipeline(test_config["data"]["ner"]["model"])


@pytest.fixture(scope="session")
def passage_entities(nlp, passages, test_config):
    from memtrain.data import entities

    ner = test_config["data"]["ner"]
    return entities.extract(nlp, passages.column("text").to_pylist(), ner["labels"], ner["min_chars"])


@pytest.fixture(scope="session")
def encoder(test_config):
    from memtrain.data import retrieval

    return retrieval.load_encoder(test_config["data"]["embed"]["model"], allow_downloads=False)


@pytest.fixture(scope="session")
def embeddings(encoder, passages):
    from memtrain.data import retrieval

    return retrieval.embed(encoder, passages.column("text").to_pylist())
