import jax
import numpy as np
import pytest

from graphrec_jax.text.bert import BertConfig, BertModel, pool
from graphrec_jax.text.finetune import (
    TextTower,
    choose_text_items,
    compute_prefix_states,
    embed_all,
    unit_rows,
)

CONFIG = BertConfig(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
)


@pytest.fixture(scope="module")
def bert():
    model = BertModel(CONFIG)
    ids = np.random.default_rng(0).integers(5, 50, (4, 10)).astype(np.int32)
    mask = np.ones((4, 10), np.int32)
    mask[1, 6:] = 0
    mask[3, 2:] = 0
    params = model.init(jax.random.PRNGKey(0), ids, mask)["params"]
    return model, params, ids, mask


@pytest.mark.parametrize("freeze_layers", [0, 1, 3])
@pytest.mark.parametrize("pooling", ["mean", "pooler", "cls"])
def test_prefix_then_embed_equals_the_whole_tower(bert, freeze_layers, pooling):
    model, params, ids, mask = bert
    output = model.apply({"params": params}, ids, mask)
    expected = pool(output.last_hidden_state, mask, output.pooler_output, pooling)
    tower = TextTower(CONFIG, freeze_layers, pooling)
    prefix = tower.prefix(params, ids, mask)
    result = tower.embed(tower.trainable_params(params), prefix, mask)
    np.testing.assert_allclose(result, expected, atol=1e-5)


def test_trainable_split_and_merge_round_trip(bert):
    _, params, _, _ = bert
    tower = TextTower(CONFIG, 2, "mean")
    trainable = tower.trainable_params(params)
    assert set(trainable["encoder"]["layer"]) == {"2"}
    assert "embeddings" not in trainable
    changed = jax.tree.map(lambda leaf: leaf + 1.0, trainable)
    merged = tower.merge_params(params, changed)
    np.testing.assert_array_equal(
        merged["encoder"]["layer"]["2"]["output"]["dense"]["bias"],
        params["encoder"]["layer"]["2"]["output"]["dense"]["bias"] + 1.0,
    )
    np.testing.assert_array_equal(
        merged["encoder"]["layer"]["0"]["output"]["dense"]["bias"],
        params["encoder"]["layer"]["0"]["output"]["dense"]["bias"],
    )
    with pytest.raises(ValueError, match="freeze_layers"):
        TextTower(CONFIG, 4, "mean")


def test_batched_host_passes_match_direct_calls(bert):
    model, params, ids, mask = bert
    tower = TextTower(CONFIG, 2, "mean")
    prefix = compute_prefix_states(tower, params, {"input_ids": ids, "attention_mask": mask}, batch_size=3)
    np.testing.assert_allclose(prefix, tower.prefix(params, ids, mask), atol=1e-6)
    features = embed_all(tower, tower.trainable_params(params), prefix, mask, batch_size=3)
    direct = unit_rows(tower.embed(tower.trainable_params(params), prefix, mask))
    np.testing.assert_allclose(features, direct, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)


def test_text_items_are_the_batch_items_capped_at_capacity():
    rows = np.array([7, 3, 7, 9, 3])
    items = choose_text_items(rows, capacity=6, rng=np.random.default_rng(0))
    assert items.shape == (6,) and set(items.tolist()) == {3, 7, 9}
    capped = choose_text_items(np.arange(100), capacity=8, rng=np.random.default_rng(0))
    assert len(set(capped.tolist())) == 8 and set(capped.tolist()) <= set(range(100))
