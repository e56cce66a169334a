"""Why an item was recommended: an exact decomposition of a linear graph model's score over the
user's neighbours (history items, friends).

LightGCN's representations are linear in the layer-0 inputs `E` (id embeddings, plus
projected text in the `text_node_input` fusion): with `A` the propagated operator (every
block: interactions, social links) and `L` layers,

    z = (1 / (L + 1)) (E + A E + ... + A^L E) = E / (L + 1) + A M,
    M = (1 / (L + 1)) (E + A E + ... + A^(L-1) E),

so a user's score for an item splits exactly into their own input's share and one share per
neighbour `h` (an item they interacted with, a friend), each carrying that neighbour's whole
propagated neighbourhood:

    score(u, i) = z_u . z_i = (E_u . z_i) / (L + 1) + sum_h A[u, h] (M_h . z_i).

`M` and `z` come from the propagation kernels (L - 1 and L sparse products over the graph,
never a dense matrix), once per model; each explanation is then a gather and dot products
over the user's row of `A`. The `concat` fusion's head is affine, so its user part splits the
same way after the head, with the text and bias term kept apart (`text`). Models that are not
linear in their inputs (GCN's ReLU, SocialLGN's fusion) have no such decomposition.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from graphrec_jax.graph.build import INTERACTION_EDGE, SOCIAL_EDGE, edge_kinds, friends_only_users
from graphrec_jax.graph.layers import aggregate
from graphrec_jax.graph.sparse import graph_operator
from graphrec_jax.serving.ranking import csr_rows
from graphrec_jax.text.finetune import params_without_text

EXPLAINABLE = ("lightgcn",)


class NotExplainableError(ValueError):
    """The model's score does not decompose exactly over the graph (it is not linear in its inputs)."""


@dataclasses.dataclass(frozen=True)
class Sources:
    """What every explanation of one model reads, computed once.

    Attributes:
      representations: `z`, `[n_node, d]` float32.
      partial: `M`, `[n_node, d]` float32, each neighbour's propagated share (see the module).
      own: `[n_node, d]` float32, each node's own share of its representation: `E / (L + 1)`,
        after the head for `concat`.
      text: `[n_node, d]` float32 or None: the part of a representation that is not propagated
        (the `concat` head's text and bias term); for `text_node_input`, the text inputs'
        propagated share `P E_text` (informative: it overlaps the neighbours' shares).
      operator: the propagated operator `A` by rows (`graph.sparse.Csr`, with edge kinds).
      head: `[d_prop, d]` float32 or None: the `concat` head's kernel rows for the propagated part.
    """

    representations: np.ndarray
    partial: np.ndarray
    own: np.ndarray
    text: np.ndarray | None
    operator: object
    head: np.ndarray | None


def explainable(model) -> bool:
    return model.architecture in EXPLAINABLE


def compute_sources(model, params, graph: jraph.GraphsTuple, text_features=None, *, backend: str = "auto") -> Sources:
    """The decomposition's ingredients for `model` over `graph` (see `Sources`). Raises
    NotExplainableError for a model that is not linear in its inputs. Host-side driver of two
    jitted calls."""
    if not explainable(model):
        raise NotExplainableError(
            f"model.name={model.architecture!r} is not linear in its inputs, so its scores do not split exactly "
            "over the graph; explanations need model.name='lightgcn' (with or without social links)"
        )
    params = params_without_text(params)
    if model.fusion == "text_only":
        z = np.asarray(jax.jit(model.apply)({"params": params}, graph, text_features)[0])
        zeros = np.zeros_like(z)
        return Sources(z, zeros, zeros, z, graph_operator(graph), None)
    inputs = jax.jit(model.clone(num_layers=0).apply)({"params": params}, graph, text_features)[1]
    scale = 1.0 / (model.num_layers + 1)

    @jax.jit
    def propagate(inputs, graph):
        partial = current = inputs
        for _ in range(model.num_layers - 1):
            current = aggregate(graph, current, backend=backend)
            partial = partial + current
        partial = partial * scale
        propagated = inputs * scale + (aggregate(graph, partial, backend=backend) if model.num_layers else 0.0)
        return partial, propagated

    partial, propagated = propagate(inputs, graph)
    partial, own, propagated = np.asarray(partial), np.asarray(inputs) * scale, np.array(propagated)
    # A user with friends and no history is represented without its own term (as the model does)
    friends_only = np.flatnonzero(np.asarray(friends_only_users(graph)))
    propagated[friends_only] -= own[friends_only]
    own[friends_only] = 0.0
    text, head = None, None
    if model.fusion == "concat":
        kernel = np.asarray(params["head"]["kernel"])
        width = propagated.shape[1]
        head = kernel[:width]
        text = np.asarray(text_features) @ kernel[width:] + np.asarray(params["head"]["bias"])
        representations = np.asarray(propagated) @ head + text
        own = own @ head
    else:
        representations = np.asarray(propagated)
        if model.fusion == "text_node_input":
            text_model = model.clone(fusion="text_only")  # the projection alone: the text inputs
            text_inputs = jax.jit(text_model.apply)({"params": params}, graph, text_features)[0]
            text = np.asarray(propagate(text_inputs, graph)[1])
    return Sources(representations, partial, own, text, graph_operator(graph), head)


