"""Trains a few steps of a tiny text model with the text-graph alignment loss (and semantic
edges) on every local device, with the library's run and loop, and writes the parameters and
losses to one `.npz`.

    XLA_FLAGS=--xla_force_host_platform_device_count=N python tests/workers/alignment_equivalence.py OUT BERT_DIR

Used by tests/test_alignment.py: N=1 and N=2 must give the same parameters.
"""

import sys

import jax
import numpy as np

from configs import test as test_config
from graphrec_jax.training.hooks import StepLimit
from graphrec_jax.training.loop import train_loop
from graphrec_jax.training.run import build_run


def main():
    out, bert = sys.argv[1], sys.argv[2]
    config = test_config.get_config()
    config.data.synthetic.cold_item_ratio = 0.2
    config.data.split.method = "cold_item"
    config.model.fusion = "text_node_input"
    config.model.text.encoder = bert
    config.model.text.max_length = 32
    config.model.text.semantic_k = 3
    config.model.embedding_dim = 8
    config.train.align_weight = 0.5
    config.train.batch_size = 64  # the last batch of an epoch is partial: padding is exercised
    config.train.num_negatives = 2
    training = build_run(config)
    limit = StepLimit(6)
    train_loop(training, num_epochs=2, hooks=[limit])
    flat = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(training.params())}
    np.savez(out, losses=np.asarray(limit.losses), devices=jax.local_device_count(), **flat)


if __name__ == "__main__":
    main()
