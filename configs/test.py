"""A tiny run for tests: a few seconds on one CPU core.

python scripts/train.py --config configs/test.py --workdir /tmp/graphrec-test
"""

from graphrec_jax.config import default_config


def get_config():
    config = default_config()
    config.data.format = "synthetic"
    config.data.synthetic.num_users = 60
    config.data.synthetic.num_items = 40
    config.data.synthetic.num_topics = 4
    config.data.synthetic.interactions_per_user = 8
    config.data.split.method = "ratio"
    config.model.embedding_dim = 16
    config.model.num_layers = 2
    config.train.batch_size = 64
    config.train.learning_rate = 1e-2
    config.train.num_epochs = 4
    config.train.eval_every_epochs = 2
    config.train.log_every_steps = 2
    config.train.progress_bar = False
    config.eval.k = 10
    config.eval.user_chunk_size = 32
    return config
