"""Ranking losses over (user, positive, negative) representations, with padding masks.

Every loss returns the *sum* over real rows (padding rows masked out), so that a
multi-device step can add the sums across devices with `lax.psum` and divide by the
global count: the result equals the single-device mean whatever the split.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Ranking objectives a run can train with (`train.loss`): BPR, binary cross-entropy over
# sampled negatives, and the in-batch sampled softmax.
LOSSES = ("bpr", "bce", "softmax")


def bpr_loss_sum(*, user: jax.Array, positive: jax.Array, negative: jax.Array, mask: jax.Array) -> jax.Array:
    """Sum over rows of `softplus(s_neg - s_pos)` (= -log sigmoid(s_pos - s_neg)).

    Args:
      user, positive: `[b, d]` representations.
      negative: `[b, d]` or `[b, n_neg, d]`; several negatives are averaged per row.
      mask: `[b]` bool, False on padding rows.
    """
    positive_score = jnp.sum(user * positive, axis=-1)
    if negative.ndim == 2:
        negative = negative[:, None, :]
    negative_score = jnp.einsum("bd,bnd->bn", user, negative)
    per_row = jnp.mean(jax.nn.softplus(negative_score - positive_score[:, None]), axis=-1)
    return jnp.sum(jnp.where(mask, per_row, 0.0))


def bce_loss_sum(*, user: jax.Array, positive: jax.Array, negative: jax.Array, mask: jax.Array) -> jax.Array:
    """Binary cross-entropy: positives labelled 1, sampled negatives 0; summed over rows.

    Shapes as in `bpr_loss_sum`; a row's negatives count once in total, like its positive.
    """
    positive_score = jnp.sum(user * positive, axis=-1)
    if negative.ndim == 2:
        negative = negative[:, None, :]
    negative_score = jnp.einsum("bd,bnd->bn", user, negative)
    per_row = jax.nn.softplus(-positive_score) + jnp.mean(jax.nn.softplus(negative_score), axis=-1)
    return jnp.sum(jnp.where(mask, per_row, 0.0))


def sampled_softmax_loss_sum(
    *,
    user: jax.Array,
    candidates: jax.Array,
    candidate_items: jax.Array,
    candidate_mask: jax.Array,
    target: jax.Array,
    mask: jax.Array,
    temperature: float,
) -> jax.Array:
    """In-batch sampled softmax: each row's positive against the batch's other positives.

    Args:
      user: `[b, d]` user representations.
      candidates: `[c, d]` the batch's positive-item representations (on several devices,
        gathered from all of them, so the result does not depend on the device count).
      candidate_items: `[c]` int item index of each candidate; a candidate whose item equals
        the row's own positive item is not counted as a negative.
      candidate_mask: `[c]` bool, False on padding candidates.
      target: `[b]` int index of each row's own positive within `candidates`.
      mask: `[b]` bool, False on padding rows.
      temperature: logits are `user @ candidates.T / temperature`.
    """
    logits = (user @ candidates.T) / temperature
    is_target = jnp.arange(candidates.shape[0])[None, :] == target[:, None]
    same_item = candidate_items[None, :] == candidate_items[target][:, None]
    valid = candidate_mask[None, :] & (is_target | ~same_item)
    logits = jnp.where(valid, logits, -jnp.inf)
    log_probability = jax.nn.log_softmax(logits, axis=-1)
    per_row = -jnp.take_along_axis(log_probability, target[:, None], axis=-1)[:, 0]
    return jnp.sum(jnp.where(mask, per_row, 0.0))


def l2_penalty_sum(*arrays: jax.Array, mask: jax.Array) -> jax.Array:
    """`0.5 * sum ||row||^2` over the real rows of each `[b, ..., d]` array (LightGCN's regulariser)."""
    total = 0.0
    for array in arrays:
        squared = jnp.sum(array.reshape(array.shape[0], -1) ** 2, axis=-1)
        total = total + jnp.sum(jnp.where(mask, squared, 0.0))
    return 0.5 * total


def alignment_loss_sum(
    *,
    representation: jax.Array,
    text: jax.Array,
    text_items: jax.Array,
    text_mask: jax.Array,
    target: jax.Array,
    mask: jax.Array,
    temperature: float,
) -> jax.Array:
    """Text-graph alignment (RLMRec's contrastive alignment): in-batch InfoNCE of each item's
    representation against the batch's projected text features, by cosine similarity.

    Row i's positive is its own item's text; the other rows' texts are its negatives (the same
    item's text again is not a negative). Summed over real rows, as the other losses.

    Args:
      representation: `[b, d]` the batch's positive items' collaborative representations.
      text: `[c, d]` their projected text features (on several devices, gathered from all).
      text_items: `[c]` int item index of each text; text_mask: `[c]` bool, False on padding.
      target: `[b]` int index of each row's own text within `text`.
      mask: `[b]` bool, False on padding rows.
      temperature: logits are cosine similarities divided by it.
    """
    return sampled_softmax_loss_sum(
        user=unit_rows(representation),
        candidates=unit_rows(text),
        candidate_items=text_items,
        candidate_mask=text_mask,
        target=target,
        mask=mask,
        temperature=temperature,
    )


def unit_rows(x: jax.Array) -> jax.Array:
    """Rows scaled to unit L2 norm, `[n, d] -> [n, d]`; a zero row (padding) stays zero with a
    finite gradient (rsqrt of a floored square norm, not a division by the norm)."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))
