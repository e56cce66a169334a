"""Domain-adaptive masked-language-model pretraining of the text tower on catalogue text.

`pretrain_mlm` continues BERT's masked-LM objective on item texts and saves the adapted
tower as a Hugging Face checkpoint directory, which `TextEncoder.from_pretrained` and
the recommender's `model.text.encoder` read like any other. Masks are drawn on the host
(BERT's 80/10/10 rule over real, non-special tokens); the train step is one compiled,
pure function over static shapes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from graphrec_jax.optimizers import adam, bert_decay_mask
from graphrec_jax.text.bert import BertForMaskedLM
from graphrec_jax.text.encoder import pad_token_lists
from graphrec_jax.text.pretrained import (
    abstract_params,
    bert_params_from_state_dict,
    initial_params,
    mlm_head_params_from_state_dict,
    read_checkpoint,
    resolve_model_directory,
    save_pretrained,
    transformers_tokenizers,
)

Batch = dict[str, np.ndarray]


class PretrainingError(ValueError):
    """A request `pretrain_mlm` cannot run (a bad count, no text, a length past the encoder's), or
    a run whose loss diverged; the message names the fix. Scripts answer it in one line."""


def mask_tokens(
    rng: np.random.Generator,
    input_ids: np.ndarray,
    candidates: np.ndarray,
    *,
    num_predictions: int,
    mask_probability: float,
    mask_token_id: int,
    vocab_size: int,
) -> Batch:
    """BERT masking of a batch, on the host.

    In each row, `round(mask_probability * number of candidates)` candidates (at least
    one, at most `num_predictions`) are chosen; 80% of them become [MASK], 10% a random
    token and 10% stay as they are. The model predicts the original token at each.

    Args:
      input_ids: `[b, t]` int32.
      candidates: `[b, t]` bool, real tokens that are not [CLS]/[SEP]/[PAD]/...
      num_predictions: `p`, the static number of prediction slots per row.

    Returns:
      `input_ids [b, t]` (masked), `masked_positions [b, p]`, `labels [b, p]` int32 and
      `label_weights [b, p]` float32 (1 for a used slot, 0 for an empty one).
    """
    batch_size, length = input_ids.shape
    scores = np.where(candidates, rng.random((batch_size, length)), np.inf)
    positions = np.argsort(scores, axis=1)[:, :num_predictions]
    available = candidates.sum(axis=1)
    wanted = np.where(available > 0, np.maximum(1, np.rint(available * mask_probability)), 0)
    used = np.arange(num_predictions)[None, :] < np.minimum(wanted, num_predictions)[:, None]
    labels = np.take_along_axis(input_ids, positions, axis=1)
    draw = rng.random((batch_size, num_predictions))
    replacement = np.where(
        draw < 0.8, mask_token_id, np.where(draw < 0.9, rng.integers(0, vocab_size, draw.shape), labels)
    )
    masked = input_ids.copy()
    rows = np.broadcast_to(np.arange(batch_size)[:, None], positions.shape)
    masked[rows[used], positions[used]] = replacement[used]
    return {
        "input_ids": masked.astype(np.int32),
        "masked_positions": positions.astype(np.int32),
        "labels": np.where(used, labels, 0).astype(np.int32),
        "label_weights": used.astype(np.float32),
    }


def mlm_loss(*, logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean cross-entropy over used slots: logits `[b, p, v]`, labels and weights `[b, p]`."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def make_train_step(model: BertForMaskedLM, optimizer: optax.GradientTransformation):
    """`train_step(params, opt_state, batch, rng) -> (params, opt_state, loss)`, pure and jitted."""

    def loss_fn(params, batch, rng):
        logits = model.apply(
            {"params": params},
            batch["input_ids"],
            batch["attention_mask"],
            masked_positions=batch["masked_positions"],
            deterministic=False,
            rngs={"dropout": rng},
        )
        return mlm_loss(logits=logits, labels=batch["labels"], weights=batch["label_weights"])

    def train_step(params, opt_state, batch, rng):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(train_step, donate_argnums=(0, 1))


def _batch_indices(count: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless full batches of text indices, reshuffled every pass over the texts."""
    stream = np.zeros(0, np.int64)
    while True:
        while len(stream) < batch_size:
            stream = np.concatenate([stream, rng.permutation(count)])
        yield stream[:batch_size]
        stream = stream[batch_size:]


def pretrain_mlm(
    encoder_dir: str | Path,
    texts: Sequence[str | None],
    output_dir: str | Path,
    *,
    num_steps: int,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    mask_probability: float = 0.15,
    max_length: int = 128,
    seed: int = 0,
    log_every: int = 10,
) -> dict[str, Any]:
    """Continues masked-LM pretraining of a BERT checkpoint on `texts`; saves it to `output_dir`.

    The checkpoint's masked-LM head is used when it has one and initialised otherwise
    (sentence-embedding models such as all-MiniLM-L6-v2 ship none). Losses go to a tqdm
    bar and to `output_dir/pretrain_metrics.jsonl`; the saved directory holds the encoder
    (pooler kept as loaded), the head and the tokenizer. Not jittable (host loop, I/O).

    Returns:
      `{"first_loss", "last_loss", "losses" (one per step), "num_steps", "output_dir"}`.
    """
    AutoTokenizer = transformers_tokenizers().AutoTokenizer

    if num_steps < 1 or batch_size < 1 or log_every < 1:
        raise PretrainingError(f"num_steps={num_steps}, batch_size={batch_size}, log_every={log_every} must be >= 1")
    if not 0.0 < mask_probability < 1.0:
        raise PretrainingError(f"mask_probability={mask_probability} must lie in (0, 1)")
    texts = ["" if text is None else str(text) for text in texts]
    if not any(texts):
        raise PretrainingError("pretrain_mlm needs at least one non-empty text")
    directory = resolve_model_directory(encoder_dir)
    config, state = read_checkpoint(directory)
    if max_length > config.max_position_embeddings:
        raise PretrainingError(
            f"max_length={max_length} exceeds the encoder's max_position_embeddings={config.max_position_embeddings}; "
            f"use a max_length of {config.max_position_embeddings} or less"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if tokenizer.mask_token_id is None:
        raise PretrainingError(f"the tokenizer in {directory} has no [MASK] token")

    encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]
    tokens = pad_token_lists(encoded, len(encoded), max_length, config.pad_token_id)
    special = np.isin(tokens["input_ids"], np.asarray(tokenizer.all_special_ids))
    candidates = (tokens["attention_mask"] > 0) & ~special

    encoder_params = bert_params_from_state_dict(state, config, source=str(directory))
    pooler = encoder_params.pop("pooler")
    model = BertForMaskedLM(config)
    head = mlm_head_params_from_state_dict(state, config, source=str(directory))
    if head is None:
        head = initial_params(abstract_params(model)["cls"], config, seed)
    params = {"bert": encoder_params, "cls": head}

    # AdamW with 10% linear warm-up, linear decay to zero, weight decay 0.01, clipping at 1.
    optimizer = adam(
        learning_rate,
        weight_decay=0.01,
        decay_mask=bert_decay_mask(params),
        warmup_steps=max(1, num_steps // 10),
        total_steps=num_steps,
        clip_norm=1.0,
    )
    opt_state = optimizer.init(params)
    train_step = make_train_step(model, optimizer)
    num_predictions = max(1, math.ceil(max_length * mask_probability))
    host_rng = np.random.default_rng(seed)
    # XLA's RngBitGenerator: the default threefry dropout masks double the step's CPU compile time.
    dropout_key = jax.random.key(seed, impl="rbg")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    losses: list[float] = []
    batches = _batch_indices(len(texts), batch_size, host_rng)
    with (
        open(output_dir / "pretrain_metrics.jsonl", "w") as metrics,
        tqdm(range(1, num_steps + 1), desc="MLM pretraining") as bar,
    ):
        for step in bar:
            rows = next(batches)
            batch = mask_tokens(
                host_rng,
                tokens["input_ids"][rows],
                candidates[rows],
                num_predictions=num_predictions,
                mask_probability=mask_probability,
                mask_token_id=tokenizer.mask_token_id,
                vocab_size=config.vocab_size,
            )
            batch["attention_mask"] = tokens["attention_mask"][rows]
            params, opt_state, loss = train_step(params, opt_state, batch, jax.random.fold_in(dropout_key, step))
            losses.append(float(loss))
            if not math.isfinite(losses[-1]):
                raise PretrainingError(f"MLM loss is {losses[-1]} at step {step}; lower the learning rate")
            if step % log_every == 0 or step in (1, num_steps):
                window = losses[-log_every:] if step % log_every == 0 else losses[-1:]
                record = {"step": step, "loss": float(np.mean(window)), "last_loss": losses[-1]}
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                bar.set_postfix(loss=f"{record['loss']:.4f}")

    params = jax.device_get(params)
    save_pretrained(
        output_dir,
        config,
        {**params["bert"], "pooler": pooler},
        tokenizer,
        mlm_head_params=params["cls"],
    )
    return {
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "losses": losses,
        "num_steps": num_steps,
        "output_dir": str(output_dir),
    }
