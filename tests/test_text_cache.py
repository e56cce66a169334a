"""Tests of graphrec_jax/text/cache.py: hits skip the model, keys follow every input."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from graphrec_jax.text.cache import CACHE_ENV, cache_key, default_cache_dir, encode_with_cache, texts_digest
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


def _swap_in_vocabulary(directory, first: str, second: str) -> None:
    """Exchanges the ids of two words in the checkpoint's vocabulary file(s), weights untouched."""
    if (directory / "tokenizer.json").is_file():
        state = json.loads((directory / "tokenizer.json").read_text())
        vocabulary = state["model"]["vocab"]
        vocabulary[first], vocabulary[second] = vocabulary[second], vocabulary[first]
        (directory / "tokenizer.json").write_text(json.dumps(state))
    if (directory / "vocab.txt").is_file():
        lines = (directory / "vocab.txt").read_text().splitlines()
        a, b = lines.index(first), lines.index(second)
        lines[a], lines[b] = lines[b], lines[a]
        (directory / "vocab.txt").write_text("\n".join(lines) + "\n")


def test_key_covers_the_tokenizer_vocabulary(tmp_path):
    directory = create_random_checkpoint(tmp_path / "bert", "red blue pen ink office desk lamp".split())
    before = TextEncoder.from_pretrained(directory, max_length=16, batch_size=4)
    old_vectors = encode_with_cache(before, TEXTS, pooling="mean", cache_dir=tmp_path / "cache")

    _swap_in_vocabulary(directory, "red", "blue")
    after = TextEncoder.from_pretrained(directory, max_length=16, batch_size=4)
    assert after.fingerprint() == before.fingerprint()  # same weights: only the vocabulary moved
    assert after.tokenize(["red pen"])["input_ids"].tolist() != before.tokenize(["red pen"])["input_ids"].tolist()

    new_vectors = encode_with_cache(after, TEXTS, pooling="mean", cache_dir=tmp_path / "cache")
    assert after.num_model_calls == 2  # a miss: 5 texts in batches of 4
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    np.testing.assert_allclose(new_vectors, after.encode(TEXTS, pooling="mean"), atol=1e-6)
    assert not np.allclose(new_vectors[0], old_vectors[0])  # "red pen" now reads as "blue pen"
    assert after.tokenizer_fingerprint() != before.tokenizer_fingerprint()
    assert cache_key(after, TEXTS, pooling="mean", normalize=False) != cache_key(
        before, TEXTS, pooling="mean", normalize=False
    )


def test_tokenizer_fingerprint_ignores_per_call_settings(encoder):
    """transformers leaves the last call's truncation in the fast tokenizer: not part of the key."""
    fingerprint = encoder.tokenizer_fingerprint()
    encoder.tokenize(["red pen"])
    encoder.tokenizer(["red pen"], truncation=True, max_length=5)
    assert encoder.tokenizer_fingerprint() == fingerprint


@pytest.mark.parametrize(
    "content",
    [b"", b"\x93NUMPY", b"garbage that is no numpy file", b"PK\x03\x04 a zip, cut short"],
    ids=["zero_bytes", "cut_short", "garbage", "broken_zip"],
)
def test_unreadable_entry_is_recomputed_and_rewritten(encoder, tmp_path, content):
    expected = encode_with_cache(encoder, TEXTS, pooling="mean", cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npy")
    path.write_bytes(content)
    calls = encoder.num_model_calls
    np.testing.assert_array_equal(encode_with_cache(encoder, TEXTS, pooling="mean", cache_dir=tmp_path), expected)
    assert encoder.num_model_calls == calls + 2  # recomputed
    np.testing.assert_array_equal(np.load(path), expected)  # and rewritten in place
    assert sorted(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_entry_of_another_shape_or_dtype_is_recomputed(encoder, tmp_path):
    expected = encode_with_cache(encoder, TEXTS, pooling="mean", cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npy")
    for wrong in (expected[:2], expected.astype(np.float64)):
        np.save(path, wrong)
        np.testing.assert_array_equal(encode_with_cache(encoder, TEXTS, pooling="mean", cache_dir=tmp_path), expected)
        assert np.load(path).dtype == np.float32 and np.load(path).shape == expected.shape
