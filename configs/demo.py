"""The built-in demo: LightGCN on the synthetic catalogue, about a minute on 2 CPU cores.

python scripts/train.py --config configs/demo.py --workdir runs/demo
"""

from graphrec_jax.config import default_config


def get_config():
    config = default_config()
    config.data.format = "synthetic"
    config.data.split.method = "ratio"
    config.data.split.test_ratio = 0.2
    config.model.name = "lightgcn"
    config.model.embedding_dim = 64
    config.model.num_layers = 3
    config.train.batch_size = 1024
    config.train.learning_rate = 5e-3
    config.train.num_epochs = 40
    config.train.eval_every_epochs = 10
    return config
