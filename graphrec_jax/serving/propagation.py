"""Every node's representation for inference: in one compiled call, or layer by layer.

`propagate_layerwise` computes LightGCN over the whole graph one layer at a time, each layer
as a sequence of sparse x dense products over row blocks of the adjacency
(`graph.sparse.sparse_dense`), so besides the `[n, d]` layer arrays the memory is one block,
and a node's neighbourhood is never expanded per node. `node_representations` runs a whole
`RecommenderModel` this way (layer-0 inputs, propagation, fusion head), which is how a model
trained on sampled subgraphs is evaluated and served.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jraph
import numpy as np

from graphrec_jax.graph.build import friends_only_users
from graphrec_jax.graph.sparse import Csr, graph_operator, sparse_dense
from graphrec_jax.graph.subgraphs import NeighborSampler
from graphrec_jax.models.network import make_representation_fn


def propagate_layerwise(
    operators: Sequence[Csr], embeddings, *, chunk_rows: int = 65536, backend: str = "auto"
) -> np.ndarray:
    """LightGCN over per-layer operators, `[n, d] -> [n, d]` float32, layer by layer.

    With operators `P_1 .. P_L` (seeds outwards) the result is
    `(E + P_1 E + P_1 P_2 E + ... + P_1..P_L E) / (L + 1)`, evaluated as
    `E + P_1 (E + P_2 (E + ...))`; with one operator repeated (the full graph) this is
    `lightgcn_propagate`. Memory: three `[n, d]` arrays plus one row block.
    """
    embeddings = np.asarray(embeddings, np.float32)
    total = embeddings
    for operator in reversed(operators):
        total = embeddings + sparse_dense(operator, total, chunk_rows=chunk_rows, backend=backend)
    return total / np.float32(len(operators) + 1)


def node_representations(
    model,
    params,
    graph: jraph.GraphsTuple,
    text_features: np.ndarray | None = None,
    *,
    operators: Sequence[Csr] | None = None,
    layerwise: bool = False,
    chunk_rows: int = 65536,
    backend: str = "auto",
):
    """Every node's representation, `[n_node, embedding_dim]` float32.

    Args:
      model: a `RecommenderModel`; params: its parameters.
      graph: the full training graph (unpadded).
      text_features: `[n_node, text_dim]` for the text fusions.
      operators: one `Csr` per layer, seeds outwards (`NeighborSampler.hop_operators()`) for a
        model trained on sampled subgraphs; None propagates over `graph` itself.
      layerwise: propagate layer by layer in row blocks of `chunk_rows` rows (always so with
        `operators`); otherwise the model's own propagation in one compiled call (a device array).

    Equals `model.apply(params, graph, text_features)[0]` up to float rounding. Not jittable.
    """
    if (operators is None and not layerwise) or model.architecture == "sociallgn":
        # SocialLGN fuses users' interaction and social aggregates each layer, so it propagates
        # over the whole graph's blocks as it trained (uniform hops estimate exactly those).
        return _compiled_representations(model)(params, graph, text_features)
    variables = {"params": params}
    if model.fusion == "text_only":
        return np.asarray(jax.jit(model.apply)(variables, graph, text_features)[0])
    if operators is None:
        operators = [graph_operator(graph)] * model.num_layers
    if len(operators) != model.num_layers:
        raise ValueError(f"{len(operators)} operators for a model of {model.num_layers} layers")
    # The model with no layers returns its layer-0 inputs (ids and projected text).
    inputs = np.asarray(jax.jit(model.clone(num_layers=0).apply)(variables, graph, text_features)[1])
    if model.architecture == "lightgcn":
        propagated = propagate_layerwise(operators, inputs, chunk_rows=chunk_rows, backend=backend)
        friends_only = np.flatnonzero(np.asarray(friends_only_users(graph)))  # as the model leaves them out
        propagated[friends_only] -= inputs[friends_only] / np.float32(model.num_layers + 1)
    else:
        if any(operator is not operators[0] for operator in operators):
            raise ValueError("GCN layer-wise inference needs one operator for every layer")
        total, current = inputs, inputs
        for index in range(model.num_layers):
            layer = params[f"gcn_{index}"]
            projected = current @ np.asarray(layer["linear"]["kernel"])
            aggregated = sparse_dense(operators[0], projected, chunk_rows=chunk_rows, backend=backend)
            current = np.maximum(aggregated + np.asarray(layer["bias"]), 0.0)
            total = total + current
        propagated = total / np.float32(model.num_layers + 1)
    if model.fusion != "concat":
        return propagated
    head = jax.jit(nn.Dense(model.embedding_dim).apply)
    out = np.empty_like(propagated)
    for first in range(0, len(propagated), chunk_rows):
        joined = np.concatenate([propagated[first : first + chunk_rows], text_features[first : first + chunk_rows]], -1)
        out[first : first + chunk_rows] = np.asarray(head({"params": params["head"]}, joined))
    return out


_COMPILED: dict = {}


def _compiled_representations(model):
    """One jitted representation function per model (flax modules hash by their attributes)."""
    if model not in _COMPILED:
        _COMPILED.clear()  # keep one: serving and evaluation reuse the last model's compilation
        _COMPILED[model] = jax.jit(make_representation_fn(model))
    return _COMPILED[model]


def inference_operators(config, setup) -> list[Csr] | None:
    """The operators full-graph inference propagates over for a run's `config`: None for a model
    trained on the whole graph, the operators its sampled hops estimate for one trained on
    subgraphs (`graph.subgraphs.NeighborSampler.hop_operators`)."""
    if config.sampling.mode != "sampled":
        return None
    from graphrec_jax.config import fanouts

    sampling = config.sampling
    return NeighborSampler(
        setup.graph,
        setup.num_users,
        fanouts(config),
        sampling.method,
        num_walks=sampling.num_walks,
        walk_length=sampling.walk_length,
        seed=sampling.seed,
    ).hop_operators()
