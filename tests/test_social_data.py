"""Social links and the SocialLGN folder format: generated files first, then the real LastFM copy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from graphrec_jax.config import default_config
from graphrec_jax.data import DataError, DataWarning, SocialLinks, prepare_dataset
from graphrec_jax.data.social import read_id_pairs
from tests.helpers import require_dataset

# Four users with interactions: ann, bob, cat, dan; each has three items.
INTERACTIONS = "user_id,item_id\n" + "".join(
    f"{user},{item}\n" for user in ("ann", "bob", "cat", "dan") for item in ("i1", "i2", "i3")
)


def _data_config(**overrides):
    """`default_config().data` with overrides given as `social__path=...` for data.social.path."""
    config = default_config()
    for key, value in overrides.items():
        node, *path = [config.data, *key.split("__")]
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return config.data


def _with_links(tmp_path, links: str, name: str = "links.csv", interactions: str = INTERACTIONS, **overrides):
    (tmp_path / "events.csv").write_text(interactions)
    (tmp_path / name).write_text(links)
    return _data_config(format="csv", path=str(tmp_path / "events.csv"), social__path=str(tmp_path / name), **overrides)


def _raw_links(dataset) -> list[tuple]:
    """The dataset's links as (raw user, raw friend), in stored order."""
    users = dataset.user_map.to_raw(dataset.social.users).tolist()
    friends = dataset.user_map.to_raw(dataset.social.friends).tolist()
    return list(zip(users, friends, strict=True))


def _is_sorted_and_distinct(social: SocialLinks) -> bool:
    keys = social.users.astype(np.int64) * 1_000_003 + social.friends
    return bool((np.diff(keys) > 0).all())


def test_undirected_links_hold_both_directions_without_self_links_or_duplicates(tmp_path):
    links = "user,friend\nann,bob\nbob,ann\ncat,ann\nann,ann\ncat,ann\n"
    config = _with_links(tmp_path, links)
    with pytest.warns(DataWarning) as caught:
        dataset = prepare_dataset(config)
    messages = " | ".join(str(warning.message) for warning in caught)
    assert "dropped 1 self-links" in messages and "links.csv" in messages
    assert "merged 1 duplicate rows" in messages and "1 (user, friend) links occurred more than once" in messages
    assert _raw_links(dataset) == [("ann", "bob"), ("ann", "cat"), ("bob", "ann"), ("cat", "ann")]
    assert len(dataset.social) == 4 and dataset.social.users.dtype == np.int32
    assert _is_sorted_and_distinct(dataset.social)
    assert dataset.num_users == 4  # links add no users by default


def test_directed_links_are_kept_as_given(tmp_path):
    config = _with_links(tmp_path, "user,friend\nann,bob\nbob,ann\ncat,ann\ndan,cat\n", social__directed=True)
    dataset = prepare_dataset(config)
    assert _raw_links(dataset) == [("ann", "bob"), ("bob", "ann"), ("cat", "ann"), ("dan", "cat")]
    undirected = prepare_dataset(_with_links(tmp_path, "user,friend\nann,bob\nbob,ann\ncat,ann\ndan,cat\n"))
    assert len(undirected.social) == 6  # ann-bob, cat-ann, dan-cat, each both ways


def test_unknown_link_user_names_the_id_and_line(tmp_path):
    config = _with_links(tmp_path, "user,friend\nann,bob\n\ncat,zed\n")
    with pytest.raises(DataError, match=r"links\.csv, line 4, column 'friend': user id 'zed' has no interaction"):
        prepare_dataset(config)
    with pytest.raises(DataError, match=r"unknown_users='add'"):
        prepare_dataset(config)


def test_unknown_users_add_makes_users_without_interactions(tmp_path):
    config = _with_links(tmp_path, "user,friend\nann,zed\nyan,bob\n", social__unknown_users="add")
    dataset = prepare_dataset(config)
    assert dataset.user_map.raw_ids.tolist() == ["ann", "bob", "cat", "dan", "yan", "zed"]
    added = dataset.user_map.to_index(["yan", "zed"])
    assert not np.isin(dataset.train.users, added).any()
    for split in dataset.evaluation.values():
        assert not np.isin(split.interactions.users, added).any()
    assert _raw_links(dataset) == [("ann", "zed"), ("bob", "yan"), ("yan", "bob"), ("zed", "ann")]


