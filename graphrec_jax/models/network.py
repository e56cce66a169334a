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
embedding; their id part is zeroed so that their representation comes from text alone, and,
when the graph holds item-item semantic edges (`graph.semantic`), from what propagation
brings them over those edges from the warm items that read like them.

In LightGCN, a user with friends and no training interaction (`graph.build.friends_only_users`)
is represented by what its friends bring, without its own layer-0 term `E_u / (L + 1)`: that id
row never trained on a history of its own, only as its friends' neighbour, and left in it adds
noise to what the friends bring (Recall@20 of LastFM users without history 3-8% higher without
it, docs/BENCHMARKS.md, "Social"). The row still reaches the friends through propagation.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from graphrec_jax.graph.build import (
    INTERACTION_EDGE,
    ITEM_EDGE,
    ITEM_NODE,
    SOCIAL_EDGE,
    USER_NODE,
    csr_offsets,
    edge_kinds,
    friends_only_users,
)
from graphrec_jax.graph.layers import (
    GCNLayer,
    aggregate,
    aggregate_rows,
    aggregate_users,
    gather_rows,
    gathers_full_product,
    gcn_propagate,
    lightgcn_propagate,
)
from graphrec_jax.text.finetune import params_without_text

# lightgcn and gcn propagate over every edge of the graph (social links joined in when the
# data has them); sociallgn propagates users over interactions and friends separately and
# fuses the two each layer (Liao et al., 2022).
ARCHITECTURES = ("lightgcn", "gcn", "sociallgn")
FUSIONS = ("graph_only", "text_only", "concat", "text_node_input")
TEXT_FUSIONS = FUSIONS[1:]
# What SocialLGN's interaction aggregate sums: users' items, items' users and semantic neighbours
# (users have no item-item edges, so their rows are the interactions' alone).
ITEM_SIDE_KINDS = (INTERACTION_EDGE, ITEM_EDGE)


class TextProjection(nn.Module):
    """Text features to the representation space: linear, or an MLP with one GELU hidden layer."""

    features: int
    hidden_features: int = 0

    @nn.compact
    def __call__(self, text: jax.Array) -> jax.Array:
        if self.hidden_features:
            text = nn.gelu(nn.Dense(self.hidden_features, name="hidden")(text))
        return nn.Dense(self.features, name="output")(text)


