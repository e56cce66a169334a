"""graphrec-jax: graph collaborative filtering and BERT text understanding in one JAX/Flax recommender.

    from graphrec_jax import Recommender, TextEncoder, train_and_evaluate, default_config

Heavy pieces (transformers, Orbax) load on first use, so `import graphrec_jax` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "default_config": "graphrec_jax.config",
    "validate_config": "graphrec_jax.config",
    "ConfigError": "graphrec_jax.config",
    "prepare_dataset": "graphrec_jax.data.prepare",
    "DataError": "graphrec_jax.data.errors",
    "Dataset": "graphrec_jax.data.types",
    "IdMap": "graphrec_jax.data.types",
    "Interactions": "graphrec_jax.data.types",
    "EvalSplit": "graphrec_jax.data.types",
    "UnknownIdError": "graphrec_jax.data.types",
    "generate_catalogue": "graphrec_jax.data.synthetic",
    "build_interaction_graph": "graphrec_jax.graph",
    "pad_graph": "graphrec_jax.graph",
    "aggregate": "graphrec_jax.layers",
    "lightgcn_propagate": "graphrec_jax.layers",
    "GCNLayer": "graphrec_jax.layers",
    "RecommenderModel": "graphrec_jax.model",
    "TripleSampler": "graphrec_jax.sampling",
    "TrainState": "graphrec_jax.steps",
    "make_train_step": "graphrec_jax.steps",
    "train_and_evaluate": "graphrec_jax.train",
    "evaluate_model": "graphrec_jax.train",
    "ranking_metrics": "graphrec_jax.evaluation",
    "top_k_items": "graphrec_jax.evaluation",
    "CheckpointStore": "graphrec_jax.checkpoint",
    "Recommender": "graphrec_jax.recommender",
    "TextEncoder": "graphrec_jax.text.encoder",
    "BertModel": "graphrec_jax.text.bert",
    "BertConfig": "graphrec_jax.text.bert",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'graphrec_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