def test_unknown_users_policy_is_checked(tmp_path):
    config = _with_links(tmp_path, "user,friend\nann,bob\n", social__unknown_users="ignore")
    with pytest.raises(DataError, match=r"data\.social\.unknown_users='ignore' is not one of 'error', 'add'"):
        prepare_dataset(config)


def test_custom_columns_tsv_and_explicit_separator(tmp_path):
    config = _with_links(
        tmp_path,
        "src\tdst\tweight\nann\tbob\t1\ncat\tdan\t2\n",
        name="links.tsv",
        social__user_column="src",
        social__friend_column="dst",
        social__directed=True,
    )
    assert _raw_links(prepare_dataset(config)) == [("ann", "bob"), ("cat", "dan")]
    (tmp_path / "links.dat").write_text("a;b\nbob;cat\n")
    config.social.path = str(tmp_path / "links.dat")
    config.social.update({"user_column": "a", "friend_column": "b", "separator": ";"})
    assert _raw_links(prepare_dataset(config)) == [("bob", "cat")]
    config.social.friend_column = "c"
    with pytest.raises(DataError, match=r"links\.dat has no column 'c' \(set data\.social\.friend_column\).*'a', 'b'"):
        prepare_dataset(config)


def test_parquet_integer_ids_match_integer_looking_interaction_ids(tmp_path):
    interactions = "user_id,item_id\n" + "".join(f"{user},{item}\n" for user in (7, 8, 9) for item in (1, 2, 3))
    (tmp_path / "events.csv").write_text(interactions)
    pd.DataFrame({"user": [7, 9, 9], "friend": [8, 7, 8]}).to_parquet(tmp_path / "links.parquet")
    config = _data_config(format="csv", path=str(tmp_path / "events.csv"), social__path=str(tmp_path / "links.parquet"))
    dataset = prepare_dataset(config)
    assert dataset.user_map.raw_ids.tolist() == [7, 8, 9]
    assert _raw_links(dataset) == [(7, 8), (7, 9), (8, 7), (8, 9), (9, 7), (9, 8)]
    # "007" is not the integer 7: every user id becomes text, and "007" is unknown.
    (tmp_path / "links.csv").write_text("user,friend\n7,8\n007,9\n")
    config.social.path = str(tmp_path / "links.csv")
    with pytest.raises(DataError, match=r"links\.csv, line 3, column 'user': user id '007' has no interaction"):
        prepare_dataset(config)


@pytest.mark.filterwarnings("ignore::graphrec_jax.data.DataWarning")
@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("", r"links\.csv is empty"),
        ("user,friend\n", r"links\.csv has a header but no rows"),
        ("user,friend\nann,bob\n,cat\n", r"links\.csv, line 3, column 'user': the id is empty"),
        ("user,friend\nann,bob\ncat,  \n", r"links\.csv, line 3, column 'friend': the id is (empty|blank)"),
        ("user,friend\nann,bob\ncat,dan,bob\n", r"links\.csv, line 3: expected 2 fields.*found 3"),
        ("user,friend\nann,ann\n", r"every link joins a user to themself"),
        ("uid,friend\nann,bob\n", r"no column 'user' \(set data\.social\.user_column\).*'uid', 'friend'"),
    ],
)
def test_link_file_errors_name_file_line_and_column(tmp_path, content, pattern):
    config = _with_links(tmp_path, content)
    with pytest.raises(DataError, match=pattern):
        prepare_dataset(config)


