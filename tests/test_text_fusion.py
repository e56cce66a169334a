"""Text fusions end to end on the synthetic catalogue with a small random BERT: frozen and
fine-tuned regimes, cold items, checkpoints, serving new items from text."""

import numpy as np
import pytest

from configs import test as test_config
from graphrec_jax.checkpoint import CheckpointStore
from graphrec_jax.serving.recommender import Recommender
from graphrec_jax.training.workdir import train_and_evaluate


def _config(tiny_bert, fusion, regime="frozen"):
    config = test_config.get_config()
    config.data.synthetic.cold_item_ratio = 0.2
    config.data.split.method = "cold_item"
    config.model.fusion = fusion
    config.model.id_dropout = 0.3
    config.model.text.encoder = tiny_bert
    config.model.text.max_length = 32
    config.model.text.regime = regime
    config.model.text.freeze_layers = 1
    config.model.text.finetune_items_per_step = 16
    config.model.text.cache_dir = ""
    return config


@pytest.mark.parametrize("fusion", ["text_only", "concat", "text_node_input"])
def test_frozen_text_fusions_train_and_rank_cold_items(tiny_bert, fusion, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHREC_CACHE_DIR", str(tmp_path / "cache"))
    metrics = train_and_evaluate(_config(tiny_bert, fusion), tmp_path / "run")
    assert {"warm/recall@10", "cold/recall@10"} <= set(metrics)
    assert 0.0 <= metrics["cold/recall@10"] <= 1.0
    assert any((tmp_path / "cache").rglob("*.npy")), "frozen features were not cached"


def test_finetuned_tower_trains_checkpoints_and_serves_new_items(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHREC_CACHE_DIR", str(tmp_path / "cache"))
    config = _config(tiny_bert, "text_node_input", regime="finetune")
    workdir = tmp_path / "run"
    metrics = train_and_evaluate(config, workdir)
    assert "cold/recall@10" in metrics
    store = CheckpointStore(workdir, read_only=True)
    _, state, arrays, _ = store.restore(None, None)
    trained = state["train_state"]["params"]["text_encoder"]
    from graphrec_jax.text.pretrained import load_pretrained

    _, pretrained = load_pretrained(tiny_bert)
    before = np.asarray(pretrained["encoder"]["layer"]["1"]["output"]["dense"]["kernel"])
    after = np.asarray(trained["encoder"]["layer"]["1"]["output"]["dense"]["kernel"])
    assert not np.allclose(before, after), "the unfrozen layer did not train"
    assert "0" not in trained["encoder"]["layer"], "the frozen layer is not part of the trained parameters"

    recommender = Recommender.from_checkpoint(workdir, which="latest")
    np.testing.assert_allclose(recommender.setup.text_features, arrays["text_features"])
    title = "astronomy telescope star chart"
    recommender.add_items(["brand_new"], [title])
    assert "brand_new" in recommender.item_ids
    table = recommender.recommend(recommender.user_ids[:3], k=len(recommender.item_ids))
    assert (table.item_id == "brand_new").sum() == 3
    if recommender.item_categories is not None:  # the new item has no labels, and re-ranking by them works
        assert len(recommender.item_categories) == len(recommender.item_ids)
        assert recommender.item_categories[-1] == ()
        diverse = recommender.recommend(recommender.user_ids[:3], k=5, diversity=0.5, diversify_by="categories")
        assert len(diverse) == 15
    encoder = recommender._text_encoder()
    np.testing.assert_allclose(np.asarray(encoder.params["encoder"]["layer"]["1"]["output"]["dense"]["kernel"]), after)


def test_sampled_finetuning_encodes_only_the_subgraphs_items(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHREC_CACHE_DIR", str(tmp_path / "cache"))
    from graphrec_jax.graph.build import ITEM_NODE
    from graphrec_jax.training.run import build_run

    config = _config(tiny_bert, "text_node_input", regime="finetune")
    config.sampling.mode = "sampled"
    config.sampling.fanouts = "3,2"
    config.sampling.prefetch_batches = 0
    config.model.text.finetune_items_per_step = 512  # room for every item of a subgraph
    run = build_run(config)
    batch = next(iter(run.source.epoch(0)))
    num_users = run.setup.num_users
    for device, items in enumerate(batch.text_items):
        kind, global_id = batch.graph.nodes["kind"][device], batch.graph.nodes["global_id"][device]
        subgraph_items = set((global_id[kind == ITEM_NODE] - num_users).tolist())
        assert set(items.tolist()) == subgraph_items

    metrics = train_and_evaluate(config, tmp_path / "run")
    assert "cold/recall@10" in metrics and np.isfinite(metrics["cold/recall@10"])


def test_graph_only_model_cannot_take_text_items(tmp_path):
    config = test_config.get_config()
    train_and_evaluate(config, tmp_path)
    recommender = Recommender.from_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="text fusion"):
        recommender.add_items(["x"], ["some text"])
