"""Friends, listening history and artist text in one model: HetRec LastFM with SocialLGN's split.

    python scripts/train.py --config configs/lastfm_social.py --workdir runs/lastfm

LightGCN over the joint graph of listening pairs and friend links (links weighted 0.25), each
artist's name and top tags as its node input (`text_node_input`, all-MiniLM-L6-v2, frozen), and
each artist linked to its 10 nearest artists by that text (semantic edges, weight 0.5), so an
artist nobody played in training still gets its neighbours' signal. LightGCN's training protocol
(dim 64, 3 layers, Adam 1e-3, L2 1e-4, batch 2048, BPR with one negative over all artists). The
social weight and the semantic edges were chosen on a validation split carved from the training
pairs; `bench/social.py` runs this config against LightGCN (docs/BENCHMARKS.md, "Social").
"""

from graphrec_jax.config import bundled_text_encoder, default_config, lightgcn_protocol


def get_config():
    config = lightgcn_protocol(default_config())
    config.data.format = "sociallgn"
    config.data.path = "../shared/datasets/sociallgn-lastfm"
    config.data.split.method = "predefined"
    config.data.text.item_fields = "title,tags"
    config.model.social_weight = 0.25
    config.model.fusion = "text_node_input"
    config.model.text.encoder = bundled_text_encoder()
    config.model.text.max_length = 64
    config.model.text.semantic_k = 10
    config.model.text.semantic_weight = 0.5
    config.train.negative_items = "all"
    config.train.num_epochs = 800
    config.train.eval_every_epochs = 100
    config.eval.k = 20
    config.eval.extra_k = "10"
    return config