def test_link_file_missing_and_bad_parquet_values(tmp_path):
    config = _with_links(tmp_path, "user,friend\nann,bob\n")
    config.social.path = str(tmp_path / "nowhere.csv")
    with pytest.raises(DataError, match=r"social link file .*nowhere\.csv does not exist; set data\.social\.path"):
        prepare_dataset(config)
    pd.DataFrame({"user": [1.0, 2.5], "friend": [2.0, 1.0]}).to_parquet(tmp_path / "links.parquet")
    with pytest.raises(DataError, match=r"links\.parquet, row 2, column 'user': id 2\.5 is not an integer"):
        read_id_pairs(tmp_path / "links.parquet", columns=("user", "friend"))
    # the interactions' id checks apply to links too: no list ids, no uint64 ids wrapped to negatives
    pd.DataFrame({"user": [[1, 2], [3]], "friend": [2, 1]}).to_parquet(tmp_path / "links.parquet")
    with pytest.raises(DataError, match=r"links\.parquet, row 1, column 'user': .*ids must be integers or strings"):
        read_id_pairs(tmp_path / "links.parquet", columns=("user", "friend"))
    big = np.array([1, 2**64 - 1], dtype=np.uint64)
    pd.DataFrame({"user": np.array([2, 1], dtype=np.uint64), "friend": big}).to_parquet(tmp_path / "links.parquet")
    with pytest.raises(DataError, match=r"links\.parquet, row 2, column 'friend': .*18446744073709551615"):
        read_id_pairs(tmp_path / "links.parquet", columns=("user", "friend"))
    (tmp_path / "links.csv").write_text("user,friend\n1,2\n,3\n")
    with pytest.raises(DataError, match=r"links\.csv, line 3, column 'user': the id is empty; every row needs two ids"):
        read_id_pairs(tmp_path / "links.csv", columns=("user", "friend"))
    with pytest.raises(DataError, match=r"data\.social\.user_column and data\.social\.friend_column both name"):
        prepare_dataset(_with_links(tmp_path, "user,friend\nann,bob\n", social__friend_column="user"))


