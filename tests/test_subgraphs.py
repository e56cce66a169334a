"""Sampled subgraphs: exactness, unbiasedness, symmetry, padding, budgets, determinism, training."""

import json
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from graphrec_jax.config import ConfigError, validate_config
from graphrec_jax.graph.build import ITEM_NODE, SOCIAL_EDGE, build_interaction_graph, pad_graph
from graphrec_jax.graph.layers import lightgcn_propagate
from graphrec_jax.graph.subgraphs import (
    NeighborSampler,
    _choose_without_replacement,
    importance_operators,
    pad_subgraph,
)
from graphrec_jax.models.network import RecommenderModel
from graphrec_jax.serving.propagation import propagate_layerwise
from graphrec_jax.training.batches import TripleSampler
from graphrec_jax.training.sampled import SampledSubgraphBatches, SubgraphBudgetWarning
from graphrec_jax.training.workdir import train_and_evaluate
from tests.helpers import dense_adjacency

NUM_USERS, NUM_ITEMS = 30, 20


@pytest.fixture(scope="module")
def interactions():
    rng = np.random.default_rng(0)
    pairs = {
        (int(u), int(i)) for u, i in zip(rng.integers(0, NUM_USERS, 220), rng.integers(0, NUM_ITEMS, 220), strict=True)
    }
    users, items = (np.array(column, np.int32) for column in zip(*sorted(pairs), strict=True))
    return users, items


@pytest.fixture(scope="module")
def graph(interactions):
    return build_interaction_graph(NUM_USERS, NUM_ITEMS, *interactions)


SEEDS = np.array([0, 3, 3, 17, NUM_USERS + 2, NUM_USERS + 5, NUM_USERS + 5, NUM_USERS + 11])


def _outputs_and_gradients(model, params, graph, rows, cotangent):
    def loss(params):
        return jnp.sum(model.apply({"params": params}, graph, rows=rows)[0] * cotangent)

    return model.apply({"params": params}, graph, rows=rows)[0], jax.grad(loss)(params)


