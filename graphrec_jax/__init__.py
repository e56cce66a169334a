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
    "build_interaction_graph": "graphrec_jax.graph.build",
    "pad_graph": "graphrec_jax.graph.build",
    "aggregate": "graphrec_jax.graph.layers",
    "lightgcn_propagate": "graphrec_jax.graph.layers",
    "GCNLayer": "graphrec_jax.graph.layers",
    "RecommenderModel": "graphrec_jax.models.network",
    "ModelSetup": "graphrec_jax.models.setup",
    "build_setup": "graphrec_jax.models.setup",
    "make_optimizer": "graphrec_jax.optimizers",
    "TripleSampler": "graphrec_jax.training.batches",
    "Batch": "graphrec_jax.training.batches",
    "TrainState": "graphrec_jax.training.step",
    "make_train_step": "graphrec_jax.training.step",
    "TrainingRun": "graphrec_jax.training.run",
    "build_run": "graphrec_jax.training.run",
    "train_loop": "graphrec_jax.training.loop",
    "train_and_evaluate": "graphrec_jax.training.workdir",
    "evaluate_model": "graphrec_jax.serving.evaluation",
    "ranking_metrics": "graphrec_jax.serving.metrics",
    "top_k_items": "graphrec_jax.serving.ranking",
    "CheckpointStore": "graphrec_jax.checkpoint",
    "Recommender": "graphrec_jax.serving.recommender",
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
