"""Our BERT in flax.linen: the configuration, the encoder, pooling and the masked-LM head.

The parameter tree keeps the names of Hugging Face's v4 `modeling_flax_bert.py`
(`embeddings/word_embeddings/embedding`, `encoder/layer/{i}/attention/self/query/kernel`,
`pooler/dense`, `cls/predictions/...`), so a PyTorch checkpoint loads by a plain name
mapping (`graphrec_jax.text.pretrained`). Parameters are float32; `dtype` is the
compute dtype (bfloat16 on accelerators).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

# Hugging Face `hidden_act` names and the function each one means.
ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
}
POOLINGS = ("pooler", "cls", "mean")
DTYPES = ("float32", "bfloat16", "float16")  # compute dtypes of the tower
# Added to attention logits at padded keys. Logits are masked and soft-maxed in float32
# whatever the compute dtype, so this stays finite (no NaN for a row that is all padding)
# and exp() of it is exactly 0.
_MASK_BIAS = -1e9


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The architecture, with the field names of a Hugging Face BERT `config.json`."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be a multiple of num_attention_heads={self.num_attention_heads}"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> BertConfig:
        """Builds from a `config.json` dict; unknown keys (architectures, ...) are ignored."""
        if values.get("model_type", "bert") != "bert":
            raise ValueError(
                f"{source}: model_type={values['model_type']!r}; only BERT checkpoints "
                "(model_type 'bert') are supported"
            )
        if values.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{source}: only position_embedding_type 'absolute' is supported")
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    @classmethod
    def from_json_file(cls, path: str | Path) -> BertConfig:
        path = Path(path)
        with open(path) as file:
            return cls.from_dict(json.load(file), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """A Hugging Face `config.json` dict that `transformers.BertConfig` reads."""
        values = dataclasses.asdict(self)
        values.update(model_type="bert", position_embedding_type="absolute")
        return values


class BertOutput(NamedTuple):
    last_hidden_state: Array  # [b, t, hidden] in the compute dtype
    pooler_output: Array | None  # [b, hidden]: tanh(dense([CLS])); None without a pooler


def _dense(config: BertConfig, features: int, dtype: Dtype, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        kernel_init=nn.initializers.normal(config.initializer_range),
        name=name,
    )


def _layer_norm(config: BertConfig, dtype: Dtype) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=dtype, name="LayerNorm")


class BertEmbeddings(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: Array, token_type_ids: Array, deterministic: bool) -> Array:
        config = self.config

        def embed(name: str, size: int, ids: Array) -> Array:
            # float32 lookups: the sum of three tables is rounded once, to the compute dtype.
            init = nn.initializers.normal(config.initializer_range)
            return nn.Embed(size, config.hidden_size, embedding_init=init, name=name)(ids)

        positions = jnp.arange(input_ids.shape[-1])[None, :]
        hidden = (
            embed("word_embeddings", config.vocab_size, input_ids)
            + embed("position_embeddings", config.max_position_embeddings, positions)
            + embed("token_type_embeddings", config.type_vocab_size, token_type_ids)
        )
        hidden = _layer_norm(config, self.dtype)(hidden.astype(self.dtype))
        return nn.Dropout(config.hidden_dropout_prob)(hidden, deterministic=deterministic)


class BertSelfAttention(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array, mask_bias: Array, deterministic: bool) -> Array:
        config = self.config
        heads = config.num_attention_heads
        head_dim = config.hidden_size // heads

        def project(name: str) -> Array:  # [b, heads, t, head_dim]
            projected = _dense(config, config.hidden_size, self.dtype, name)(hidden)
            return projected.reshape(projected.shape[:-1] + (heads, head_dim)).transpose(0, 2, 1, 3)

        # Heads-major layout: XLA's CPU batched matmuls run about a third faster with the
        # batch dimensions leading than with "bqhd,bkhd" operands.
        query, key, value = project("query"), project("key"), project("value")
        query = query / jnp.sqrt(head_dim).astype(self.dtype)
        logits = jnp.einsum("bhqd,bhkd->bhqk", query, key).astype(jnp.float32)
        weights = jax.nn.softmax(logits + mask_bias, axis=-1).astype(self.dtype)
        weights = nn.Dropout(config.attention_probs_dropout_prob)(weights, deterministic=deterministic)
        context = jnp.einsum("bhqk,bhkd->bqhd", weights, value)
        return context.reshape(context.shape[:2] + (config.hidden_size,))


class BertSelfOutput(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual); `attention/output` and `output` in the tree."""

    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array, residual: Array, deterministic: bool) -> Array:
        hidden = _dense(self.config, self.config.hidden_size, self.dtype, "dense")(hidden)
        hidden = nn.Dropout(self.config.hidden_dropout_prob)(hidden, deterministic=deterministic)
        return _layer_norm(self.config, self.dtype)(hidden + residual)