def test_social_links_contract_is_enforced():
    links = SocialLinks(np.array([0, 0, 1]), np.array([1, 2, 0]))
    assert len(links) == 3 and links.friends.dtype == np.int32
    with pytest.raises(ValueError, match="themself"):
        SocialLinks(np.array([0, 1]), np.array([1, 1]))
    with pytest.raises(ValueError, match="distinct and sorted"):
        SocialLinks(np.array([1, 0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="distinct and sorted"):
        SocialLinks(np.array([0, 0]), np.array([1, 1]))


def test_links_stay_with_cold_users(tmp_path):
    interactions = "user_id,item_id\n" + "".join(f"u{user},i{item}\n" for user in range(20) for item in range(5))
    links = "user,friend\n" + "".join(f"u{user},u{(user + 1) % 20}\n" for user in range(20))
    dataset = prepare_dataset(
        _with_links(tmp_path, links, interactions=interactions, split__method="cold_user", split__cold_user_ratio=0.2)
    )
    cold = np.unique(dataset.evaluation["cold_users"].interactions.users)
    assert len(cold) == 4 and not np.isin(dataset.train.users, cold).any()
    assert len(dataset.evaluation["cold_users"].interactions) == 20  # all five items of each cold user
    assert len(dataset.social) == 40 and np.isin(cold, dataset.social.users).all()


# The SocialLGN folder format, generated: 4 users, artists 0..4 (HetRec ids 10..50).


def _write_sociallgn(root, *, raw: bool = True, trust: str = "user,friend\n0,1\n1,0\n2,3\n3,2\n1,2\n2,1\n"):
    preprocessed = root / "preprocessed"
    preprocessed.mkdir(parents=True)
    # User 3 has no test pair; item 3 occurs in no file, item 4 only in test_set.txt.
    (preprocessed / "train_set.txt").write_text("user,item\n0,0\n0,1\n1,1\n1,2\n2,0\n2,2\n3,0\n3,2\n")
    (preprocessed / "test_set.txt").write_text("user,item\n0,2\n1,0\n2,4\n")
    (preprocessed / "trust.txt").write_text(trust)
    (preprocessed / "itemReindex.json").write_text(json.dumps({str(10 * (i + 1)): i for i in range(5)}))
    (preprocessed / "userReindex.json").write_text(json.dumps({str(100 + u): u for u in range(4)}))
    if raw:
        folder = root / "raw"
        folder.mkdir()
        (folder / "artists.dat").write_text(
            'id\tname\turl\tpictureURL\n10\tMötley Crüe\thttp://a\thttp://b\n20\t"Weird Al" Yankovic\tu\tp\n'
            "30\tBand Three\tu\tp\n40\tQuiet Act\tu\tp\n50\tLast One\tu\tp\n99\tNot An Item\tu\tp\n",
            encoding="utf-8",
        )
        tags = ["metal", "électro", "rock", "pop"] + [f"tag{n:02d}" for n in range(12)]
        (folder / "tags.dat").write_bytes(
            ("tagID\ttagValue\n" + "".join(f"{n + 1}\t{tag}\n" for n, tag in enumerate(tags))).encode("latin-1")
        )
        rows = [
            # artist 10: rock by 3 users, metal and électro by 2 each (tie: by name, "m" < "é"), pop by 1
            (1, 10, 3), (2, 10, 3), (3, 10, 3), (1, 10, 1), (2, 10, 1), (4, 10, 2), (5, 10, 2), (6, 10, 4),
            (1, 10, 1),  # the same user and tag again counts once
            (7, 99, 1),  # an artist that is no item
        ]  # fmt: skip
        rows += [(user, 20, 5 + tag) for tag in range(12) for user in range(1 + tag)]  # artist 20: 12 tags
        (folder / "user_taggedartists.dat").write_text(
            "userID\tartistID\ttagID\tday\tmonth\tyear\n" + "".join(f"{u}\t{a}\t{t}\t1\t1\t2010\n" for u, a, t in rows)
        )
    return root


def _sociallgn_config(path, **overrides):
    return _data_config(format="sociallgn", path=str(path), split__method="predefined", **overrides)


def test_sociallgn_folder_split_links_text_and_tags(tmp_path):
    root = _write_sociallgn(tmp_path / "lastfm")
    with pytest.warns(DataWarning, match=r"1 interactions of .*test_set\.txt hold items that never occur"):
        dataset = prepare_dataset(_sociallgn_config(root))
    assert dataset.name == "lastfm"
    assert dataset.user_map.raw_ids.tolist() == [0, 1, 2, 3]
    assert dataset.item_map.raw_ids.tolist() == [0, 1, 2, 3, 4]  # item 3 occurs in no file, still an item
    assert len(dataset.train) == 8 and list(dataset.evaluation) == ["test"]
    test = dataset.evaluation["test"]
    assert test.candidate_items is None and len(test.interactions) == 3
    assert _raw_links(dataset) == [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)]
    assert dataset.item_text[0]["title"] == "Mötley Crüe" and dataset.item_text[1]["title"] == '"Weird Al" Yankovic'
    assert dataset.item_text[0]["tags"] == "rock, metal, électro, pop"
    assert dataset.item_categories[0] == ("rock", "metal", "électro", "pop")
    assert dataset.item_categories[1] == tuple(f"tag{n:02d}" for n in range(11, 1, -1))  # top 10 by users
    assert dataset.item_categories[2] == () and dataset.item_text[2] == {"title": "Band Three", "tags": ""}

    # data.path may name the preprocessed folder itself; ../raw is still found.
    with pytest.warns(DataWarning):
        same = prepare_dataset(_sociallgn_config(root / "preprocessed"))
    assert same.item_text == dataset.item_text and same.name == "lastfm"


def test_sociallgn_without_raw_has_no_text_and_respects_directed(tmp_path):
    root = _write_sociallgn(tmp_path / "lastfm", raw=False, trust="user,friend\n0,1\n2,3\n")
    with pytest.warns(DataWarning):
        directed = prepare_dataset(_sociallgn_config(root, social__directed=True))
    assert directed.item_text is None and directed.item_categories is None
    assert directed.num_items == 5  # 0..4: the largest index in the files, plus one
    assert _raw_links(directed) == [(0, 1), (2, 3)]
    with pytest.warns(DataWarning):
        undirected = prepare_dataset(_sociallgn_config(root))
    assert _raw_links(undirected) == [(0, 1), (1, 0), (2, 3), (3, 2)]


def test_sociallgn_links_can_be_replaced_and_unknown_users_checked(tmp_path):
    root = _write_sociallgn(tmp_path / "lastfm", trust="user,friend\n0,1\n1,7\n")
    with pytest.raises(DataError, match=r"trust\.txt, line 3, column 'friend': user id 7 has no interaction"):
        prepare_dataset(_sociallgn_config(root))
    with pytest.warns(DataWarning):
        added = prepare_dataset(_sociallgn_config(root, social__unknown_users="add"))
    assert added.user_map.raw_ids.tolist() == [0, 1, 2, 3, 7]
    (tmp_path / "other.csv").write_text("user,friend\n3,0\n")
    (root / "preprocessed" / "trust.txt").unlink()  # data.social.path replaces it, so it is not read
    with pytest.warns(DataWarning):
        replaced = prepare_dataset(_sociallgn_config(root, social__path=str(tmp_path / "other.csv")))
    assert _raw_links(replaced) == [(0, 3), (3, 0)]
    with pytest.raises(DataError, match=r"SocialLGN link file .*trust\.txt does not exist"):
        prepare_dataset(_sociallgn_config(root))


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("preprocessed/train_set.txt", "user,item\n0,0\n1,x\n", r"train_set\.txt, line 3, column 'item': 'x' is not"),
        ("preprocessed/test_set.txt", "user,item\n0,1\n-1,2\n", r"test_set\.txt, line 3, column 'user': '-1' is not"),
        ("preprocessed/test_set.txt", "user,item\n5,1\n", r"test_set\.txt, line 2: user 5 has no interaction"),
        ("preprocessed/trust.txt", "who,friend\n0,1\n", r"trust\.txt has no column 'user'"),
        ("preprocessed/itemReindex.json", '{"10": 0, "x": 1}', r"itemReindex\.json: entry 'x'"),
        ("preprocessed/itemReindex.json", '{"10": 0, "20": 0}', r"two artist ids map to the same item index"),
        ("raw/tags.dat", "tagID\ttagValue\n1\tmetal\n", r"user_taggedartists\.dat, line 2: tag id 3 is not listed"),
        ("raw/artists.dat", "id\tname\n10\tA\nten\tB\n", r"artists\.dat, line 3, column 'id': 'ten' is not an integer"),
        ("raw/user_taggedartists.dat", "userID\tartistID\n", r"user_taggedartists\.dat has no column 'tagID'"),
    ],
)
def test_sociallgn_errors_name_file_and_line(tmp_path, name, content, pattern):
    root = _write_sociallgn(tmp_path / "lastfm")
    (root / name).write_text(content)
    with pytest.raises(DataError, match=pattern):
        prepare_dataset(_sociallgn_config(root))


