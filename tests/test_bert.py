"""Tests of graphrec_jax/text/bert.py: tree names, shapes, masking, pooling, dtypes, MLM head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphrec_jax.text.bert import ACTIVATIONS, BertConfig, BertForMaskedLM, BertModel, pool
from graphrec_jax.text.pretrained import abstract_params, initial_params

CONFIG = BertConfig(
    vocab_size=40,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=48,
)


def _flat_names(tree, prefix=""):
    names = set()
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else key
        names |= _flat_names(value, path) if isinstance(value, dict) else {path}
    return names


def _batch(lengths, length, seed=0):
    """Random ids `[b, length]` with the given numbers of real tokens (rest is padding id 0)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, CONFIG.vocab_size, (len(lengths), length)).astype(np.int32)
    mask = (np.arange(length)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
    return jnp.asarray(ids * mask), jnp.asarray(mask)


_COMPILED = {}


def _apply(model):
    """The module's apply, compiled once per module (eager dispatch is slower than one compile)."""
    key = (type(model).__name__, model.dtype)
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(model.apply, static_argnames=("deterministic",))
    return _COMPILED[key]


@pytest.fixture(scope="module")
def model_and_params():
    model = BertModel(CONFIG)
    ids, mask = _batch([3, 5], 8)
    return model, jax.jit(model.init)(jax.random.key(0), ids, mask)["params"]


def test_parameter_tree_keeps_hugging_face_names(model_and_params):
    _, params = model_and_params
    names = _flat_names(params)
    expected = {
        "embeddings/word_embeddings/embedding",
        "embeddings/position_embeddings/embedding",
        "embeddings/token_type_embeddings/embedding",
        "embeddings/LayerNorm/scale",
        "embeddings/LayerNorm/bias",
        "pooler/dense/kernel",
        "pooler/dense/bias",
    }
    for index in range(CONFIG.num_hidden_layers):
        layer = f"encoder/layer/{index}"
        for part in ("attention/self/query", "attention/self/key", "attention/self/value"):
            expected |= {f"{layer}/{part}/kernel", f"{layer}/{part}/bias"}
        for part in ("attention/output/dense", "intermediate/dense", "output/dense"):
            expected |= {f"{layer}/{part}/kernel", f"{layer}/{part}/bias"}
        for part in ("attention/output/LayerNorm", "output/LayerNorm"):
            expected |= {f"{layer}/{part}/scale", f"{layer}/{part}/bias"}
    assert names == expected
    assert params["encoder"]["layer"]["1"]["intermediate"]["dense"]["kernel"].shape == (32, 64)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))


def test_output_shapes(model_and_params):
    model, params = model_and_params
    ids, mask = _batch([3, 8, 1], 8)
    hidden, pooled = _apply(model)({"params": params}, ids, mask)
    assert hidden.shape == (3, 8, 32) and pooled.shape == (3, 32)
    assert np.all(np.abs(np.asarray(pooled)) <= 1.0)  # tanh
    assert np.isfinite(np.asarray(hidden)).all()


def test_real_tokens_ignore_appended_padding(model_and_params):
    model, params = model_and_params
    ids, mask = _batch([3, 6], 6)
    longer_ids, longer_mask = jnp.pad(ids, ((0, 0), (0, 9))), jnp.pad(mask, ((0, 0), (0, 9)))
    short = _apply(model)({"params": params}, ids, mask)
    long = _apply(model)({"params": params}, longer_ids, longer_mask)
    real = np.asarray(mask, bool)
    np.testing.assert_allclose(
        np.asarray(long.last_hidden_state)[:, :6][real], np.asarray(short.last_hidden_state)[real], atol=1e-5
    )
    np.testing.assert_allclose(long.pooler_output, short.pooler_output, atol=1e-5)
    for pooling in ("mean", "cls"):
        np.testing.assert_allclose(
            pool(long.last_hidden_state, longer_mask, long.pooler_output, pooling),
            pool(short.last_hidden_state, mask, short.pooler_output, pooling),
            atol=1e-5,
        )


def test_mean_pooling_averages_real_tokens_only():
    hidden = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
    mask = jnp.array([[1, 1, 0], [0, 0, 0]])
    pooled = pool(hidden, mask, None, "mean")
    np.testing.assert_allclose(pooled[0], (hidden[0, 0] + hidden[0, 1]) / 2)
    np.testing.assert_allclose(pooled[1], [0.0, 0.0])  # no real tokens: zeros, not NaN
    np.testing.assert_allclose(pool(hidden, mask, None, "cls"), hidden[:, 0])
    with pytest.raises(ValueError, match="add_pooling_layer"):
        pool(hidden, mask, None, "pooler")
    with pytest.raises(ValueError, match="pooling='max'"):
        pool(hidden, mask, None, "max")


def test_all_padding_row_stays_finite(model_and_params):
    model, params = model_and_params
    ids, mask = _batch([4, 0], 6)
    output = _apply(model)({"params": params}, ids, mask)
    assert np.isfinite(np.asarray(output.last_hidden_state)).all()


