"""The demo catalogue: deterministic, right sizes, and topic signal in both interactions and text."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from graphrec_jax.data.synthetic import TOPICS, cold_item_ids, generate_catalogue


@pytest.fixture(scope="module")
def catalogue():
    return generate_catalogue(600, 400, 8, 20, seed=0)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z][a-z-]+", text.lower()))


def test_deterministic_for_a_seed_and_different_for_another(catalogue):
    table, text = catalogue
    again_table, again_text = generate_catalogue(600, 400, 8, 20, seed=0)
    assert table.equals(again_table) and text == again_text
    other_table, other_text = generate_catalogue(600, 400, 8, 20, seed=1)
    assert not table.equals(other_table) and text != other_text


def test_sizes_ids_and_columns(catalogue):
    table, text = catalogue
    assert table.columns.tolist() == ["user_id", "item_id", "rating", "timestamp"]
    assert table["user_id"].nunique() == 600
    assert len(text) == 400
    assert set(table["item_id"]) <= {f"item_{index:04d}" for index in range(400)}
    assert table["user_id"].iloc[0] == "user_0000"
    per_user = table.groupby("user_id").size()
    assert abs(per_user.mean() - 20) < 1.5 and per_user.min() >= 2
    assert not table.duplicated(["user_id", "item_id"]).any()
    assert table["rating"].between(1, 5).all()
    assert all(set(entry) == {"title", "description", "brand", "categories"} for entry in text)


def test_timestamps_increase_along_each_user(catalogue):
    table, _ = catalogue
    same_user = table["user_id"].to_numpy()[1:] == table["user_id"].to_numpy()[:-1]
    assert (np.diff(table["timestamp"].to_numpy())[same_user] > 0).all()


def test_users_concentrate_on_few_topics(catalogue):
    table, text = catalogue
    topic_of_item = {f"item_{index:04d}": entry["categories"] for index, entry in enumerate(text)}
    topics = table["item_id"].map(topic_of_item)
    top3_share = [
        sum(count for _, count in Counter(group).most_common(3)) / len(group)
        for _, group in topics.groupby(table["user_id"])
    ]
    # Uniform choice over 8 topics would put about 3/8 of a user's items in their top three.
    assert np.mean(top3_share) > 0.8


def test_items_of_one_topic_share_vocabulary(catalogue):
    _, text = catalogue
    template_words = {"for", "and"}  # the description template's own glue words
    words = [_words(entry["title"] + " " + entry["description"]) - template_words for entry in text]
    topics = [entry["categories"] for entry in text]
    within, across = [], []
    rng = np.random.default_rng(0)
    for _ in range(3000):
        first, second = rng.integers(len(text), size=2)
        if first == second:
            continue
        jaccard = len(words[first] & words[second]) / len(words[first] | words[second])
        (within if topics[first] == topics[second] else across).append(jaccard)
    assert np.mean(within) > 4 * np.mean(across)
    assert len({entry["title"] for entry in text}) > 0.9 * len(text)  # titles are not a topic label


def test_cold_items_come_last_and_text_ranks_them_better_than_random():
    table, text = generate_catalogue(600, 400, 8, 20, cold_item_ratio=0.2, seed=0)
    cold = cold_item_ids(400, 0.2)
    assert len(cold) == 80 and cold[0] == "item_0320" and cold[-1] == "item_0399"
    is_cold = table["item_id"].isin(cold).to_numpy()
    same_user = table["user_id"].to_numpy()[1:] == table["user_id"].to_numpy()[:-1]
    assert not (is_cold[:-1] & ~is_cold[1:] & same_user).any()  # never a warm item after a cold one

    # A text-only ranker: bag of words of the user's warm items against each cold item's words.
    vocabulary = sorted(set().union(*(_words(" ".join(entry.values())) for entry in text)))
    position = {word: index for index, word in enumerate(vocabulary)}
    vectors = np.zeros((len(text), len(vocabulary)))
    for index, entry in enumerate(text):
        for word in _words(" ".join(entry.values())):
            vectors[index, position[word]] = 1.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    item_index = table["item_id"].str.slice(5).astype(int).to_numpy()
    cold_index = np.arange(320, 400)
    hits, total = 0, 0
    for rows in table.groupby("user_id").indices.values():
        warm, held_out = item_index[rows[~is_cold[rows]]], item_index[rows[is_cold[rows]]]
        if len(warm) == 0 or len(held_out) == 0:
            continue
        scores = vectors[cold_index] @ vectors[warm].sum(axis=0)
        top = cold_index[np.argsort(-scores)[:10]]
        hits += np.isin(held_out, top).sum()
        total += len(held_out)
    recall = hits / total
    assert recall > 2.0 * (10 / 80), f"text-only recall@10 on cold items {recall:.3f} vs random {10 / 80:.3f}"


def test_invalid_sizes_raise():
    with pytest.raises(ValueError, match="num_topics"):
        generate_catalogue(10, 40, len(TOPICS) + 1, 5)
    with pytest.raises(ValueError, match="cold_item_ratio"):
        generate_catalogue(10, 40, 4, 5, cold_item_ratio=1.0)
