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
from graphrec_jax.models.network import TEXT_FUSIONS, RecommenderModel


@dataclasses.dataclass(frozen=True)
class ModelSetup:
    """A dataset with its graph, network and text features. Host-side numpy except `model`.

    Attributes:
      dataset: the data the model is trained on or serves.
      graph: the training graph (`graph.build.build_interaction_graph`), numpy leaves.
      model: the network.
      text_features: `[n_node, text_dim]` float32 per-node text features for the text fusions
        (users first, then items), or None.
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


def build_model(model_config: ml_collections.ConfigDict, num_nodes: int) -> RecommenderModel:
    """The `RecommenderModel` a `config.model` block describes."""
    return RecommenderModel(
        num_nodes=num_nodes,
        embedding_dim=model_config.embedding_dim,
        num_layers=model_config.num_layers,
        architecture=model_config.name,
        fusion=model_config.fusion,
        init_std=model_config.init_std,
        backend=model_config.aggregation,
        id_dropout=model_config.id_dropout,
        text_hidden_dim=model_config.text_hidden_dim,
    )


def build_graph(dataset: Dataset, *, social_weight: float = 1.0) -> jraph.GraphsTuple:
    """The training graph of `dataset`: its training interactions and, when the data has them,
    its social links (weighted by `social_weight` against the interactions)."""
    social = None if dataset.social is None else (dataset.social.users, dataset.social.friends)
    return build_interaction_graph(
        dataset.num_users,
        dataset.num_items,
        dataset.train.users,
        dataset.train.items,
        social=social,
        social_weight=social_weight,
    )


def build_setup(
    config: ml_collections.ConfigDict, dataset: Dataset, *, text_features: np.ndarray | None = None
) -> ModelSetup:
    """Graph, model and text features for `dataset` as `config` describes them.

    `text_features` (`[n_node, text_dim]`) skips encoding when they are already known: a restored
    checkpoint's, or a fine-tuned tower's. Otherwise a text fusion encodes the dataset's text with
    `config.model.text.encoder` (cached on disk).
    """
    model = build_model(config.model, dataset.num_users + dataset.num_items)
    if model.architecture == "sociallgn" and (dataset.social is None or len(dataset.social) == 0):
        raise DataError(
            f"model.name='sociallgn' needs social links, and {dataset.name!r} has none: set data.social.path to "
            "a table of user-user links (or use data.format='sociallgn'), or choose model.name='lightgcn'"
        )
    if text_features is None and model.fusion in TEXT_FUSIONS:
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
    graph = build_graph(dataset, social_weight=config.model.social_weight)
    return ModelSetup(dataset=dataset, graph=graph, model=model, text_features=text_features)


def init_params(setup: ModelSetup, seed: int) -> dict:
    """Initial parameters of `setup.model` (host numpy tree), deterministic for `seed`."""
    variables = jax.jit(setup.model.init)(jax.random.PRNGKey(seed), setup.graph, setup.text_features)
    return jax.tree.map(np.asarray, dict(variables["params"]))