@dataclasses.dataclass(frozen=True)
class Explanations:
    """Explanations of `p` (user, item) pairs, the neighbours ranked by contribution.

    Attributes:
      score: `[p]` float32, the model's score of each pair.
      neighbours: `[p, k]` int64 node index of each evidence neighbour (-1 for none).
      kinds: `[p, k]` int8 edge kind joining the user to it (`graph.build.INTERACTION_EDGE`
        for a history item, `SOCIAL_EDGE` for a friend; -1 for none).
      contributions: `[p, k]` float64 the neighbour's share of the score.
      own: `[p]` float64 the user's own input's share.
      remainder: `[p]` float64 the rest: the user's own share, the neighbours beyond `k` and,
        for `concat`, the text and bias term; `contributions.sum(1) + remainder == score`.
      text: `[p]` float64 or None, the text's share (see `Sources.text`).
    """

    score: np.ndarray
    neighbours: np.ndarray
    kinds: np.ndarray
    contributions: np.ndarray
    own: np.ndarray
    remainder: np.ndarray
    text: np.ndarray | None


def explain_pairs(sources: Sources, users: np.ndarray, items: np.ndarray, num_users: int, k: int = 5) -> Explanations:
    """Explains the scores of the pairs `(users[j], items[j])` (node indices of users, item
    indices), keeping each pair's `k` largest neighbour shares. Host numpy, vectorised over
    pairs; the decomposition is exact to float rounding (computed in float64)."""
    users = np.asarray(users, np.int64)
    targets = sources.representations[num_users + np.asarray(items, np.int64)].astype(np.float64)
    user_vectors = sources.representations[users].astype(np.float64)
    score = np.einsum("pd,pd->p", user_vectors, targets)
    operator = sources.operator
    offsets, entries = csr_rows((operator.offsets, np.arange(len(operator.neighbors))), users)
    pair = np.repeat(np.arange(len(users)), np.diff(offsets))
    neighbours = operator.neighbors[entries].astype(np.int64)
    shares = sources.partial[neighbours].astype(np.float64)
    if sources.head is not None:
        shares = shares @ sources.head.astype(np.float64)
    contributions = operator.weights[entries].astype(np.float64) * np.einsum("ed,ed->e", shares, targets[pair])
    own = np.einsum("pd,pd->p", sources.own[users].astype(np.float64), targets)
    # each pair's neighbours, largest share first (ties by node index)
    order = np.lexsort((neighbours, -contributions, pair))
    position = np.arange(len(order)) - offsets[pair[order]]
    kept = order[position < k]
    rows, columns = pair[kept], position[position < k]
    top = np.full((len(users), k), -1, np.int64)
    top_kinds = np.full((len(users), k), -1, np.int8)
    top_values = np.zeros((len(users), k))
    top[rows, columns] = neighbours[kept]
    top_kinds[rows, columns] = operator.kinds[entries[kept]]
    top_values[rows, columns] = contributions[kept]
    text = None
    if sources.text is not None:
        text = np.einsum("pd,pd->p", sources.text[users].astype(np.float64), targets)
    return Explanations(
        score=score.astype(np.float32),
        neighbours=top,
        kinds=top_kinds,
        contributions=top_values,
        own=own,
        remainder=score - top_values.sum(axis=1),
        text=text,
    )


def neighbour_kind_name(kind: int) -> str:
    return {INTERACTION_EDGE: "item", SOCIAL_EDGE: "friend"}.get(int(kind), "other")


def social_kinds(graph: jraph.GraphsTuple) -> bool:
    return SOCIAL_EDGE in edge_kinds(graph)


def field_shares(
    model, params, graph: jraph.GraphsTuple, text_features: np.ndarray, user: int, item: int, without: np.ndarray
) -> np.ndarray:
    """How much of one pair's score each text field carries: the score minus the score with the
    item's text features replaced by each row of `without` (`[f, text_dim]`: the item re-encoded
    without one field). Exact for any fusion: each variant is propagated again. `[f]` float64."""
    num_users = int(np.sum(graph.nodes["kind"] == 0))
    node = num_users + item
    variants = np.repeat(np.asarray(text_features)[None], len(without) + 1, axis=0)
    variants[1:, node] = without
    apply = jax.jit(jax.vmap(lambda text: model.apply({"params": params_without_text(params)}, graph, text)[0]))
    outputs = np.asarray(apply(jnp.asarray(variants)), np.float64)
    scores = np.einsum("vd,vd->v", outputs[:, user], outputs[:, node])
    return scores[0] - scores[1:]


__all__ = [
    "EXPLAINABLE",
    "Explanations",
    "NotExplainableError",
    "Sources",
    "compute_sources",
    "explain_pairs",
    "explainable",
    "field_shares",
    "neighbour_kind_name",
]
