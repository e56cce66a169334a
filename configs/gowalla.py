"""LightGCN on Gowalla with the LightGCN paper's split and protocol.

    python scripts/train.py --config configs/gowalla.py --workdir runs/gowalla \
        --config.data.path=../shared/datasets/lightgcn-gowalla
"""

from graphrec_jax.config import default_config


def get_config():
    config = default_config()
    config.data.format = "lightgcn"
    config.data.path = "../shared/datasets/lightgcn-gowalla"
    config.data.split.method = "predefined"
    config.model.name = "lightgcn"
    config.model.embedding_dim = 64
    config.model.num_layers = 3
    config.model.init_std = 0.1
    config.train.loss = "bpr"
    config.train.batch_size = 2048
    config.train.learning_rate = 1e-3
    config.train.l2_weight = 1e-4
    config.train.num_epochs = 1000
    config.train.eval_every_epochs = 20
    config.train.checkpoint_every_steps = 2000
    config.eval.k = 20
    config.eval.user_chunk_size = 2048
    return config