class BertAttention(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array, mask_bias: Array, deterministic: bool) -> Array:
        context = BertSelfAttention(self.config, self.dtype, name="self")(hidden, mask_bias, deterministic)
        return BertSelfOutput(self.config, self.dtype, name="output")(context, hidden, deterministic)


class BertIntermediate(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array) -> Array:
        hidden = _dense(self.config, self.config.intermediate_size, self.dtype, "dense")(hidden)
        return ACTIVATIONS[self.config.hidden_act](hidden)


class BertLayer(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array, mask_bias: Array, deterministic: bool) -> Array:
        attended = BertAttention(self.config, self.dtype, name="attention")(hidden, mask_bias, deterministic)
        expanded = BertIntermediate(self.config, self.dtype, name="intermediate")(attended)
        return BertSelfOutput(self.config, self.dtype, name="output")(expanded, attended, deterministic)


class BertLayerCollection(nn.Module):
    """The `encoder/layer` node; its children are named "0".."n-1" as in the HF tree."""

    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array, mask_bias: Array, deterministic: bool) -> Array:
        for index in range(self.config.num_hidden_layers):
            hidden = BertLayer(self.config, self.dtype, name=str(index))(hidden, mask_bias, deterministic)
        return hidden


class BertEncoder(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array, mask_bias: Array, deterministic: bool) -> Array:
        return BertLayerCollection(self.config, self.dtype, name="layer")(hidden, mask_bias, deterministic)


class BertPooler(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array) -> Array:
        return jnp.tanh(_dense(self.config, self.config.hidden_size, self.dtype, "dense")(hidden[:, 0]))


class BertModel(nn.Module):
    """BERT encoder: embeddings, `num_hidden_layers` transformer layers and the [CLS] pooler.

    Attributes:
      config: the architecture.
      dtype: compute dtype (float32 on CPU, bfloat16 on accelerators); parameters stay float32.
      add_pooling_layer: whether the tree has `pooler/dense` (HF's masked LM has none).
    """

    config: BertConfig
    dtype: Dtype = jnp.float32
    add_pooling_layer: bool = True

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        attention_mask: Array,
        token_type_ids: Array | None = None,
        *,
        deterministic: bool = True,
    ) -> BertOutput:
        """Encodes a padded batch.

        Args:
          input_ids: `[b, t]` int32 token ids.
          attention_mask: `[b, t]`, 1 for real tokens and 0 for padding.
          token_type_ids: `[b, t]` int32 segment ids; zeros when None.
          deterministic: False turns dropout on (needs a "dropout" rng).

        Returns:
          `BertOutput(last_hidden_state [b, t, hidden], pooler_output [b, hidden] or None)`,
          both in the compute dtype.
        """
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        # [b, 1, 1, t]: broadcast over heads and queries.
        mask_bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, _MASK_BIAS).astype(jnp.float32)
        hidden = BertEmbeddings(self.config, self.dtype, name="embeddings")(input_ids, token_type_ids, deterministic)
        hidden = BertEncoder(self.config, self.dtype, name="encoder")(hidden, mask_bias, deterministic)
        pooled = BertPooler(self.config, self.dtype, name="pooler")(hidden) if self.add_pooling_layer else None
        return BertOutput(hidden, pooled)


