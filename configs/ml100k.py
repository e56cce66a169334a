"""LightGCN on MovieLens-100K's fixed split (../shared/datasets/ml-100k/split), LightGCN protocol.

    python scripts/train.py --config configs/ml100k.py --workdir runs/ml100k \
        --config.data.path=../shared/datasets/ml-100k/split

The LightGCN paper's protocol (as configs/gowalla.py) on another split: dim 64, 3 layers,
N(0, 0.1) init, BPR with one negative, Adam 1e-3, L2 1e-4, batch 2048.
"""

from graphrec_jax.config import default_config, lightgcn_protocol


def get_config():
    config = lightgcn_protocol(default_config())
    config.data.format = "lightgcn"
    config.data.path = "../shared/datasets/ml-100k/split"
    config.data.split.method = "predefined"
    config.train.num_epochs = 200
    config.train.eval_every_epochs = 20
    config.eval.k = 20
    config.eval.user_chunk_size = 512
    return config