def test_sociallgn_folder_problems(tmp_path):
    with pytest.raises(DataError, match=r"SocialLGN folder .*nowhere does not exist"):
        prepare_dataset(_sociallgn_config(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"is not a SocialLGN folder: expected preprocessed/"):
        prepare_dataset(_sociallgn_config(tmp_path / "empty"))
    root = _write_sociallgn(tmp_path / "lastfm")
    with pytest.raises(DataError, match=r"reads its split from train_set\.txt.*clear data\.split\.folder"):
        prepare_dataset(_sociallgn_config(root, split__folder="split"))
    (root / "preprocessed" / "itemReindex.json").unlink()
    with pytest.raises(DataError, match=r"item id map .*itemReindex\.json does not exist"):
        prepare_dataset(_sociallgn_config(root))


def test_sociallgn_cold_user_resplits_train_and_test(tmp_path):
    root = tmp_path / "lastfm"
    (root / "preprocessed").mkdir(parents=True)
    rng = np.random.default_rng(0)
    pairs = [(user, int(item)) for user in range(30) for item in rng.choice(12, size=6, replace=False)]
    (root / "preprocessed" / "train_set.txt").write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in pairs[::2]))
    (root / "preprocessed" / "test_set.txt").write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in pairs[1::2]))
    (root / "preprocessed" / "trust.txt").write_text("user,friend\n" + "".join(f"{u},{u + 1}\n" for u in range(29)))
    config = _data_config(format="sociallgn", path=str(root), split__method="cold_user", split__cold_user_ratio=0.2)
    dataset = prepare_dataset(config)
    assert list(dataset.evaluation) == ["test", "cold_users"]
    cold = dataset.evaluation["cold_users"].interactions
    assert len(np.unique(cold.users)) == 6 and len(cold) == 36  # every pair of the 6 cold users
    assert not np.isin(dataset.train.users, cold.users).any()
    held_out = len(dataset.evaluation["test"].interactions)
    assert len(dataset.train) + held_out + len(cold) == 180
    assert len(dataset.social) == 58 and np.isin(np.unique(cold.users), dataset.social.users).all()
    again = prepare_dataset(config)
    assert again.evaluation["cold_users"].interactions.users.tolist() == cold.users.tolist()