def test_bfloat16_compute_keeps_float32_params(model_and_params):
    _, params = model_and_params
    ids, mask = _batch([5, 2], 8)
    full = _apply(BertModel(CONFIG))({"params": params}, ids, mask)
    half = _apply(BertModel(CONFIG, dtype=jnp.bfloat16))({"params": params}, ids, mask)
    assert half.last_hidden_state.dtype == jnp.bfloat16
    half_pooled = pool(half.last_hidden_state, mask, half.pooler_output, "mean")
    assert half_pooled.dtype == jnp.float32
    np.testing.assert_allclose(half_pooled, pool(full.last_hidden_state, mask, full.pooler_output, "mean"), atol=0.1)


def test_dropout_only_when_not_deterministic(model_and_params):
    model, params = model_and_params
    ids, mask = _batch([5, 7], 8)
    base = _apply(model)({"params": params}, ids, mask).last_hidden_state
    again = _apply(model)({"params": params}, ids, mask, deterministic=True).last_hidden_state
    dropped = _apply(model)(
        {"params": params}, ids, mask, deterministic=False, rngs={"dropout": jax.random.key(3, impl="rbg")}
    ).last_hidden_state
    np.testing.assert_array_equal(base, again)
    assert np.abs(np.asarray(dropped) - np.asarray(base)).max() > 1e-3


def test_token_type_ids_change_the_output(model_and_params):
    model, params = model_and_params
    ids, mask = _batch([5], 5)
    zeros = _apply(model)({"params": params}, ids, mask).last_hidden_state
    explicit = _apply(model)({"params": params}, ids, mask, jnp.zeros_like(ids)).last_hidden_state
    ones = _apply(model)({"params": params}, ids, mask, jnp.ones_like(ids)).last_hidden_state
    np.testing.assert_array_equal(zeros, explicit)
    assert np.abs(np.asarray(ones) - np.asarray(zeros)).max() > 1e-4


def test_activations_follow_hidden_act():
    x = jnp.linspace(-4.0, 4.0, 81)
    exact = 0.5 * x * (1.0 + jax.scipy.special.erf(x / np.sqrt(2.0)))
    tanh = 0.5 * x * (1.0 + jnp.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(ACTIVATIONS["gelu"](x), exact, atol=1e-6)
    np.testing.assert_allclose(ACTIVATIONS["gelu_new"](x), tanh, atol=1e-6)
    np.testing.assert_allclose(ACTIVATIONS["relu"](x), np.maximum(x, 0.0))
    assert np.abs(np.asarray(exact - tanh)).max() > 1e-4  # the two gelus are told apart


def test_config_from_hugging_face_dict():
    values = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "hidden_size": 64,
        "num_attention_heads": 8,
        "num_hidden_layers": 3,
        "intermediate_size": 128,
        "vocab_size": 100,
        "hidden_act": "gelu_new",
        "transformers_version": "4.8.2",
    }
    config = BertConfig.from_dict(values)
    assert (config.hidden_size, config.num_hidden_layers, config.hidden_act) == (64, 3, "gelu_new")
    assert BertConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="hidden_act='swish'"):
        BertConfig.from_dict({**values, "hidden_act": "swish"})
    with pytest.raises(ValueError, match="multiple of"):
        BertConfig.from_dict({**values, "num_attention_heads": 5})
    with pytest.raises(ValueError, match="model_type='roberta'"):
        BertConfig.from_dict({**values, "model_type": "roberta"})


def test_masked_lm_tree_and_tied_decoder():
    model = BertForMaskedLM(CONFIG)
    ids, mask = _batch([4, 6], 6)
    params = initial_params(abstract_params(model), CONFIG, seed=1)
    assert set(params) == {"bert", "cls"}
    assert "pooler" not in params["bert"]
    assert _flat_names(params["cls"]) == {
        "predictions/bias",
        "predictions/transform/dense/kernel",
        "predictions/transform/dense/bias",
        "predictions/transform/LayerNorm/scale",
        "predictions/transform/LayerNorm/bias",
    }
    logits = _apply(model)({"params": params}, ids, mask)
    assert logits.shape == (2, 6, CONFIG.vocab_size) and logits.dtype == jnp.float32
    positions = jnp.array([[1, 3], [0, 5]], jnp.int32)
    picked = _apply(model)({"params": params}, ids, mask, masked_positions=positions)
    np.testing.assert_allclose(picked, np.take_along_axis(np.asarray(logits), positions[..., None], 1), atol=1e-5)
    # The decoder is the word-embedding table: changing the table changes the logits' weights.
    grads = jax.jit(jax.grad(lambda p: model.apply({"params": p}, ids, mask).sum()))(params)
    assert np.abs(np.asarray(grads["bert"]["embeddings"]["word_embeddings"]["embedding"])).sum() > 0
