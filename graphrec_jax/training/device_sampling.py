"""Many steps per compiled call: triples drawn on device, a block of steps under `lax.scan`.

With `train.steps_per_call = K > 1`, full-graph training runs K steps inside one compiled call:
each step draws its global batch of (user, positive, negative) triples on device from a
device-resident table of the users' training items, takes this device's share, and runs the
same pure `train_step`. No host sampling, padding or transfer remains between steps, which is
what decides step time on small graphs and on accelerators.

The draws follow the host sampler's distribution (`batches.TripleSampler`): one triple per
training interaction per epoch, the user uniform over users with items, the positive uniform
over that user's items, each negative uniform over the negative pool and redrawn while it is
one of the user's items (up to a fixed number of rounds, stopping at the first with nothing to
redraw; a row still holding a positive after them is masked out, which on a sparse graph
practically never happens). Batch `b` of epoch `e` draws
from a key folded from (seed, e, b) alone, so every device count and every resumed run draws
the same global batches. Not the host sampler's exact triples: a run with K > 1 is its own
deterministic run.
"""

from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np

from graphrec_jax.devices import AXIS
from graphrec_jax.graph.sparse import pairs_by_row
from graphrec_jax.training.batches import Batch

REDRAW_ROUNDS = 16


@flax.struct.dataclass
class PositiveTable:
    """The users' training items on device: what on-device sampling draws from.

    Attributes:
      offsets: `[num_users + 1]` int32, user `u`'s items are `items[offsets[u]:offsets[u + 1]]`.
      items: `[nnz]` int32, each user's items sorted ascending.
      active: `[num_active]` int32, users with at least one item.
      pool: `[pool]` int32, the items negatives are drawn from.
      search_steps: binary-search iterations covering the longest user row (static).
    """

    offsets: jax.Array
    items: jax.Array
    active: jax.Array
    pool: jax.Array
    search_steps: int = flax.struct.field(pytree_node=False)

    @classmethod
    def build(cls, num_users: int, users: np.ndarray, items: np.ndarray, pool: np.ndarray) -> PositiveTable:
        """From the training interactions (host numpy) and the negative pool `[pool]`."""
        offsets, items_by_user = pairs_by_row(users, items, num_users)
        degree = np.diff(offsets)
        return cls(
            offsets=offsets.astype(np.int32),
            items=items_by_user,
            active=np.flatnonzero(degree > 0).astype(np.int32),
            pool=np.asarray(pool, np.int32),
            search_steps=max(1, math.ceil(math.log2(int(degree.max(initial=1)) + 1))),
        )


def _holds(table: PositiveTable, users: jax.Array, candidates: jax.Array) -> jax.Array:
    """Whether each user's sorted item row holds the candidate: a binary search per entry.
    `users [b, 1]`, `candidates [b, n]` -> `[b, n]` bool."""
    end = jnp.broadcast_to(table.offsets[users + 1], candidates.shape)
    last = table.items.shape[0] - 1

    def halve(_, bounds):
        low, high = bounds
        middle = (low + high) // 2
        smaller = table.items[jnp.minimum(middle, last)] < candidates
        open_range = low < high
        return jnp.where(open_range & smaller, middle + 1, low), jnp.where(open_range & ~smaller, middle, high)

    low, _ = jax.lax.fori_loop(
        0, table.search_steps, halve, (jnp.broadcast_to(table.offsets[users], candidates.shape), end)
    )
    return (low < end) & (table.items[jnp.minimum(low, last)] == candidates)


def sample_global_batch(
    table: PositiveTable, key: jax.Array, batch_size: int, num_negatives: int, real: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One global batch: users `[B]`, positives `[B]`, negatives `[B, n]` int32, mask `[B]` bool
    (False past `real` rows and where a negative is still a positive after the redraws). Jittable."""
    user_key, positive_key, negative_key = jax.random.split(key, 3)
    users = table.active[jax.random.randint(user_key, (batch_size,), 0, table.active.shape[0])]
    start, stop = table.offsets[users], table.offsets[users + 1]
    pick = jax.random.uniform(positive_key, (batch_size,))
    positives = table.items[start + jnp.minimum((pick * (stop - start)).astype(jnp.int32), stop - start - 1)]

    def draw(key):
        return table.pool[jax.random.randint(key, (batch_size, num_negatives), 0, table.pool.shape[0])]

    # Round r redraws the negatives that are positives with a key of its own. The loop stops
    # at the first round with nothing to redraw (on a sparse graph, after one or two): the
    # later rounds of a fixed count would change nothing, so the draws are the same.
    def pending(carry):
        round_index, _, clash = carry
        return (round_index < REDRAW_ROUNDS) & jnp.any(clash)

    def redraw(carry):
        round_index, negatives, clash = carry
        negatives = jnp.where(clash, draw(jax.random.fold_in(negative_key, round_index + 1)), negatives)
        return round_index + 1, negatives, _holds(table, users[:, None], negatives)

    negatives = draw(negative_key)
    start = (jnp.int32(0), negatives, _holds(table, users[:, None], negatives))
    _, negatives, clash = jax.lax.while_loop(pending, redraw, start)
    mask = (jnp.arange(batch_size) < real) & ~jnp.any(clash, axis=1)
    return users, positives, negatives, mask


def make_block_step(
    train_step,
    *,
    batch_size: int,
    num_negatives: int,
    num_interactions: int,
    num_devices: int,
    process_index: int = 0,
    sampling_seed: int = 0,
):
    """`block(state, constants, table, rng, epoch, first, length) -> (state, metrics [length])`:
    `length` steps of `train_step` from batch `first` of `epoch`, each on an on-device global
    batch (this device takes its share), under `lax.scan`. pmap it with `length` static."""
    shards = jax.device_count()
    per_device = batch_size // shards

    def block(state, constants, table, rng, epoch, first, length):
        device = process_index * num_devices + jax.lax.axis_index(AXIS)
        base = jax.random.fold_in(jax.random.PRNGKey(sampling_seed), epoch)

        def one_step(state, offset):
            index = first + offset
            real = jnp.clip(num_interactions - index * batch_size, 0, batch_size)
            users, positives, negatives, mask = sample_global_batch(
                table, jax.random.fold_in(base, index), batch_size, num_negatives, real
            )

            def mine(values):
                return jax.lax.dynamic_slice_in_dim(values, device * per_device, per_device)

            batch = Batch(users=mine(users), positives=mine(positives), negatives=mine(negatives), mask=mine(mask))
            return train_step(state, batch.replace(**constants), rng)

        return jax.lax.scan(one_step, state, jnp.arange(length, dtype=jnp.int32))

    return block


def pmap_block(block):
    """The block step mapped over the local devices: state, constants, table and key replicated,
    epoch and first batch broadcast, the length static (an epoch's last block may be shorter:
    one more compilation), the state donated."""
    return jax.pmap(
        block,
        axis_name=AXIS,
        in_axes=(0, 0, 0, 0, None, None, None),
        static_broadcasted_argnums=(6,),
        donate_argnums=(0,),
    )


def blocks(first_batch: int, batches_per_epoch: int, steps_per_call: int) -> list[tuple[int, int]]:
    """(first batch, length) of each call that covers batches `first_batch ..` of an epoch."""
    starts = range(first_batch, batches_per_epoch, steps_per_call)
    return [(start, min(steps_per_call, batches_per_epoch - start)) for start in starts]
