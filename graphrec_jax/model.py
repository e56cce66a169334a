"""The recommender network: node inputs (ids and/or text), graph propagation, fusion.

Every variant ends in one representation per node, `[n, embedding_dim]`, and a user-item
score is the dot product of the two representations, so top-K retrieval stays a matrix
product whatever the fusion.

Fusions (`model.fusion`):
  graph_only: learned id embeddings propagated by LightGCN or GCN.
  text_only: a projection of each node's text feature, no graph and no ids.
  concat: the original design: propagated id embeddings concatenated with the text
    feature, through a linear head.
  text_node_input: id embeddings plus projected text as the graph's node inputs, so text
    flows through the graph and reaches neighbours.

In the text fusions, nodes without a training interaction (cold items) have no trained id
embedding; their id part is zeroed so that their representation comes from text alone.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from graphrec_jax.graph import csr_offsets
from graphrec_jax.layers import GCNLayer, gcn_propagate, lightgcn_propagate

TEXT_FUSIONS = ("text_only", "concat", "text_node_input")


class RecommenderModel(nn.Module):
    """Maps a graph (and per-node text features) to node representations.

    Attributes:
      num_nodes: users + items.
      embedding_dim: width of id embeddings and of the output representations.
      num_layers: propagation depth.
      architecture: "lightgcn" or "gcn".
      fusion: one of graph_only, text_only, concat, text_node_input.
      init_std: standard deviation of the N(0, std) id-embedding initialiser.
      aggregation: "auto", "native" or "segment_sum" (see `layers.aggregate`).
    """

    num_nodes: int
    embedding_dim: int = 64
    num_layers: int = 3
    architecture: str = "lightgcn"
    fusion: str = "graph_only"
    init_std: float = 0.1
    aggregation: str = "auto"

    @nn.compact
    def __call__(
        self,
        graph: jraph.GraphsTuple,
        text_features: jax.Array | None = None,
        *,
        rows: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Computes representations.

        Args:
          graph: the interaction graph with `n_node == num_nodes`.
          text_features: `[num_nodes, text_dim]` per-node text features (zeros where a node
            has none); required by the text fusions.
          rows: optional `[r]` int32 nodes to return (the loss's users and items); computing
            only those is cheaper than all nodes.

        Returns:
          (representations `[r or num_nodes, embedding_dim]`, layer-0 inputs of the same rows,
          which the L2 penalty of the BPR loss acts on).
        """
        uses_text = self.fusion in TEXT_FUSIONS
        if uses_text and text_features is None:
            raise ValueError(f"fusion {self.fusion!r} needs text_features [num_nodes, text_dim]")

        def select(x):
            return x if rows is None else x[rows]

        if self.fusion == "text_only":
            projected = nn.Dense(self.embedding_dim, name="text_projection")(select(text_features))
            return projected, projected

        embedding = self.param(
            "node_embedding", nn.initializers.normal(self.init_std), (self.num_nodes, self.embedding_dim)
        )
        if uses_text:
            offsets = csr_offsets(graph)
            has_edges = (offsets[1:] - offsets[:-1]) > 0
            ids = jnp.where(has_edges[:, None], embedding, 0.0)
        else:
            ids = embedding  # as in LightGCN: an isolated node keeps a trainable embedding
        if self.fusion == "text_node_input":
            inputs = ids + nn.Dense(self.embedding_dim, name="text_projection")(text_features)
        else:
            inputs = ids
        propagated = self._propagate(graph, inputs, rows)
        if self.fusion == "concat":
            joined = jnp.concatenate([propagated, select(text_features)], axis=-1)
            return nn.Dense(self.embedding_dim, name="head")(joined), select(inputs)
        return propagated, select(inputs)

    def _propagate(self, graph, inputs, rows):
        if self.architecture == "lightgcn":
            return lightgcn_propagate(graph, inputs, self.num_layers, rows=rows, aggregation=self.aggregation)
        layers = [
            GCNLayer(self.embedding_dim, aggregation=self.aggregation, name=f"gcn_{index}")
            for index in range(self.num_layers)
        ]
        return gcn_propagate(layers, graph, inputs, rows=rows)


def build_model(model_config, num_nodes: int) -> RecommenderModel:
    """The `RecommenderModel` a `config.model` describes."""
    return RecommenderModel(
        num_nodes=num_nodes,
        embedding_dim=model_config.embedding_dim,
        num_layers=model_config.num_layers,
        architecture=model_config.name,
        fusion=model_config.fusion,
        init_std=model_config.init_std,
        aggregation=model_config.aggregation,
    )
