"""The compiled training step: the train state and the pure `train_step`.

`train_step(state, batch, rng) -> (state, metrics)` is pure, compiled once, and mapped over
devices with `jax.pmap(..., axis_name="batch")`; gradients are averaged with `lax.pmean`.
Losses are normalised by the global count of real rows, so 1 device and N devices give
the same update up to float rounding. The batch is a `batches.Batch` (its docstring gives
every field's shape and dtype).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from graphrec_jax.devices import AXIS
from graphrec_jax.models import losses
from graphrec_jax.models.network import RecommenderModel
from graphrec_jax.text import finetune
from graphrec_jax.training.batches import Batch


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training. `step` is a scalar int32 array."""

    step: jax.Array
    params: Any
    opt_state: Any


def create_train_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def batch_rows(batch: Batch, num_users: int) -> jax.Array:
    """Node rows the loss reads: users, then positives, then negatives: `[b * (2 + n_neg)]`."""
    return jnp.concatenate([batch.users, batch.positives + num_users, batch.negatives.reshape(-1) + num_users])


def make_train_step(
    model: RecommenderModel,
    optimizer: optax.GradientTransformation,
    *,
    loss: str,
    l2_weight: float,
    num_users: int,
    softmax_temperature: float = 0.1,
    axis_name: str | None = AXIS,
    text_tower=None,
    align_weight: float = 0.0,
    align_temperature: float = 0.2,
) -> Callable:
    """Builds the pure train step for `model`.

    Args:
      model: the network.
      optimizer: the optax transformation the state was created with.
      loss: one of `models.losses.LOSSES`.
      l2_weight: weight of the L2 penalty on the batch's layer-0 rows (LightGCN's decay).
      num_users: node offset of items in the graph.
      softmax_temperature: the in-batch softmax's temperature (`loss="softmax"`).
      axis_name: the pmap axis to average over, or None for an unmapped step.
      text_tower: a `text.finetune.TextTower` to fine-tune inside the step on the batch's
        items; its parameters are `params["text_encoder"]`.
      align_weight: weight of the text-graph alignment loss (0: off): in-batch InfoNCE between
        each positive item's representation (the propagated one the ranking loss scores, so the
        alignment shapes what is ranked) and its text feature mapped by the model's
        `align_projection` (`model.text_alignment` must be set), as RLMRec aligns them.
      align_temperature: the alignment's temperature (cosine similarities are divided by it).
    """
    if loss not in losses.LOSSES:
        raise ValueError(f"loss={loss!r} is not one of {losses.LOSSES}")
    aligned = align_weight > 0
    if aligned and not model.text_alignment:
        raise ValueError("align_weight > 0 needs a model built with text_alignment=True (its align_projection)")

    def across_devices(reduce, value):
        # Over one device a reduction is the identity, but XLA still emits the all-reduce, and
        # on CPU it copies its operand (Gowalla's 18 MB gradient: 7.7 ms in a profiled step).
        if axis_name is None or jax.lax.axis_size(axis_name) == 1:
            return value
        return reduce(value, axis_name)

    def train_step(state: TrainState, batch: Batch, rng: jax.Array):
        mask = batch.mask
        batch_size = mask.shape[0]
        num_negatives = batch.negatives.shape[1]
        rows = batch_rows(batch, num_users)
        count = jnp.sum(mask).astype(jnp.float32)
        # Dividing by the mean count over devices, then averaging gradients with pmean,
        # equals the single-device mean over all real rows.
        mean_count = jnp.maximum(across_devices(jax.lax.pmean, count), 1.0)
        step_rng = jax.random.fold_in(rng, state.step)
        if axis_name is not None:
            step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))

        def loss_fn(params):
            model_params, text_features = params, batch.text_features
            if text_tower is not None:
                model_params = finetune.params_without_text(params)
                text_features = _fresh_text_features(
                    text_tower, params[finetune.TEXT_PARAMS], batch, num_users, step_rng
                )
            # The positives' full-graph item indices (a sampled batch's `positives` are subgraph positions).
            positive_items = batch.positives if batch.positive_items is None else batch.positive_items
            outputs = model.apply(
                {"params": model_params},
                batch.graph,
                text_features,
                rows=rows,
                deterministic=False,
                rngs={"dropout": step_rng},
                align_text=text_features[num_users + positive_items] if aligned else None,
                mutable=["intermediates"] if aligned else False,
            )
            (representation, inputs), intermediates = outputs if aligned else (outputs, None)
            user = representation[:batch_size]
            positive = representation[batch_size : 2 * batch_size]
            negative = representation[2 * batch_size :].reshape(batch_size, num_negatives, -1)
            if loss == "bpr":
                ranking = losses.bpr_loss_sum(user=user, positive=positive, negative=negative, mask=mask)
            elif loss == "bce":
                ranking = losses.bce_loss_sum(user=user, positive=positive, negative=negative, mask=mask)
            else:
                ranking = _softmax_loss_sum(user, positive, batch, softmax_temperature, axis_name)
            penalty = losses.l2_penalty_sum(
                inputs[:batch_size],
                inputs[batch_size : 2 * batch_size],
                inputs[2 * batch_size :].reshape(batch_size, num_negatives, -1),
                mask=mask,
            )
            alignment = 0.0
            if aligned:
                projected_text = intermediates["intermediates"]["aligned_text"][0]
                alignment = _alignment_loss_sum(
                    positive, projected_text, positive_items, mask, align_temperature, axis_name
                )
            total = (ranking + l2_weight * penalty + align_weight * alignment) / mean_count
            return total, (ranking, penalty, alignment)

        (_, (ranking, penalty, alignment)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grads = across_devices(jax.lax.pmean, grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        total_count = jnp.maximum(across_devices(jax.lax.psum, count), 1.0)
        ranking = across_devices(jax.lax.psum, ranking) / total_count
        penalty = across_devices(jax.lax.psum, penalty) / total_count
        metrics = {"loss": ranking + l2_weight * penalty, "ranking_loss": ranking, "l2_penalty": penalty}
        if aligned:
            alignment = across_devices(jax.lax.psum, alignment) / total_count
            metrics["loss"] = metrics["loss"] + align_weight * alignment
            metrics["align_loss"] = alignment
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def _fresh_text_features(text_tower, trainable, batch: Batch, num_users, rng):
    """`text_features` with the batch's items re-encoded by the tower being trained.

    The other items keep the features of the last refresh (constants in this step), so the
    text gradient flows through exactly the items the tower encoded.
    """
    items = batch.text_items
    fresh = text_tower.embed(
        trainable,
        batch.text_prefix[items],
        batch.text_mask[items],
        deterministic=False,
        rng=jax.random.fold_in(rng, 1),
    )
    return batch.text_features.at[num_users + items].set(finetune.unit_rows(fresh))


def _in_batch_candidates(values, items, mask, rows: int, axis_name):
    """(candidates, their items, their mask, each row's own candidate index) for an in-batch
    softmax: every device's rows are gathered, so the negatives do not depend on the device count."""
    if axis_name is None:
        return values, items, mask, jnp.arange(rows)
    offset = jax.lax.axis_index(axis_name) * rows
    gather = functools.partial(jax.lax.all_gather, axis_name=axis_name, tiled=True)
    return gather(values), gather(items), gather(mask), offset + jnp.arange(rows)


def _alignment_loss_sum(representation, projected_text, items, mask, temperature, axis_name):
    """In-batch InfoNCE of positive items' representations against their projected texts; the
    texts of every device are the candidates, so the loss does not depend on the device count."""
    candidates, candidate_items, candidate_mask, target = _in_batch_candidates(
        projected_text, items, mask, representation.shape[0], axis_name
    )
    return losses.alignment_loss_sum(
        representation=representation,
        text=candidates,
        text_items=candidate_items,
        text_mask=candidate_mask,
        target=target,
        mask=mask,
        temperature=temperature,
    )


def _softmax_loss_sum(user, positive, batch: Batch, temperature, axis_name):
    mask = batch.mask
    candidates, candidate_items, candidate_mask, target = _in_batch_candidates(
        positive, batch.positives, mask, user.shape[0], axis_name
    )
    return losses.sampled_softmax_loss_sum(
        user=user,
        candidates=candidates,
        candidate_items=candidate_items,
        candidate_mask=candidate_mask,
        target=target,
        mask=mask,
        temperature=temperature,
    )
