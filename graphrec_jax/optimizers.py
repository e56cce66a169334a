"""Every optimizer the package builds: Adam for the recommender, AdamW for a text tower.

`adam` is the one factory (Adam, decoupled weight decay with a mask, linear warm-up and decay,
global-norm clipping); `make_optimizer` composes it for a recommender whose parameters may
include a fine-tuned text tower, which trains with its own rate.
"""

from __future__ import annotations

from typing import Any

import jax
import optax


def adam(
    learning_rate: float,
    *,
    weight_decay: float = 0.0,
    decay_mask: Any = None,
    warmup_steps: int = 0,
    total_steps: int = 0,
    clip_norm: float = 0.0,
) -> optax.GradientTransformation:
    """Adam, or AdamW when `weight_decay > 0`.

    Args:
      learning_rate: the peak rate.
      weight_decay: decoupled weight decay; `decay_mask` (a pytree of bools, or a function of
        the parameters returning one) limits it to some parameters.
      warmup_steps, total_steps: with `total_steps > 0`, the rate rises linearly from 0 over
        `warmup_steps` and then falls linearly to 0 at `total_steps`; otherwise it is constant.
      clip_norm: clip gradients to this global norm first (0: no clipping).
    """
    rate: float | optax.Schedule = learning_rate
    if total_steps > 0:
        warmup = max(1, warmup_steps)
        rate = optax.join_schedules(
            [
                optax.linear_schedule(0.0, learning_rate, warmup),
                optax.linear_schedule(learning_rate, 0.0, max(1, total_steps - warmup)),
            ],
            [warmup],
        )
    if weight_decay > 0:
        transform = optax.adamw(rate, weight_decay=weight_decay, mask=decay_mask)
    else:
        transform = optax.adam(rate)
    return optax.chain(optax.clip_by_global_norm(clip_norm), transform) if clip_norm > 0 else transform


def bert_decay_mask(params: Any) -> Any:
    """Weight decay on matrices only, not on biases or LayerNorm scales, as BERT trains."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: jax.tree_util.keystr(path[-1:]) not in ("['bias']", "['scale']"), params
    )


def make_optimizer(
    learning_rate: float, *, text_learning_rate: float | None = None, text_key: str = ""
) -> optax.GradientTransformation:
    """The recommender's optimizer: Adam at `learning_rate` (LightGCN's).

    With `text_learning_rate`, the entry `params[text_key]` (a fine-tuned text tower) trains with
    AdamW (weight decay 0.01) at that rate instead, through `optax.multi_transform`.
    """
    if text_learning_rate is None:
        return adam(learning_rate)
    if not text_key:
        raise ValueError("make_optimizer: text_learning_rate needs text_key, the text tower's entry in params")

    def labels(params: dict) -> dict:
        return {key: ("text" if key == text_key else "model") for key in params}

    return optax.multi_transform(
        {"model": adam(learning_rate), "text": adam(text_learning_rate, weight_decay=0.01)}, labels
    )
