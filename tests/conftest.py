"""Fixtures shared across the test files."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def word_model_dir(tmp_path_factory):
    """A random 3-layer Llama with a WordLevel tokenizer ("w0 w1 …", adds <s>), saved as a model directory."""
    from tests.unit.test_store import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("word-llama") / "llama")


@pytest.fixture(scope="session")
def word_model(word_model_dir):
    """``word_model_dir`` loaded through models.load_model, shared by the tests that only read it."""
    from effdepth import models

    return models.load_model(str(word_model_dir))
