"""LightGCN on MovieLens-100K's fixed split (../shared/datasets/ml-100k/split), LightGCN protocol.

    python scripts/train.py --config configs/ml100k.py --workdir runs/ml100k \
        --config.data.path=../shared/datasets/ml-100k/split
"""

from configs import gowalla


def get_config():
    config = gowalla.get_config()  # the LightGCN paper's protocol, on another split
    config.data.path = "../shared/datasets/ml-100k/split"
    config.train.num_epochs = 200
    config.train.checkpoint_every_steps = 0
    config.eval.user_chunk_size = 512
    return config