@pytest.mark.parametrize("architecture", ["lightgcn", "gcn"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("native", [False, True])
def test_full_fanout_subgraph_gives_full_graph_outputs_and_gradients(graph, architecture, num_layers, native):
    # A fanout above every degree takes every neighbour: the estimator is exact, so the
    # subgraph must reproduce the full graph's outputs and parameter gradients at the seeds.
    sampler = NeighborSampler(graph, NUM_USERS, [100] * num_layers, native=native)
    subgraph, positions = sampler.sample(SEEDS, np.random.default_rng(1))
    padded = pad_subgraph(subgraph, int(subgraph.n_node[0]) + 40, int(subgraph.n_edge[0]) + 64)
    model = RecommenderModel(
        num_nodes=NUM_USERS + NUM_ITEMS, embedding_dim=8, num_layers=num_layers, architecture=architecture
    )
    params = model.init(jax.random.PRNGKey(0), graph)["params"]
    cotangent = np.random.default_rng(2).normal(size=(len(SEEDS), 8)).astype(np.float32)
    full, full_grads = _outputs_and_gradients(model, params, graph, jnp.asarray(SEEDS, jnp.int32), cotangent)
    part, part_grads = _outputs_and_gradients(model, params, padded, jnp.asarray(positions), cotangent)
    np.testing.assert_allclose(part, full, atol=1e-5)
    for full_grad, part_grad in zip(jax.tree.leaves(full_grads), jax.tree.leaves(part_grads), strict=True):
        np.testing.assert_allclose(part_grad, full_grad, atol=1e-5)


@pytest.mark.parametrize("architecture", ["lightgcn", "sociallgn"])
@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("native", [False, True])
def test_full_fanout_subgraph_of_a_social_graph_is_exact_per_edge_kind(interactions, architecture, directed, native):
    # Hops sample items and friends alike; each subgraph edge keeps its kind, so SocialLGN's
    # separate interaction and social aggregates (and the joint LightGCN's sum) stay exact.
    rng = np.random.default_rng(5)
    followers, friends = rng.integers(0, NUM_USERS, 60), rng.integers(0, NUM_USERS, 60)
    keep = followers != friends
    pairs = set(zip(followers[keep].tolist(), friends[keep].tolist(), strict=True))
    if not directed:
        pairs |= {(b, a) for a, b in pairs}
    followers, friends = (np.array(side) for side in zip(*sorted(pairs), strict=True))
    social = build_interaction_graph(
        NUM_USERS, NUM_ITEMS, *interactions, social=(followers, friends), social_weight=0.7
    )
    sampler = NeighborSampler(social, NUM_USERS, [100, 100], native=native)
    subgraph, positions = sampler.sample(SEEDS, np.random.default_rng(1))
    kinds = np.asarray(subgraph.edges["kind"])
    assert SOCIAL_EDGE in kinds and np.all(np.diff(kinds) >= 0)  # blocks by kind, as the full graph's
    padded = pad_subgraph(subgraph, int(subgraph.n_node[0]) + 40, int(subgraph.n_edge[0]) + 64)
    model = RecommenderModel(num_nodes=NUM_USERS + NUM_ITEMS, embedding_dim=8, num_layers=2, architecture=architecture)
    params = model.init(jax.random.PRNGKey(0), social)["params"]
    cotangent = np.random.default_rng(2).normal(size=(len(SEEDS), 8)).astype(np.float32)
    full, full_grads = _outputs_and_gradients(model, params, social, jnp.asarray(SEEDS, jnp.int32), cotangent)
    part, part_grads = _outputs_and_gradients(model, params, padded, jnp.asarray(positions), cotangent)
    np.testing.assert_allclose(part, full, atol=1e-5)
    for full_grad, part_grad in zip(jax.tree.leaves(full_grads), jax.tree.leaves(part_grads), strict=True):
        np.testing.assert_allclose(part_grad, full_grad, atol=1e-5)


@pytest.mark.parametrize("native", [False, True])
def test_subgraph_is_symmetric_so_backward_uses_its_transpose(graph, native):
    sampler = NeighborSampler(graph, NUM_USERS, [3, 2], native=native)
    for seed in range(5):
        subgraph, _ = sampler.sample(SEEDS, np.random.default_rng(seed))
        adjacency = dense_adjacency(subgraph)
        np.testing.assert_array_equal(adjacency, adjacency.T)
        assert np.all(np.diff(subgraph.receivers) >= 0)
        np.testing.assert_array_equal(
            subgraph.nodes["edge_start"], np.searchsorted(subgraph.receivers, np.arange(len(adjacency)))
        )


@pytest.mark.parametrize("native", [False, True])
def test_uniform_estimator_is_unbiased_at_both_layers(graph, native):
    embeddings = np.random.default_rng(3).normal(size=(NUM_USERS + NUM_ITEMS, 4))
    full = dense_adjacency(graph)
    expected = [(full @ embeddings)[SEEDS], (full @ full @ embeddings)[SEEDS]]
    sampler = NeighborSampler(graph, NUM_USERS, [2, 2], native=native)
    draws = [[], []]
    for seed in range(1500):
        subgraph, positions = sampler.sample(SEEDS, np.random.default_rng(seed))
        adjacency = dense_adjacency(subgraph)
        first = adjacency @ embeddings[subgraph.nodes["global_id"]]
        draws[0].append(first[positions])
        draws[1].append((adjacency @ first)[positions])
    for layer in range(2):
        values = np.stack(draws[layer])
        standard_error = values.std(axis=0) / np.sqrt(len(values)) + 1e-9
        z = np.abs(values.mean(axis=0) - expected[layer]) / standard_error
        assert np.max(z) < 5.0, (layer, np.max(z))
    # and the sample is genuinely partial: some draws differ from the full aggregate
    assert np.max(np.abs(np.stack(draws[1]) - expected[1])) > 1e-3


@pytest.mark.parametrize("social_links", [False, True])
@pytest.mark.parametrize("fanouts", [[100], [100, 100]])
def test_native_and_numpy_samplers_build_identical_subgraphs_when_every_neighbour_is_taken(
    interactions, graph, social_links, fanouts
):
    # Taking every neighbour leaves nothing to chance, so the two paths must agree array for array.
    if social_links:
        rng = np.random.default_rng(6)
        followers, friends = rng.integers(0, NUM_USERS, 40), rng.integers(0, NUM_USERS, 40)
        keep = followers != friends
        graph = build_interaction_graph(
            NUM_USERS, NUM_ITEMS, *interactions, social=(followers[keep], friends[keep]), social_weight=0.5
        )
    native, numpy = (NeighborSampler(graph, NUM_USERS, fanouts, native=flag) for flag in (True, False))
    (a, a_positions), (b, b_positions) = (s.sample(SEEDS, np.random.default_rng(0)) for s in (native, numpy))
    np.testing.assert_array_equal(a_positions, b_positions)
    for left, right in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert left.dtype == right.dtype
        np.testing.assert_array_equal(left, right)


def test_native_sampler_draws_distinct_true_neighbours_and_replays_from_its_seed(graph):
    sampler = NeighborSampler(graph, NUM_USERS, [3], native=True)
    adjacency = dense_adjacency(graph) != 0
    subgraph, positions = sampler.sample(SEEDS, np.random.default_rng(9))
    global_id = subgraph.nodes["global_id"]
    first_hop = subgraph.receivers < len(np.unique(SEEDS))  # seeds' in-edges come first
    for seed_position in np.unique(positions):
        senders = global_id[subgraph.senders[first_hop & (subgraph.receivers == seed_position)]]
        node = global_id[seed_position]
        assert len(senders) == min(3, adjacency[node].sum()) == len(set(senders.tolist()))
        assert adjacency[node, senders].all()
    again, _ = sampler.sample(SEEDS, np.random.default_rng(9))
    for left, right in zip(jax.tree.leaves(subgraph), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(left, right)
    with pytest.raises(ValueError, match=r"node indices in \[0, 50\)"):
        sampler.sample(np.array([0, NUM_USERS + NUM_ITEMS]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="method='uniform' only"):
        NeighborSampler(graph, NUM_USERS, [3], "importance", native=True)


@pytest.mark.parametrize("native", [False, True])
def test_padding_never_leaks(graph, native):
    sampler = NeighborSampler(graph, NUM_USERS, [3, 2], native=native)
    subgraph, positions = sampler.sample(SEEDS, np.random.default_rng(4))
    model = RecommenderModel(num_nodes=NUM_USERS + NUM_ITEMS, embedding_dim=8, num_layers=2)
    params = model.init(jax.random.PRNGKey(0), graph)["params"]
    cotangent = np.ones((len(SEEDS), 8), np.float32)
    results = []
    for extra_nodes, extra_edges in [(1, 0), (300, 900), (1000, 5)]:
        padded = pad_subgraph(subgraph, int(subgraph.n_node[0]) + extra_nodes, int(subgraph.n_edge[0]) + extra_edges)
        results.append(_outputs_and_gradients(model, params, padded, jnp.asarray(positions), cotangent))
    for outputs, grads in results[1:]:
        np.testing.assert_allclose(outputs, results[0][0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(grads["node_embedding"], results[0][1]["node_embedding"], rtol=1e-6, atol=1e-7)


def test_fast_padding_matches_pad_graph_on_the_real_part(graph):
    sampler = NeighborSampler(graph, NUM_USERS, [3, 2])
    subgraph, _ = sampler.sample(SEEDS, np.random.default_rng(5))
    nodes, edges = int(subgraph.n_node[0]) + 50, int(subgraph.n_edge[0]) + 70
    fast, generic = pad_subgraph(subgraph, nodes, edges), pad_graph(subgraph, nodes, edges)
    for key in generic.nodes:
        assert fast.nodes[key].dtype == generic.nodes[key].dtype
        np.testing.assert_array_equal(fast.nodes[key][: nodes - 50], generic.nodes[key][: nodes - 50])
        if key != "edge_start":
            np.testing.assert_array_equal(fast.nodes[key][nodes - 50 :], generic.nodes[key][nodes - 50 :])
    np.testing.assert_array_equal(fast.n_node, generic.n_node)
    np.testing.assert_array_equal(fast.n_edge, generic.n_edge)
    np.testing.assert_array_equal(fast.senders[: edges - 70], generic.senders[: edges - 70])
    np.testing.assert_array_equal(fast.edges["weight"][edges - 70 :], 0.0)
    # padding edges join padding nodes only, spread over them, and keep the CSR layout valid
    assert np.all(fast.receivers[edges - 70 :] >= nodes - 50)
    assert len(np.unique(fast.receivers[edges - 70 :])) > 1
    np.testing.assert_array_equal(fast.nodes["edge_start"], np.searchsorted(fast.receivers, np.arange(nodes)))


def _source(interactions, **overrides):
    users, items = interactions
    sampler = TripleSampler(NUM_USERS, NUM_ITEMS, users, items, seed=0)
    graph = build_interaction_graph(NUM_USERS, NUM_ITEMS, users, items)
    arguments = dict(batch_size=32, num_negatives=2, num_devices=2, seed=5)
    arguments.update(overrides)
    fanouts = arguments.pop("fanouts", [3, 2])
    return SampledSubgraphBatches(sampler, NeighborSampler(graph, NUM_USERS, fanouts), **arguments)


def test_batch_indices_point_at_their_seeds_within_the_budget(interactions):
    source = _source(interactions)
    triples = source.sampler.sample_epoch(0, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SubgraphBudgetWarning)
        batches = list(source.epoch(0))
    assert len(batches) == source.batches_per_epoch
    row = 0
    for batch in batches:
        assert batch.users.shape == (2, 16) and batch.negatives.shape == (2, 16, 2)
        assert batch.graph.senders.shape == (2, source.edge_budget)
        for device in range(2):
            global_id = batch.graph.nodes["global_id"][device]
            is_seed = batch.graph.nodes["is_seed"][device]
            kind = batch.graph.nodes["kind"][device]
            assert batch.graph.n_node[device][0] < source.node_budget
            mask = batch.mask[device]
            real = int(mask.sum())
            users = batch.users[device][:real]
            positives = NUM_USERS + batch.positives[device][:real]
            negatives = NUM_USERS + batch.negatives[device][:real]
            np.testing.assert_array_equal(global_id[users], triples["users"][row : row + real])
            np.testing.assert_array_equal(global_id[positives], NUM_USERS + triples["positives"][row : row + real])
            np.testing.assert_array_equal(global_id[negatives], NUM_USERS + triples["negatives"][row : row + real])
            np.testing.assert_array_equal(batch.positive_items[device][:real], triples["positives"][row : row + real])
            assert is_seed[users].all() and is_seed[positives].all() and is_seed[negatives].all()
            assert (kind[positives] == ITEM_NODE).all() and (kind[users] != ITEM_NODE).all()
            row += real
    assert row == len(triples["users"])


def test_batches_are_deterministic_and_resume_mid_epoch(interactions):
    straight = list(_source(interactions).epoch(3))
    resumed = list(_source(interactions).epoch(3, start_batch=2))
    assert len(resumed) == len(straight) - 2
    for a, b in zip(straight[2:], resumed, strict=True):
        jax.tree.map(np.testing.assert_array_equal, a, b)
    other_epoch = next(_source(interactions).epoch(4))
    assert not np.array_equal(other_epoch.graph.senders, straight[0].graph.senders)


def test_multi_process_shards_equal_single_process_devices(interactions):
    single = next(_source(interactions, num_devices=2).epoch(1))
    for process in range(2):
        part = next(_source(interactions, num_devices=1, process_index=process, process_count=2).epoch(1))
        jax.tree.map(lambda a, b, p=process: np.testing.assert_array_equal(a[p], b[0]), single, part)


def test_over_budget_batches_drop_rows_with_a_counted_warning(interactions):
    computed = _source(interactions)
    source = _source(interactions, node_budget=computed.node_budget // 3)
    with pytest.warns(SubgraphBudgetWarning, match=r"dropped \d+ \(\d+ dropped so far\)"):
        batches = list(source.epoch(0))
    real = sum(int(batch.mask.sum()) for batch in batches)
    assert source.dropped_rows > 0
    assert real + source.dropped_rows == computed.sampler.num_interactions
    for batch in batches:
        assert np.all(batch.graph.n_node[:, 0] < source.node_budget)
    with pytest.raises(ValueError, match="sampling.node_budget"):
        list(_source(interactions, node_budget=1, edge_budget=1).epoch(0))


def test_choose_without_replacement_is_distinct_and_uniform():
    population = np.array([5, 12, 40] * 4000)
    picks = _choose_without_replacement(population, 4, np.random.default_rng(0))
    assert picks.shape == (len(population), 4)
    assert np.all(picks >= 0) and np.all(picks < population[:, None])
    assert all(len(set(row)) == 4 for row in picks[:300])
    frequency = np.bincount(picks[population == 5].ravel(), minlength=5) / (4000 * 4)
    np.testing.assert_allclose(frequency, 0.2, atol=0.02)


def test_importance_neighbourhoods_follow_random_walk_visits():
    # users 0 and 1 share four items, user 2 shares one with user 0: user 0's top user is 1
    users = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3])
    items = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 5])
    graph = build_interaction_graph(4, 6, users, items)
    sampler = NeighborSampler(graph, 4, [2, 1], "importance", num_walks=400, walk_length=2, seed=0)
    tables = sampler.tables
    for fanout, table in tables.items():
        lengths = table.row_lengths()
        assert lengths.max() <= fanout
        totals = np.add.reduceat(table.weights, table.offsets[:-1][lengths > 0])
        np.testing.assert_allclose(totals, 1.0, rtol=1e-6)
        kinds = graph.nodes["kind"]
        rows = np.repeat(np.arange(table.num_rows), lengths)
        np.testing.assert_array_equal(kinds[table.neighbors], kinds[rows])  # even walks: same type
    assert tables[1].neighbors[tables[1].offsets[0]] == 1
    assert tables[2].neighbors[tables[2].offsets[0] : tables[2].offsets[1]].tolist() == [1, 2]
    again = importance_operators(sampler.operator, [2, 1], num_walks=400, walk_length=2, seed=0)
    np.testing.assert_array_equal(again[2].weights, tables[2].weights)


def test_importance_subgraph_equals_layerwise_propagation_over_the_tables(graph):
    sampler = NeighborSampler(graph, NUM_USERS, [4, 3], "importance", num_walks=30, walk_length=3, seed=1)
    subgraph, positions = sampler.sample(SEEDS, np.random.default_rng(0))
    embeddings = np.random.default_rng(6).normal(size=(NUM_USERS + NUM_ITEMS, 8)).astype(np.float32)
    padded = pad_subgraph(subgraph, int(subgraph.n_node[0]) + 1, int(subgraph.n_edge[0]))
    part = lightgcn_propagate(
        padded, jnp.asarray(embeddings)[padded.nodes["global_id"]], 2, rows=jnp.asarray(positions)
    )
    full = propagate_layerwise(sampler.hop_operators(), embeddings, chunk_rows=16)[SEEDS]
    np.testing.assert_allclose(part, full, atol=1e-5)


def test_sampled_config_validation():
    config = test_config.get_config()
    config.sampling.mode = "sampled"
    config.sampling.fanouts = "5,5,5"
    config.model.num_layers = 3
    with pytest.raises(ConfigError, match="supports 1 or 2 layers"):
        validate_config(config)
    config.sampling.fanouts = "5"
    with pytest.raises(ConfigError, match="model.num_layers=3"):
        validate_config(config)
    config.model.num_layers = 1
    config.sampling.node_budget = -1
    with pytest.raises(ConfigError, match="sampling.node_budget"):
        validate_config(config)


def test_sampled_training_learns_and_resumes_exactly(tmp_path):
    config = test_config.get_config()
    config.sampling.mode = "sampled"
    config.sampling.fanouts = "5,4"
    config.train.checkpoint_every_steps = 5  # mid-epoch checkpoints (6 batches per epoch)
    straight = train_and_evaluate(config, tmp_path / "straight")
    assert straight["test/recall@10"] > 0.35
    short = test_config.get_config()
    short.sampling.mode, short.sampling.fanouts = "sampled", "5,4"
    short.train.checkpoint_every_steps = 5
    short.train.num_epochs = 2
    train_and_evaluate(short, tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "12")  # resume from step 10, inside epoch 2
    resumed = train_and_evaluate(config, tmp_path / "resumed")
    timing = ("epoch_seconds", "eval_seconds")
    assert {k: v for k, v in resumed.items() if not k.endswith(timing)} == {
        k: v for k, v in straight.items() if not k.endswith(timing)
    }
    records = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [2, 4]
