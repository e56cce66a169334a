"""What a model is built from: the graph, the network and the node text features of a dataset.

`build_setup(config, dataset)` is where `config.model` and `config.data.text` are read to build
them; training and serving both start from it (a restored model passes the text features saved
with its checkpoint, so nothing is encoded again). A `ModelSetup` is immutable: code that grows
the dataset (new items, new users) builds a new one.
"""

from __future__ import annotations

import dataclasses

import jax
import jraph
import ml_collections
import numpy as np

from graphrec_jax.data.errors import DataError
from graphrec_jax.data.types import Dataset
from graphrec_jax.graph.build import build_interaction_graph
from graphrec_jax.graph.semantic import semantic_item_links
from graphrec_jax.models.network import TEXT_FUSIONS, RecommenderModel


@dataclasses.dataclass(frozen=True)
class ModelSetup:
    """A dataset with its graph, network and text features. Host-side numpy except `model`.

    Attributes:
      dataset: the data the model is trained on or serves.
      graph: the training graph (`graph.build.build_interaction_graph`), numpy leaves.
      model: the network.
      text_features: `[n_node, text_dim]` float32 per-node text features for the text fusions
        (users first, then items), or None. A graph-only model with semantic edges keeps the
        features its item-item links were built from here (a restored model rebuilds them).
    """

    dataset: Dataset
    graph: jraph.GraphsTuple
    model: RecommenderModel
    text_features: np.ndarray | None = None

    @property
    def num_users(self) -> int:
        return self.dataset.num_users

    @property
    def uses_text(self) -> bool:
        return self.model.fusion in TEXT_FUSIONS


def build_model(
    model_config: ml_collections.ConfigDict, num_nodes: int, num_users: int = 0, *, text_alignment: bool = False
) -> RecommenderModel:
    """The `RecommenderModel` a `config.model` block describes; `text_alignment` gives it the
    projection that the alignment loss (`train.align_weight > 0`) maps text features with."""
    return RecommenderModel(
        num_nodes=num_nodes,
        num_users=num_users,
        embedding_dim=model_config.embedding_dim,
        num_layers=model_config.num_layers,
        architecture=model_config.name,
        fusion=model_config.fusion,
        init_std=model_config.init_std,
        backend=model_config.aggregation,
        id_dropout=model_config.id_dropout,
        text_hidden_dim=model_config.text_hidden_dim,
        text_alignment=text_alignment,
    )


def build_graph(
    dataset: Dataset,
    *,
    social_weight: float = 1.0,
    item_features: np.ndarray | None = None,
    semantic_k: int = 0,
    semantic_weight: float = 1.0,
) -> jraph.GraphsTuple:
    """The training graph of `dataset`: its training interactions and, when the data has them,
    its social links (weighted by `social_weight` against the interactions); with `semantic_k > 0`,
    item-item semantic edges: the kNN graph of `item_features` (`[num_items, h]`, the items' text
    features), built and normalised here once (`graph.semantic.semantic_item_links`)."""
    social = None if dataset.social is None else (dataset.social.users, dataset.social.friends)
    item_links = None
    if semantic_k > 0:
        if item_features is None or len(item_features) != dataset.num_items:
            rows = None if item_features is None else len(item_features)
            raise ValueError(f"semantic edges need text features of the {dataset.num_items} items, got {rows} rows")
        item_links = semantic_item_links(item_features, semantic_k, semantic_weight)
    return build_interaction_graph(
        dataset.num_users,
        dataset.num_items,
        dataset.train.users,
        dataset.train.items,
        social=social,
        social_weight=social_weight,
        item_links=item_links,
    )


def build_setup(
    config: ml_collections.ConfigDict, dataset: Dataset, *, text_features: np.ndarray | None = None
) -> ModelSetup:
    """Graph, model and text features for `dataset` as `config` describes them.

    `text_features` (`[n_node, text_dim]`) skips encoding when they are already known: a restored
    checkpoint's, or a fine-tuned tower's. Otherwise a text fusion (or a graph-only model with
    semantic edges, `model.text.semantic_k > 0`) encodes the dataset's text with
    `config.model.text.encoder` (cached on disk). Semantic edges are built from the items' rows
    of the text features, so a grown dataset (`Recommender.add_items`) gets a kNN graph rebuilt
    over every item, new ones included.
    """
    model = build_model(
        config.model,
        dataset.num_users + dataset.num_items,
        dataset.num_users,
        text_alignment=config.train.align_weight > 0,
    )
    if model.architecture == "sociallgn" and (dataset.social is None or len(dataset.social) == 0):
        raise DataError(
            f"model.name='sociallgn' needs social links, and {dataset.name!r} has none: set data.social.path to "
            "a table of user-user links (or use data.format='sociallgn'), or choose model.name='lightgcn'"
        )
    semantic_k = config.model.text.semantic_k
    if text_features is None and (model.fusion in TEXT_FUSIONS or semantic_k > 0):
        from graphrec_jax.text.features import load_text_encoder, node_text_features

        text = config.model.text
        text_features = node_text_features(
            dataset,
            load_text_encoder(text),
            item_fields=config.data.text.item_fields,
            user_fields=config.data.text.user_fields,
            pooling=text.pooling,
            cache_dir=text.cache_dir or None,
        )
    graph = build_graph(
        dataset,
        social_weight=config.model.social_weight,
        item_features=None if text_features is None else np.asarray(text_features)[dataset.num_users :],
        semantic_k=semantic_k,
        semantic_weight=config.model.text.semantic_weight,
    )
    return ModelSetup(dataset=dataset, graph=graph, model=model, text_features=text_features)


def init_params(setup: ModelSetup, seed: int) -> dict:
    """Initial parameters of `setup.model` (host numpy tree), deterministic for `seed`."""
    variables = jax.jit(setup.model.init)(jax.random.PRNGKey(seed), setup.graph, setup.text_features)
    return jax.tree.map(np.asarray, dict(variables["params"]))
