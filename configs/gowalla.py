"""LightGCN on Gowalla with the LightGCN paper's split and protocol.

    python scripts/train.py --config configs/gowalla.py --workdir runs/gowalla \
        --config.data.path=../shared/datasets/lightgcn-gowalla
"""

from graphrec_jax.config import default_config, lightgcn_protocol


def get_config():
    config = lightgcn_protocol(default_config())
    config.data.format = "lightgcn"
    config.data.path = "../shared/datasets/lightgcn-gowalla"
    config.data.split.method = "predefined"
    config.train.num_epochs = 1000
    config.train.eval_every_epochs = 20
    config.train.checkpoint_every_steps = 2000
    config.eval.k = 20
    config.eval.user_chunk_size = 2048
    return config
