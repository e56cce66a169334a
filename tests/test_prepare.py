"""prepare_dataset end to end: configs to validated Datasets, and every failure names its fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphrec_jax.config import default_config
from graphrec_jax.data import (
    DataError,
    DataWarning,
    datasets_root,
    load_dataset,
    load_id_maps,
    prepare_dataset,
)


def _data_config(**overrides):
    """`default_config().data` with overrides given as `split__method="ratio"` for data.split.method."""
    config = default_config()
    for key, value in overrides.items():
        node, *path = [config.data, *key.split("__")]
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return config.data


def _pairs(interactions) -> set:
    return set(zip(interactions.users.tolist(), interactions.items.tolist(), strict=True))


def test_synthetic_default_is_a_valid_dataset():
    dataset = prepare_dataset(_data_config())
    assert (dataset.num_users, dataset.num_items) == (600, 400)
    assert dataset.user_map.raw_ids[7] == "user_0007" and dataset.item_map.raw_ids[42] == "item_0042"
    assert list(dataset.evaluation) == ["test"]
    assert len(dataset.item_text) == 400 and dataset.item_text[0]["title"]
    assert not _pairs(dataset.train) & _pairs(dataset.evaluation["test"].interactions)
    assert dataset.train.ratings is not None and dataset.train.timestamps is not None
    again = load_dataset(default_config())
    assert _pairs(again.train) == _pairs(dataset.train)


def test_synthetic_cold_items_make_a_warm_cold_split():
    dataset = prepare_dataset(_data_config(synthetic__cold_item_ratio=0.2, split__method="cold_item"))
    assert list(dataset.evaluation) == ["warm", "cold"]
    cold = dataset.evaluation["cold"].candidate_items
    assert dataset.item_map.to_raw(cold).tolist() == [f"item_{index:04d}" for index in range(320, 400)]
    assert not np.isin(dataset.train.items, cold).any()
    assert not np.isin(dataset.evaluation["warm"].candidate_items, cold).any()
    with pytest.raises(DataError, match="set data.split.method='cold_item'"):
        prepare_dataset(_data_config(synthetic__cold_item_ratio=0.2, split__method="ratio"))


def test_csv_string_ids_duplicates_and_threshold(tmp_path):
    path = tmp_path / "ratings.csv"
    rows = ["user_id,item_id,rating,timestamp"]
    rows += [
        f"u{user:03d},{item:03d},{1 + (user + item) % 5},{user * 100 + item}" for user in range(10) for item in range(8)
    ]
    rows += ["u000,000,5,9999", "u000,000,1,1"]  # two duplicates of an existing pair
    path.write_text("\n".join(rows) + "\n")
    with pytest.warns(DataWarning, match=r"merged 2 duplicate rows .*1 \(user, item\) pairs"):
        dataset = prepare_dataset(_data_config(format="csv", path=str(path), split__method="leave_one_out"))
    assert dataset.item_map.raw_ids.tolist()[:2] == ["000", "001"]  # zero-padded ids stay strings
    assert dataset.user_map.raw_ids[0] == "u000"
    assert len(dataset.train) + len(dataset.evaluation["test"].interactions) == 80
    test = dataset.evaluation["test"].interactions
    user0 = test.users == dataset.user_map.to_index(["u000"])[0]
    assert dataset.item_map.to_raw(test.items[user0]).tolist() == ["000"]  # merged pair is the latest (9999)
    np.testing.assert_allclose(test.ratings[user0], [5.0])

    kept = prepare_dataset(_data_config(format="csv", path=str(path), rating_threshold=4.0))
    assert (kept.train.ratings >= 4).all()
    for split in kept.evaluation.values():
        assert (split.interactions.ratings >= 4).all()

    dataset.save_id_maps(tmp_path)
    users, items = load_id_maps(tmp_path)
    assert items.raw_ids.tolist() == dataset.item_map.raw_ids.tolist()


def test_rating_threshold_without_ratings_names_the_key(tmp_path):
    path = tmp_path / "implicit.csv"
    path.write_text("user_id,item_id\n1,2\n1,3\n2,2\n")
    with pytest.raises(DataError, match=r"data\.rating_threshold=4\.0 needs ratings.*implicit\.csv has no rating"):
        prepare_dataset(_data_config(format="csv", path=str(path), rating_threshold=4.0))


def test_temporal_without_timestamps_is_an_error(tmp_path):
    path = tmp_path / "implicit.csv"
    path.write_text("user_id,item_id\n1,2\n1,3\n2,2\n")
    with pytest.raises(DataError, match="needs timestamps"):
        prepare_dataset(_data_config(format="csv", path=str(path), split__method="temporal"))


def test_empty_evaluation_split_is_an_error(tmp_path):
    path = tmp_path / "single.csv"
    path.write_text("user_id,item_id\n1,2\n2,3\n")  # one interaction per user: nothing to hold out
    with pytest.raises(DataError, match="evaluation split 'test' is empty"):
        prepare_dataset(_data_config(format="csv", path=str(path)))


def _write_split(folder, files: dict[str, str]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_lightgcn_predefined_split(tmp_path):
    folder = _write_split(tmp_path / "lg", {"train.txt": "0 0 1 2\n1 2 3\n2\n", "test.txt": "0 3\n1 0 1\n"})
    dataset = prepare_dataset(_data_config(format="lightgcn", path=str(folder), split__method="predefined"))
    assert dataset.user_map.raw_ids.tolist() == [0, 1, 2] and dataset.item_map.raw_ids.tolist() == [
        0,
        1,
        2,
        3,
    ]
    assert _pairs(dataset.train) == {(0, 0), (0, 1), (0, 2), (1, 2), (1, 3)}
    assert _pairs(dataset.evaluation["test"].interactions) == {(0, 3), (1, 0), (1, 1)}
    assert dataset.evaluation["test"].candidate_items is None and dataset.item_text is None
    with pytest.warns(DataWarning, match="re-splits the union"):
        resplit = prepare_dataset(_data_config(format="lightgcn", path=str(folder), split__method="leave_one_out"))
    assert len(resplit.train) + len(resplit.evaluation["test"].interactions) == 8


@pytest.mark.parametrize(
    ("files", "pattern"),
    [
        ({"test.txt": "0 1\n5 2\n"}, r"test\.txt, line 2: user 5 has no interaction in train\.txt"),
        ({"test.txt": "0 1\n2 0\n"}, r"test\.txt, line 2: user 2 has no interaction in train\.txt"),
        ({"test.txt": "0 1 x\n"}, r"test\.txt, line 1: token 'x' is not a non-negative integer"),
        (
            {"test_warm.txt": "1 0\n", "test_cold.txt": "1 3\n"},
            r"split 'cold' .* needs the list of cold items",
        ),
        (
            {"test_warm.txt": "1 0\n", "test_cold.txt": "1 1\n", "cold_items.txt": "3\n"},
            r"test_cold\.txt, line 1: item 1 is not listed in cold_items\.txt",
        ),
        (
            {"test_warm.txt": "1 0\n", "test_cold.txt": "1 2\n", "cold_items.txt": "2\n"},
            r"train\.txt, line 1: item 2 is listed in cold_items\.txt, so it is cold",
        ),
        (
            {"test_warm.txt": "0 1\n1 3\n", "test_cold.txt": "1 3\n", "cold_items.txt": "3\n"},
            r"test_warm\.txt, line 2: item 3 is a cold item",
        ),
    ],
)
def test_predefined_split_errors_name_file_line_and_id(tmp_path, files, pattern):
    folder = _write_split(tmp_path / "lg", {"train.txt": "0 0 2\n1 2\n2\n", **files})
    with pytest.raises(DataError, match=pattern):
        prepare_dataset(_data_config(format="lightgcn", path=str(folder), split__method="predefined"))


def test_predefined_test_item_without_training_warns(tmp_path):
    folder = _write_split(tmp_path / "lg", {"train.txt": "0 0\n1 1\n", "test.txt": "0 1 7\n"})
    with pytest.warns(DataWarning, match=r"1 interactions of .*test\.txt hold items that never occur in train\.txt"):
        dataset = prepare_dataset(_data_config(format="lightgcn", path=str(folder), split__method="predefined"))
    assert len(dataset.evaluation["test"].interactions) == 2


def _write_amazon(folder):
    folder.mkdir()
    sequences = {"0": [0, 1, 2, 3], "1": [1, 2, 4], "2": [0, 3, 4, 1]}
    items = {str(item): {"title": f"Item &amp; {item}", "brand": "B", "categories": "C"} for item in range(6)}
    (folder / "Shop.inter.json").write_text(json.dumps(sequences))
    (folder / "Shop.item.json").write_text(json.dumps(items))
    _write_split(
        folder / "split-cold",
        {
            "train.txt": "0 0 1\n1 1 2\n2 0 1\n",
            "test_warm.txt": "0 2\n",
            "test_cold.txt": "0 3\n1 4\n2 3 4\n",
            "cold_items.txt": "3\n4\n",
        },
    )
    return folder


def test_amazon_split_cold_and_generic_split(tmp_path):
    folder = _write_amazon(tmp_path / "shop")
    dataset = prepare_dataset(
        _data_config(format="amazon", path=str(folder), split__method="predefined", split__folder="split-cold")
    )
    assert dataset.name == "Shop"
    assert dataset.num_items == 6  # item 5 has text but no interaction, and still has an index
    assert dataset.item_text[5]["title"] == "Item & 5"
    assert list(dataset.evaluation) == ["warm", "cold"]
    assert dataset.evaluation["cold"].candidate_items.tolist() == [3, 4]
    assert dataset.evaluation["warm"].candidate_items.tolist() == [0, 1, 2, 5]
    assert len(dataset.evaluation["cold"].interactions) == 4

    loo = prepare_dataset(_data_config(format="amazon", path=str(folder), split__method="leave_one_out"))
    test = loo.evaluation["test"].interactions
    assert sorted(_pairs(test)) == [(0, 3), (1, 4), (2, 1)]  # sequence order


def test_item_categories_from_amazon_text(tmp_path):
    folder = _write_amazon(tmp_path / "shop")
    items = json.loads((folder / "Shop.item.json").read_text())
    items["0"]["categories"] = "Office Electronics, Telephones & Accessories, Cordless Telephones"
    items["1"]["categories"] = ["Office Products", " Paper ", "", "Office Products"]  # a list, padded, repeated
    items["2"]["categories"] = ""
    (folder / "Shop.item.json").write_text(json.dumps(items))
    dataset = prepare_dataset(_data_config(format="amazon", path=str(folder)))
    categories = dict(zip(dataset.item_map.raw_ids.tolist(), dataset.item_categories, strict=True))
    # Item ids "0".."5" are integer-looking, so they become ints.
    assert categories[0] == ("Office Electronics", "Telephones & Accessories", "Cordless Telephones")
    assert categories[1] == ("Office Products", "Paper")
    assert categories[2] == () and categories[5] == ("C",)
    assert len(dataset.item_categories) == dataset.num_items
    two_fields = prepare_dataset(
        _data_config(format="amazon", path=str(folder), text__category_fields="brand, categories")
    )
    assert dict(zip(two_fields.item_map.raw_ids.tolist(), two_fields.item_categories, strict=True))[1] == (
        "B",
        "Office Products",
        "Paper",
    )
    assert (
        prepare_dataset(_data_config(format="amazon", path=str(folder), text__category_fields="")).item_categories
        is None
    )
    assert (
        prepare_dataset(_data_config(format="amazon", path=str(folder), text__category_fields="genres")).item_categories
        is None
    )


def test_item_categories_from_movielens_genres_and_synthetic_categories(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "u.data").write_text(
        "".join(f"{user}\t{item}\t4\t{user * 10 + item}\n" for user in (1, 2) for item in (1, 2, 3))
    )
    flags = {1: [0, 1, 1] + [0] * 16, 2: [0] * 19, 3: [0] * 18 + [1]}
    (folder / "u.item").write_text(
        "".join(f"{item}|Film {item}|01-Jan-1995||url|{'|'.join(map(str, flags[item]))}\n" for item in (1, 2, 3))
    )
    dataset = prepare_dataset(_data_config(format="movielens", path=str(folder)))
    assert dataset.item_categories == [("Action", "Adventure"), (), ("Western",)]
    (tmp_path / "events.csv").write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for u in (1, 2) for i in range(5)))
    assert prepare_dataset(_data_config(format="csv", path=str(tmp_path / "events.csv"))).item_categories is None

    synthetic = prepare_dataset(_data_config())
    assert all(len(labels) >= 2 for labels in synthetic.item_categories)
    assert synthetic.item_categories[0] == tuple(
        part.strip() for part in synthetic.item_text[0]["categories"].split(",")
    )
    assert synthetic.social is None


def test_cold_user_split_from_a_csv(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id\n" + "".join(f"u{user},i{item}\n" for user in range(30) for item in range(4)))
    config = _data_config(format="csv", path=str(path), split__method="cold_user", split__cold_user_ratio=0.1)
    dataset = prepare_dataset(config)
    assert list(dataset.evaluation) == ["test", "cold_users"]
    cold = dataset.evaluation["cold_users"].interactions
    assert len(np.unique(cold.users)) == 3 and len(cold) == 12
    assert not np.isin(dataset.train.users, cold.users).any()
    assert dataset.num_users == 30  # cold users keep their index
    again = prepare_dataset(config)
    assert again.evaluation["cold_users"].interactions.users.tolist() == cold.users.tolist()
    config.split.seed += 1
    assert prepare_dataset(config).evaluation["cold_users"].interactions.users.tolist() != cold.users.tolist()


def test_amazon_split_file_ids_must_belong_to_the_data(tmp_path):
    folder = _write_amazon(tmp_path / "shop")
    (folder / "split-cold" / "test_cold.txt").write_text("0 3\n9 4\n")
    config = _data_config(format="amazon", path=str(folder), split__method="predefined", split__folder="split-cold")
    with pytest.raises(DataError, match=r"test_cold\.txt, line 2: user id 9 does not occur in the data"):
        prepare_dataset(config)


def test_split_keys_need_predefined_method(tmp_path):
    folder = _write_amazon(tmp_path / "shop")
    with pytest.raises(DataError, match="only when data.split.method='predefined'"):
        prepare_dataset(_data_config(format="amazon", path=str(folder), split__folder="split-cold"))
    with pytest.raises(DataError, match="set data.split.folder"):
        prepare_dataset(_data_config(format="amazon", path=str(folder), split__method="predefined"))


def test_explicit_split_files(tmp_path):
    folder = _write_amazon(tmp_path / "shop")
    config = _data_config(
        format="amazon",
        path=str(folder),
        split__method="predefined",
        split__train_file="split-cold/train.txt",
        split__test_files="warm=split-cold/test_warm.txt,cold=split-cold/test_cold.txt",
        split__cold_items_file="split-cold/cold_items.txt",
    )
    dataset = prepare_dataset(config)
    assert list(dataset.evaluation) == ["warm", "cold"] and len(dataset.train) == 6


def test_csv_with_predefined_split_files_and_text_ids(tmp_path):
    (tmp_path / "events.csv").write_text("user_id,item_id\nann,x1\nann,x2\nbob,x2\nbob,x3\n")
    _write_split(tmp_path / "split", {"train.txt": "ann x1\nbob x2 x3\n", "test.txt": "ann x2\n"})
    config = _data_config(
        format="csv", path=str(tmp_path / "events.csv"), split__method="predefined", split__folder="split"
    )
    dataset = prepare_dataset(config)
    assert dataset.user_map.raw_ids.tolist() == ["ann", "bob"]
    assert dataset.item_map.to_raw(dataset.evaluation["test"].interactions.items).tolist() == ["x2"]
    (tmp_path / "split" / "test.txt").write_text("ann x2\nann y9\n")
    with pytest.raises(DataError, match=r"test\.txt, line 2: item id 'y9' does not occur in the data"):
        prepare_dataset(config)


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(DataError, match="needs data.path"):
        prepare_dataset(_data_config(format="csv"))
    with pytest.raises(DataError, match=r"MovieLens folder .* does not exist"):
        prepare_dataset(_data_config(format="movielens", path=str(tmp_path / "nowhere")))
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DataError, match=rf"split folder {nowhere} does not exist"):
        prepare_dataset(_data_config(format="lightgcn", path=str(nowhere), split__method="predefined"))


# Real datasets: skipped when ../shared/datasets (or $GRAPHREC_DATASETS) is absent.


def _dataset_folder(name: str):
    folder = datasets_root() / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is not available")
    return folder


def _count_pairs(path) -> int:
    return sum(max(len(line.split()) - 1, 0) for line in path.read_text().splitlines())


@pytest.mark.data
def test_movielens_100k():
    folder = _dataset_folder("ml-100k")
    with pytest.warns(DataWarning, match=r"dropped \d+ of 20000 'test' interactions"):
        dataset = prepare_dataset(_data_config(format="movielens", path=str(folder), split__method="temporal"))
    assert (dataset.num_users, dataset.num_items) == (943, 1682)
    assert len(dataset.train) == 80_000
    test = dataset.evaluation["test"].interactions
    assert dataset.train.timestamps.max() <= test.timestamps.min()
    assert dataset.item_map.to_raw(np.array([0]))[0] == 1
    assert dataset.item_text[dataset.item_map.to_index([543])[0]]["title"] == "Misérables, Les (1995)"
    ratio = prepare_dataset(_data_config(format="movielens", path=str(folder)))
    assert len(ratio.train) + len(ratio.evaluation["test"].interactions) == 100_000


@pytest.mark.data
def test_movielens_100k_fixed_split():
    folder = _dataset_folder("ml-100k") / "split"
    with pytest.warns(DataWarning, match="never occur in train.txt"):
        dataset = prepare_dataset(_data_config(format="lightgcn", path=str(folder), split__method="predefined"))
    assert (len(dataset.train), len(dataset.evaluation["test"].interactions)) == (80_000, 20_000)
    assert dataset.num_users == 943


@pytest.mark.data
def test_gowalla():
    folder = _dataset_folder("lightgcn-gowalla")
    dataset = prepare_dataset(_data_config(format="lightgcn", path=str(folder), split__method="predefined"))
    assert (dataset.num_users, dataset.num_items) == (29_858, 40_981)
    assert (len(dataset.train), len(dataset.evaluation["test"].interactions)) == (810_128, 217_242)
    assert dataset.user_map.raw_ids[123] == 123 and dataset.item_map.raw_ids[4567] == 4567


@pytest.mark.data
def test_amazon_office_split_cold():
    folder = _dataset_folder("amazon-office-text")
    config = _data_config(format="amazon", path=str(folder), split__method="predefined", split__folder="split-cold")
    dataset = prepare_dataset(config)
    assert (dataset.num_users, dataset.num_items) == (4_905, 2_420)
    cold = dataset.evaluation["cold"].candidate_items
    assert len(cold) == len((folder / "split-cold" / "cold_items.txt").read_text().split())
    assert not np.isin(dataset.train.items, cold).any()
    assert len(dataset.train) == _count_pairs(folder / "split-cold" / "train.txt")
    assert len(dataset.evaluation["warm"].interactions) == _count_pairs(folder / "split-cold" / "test_warm.txt")
    assert len(dataset.evaluation["cold"].interactions) == _count_pairs(folder / "split-cold" / "test_cold.txt")
    assert all(entry["title"] for entry in dataset.item_text[:50])
    assert "&amp;" not in " ".join(entry["description"] for entry in dataset.item_text)
