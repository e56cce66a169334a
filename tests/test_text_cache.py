"""Tests of graphrec_jax/text/cache.py: hits skip the model, keys follow every input."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from graphrec_jax.text.cache import CACHE_ENV, default_cache_dir, encode_with_cache, texts_digest
from graphrec_jax.text.encoder import TextEncoder
from graphrec_jax.text.pretrained import create_random_checkpoint

TEXTS = ["red pen", "blue ink", "", None, "office desk lamp"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> TextEncoder:
    words = "red blue pen ink office desk lamp".split()
    directory = create_random_checkpoint(tmp_path_factory.mktemp("cache") / "bert", words)
    return TextEncoder.from_pretrained(directory, max_length=16, batch_size=4)


def test_second_call_loads_without_running_the_model(encoder, tmp_path):
    first = encode_with_cache(encoder, TEXTS, pooling="mean", cache_dir=tmp_path)
    calls = encoder.num_model_calls
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and not list(tmp_path.glob(".writing-*"))
    second = encode_with_cache(encoder, TEXTS, pooling="mean", cache_dir=tmp_path)
    assert encoder.num_model_calls == calls
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, encoder.encode(TEXTS, pooling="mean"), atol=1e-6)


def test_key_covers_pooling_texts_weights_and_settings(encoder, tmp_path):
    encode_with_cache(encoder, TEXTS, pooling="mean", cache_dir=tmp_path)
    calls = encoder.num_model_calls
    encode_with_cache(encoder, TEXTS, pooling="cls", cache_dir=tmp_path)
    encode_with_cache(encoder, TEXTS[:-1] + ["office desk lamps"], pooling="mean", cache_dir=tmp_path)
    encode_with_cache(encoder, TEXTS, pooling="mean", normalize=True, cache_dir=tmp_path)
    shorter = TextEncoder(encoder.config, encoder.params, encoder.tokenizer, max_length=8, batch_size=4)
    encode_with_cache(shorter, TEXTS, pooling="mean", cache_dir=tmp_path)
    changed = TextEncoder(
        encoder.config,
        jax.tree_util.tree_map(lambda leaf: leaf + 0.01, encoder.params),
        encoder.tokenizer,
        max_length=16,
        batch_size=4,
    )
    encode_with_cache(changed, TEXTS, pooling="mean", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 6
    # Each miss ran 2 batches of 4 texts: three on `encoder`, one on each of the others.
    assert encoder.num_model_calls - calls == 3 * 2
    assert shorter.num_model_calls == changed.num_model_calls == 2
    assert texts_digest(["ab"]) != texts_digest(["a", "b"])


def test_corrupt_file_is_recomputed(encoder, tmp_path):
    expected = encode_with_cache(encoder, TEXTS, pooling="mean", cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npy")
    path.write_bytes(b"not a numpy file")
    np.testing.assert_array_equal(encode_with_cache(encoder, TEXTS, pooling="mean", cache_dir=tmp_path), expected)


def test_environment_variable_sets_the_default_directory(encoder, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "root"))
    assert default_cache_dir() == tmp_path / "root" / "text"
    encode_with_cache(encoder, TEXTS, pooling="cls")
    assert len(list((tmp_path / "root" / "text").glob("*.npy"))) == 1
    monkeypatch.delenv(CACHE_ENV)
    assert str(default_cache_dir()).endswith(".cache/graphrec_jax/text")