# The real LastFM copy (SocialLGN's split): skipped when ../shared/datasets is absent.


@pytest.mark.data
def test_sociallgn_lastfm_statistics_and_reference_matrix():
    root = require_dataset("sociallgn-lastfm")
    with pytest.warns(DataWarning, match=r"2458 interactions of .*test_set\.txt hold items that never occur"):
        dataset = prepare_dataset(_sociallgn_config(root))
    assert (dataset.num_users, dataset.num_items) == (1_892, 17_632)
    assert (len(dataset.train), len(dataset.evaluation["test"].interactions)) == (74_267, 18_567)
    assert len(np.unique(dataset.evaluation["test"].interactions.users)) == 1_881
    assert dataset.user_map.raw_ids[1891] == 1891 and dataset.item_map.raw_ids[17631] == 17631
    social = dataset.social
    assert len(social) == 25_434 and int((social.users < social.friends).sum()) == 12_717
    assert len(np.unique(social.users)) == 1_892

    # SOURCE.md: social_adj_mat.npz is D^-1/2 S D^-1/2 of trust.txt.
    sparse = pytest.importorskip("scipy.sparse")
    reference = sparse.load_npz(root / "preprocessed" / "social_adj_mat.npz").toarray()
    adjacency = np.zeros((1_892, 1_892))
    adjacency[social.users, social.friends] = 1.0
    scale = 1.0 / np.sqrt(adjacency.sum(axis=1))
    np.testing.assert_allclose(scale[:, None] * adjacency * scale[None, :], reference, atol=1e-12)

    artists = json.loads((root / "preprocessed" / "itemReindex.json").read_text())
    britney = artists["289"]
    assert dataset.item_text[britney]["title"] == "Britney Spears"
    assert dataset.item_categories[britney][:3] == ("pop", "dance", "female vocalists")
    assert len(dataset.item_categories[britney]) == 10
    assert sum(1 for labels in dataset.item_categories if labels) == 12_133  # tagged artists
    assert all(entry["title"] for entry in dataset.item_text)


@pytest.mark.data
def test_sociallgn_lastfm_cold_user_split():
    root = require_dataset("sociallgn-lastfm")
    config = _data_config(format="sociallgn", path=str(root / "preprocessed"), split__method="cold_user")
    dataset = prepare_dataset(config)
    cold = dataset.evaluation["cold_users"].interactions
    assert len(np.unique(cold.users)) == 189  # 10 % of 1,892 users
    assert not np.isin(dataset.train.users, cold.users).any()
    assert len(dataset.train) + len(dataset.evaluation["test"].interactions) + len(cold) == 92_834
    assert len(dataset.social) == 25_434