def pool(hidden: Array, attention_mask: Array, pooler_output: Array | None, pooling: str) -> Array:
    """One vector per sequence.

    Args:
      hidden: `[b, t, hidden]` last hidden state.
      attention_mask: `[b, t]`, 1 for real tokens.
      pooler_output: `[b, hidden]` (only read by "pooler").
      pooling: "pooler" (tanh dense on [CLS]), "cls" (the [CLS] hidden state) or "mean"
        (mean over real tokens; a row without real tokens gives zeros).

    Returns:
      `[b, hidden]` float32.
    """
    if pooling == "pooler":
        if pooler_output is None:
            raise ValueError("pooling='pooler' needs a model built with add_pooling_layer=True")
        return pooler_output.astype(jnp.float32)
    if pooling == "cls":
        return hidden[:, 0].astype(jnp.float32)
    if pooling == "mean":
        mask = attention_mask.astype(jnp.float32)[..., None]
        total = jnp.sum(hidden.astype(jnp.float32) * mask, axis=1)
        return total / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
    raise ValueError(f"pooling={pooling!r}; expected one of {POOLINGS}")


class BertPredictionHeadTransform(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array) -> Array:
        hidden = _dense(self.config, self.config.hidden_size, self.dtype, "dense")(hidden)
        hidden = ACTIVATIONS[self.config.hidden_act](hidden)
        return _layer_norm(self.config, self.dtype)(hidden)


class BertLMPredictionHead(nn.Module):
    """`cls/predictions`: transform, then a decoder tied to the word embeddings, plus `bias`."""

    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array, word_embeddings: Array) -> Array:
        hidden = BertPredictionHeadTransform(self.config, self.dtype, name="transform")(hidden)
        bias = self.param("bias", nn.initializers.zeros, (self.config.vocab_size,))
        logits = jnp.einsum("...d,vd->...v", hidden, word_embeddings.astype(self.dtype))
        return logits.astype(jnp.float32) + bias


class BertOnlyMLMHead(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: Array, word_embeddings: Array) -> Array:
        return BertLMPredictionHead(self.config, self.dtype, name="predictions")(hidden, word_embeddings)


class BertForMaskedLM(nn.Module):
    """BERT with the masked-LM head; the tree is `{"bert": ..., "cls": {"predictions": ...}}`.

    The encoder has no pooler, as in Hugging Face's `BertForMaskedLM`.
    """

    config: BertConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        attention_mask: Array,
        token_type_ids: Array | None = None,
        *,
        masked_positions: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """Vocabulary logits, float32.

        Args:
          input_ids, attention_mask, token_type_ids: as `BertModel`, `[b, t]`.
          masked_positions: `[b, p]` int32 positions to predict; None predicts all `t`
            (a `[b, t, vocab_size]` tensor: costly for real vocabularies).

        Returns:
          `[b, p, vocab_size]` (or `[b, t, vocab_size]`) float32 logits.
        """
        bert = BertModel(self.config, self.dtype, add_pooling_layer=False, name="bert")
        hidden, _ = bert(input_ids, attention_mask, token_type_ids, deterministic=deterministic)
        if masked_positions is not None:
            hidden = jnp.take_along_axis(hidden, masked_positions[..., None], axis=1)
        word_embeddings = bert.variables["params"]["embeddings"]["word_embeddings"]["embedding"]
        return BertOnlyMLMHead(self.config, self.dtype, name="cls")(hidden, word_embeddings)


def compute_dtype(name: str) -> Dtype:
    """ "float32" | "bfloat16" | "float16" -> the jnp dtype."""
    dtypes = dict(zip(DTYPES, (jnp.float32, jnp.bfloat16, jnp.float16), strict=True))
    if name not in dtypes:
        raise ValueError(f"dtype={name!r}; expected one of {DTYPES}")
    return dtypes[name]