class RecommenderModel(nn.Module):
    """Maps a graph (and per-node text features) to node representations.

    Attributes:
      num_nodes: users + items.
      num_users: users come first in the full graph: SocialLGN fuses only their rows there
        (0: unknown, fuse every row and keep the users').
      embedding_dim: width of id embeddings and of the output representations.
      num_layers: propagation depth.
      architecture: "lightgcn", "gcn" or "sociallgn" (see `ARCHITECTURES`).
      fusion: one of graph_only, text_only, concat, text_node_input.
      init_std: standard deviation of the N(0, std) id-embedding initialiser.
      backend: the propagation backend, one of `kernels.BACKENDS` (see `graph.layers`).
      id_dropout: in training, the probability of hiding an item's id-based part so that its
        representation comes from text alone, as a cold item's does (DropoutNet); text
        fusions only.
      text_hidden_dim: width of the text projection's hidden layer; 0 projects linearly.
      text_alignment: holds `align_projection`, the projection (as wide as the text one) that
        maps text features into the representation space for the text-graph alignment loss;
        it runs only when a call passes `align_text` (training), never in serving.
    """

    num_nodes: int
    embedding_dim: int = 64
    num_layers: int = 3
    architecture: str = "lightgcn"
    num_users: int = 0
    fusion: str = "graph_only"
    init_std: float = 0.1
    backend: str = "auto"
    id_dropout: float = 0.0
    text_hidden_dim: int = 0
    text_alignment: bool = False

    @nn.compact
    def __call__(
        self,
        graph: jraph.GraphsTuple,
        text_features: jax.Array | None = None,
        *,
        rows: jax.Array | None = None,
        deterministic: bool = True,
        align_text: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Computes representations.

        Args:
          graph: the interaction graph with `n_node == num_nodes`.
          text_features: `[num_nodes, text_dim]` per-node text features (zeros where a node
            has none); required by the text fusions.
          rows: optional `[r]` int32 nodes to return (the loss's users and items); computing
            only those is cheaper than all nodes.
          deterministic: False in training: applies `id_dropout` (needs a "dropout" rng).
          align_text: optional `[a, text_dim]` text features (a batch's positive items') that
          `align_projection` maps to `[a, embedding_dim]`, sown as ("intermediates",
          "aligned_text"): apply with `mutable=["intermediates"]` to read it.

        Returns:
          (representations `[r or num_nodes, embedding_dim]`, layer-0 inputs of the same rows,
          which the L2 penalty of the BPR loss acts on).
        """
        uses_text = self.fusion in TEXT_FUSIONS
        if uses_text and text_features is None:
            raise ValueError(f"fusion {self.fusion!r} needs text_features [num_nodes, text_dim]")
        # A sampled subgraph's nodes are copies of full-graph nodes: their layer-0 inputs and
        # text features are gathered by full-graph index (see `graph.subgraphs`).
        global_id = graph.nodes.get("global_id") if isinstance(graph.nodes, dict) else None
        if global_id is not None and text_features is not None:
            text_features = gather_rows(text_features, global_id, backend=self.backend)

        def select(x):
            return x if rows is None else x[rows]

        row_text = None if text_features is None else select(text_features)
        if self.text_alignment and (align_text is not None or (self.is_initializing() and text_features is not None)):
            source = align_text if align_text is not None else text_features[:1]
            aligned = TextProjection(self.embedding_dim, self.text_hidden_dim, name="align_projection")(source)
            self.sow("intermediates", "aligned_text", aligned)

        if self.fusion == "text_only":
            projected = TextProjection(self.embedding_dim, self.text_hidden_dim, name="text_projection")(row_text)
            return projected, projected

        embedding = self.param(
            "node_embedding", nn.initializers.normal(self.init_std), (self.num_nodes, self.embedding_dim)
        )
        if global_id is not None:
            embedding = gather_rows(embedding, global_id, backend=self.backend)
        if uses_text:
            if global_id is not None:  # in-degrees within a subgraph say nothing about the full graph
                has_edges = graph.nodes["has_edges"]
            else:
                offsets = csr_offsets(graph)
                has_edges = (offsets[1:] - offsets[:-1]) > 0
            ids = jnp.where(has_edges[:, None], embedding, 0.0)
        else:
            ids = embedding  # as in LightGCN: an isolated node keeps a trainable embedding
        if self.fusion == "text_node_input":
            projected = TextProjection(self.embedding_dim, self.text_hidden_dim, name="text_projection")(text_features)
            inputs = ids + projected
        else:
            inputs = ids
        hidden = self._hidden_items(graph, rows, deterministic)
        linked = 0.0  # what a hidden item receives over its semantic edges alone, as a cold item does
        if hidden is not None and self.architecture == "lightgcn" and ITEM_EDGE in edge_kinds(graph):
            propagated, linked = self._lightgcn_with_links(graph, inputs, rows)
        else:
            propagated = self._propagate(graph, inputs, rows)
        if self.architecture == "lightgcn" and global_id is None and SOCIAL_EDGE in edge_kinds(graph):
            friends_only = friends_only_users(graph, rows)[:, None]  # never a training batch's row
            propagated = propagated - jnp.where(friends_only, select(inputs), 0.0) / (self.num_layers + 1)
        if self.fusion == "concat":
            if hidden is not None:
                propagated = jnp.where(hidden[:, None], linked, propagated)
            joined = jnp.concatenate([propagated, row_text], axis=-1)
            return nn.Dense(self.embedding_dim, name="head")(joined), select(inputs)
        if hidden is not None and self.fusion == "text_node_input":
            # An item without interactions or id propagates nothing: its representation is its
            # projected text averaged with L layers that hold only what its semantic edges bring.
            text_alone = select(projected) / (self.num_layers + 1) + linked
            propagated = jnp.where(hidden[:, None], text_alone, propagated)
        return propagated, select(inputs)

    def _hidden_items(self, graph, rows, deterministic):
        """`[r]` bool: item rows whose id part is hidden this step (None when nothing is hidden)."""
        if deterministic or self.id_dropout <= 0 or self.fusion not in ("concat", "text_node_input"):
            return None
        is_item = graph.nodes["kind"] == ITEM_NODE
        if rows is not None:
            is_item = is_item[rows]
        drop = jax.random.bernoulli(self.make_rng("dropout"), self.id_dropout, is_item.shape)
        return is_item & drop

    def _propagate(self, graph, inputs, rows):
        if self.architecture == "lightgcn":
            return lightgcn_propagate(graph, inputs, self.num_layers, rows=rows, backend=self.backend)
        if self.architecture == "sociallgn":
            return self._sociallgn(graph, inputs, rows)
        layers = [
            GCNLayer(self.embedding_dim, backend=self.backend, name=f"gcn_{index}") for index in range(self.num_layers)
        ]
        return gcn_propagate(layers, graph, inputs, rows=rows)

    def _lightgcn_with_links(self, graph, inputs, rows):
        """LightGCN as `lightgcn_propagate` computes it, and besides, per row, the mean over layers
        of what the row's semantic edges alone bring (`sum_l A_item E_{l-1} / (L + 1)`): an item
        with its interactions and id hidden (id dropout) is then represented as a cold item is at
        inference, where semantic edges are its only ones. Returns `([r, d], [r, d])`."""
        num_layers = self.num_layers
        if num_layers == 0:
            return inputs if rows is None else inputs[rows], 0.0
        if rows is not None and gathers_full_product(rows, inputs.shape[0]):
            # Every node's products, gathered once for all the aggregates (see `aggregate_rows`).
            propagated, linked = self._lightgcn_with_links(graph, inputs, None)
            return gather_rows(propagated, rows, backend=self.backend), gather_rows(linked, rows, backend=self.backend)
        layers = [inputs]
        for _ in range(num_layers - 1):
            layers.append(aggregate(graph, layers[-1], backend=self.backend))
        partial = sum(layers[1:], layers[0])
        if rows is None:
            last = aggregate(graph, layers[-1], backend=self.backend)
            linked = sum(aggregate(graph, layer, kinds=(ITEM_EDGE,), backend=self.backend) for layer in layers)
            return (partial + last) / (num_layers + 1), linked / (num_layers + 1)
        last = aggregate_rows(graph, layers[-1], rows, backend=self.backend)
        linked = sum(aggregate_rows(graph, layer, rows, kinds=(ITEM_EDGE,), backend=self.backend) for layer in layers)
        return (partial[rows] + last) / (num_layers + 1), linked / (num_layers + 1)

    def _sociallgn(self, graph, inputs, rows):
        """SocialLGN: each layer, users aggregate their items and their friends separately and fuse
        the two (`SocialFusion`, shared by the layers); items aggregate their users; the
        representation is the mean of the layers, as in LightGCN."""
        fusion = SocialFusion(self.embedding_dim, name="social_fusion")
        total = current = inputs
        users = self.num_users if inputs.shape[0] == self.num_nodes and self.num_users else None
        if users is None:  # a sampled subgraph mixes users and items: fuse every row, keep the users'
            is_user = (graph.nodes["kind"] == USER_NODE)[:, None]
            for _ in range(self.num_layers):
                interaction = aggregate(graph, current, kinds=ITEM_SIDE_KINDS, backend=self.backend)
                social = aggregate(graph, current, kinds=(SOCIAL_EDGE,), backend=self.backend)
                current = jnp.where(is_user, fusion(social, interaction), interaction)
                total = total + current
        else:
            # The full graph's users are its first rows and the only ends of social links: the
            # social product and the fusion run on those rows alone.
            for _ in range(self.num_layers):
                interaction = aggregate(graph, current, kinds=ITEM_SIDE_KINDS, backend=self.backend)
                social = aggregate_users(graph, current[:users], backend=self.backend)
                current = jnp.concatenate([fusion(social, interaction[:users]), interaction[users:]])
                total = total + current
        total = total / (self.num_layers + 1)
        return total if rows is None else total[rows]


class SocialFusion(nn.Module):
    """SocialLGN's graph fusion: `normalise(W3 [tanh(W1 social) ; tanh(W2 interaction)] + b)`,
    `[n, d], [n, d] -> [n, d]`. Each row is scaled to unit L2 norm (the reference code divides
    by the norm of the whole matrix, which would tie every user's scale to the batch's)."""

    features: int

    @nn.compact
    def __call__(self, social: jax.Array, interaction: jax.Array) -> jax.Array:
        social = jnp.tanh(nn.Dense(self.features, use_bias=False, name="social")(social))
        interaction = jnp.tanh(nn.Dense(self.features, use_bias=False, name="interaction")(interaction))
        fused = nn.Dense(self.features, name="combine")(jnp.concatenate([social, interaction], axis=-1))
        # rsqrt of a floored square norm: a zero row (a padding node) gets a zero gradient, not NaN
        return fused * jax.lax.rsqrt(jnp.maximum(jnp.sum(fused * fused, axis=-1, keepdims=True), 1e-24))


def make_representation_fn(model: RecommenderModel) -> Callable:
    """`(params, graph, text_features) -> [n_node, d]` representations of every node (jit it).

    `params` may hold a fine-tuned text tower besides the model's own parameters; it is ignored
    here (the text features passed in are already the tower's output)."""

    def representations(params, graph, text_features=None):
        return model.apply({"params": params_without_text(params)}, graph, text_features)[0]

    return representations
