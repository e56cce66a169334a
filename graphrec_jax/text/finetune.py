"""Fine-tuning the BERT tower inside the recommender's train step.

The embeddings and the lower `freeze_layers` transformer layers stay frozen. Their output
for every item (the "prefix states", `[n_items, max_length, hidden]`) is computed once, so a
train step runs only the upper layers and the pooling, on the batch's distinct items. With
`freeze_layers=0` the prefix is the token ids and the whole tower trains.

The trainable parameters live in the train state under `params["text_encoder"]` (an
optimizer of their own, see `optimizers.make_optimizer`); `merge_params` folds them back into
a full BERT parameter tree for saving or serving.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from graphrec_jax.text.bert import BertConfig, BertEmbeddings, BertLayer, BertPooler, compute_dtype, pool

TEXT_PARAMS = "text_encoder"
# How a text fusion's tower trains: frozen (features encoded once) or fine-tuned in the step.
REGIMES = ("frozen", "finetune")
_MASK_BIAS = -1e9


@dataclasses.dataclass(frozen=True)
class TextTower:
    """The trainable top of a BERT: which layers train, how outputs are pooled.

    Attributes:
      config: the BERT architecture.
      freeze_layers: embeddings and layers `0 .. freeze_layers-1` are frozen.
      pooling: "pooler" | "cls" | "mean".
      dtype: compute dtype name ("float32", "bfloat16", "float16").
    """

    config: BertConfig
    freeze_layers: int
    pooling: str
    dtype: str = "float32"

    def __post_init__(self):
        if not 0 <= self.freeze_layers <= self.config.num_hidden_layers:
            raise ValueError(
                f"model.text.freeze_layers={self.freeze_layers} must lie in [0, {self.config.num_hidden_layers}]"
            )

    def trainable_params(self, bert_params: dict) -> dict:
        """The part of a full BERT tree that trains: upper layers, pooler, embeddings if unfrozen."""
        layers = bert_params["encoder"]["layer"]
        trainable = {
            "encoder": {
                "layer": {str(i): layers[str(i)] for i in range(self.freeze_layers, self.config.num_hidden_layers)}
            }
        }
        if "pooler" in bert_params:
            trainable["pooler"] = bert_params["pooler"]
        if self.freeze_layers == 0:
            trainable["embeddings"] = bert_params["embeddings"]
        return trainable

    def merge_params(self, bert_params: dict, trainable: dict) -> dict:
        """A full BERT tree with the trained parts of `trainable` in place."""
        merged = jax.tree.map(lambda leaf: leaf, bert_params)
        merged["encoder"] = {"layer": {**bert_params["encoder"]["layer"], **trainable["encoder"]["layer"]}}
        for key in ("pooler", "embeddings"):
            if key in trainable:
                merged[key] = trainable[key]
        return merged

    def prefix(self, bert_params: dict, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Frozen part: `[b, t]` ids -> `[b, t, hidden]` states after layer `freeze_layers - 1`.

        With `freeze_layers=0` the prefix is the ids themselves. Jittable.
        """
        if self.freeze_layers == 0:
            return input_ids
        dtype = compute_dtype(self.dtype)
        hidden = BertEmbeddings(self.config, dtype).apply(
            {"params": bert_params["embeddings"]}, input_ids, jnp.zeros_like(input_ids), True
        )
        bias = _mask_bias(attention_mask)
        for index in range(self.freeze_layers):
            hidden = BertLayer(self.config, dtype).apply(
                {"params": bert_params["encoder"]["layer"][str(index)]}, hidden, bias, True
            )
        return hidden

    def embed(
        self,
        trainable: dict,
        prefix: jax.Array,
        attention_mask: jax.Array,
        *,
        deterministic: bool = True,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Trainable part: prefix `[b, t, hidden]` (or ids) -> pooled `[b, hidden]` float32. Jittable."""
        dtype = compute_dtype(self.dtype)
        rngs = None if deterministic else {"dropout": rng}
        bias = _mask_bias(attention_mask)
        if self.freeze_layers == 0:
            hidden = BertEmbeddings(self.config, dtype).apply(
                {"params": trainable["embeddings"]}, prefix, jnp.zeros_like(prefix), deterministic, rngs=rngs
            )
        else:
            hidden = prefix.astype(dtype)
        for index in range(self.freeze_layers, self.config.num_hidden_layers):
            if rngs is not None:
                rngs = {"dropout": jax.random.fold_in(rng, index)}
            hidden = BertLayer(self.config, dtype).apply(
                {"params": trainable["encoder"]["layer"][str(index)]}, hidden, bias, deterministic, rngs=rngs
            )
        pooled = None
        if self.pooling == "pooler":
            pooled = BertPooler(self.config, dtype).apply({"params": trainable["pooler"]}, hidden)
        return pool(hidden, attention_mask, pooled, self.pooling)


def _mask_bias(attention_mask: jax.Array) -> jax.Array:
    """`[b, t]` mask -> `[b, 1, 1, t]` additive attention bias (0 or -1e9), float32."""
    return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, _MASK_BIAS).astype(jnp.float32)


def unit_rows(features: jax.Array) -> jax.Array:
    """Rows scaled to unit L2 norm, as the frozen features are: `[n, h] -> [n, h]`."""
    norms = jnp.linalg.norm(features, axis=-1, keepdims=True)
    return features / jnp.maximum(norms, 1e-12)


def compute_prefix_states(
    tower: TextTower, bert_params: dict, tokens: dict[str, np.ndarray], batch_size: int = 64
) -> np.ndarray:
    """Frozen prefix for every text: `[n, max_length, hidden]` in the compute dtype (or ids).

    Not jittable as a whole (host loop over fixed-size batches of one compiled function).
    """
    input_ids, mask = tokens["input_ids"], tokens["attention_mask"]
    if tower.freeze_layers == 0:
        return input_ids
    run = jax.jit(tower.prefix)
    count = len(input_ids)
    outputs = []
    for start in range(0, count, batch_size):
        ids = input_ids[start : start + batch_size]
        real = len(ids)
        if real < batch_size:  # one static shape: pad the last batch
            ids = np.concatenate([ids, np.zeros((batch_size - real,) + ids.shape[1:], ids.dtype)])
            batch_mask = np.concatenate([mask[start:], np.zeros((batch_size - real,) + mask.shape[1:], mask.dtype)])
        else:
            batch_mask = mask[start : start + batch_size]
        outputs.append(np.asarray(run(bert_params, ids, batch_mask))[:real])
    return np.concatenate(outputs)


def embed_all(
    tower: TextTower, trainable: dict, prefix: np.ndarray, attention_mask: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """Current unit-norm text features of every item: `[n, hidden]` float32 (host loop)."""
    run = jax.jit(lambda params, states, mask: unit_rows(tower.embed(params, states, mask)))
    outputs = []
    count = len(prefix)
    for start in range(0, count, batch_size):
        rows = np.arange(start, min(start + batch_size, count))
        padded = np.concatenate([rows, np.zeros(batch_size - len(rows), rows.dtype)])
        outputs.append(np.asarray(run(trainable, prefix[padded], attention_mask[padded]))[: len(rows)])
    return np.concatenate(outputs).astype(np.float32)


def choose_text_items(item_rows: np.ndarray, capacity: int, rng: np.random.Generator) -> np.ndarray:
    """Items whose text the tower re-encodes in one step: `[capacity]` int32.

    The batch's distinct items, or a random `capacity` of them when there are more (which
    bounds the tower's cost per step); short lists repeat their first item, which encodes to
    the same features and so changes nothing.
    """
    items = np.unique(item_rows)
    if len(items) > capacity:
        items = np.sort(rng.choice(items, capacity, replace=False))
    padded = np.full(capacity, items[0], np.int32)
    padded[: len(items)] = items
    return padded


def params_without_text(params: dict) -> dict:
    """The recommender's own parameters (everything but the text tower)."""
    return {key: value for key, value in params.items() if key != TEXT_PARAMS}
