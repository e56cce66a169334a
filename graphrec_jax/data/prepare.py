"""From a data config to a validated `Dataset`: read, build id maps, filter, merge, split, check.

`prepare_dataset(config.data)` is the single entry point; it raises `DataError` for
any problem before returning, so a trainer can create its workdir only once data is
known to be good. Host code, not jittable.

Raw ids: an id kind (users, items) becomes int64 when every id of that kind, across all
files read, is written as a canonical decimal integer; otherwise all ids of that kind
stay strings exactly as written ("007" stays "007"). Id maps list ids in sorted order.
Social links (`data.social.path`, or a SocialLGN folder's trust.txt) are user ids of the
same kind, unified with the interaction user ids.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd

from graphrec_jax.data import synthetic
from graphrec_jax.data.amazon import read_amazon
from graphrec_jax.data.errors import DataError, warn
from graphrec_jax.data.predefined import SplitFiles, build_predefined_splits, read_split_files
from graphrec_jax.data.readers import RawData, read_movielens, read_table, unify_ids
from graphrec_jax.data.social import IdPairs, check_unknown_user_policy, links_to_index, read_id_pairs
from graphrec_jax.data.sociallgn import read_sociallgn
from graphrec_jax.data.splits import (
    Splits,
    cold_item_split,
    merge_duplicates,
    sorted_unique,
    split_interactions,
)
from graphrec_jax.data.types import Dataset, IdMap, Interactions

_TABLE_FORMATS = ("csv", "tsv", "parquet")
FORMATS = (*_TABLE_FORMATS, "movielens", "lightgcn", "amazon", "sociallgn", "synthetic")  # data.format
CATEGORY_FIELDS = "categories,genres,tags"


def load_dataset(config: ml_collections.ConfigDict) -> Dataset:
    """`prepare_dataset(config.data)` for a whole run config."""
    return prepare_dataset(config.data)


def prepare_dataset(data_config: ml_collections.ConfigDict) -> Dataset:
    """Reads, validates and splits the data that `data_config` (the `config.data` block) names.

    Social links: `data.social.path` names a csv/tsv/parquet table of user-user links
    (columns `data.social.user_column`, `friend_column`); a SocialLGN folder brings its own
    trust.txt, which `data.social.path` replaces when set. Item categories come from the item
    text fields named by `data.text.category_fields`.

    Raises:
      DataError: for a missing or malformed file, a missing column, an unparsable value, an
        unknown id in a split or link file, or a split that leaves training or evaluation empty.
        The message names the file, line or column, and the fix.
    """
    file_format = data_config.format
    split = data_config.split
    if file_format not in FORMATS:
        raise DataError(f"data.format={file_format!r} is not one of {', '.join(map(repr, FORMATS))}")
    if file_format != "synthetic" and not data_config.path:
        raise DataError(f"data.format={file_format!r} needs data.path (a file or folder)")
    path = Path(str(data_config.path)).expanduser()
    social = data_config.get("social")
    unknown_users = check_unknown_user_policy(social.unknown_users) if social is not None else "error"
    uses_files = split.method == "predefined" and file_format not in ("synthetic", "sociallgn")
    if file_format == "sociallgn" and (split.folder or split.train_file):
        raise DataError(
            "data.format='sociallgn' reads its split from train_set.txt and test_set.txt; "
            "clear data.split.folder and data.split.train_file"
        )
    if not uses_files and (split.folder or split.train_file) and file_format != "lightgcn":
        raise DataError(
            f"data.split.folder / data.split.train_file are read only when data.split.method='predefined', "
            f"but it is {split.method!r}; set the method to 'predefined' or clear those keys"
        )

    links, extra_items, files = None, None, None
    own_links = social is None or not social.path
    if file_format == "sociallgn":
        base, cold_raw, links, extra_items, files = _read_sociallgn(path, split.method, read_links=own_links)
    else:
        base, cold_raw = _read_base(data_config, path)
        if file_format == "synthetic" and data_config.synthetic.get("friends_per_user", 0) > 0 and own_links:
            links = _synthetic_links(base, data_config.synthetic)
    if not own_links:
        links = read_id_pairs(
            Path(str(social.path)).expanduser(),
            columns=(social.user_column, social.friend_column),
            keys=("data.social.user_column", "data.social.friend_column"),
            separator=social.separator,
        )
    if uses_files or file_format == "lightgcn":
        # split paths are relative to a table's folder; a missing path is reported as it was given
        folder = path.parent if path.is_file() else path
        files = read_split_files(folder, split, file_format, integer_ids=file_format == "lightgcn")
    if file_format == "lightgcn" and not uses_files:
        warn(
            f"data.format='lightgcn' ships its own train/test split, but data.split.method={split.method!r} "
            "re-splits the union of its files; set data.split.method='predefined' to use the files' split"
        )
        base, files = _flatten(files), None
    if base is not None:
        base = _apply_rating_threshold(base, data_config.rating_threshold)
    elif data_config.rating_threshold is not None:
        raise DataError(
            f"data.rating_threshold={data_config.rating_threshold} needs ratings, but LightGCN-format "
            "files have none; unset data.rating_threshold"
        )

    user_map, item_map, base, files, cold_raw, item_text, links = _build_id_maps(
        base, files, cold_raw, links=links, add_link_users=unknown_users == "add", extra_items=extra_items
    )
    # Typed (int64 or str) indexes: hashing Python objects would make Gowalla-size lookups slow.
    user_index, item_index = pd.Index(user_map.raw_ids.tolist()), pd.Index(item_map.raw_ids.tolist())
    social_links = None
    if links is not None:
        directed = bool(social.directed) if social is not None else False
        social_links = links_to_index(links, user_index, directed=directed)
    if files is not None:
        defined_by = base.source if base is not None else "the split files"
        train, evaluation = build_predefined_splits(files, user_index, item_index, defined_by=defined_by)
    else:
        interactions = _to_index_space(base, user_index, item_index)
        interactions, _ = merge_duplicates(interactions, len(item_map), source=base.source)
        train, evaluation = _split(interactions, split, len(item_map), cold_raw, item_index)

    name = data_config.name or (base.name if base is not None else path.name) or file_format
    text_config = data_config.get("text") or {}
    categories = item_categories(item_text, text_config.get("category_fields", CATEGORY_FIELDS))
    dataset = Dataset(
        user_map,
        item_map,
        train,
        evaluation,
        item_text=item_text,
        name=str(name),
        social=social_links,
        item_categories=categories,
    )
    validate_dataset(dataset, split)
    return dataset


def _read_base(data_config, path: Path) -> tuple[RawData | None, list[str] | None]:
    """The interaction table of the format (None for LightGCN files) and, for the demo, cold item ids."""
    file_format = data_config.format
    if file_format in _TABLE_FORMATS:
        columns = {key: data_config[key] for key in ("user_column", "item_column", "rating_column", "timestamp_column")}
        return read_table(path, file_format=file_format, separator=data_config.separator, **columns), None
    if file_format == "movielens":
        return read_movielens(path), None
    if file_format == "amazon":
        return read_amazon(path, data_config.name), None
    if file_format == "synthetic":
        settings = data_config.synthetic
        table, item_text = synthetic.generate_catalogue(
            settings.num_users,
            settings.num_items,
            settings.num_topics,
            settings.interactions_per_user,
            cold_item_ratio=settings.cold_item_ratio,
            seed=settings.seed,
        )
        interactions = table.rename(columns={"user_id": "user", "item_id": "item"})
        texts = dict(zip(synthetic.item_ids(len(item_text)), item_text, strict=True))
        raw = RawData(interactions, "the synthetic catalogue", texts, "synthetic")
        cold = synthetic.cold_item_ids(settings.num_items, settings.cold_item_ratio) or None
        return raw, cold
    return None, None


def _read_sociallgn(path: Path, method: str, *, read_links: bool):
    """A SocialLGN folder as (base table of train and test, None, trust links, every item, split files or None).

    The base table defines the users and, with the artist text and the full index range, the
    items; "predefined" keeps the files' split, any other method re-splits their union.
    Without `read_links` (data.social.path replaces trust.txt) the links are None.
    """
    folder = read_sociallgn(path, read_links=read_links)
    files = SplitFiles(folder.train, {"test": folder.test})
    flat = _flatten(files)
    base = RawData(flat.interactions, folder.source, folder.item_text, folder.name)
    if method not in ("predefined", "cold_user"):
        warn(
            f"data.format='sociallgn' ships its own train/test split, but data.split.method={method!r} "
            "re-splits the union of its files; set data.split.method='predefined' to use the files' split"
        )
    extra_items = np.arange(folder.num_items, dtype=np.int64)
    return base, None, folder.links, extra_items, files if method == "predefined" else None


def _synthetic_links(base: RawData, settings) -> IdPairs:
    """The synthetic catalogue's friendships as a link table."""
    table = base.interactions
    friends = synthetic.generate_friendships(
        table["user"].to_numpy(), table["item"].to_numpy(), settings.friends_per_user, seed=settings.seed
    )
    return IdPairs(
        Path("the synthetic catalogue's friendships"),
        ("user_id", "friend_id"),
        friends["user_id"].to_numpy(dtype=object),
        friends["friend_id"].to_numpy(dtype=object),
        np.arange(1, len(friends) + 1, dtype=np.int64),
        row_word="row",
    )


def _flatten(files: SplitFiles) -> RawData:
    parts = [files.train, *files.evaluation.values()]
    table = pd.DataFrame(
        {
            "user": np.concatenate([part.users for part in parts]),
            "item": np.concatenate([part.items for part in parts]),
        }
    )
    return RawData(table, str(files.train.path.parent), name=files.train.path.parent.name)


def _apply_rating_threshold(base: RawData, threshold: float | None) -> RawData:
    if threshold is None:
        return base
    if "rating" not in base.interactions.columns:
        raise DataError(
            f"data.rating_threshold={threshold} needs ratings, but {base.source} has no rating column "
            "(set data.rating_column to the column holding them, or unset data.rating_threshold)"
        )
    kept = base.interactions[base.interactions["rating"] >= threshold].reset_index(drop=True)
    if kept.empty:
        raise DataError(f"data.rating_threshold={threshold} removes every interaction of {base.source}; lower it")
    return RawData(kept, base.source, base.item_text, base.name)


def _build_id_maps(
    base: RawData | None,
    files: SplitFiles | None,
    cold_raw: list | None,
    *,
    links: IdPairs | None = None,
    add_link_users: bool = False,
    extra_items: np.ndarray | None = None,
):
    """Unifies id types across every source and builds sorted id maps.

    With a base table, the maps hold its users and items (plus every item with text and
    `extra_items`); split files must then use those ids. LightGCN files define the ids
    themselves. Users only `links` name join the user map when `add_link_users`.
    """
    users, items = {}, {}
    if base is not None:
        users["base"] = base.interactions["user"].to_numpy()
        items["base"] = base.interactions["item"].to_numpy()
        if base.item_text:
            items["text"] = np.asarray(list(base.item_text), dtype=object)
    if cold_raw:
        items["cold"] = np.asarray(cold_raw, dtype=object)
    if files is not None:
        for name, part in [("train", files.train), *files.evaluation.items()]:
            users[f"{name}:pairs"], users[f"{name}:listed"] = part.users, part.listed_users
            items[f"{name}:pairs"] = part.items
        if files.cold_items is not None:
            items["cold"] = files.cold_items
    if links is not None:
        users["links:user"], users["links:friend"] = links.first, links.second
    if extra_items is not None:
        items["extra"] = extra_items
    users = dict(zip(users, unify_ids(list(users.values())), strict=True))
    items = dict(zip(items, unify_ids(list(items.values())), strict=True))

    def defines_users(key: str) -> bool:
        if key.startswith("links:"):
            return add_link_users
        return base is None or key == "base"

    defining = ("base", "text", "extra") if base is not None else tuple(items)
    user_map = IdMap("user", _sorted_unique([column for key, column in users.items() if defines_users(key)]))
    item_map = IdMap("item", _sorted_unique([column for key, column in items.items() if key in defining]))

    item_text = None
    if base is not None:
        if "text" in items:
            texts = dict(zip(items["text"].tolist(), base.item_text.values(), strict=True))
            item_text = _text_per_item(item_map, texts)
        base = RawData(base.interactions.assign(user=users["base"], item=items["base"]), base.source, None, base.name)
    if files is not None:
        files.train = dataclasses.replace(files.train, **_file_ids(users, items, "train"))
        files.evaluation = {
            name: dataclasses.replace(part, **_file_ids(users, items, name)) for name, part in files.evaluation.items()
        }
        if files.cold_items is not None:
            files.cold_items = items["cold"]
    if links is not None:
        links = dataclasses.replace(links, first=users["links:user"], second=users["links:friend"])
    cold = items["cold"] if cold_raw else None
    return user_map, item_map, base, files, cold, item_text, links


def _file_ids(users: dict, items: dict, name: str) -> dict:
    return {
        "users": users[f"{name}:pairs"],
        "listed_users": users[f"{name}:listed"],
        "items": items[f"{name}:pairs"],
    }


def _sorted_unique(columns: list[np.ndarray]) -> np.ndarray:
    return sorted_unique(np.concatenate(columns)) if columns else np.zeros(0, dtype=np.int64)


def _text_per_item(item_map: IdMap, texts: dict) -> list[dict[str, str]]:
    """One text dict per item index; items without text get the same fields, empty."""
    fields = list(dict.fromkeys(field for text in texts.values() for field in text))
    empty = dict.fromkeys(fields, "")
    return [dict(texts.get(raw, empty)) for raw in item_map.raw_ids.tolist()]


def item_categories(item_text: list[dict[str, str]] | None, category_fields: str) -> list[tuple[str, ...]] | None:
    """Per item, the comma-separated labels of its `category_fields` text fields, in order, each once.

    `category_fields` is a comma-separated list of field names ("categories,genres,tags");
    fields the text does not have are skipped. None when there is no item text or none of
    the fields occurs.
    """
    fields = [field.strip() for field in str(category_fields or "").split(",") if field.strip()]
    present = [field for field in fields if item_text and any(field in text for text in item_text)]
    if not present:
        return None
    categories = []
    for text in item_text:
        labels = (label.strip() for field in present for label in text.get(field, "").split(","))
        categories.append(tuple(dict.fromkeys(label for label in labels if label)))
    return categories


def _to_index_space(base: RawData, user_index: pd.Index, item_index: pd.Index) -> Interactions:
    table = base.interactions
    return Interactions(
        user_index.get_indexer(table["user"].to_numpy()),
        item_index.get_indexer(table["item"].to_numpy()),
        table["rating"].to_numpy() if "rating" in table.columns else None,
        table["timestamp"].to_numpy() if "timestamp" in table.columns else None,
    )


def _split(interactions: Interactions, split, num_items: int, cold_raw, item_index: pd.Index) -> Splits:
    if cold_raw is None:
        if split.method == "predefined":
            raise DataError(
                "data.split.method='predefined' needs split files, and the synthetic catalogue has none; "
                "choose 'ratio', 'leave_one_out', 'temporal', 'cold_item' or 'cold_user' (or set "
                "data.synthetic.cold_item_ratio > 0 for its built-in warm/cold split)"
            )
        return split_interactions(
            interactions,
            method=split.method,
            num_items=num_items,
            test_ratio=split.test_ratio,
            valid_ratio=split.valid_ratio,
            cold_item_ratio=split.cold_item_ratio,
            cold_user_ratio=split.get("cold_user_ratio", 0.1),
            seed=split.seed,
        )
    # The demo catalogue with cold items carries its own cold split: its newest items.
    if split.method not in ("cold_item", "predefined"):
        raise DataError(
            "data.synthetic.cold_item_ratio > 0 makes a warm/cold split of the catalogue's newest items; "
            f"set data.split.method='cold_item' (it is {split.method!r}) or data.synthetic.cold_item_ratio=0"
        )
    return cold_item_split(
        interactions,
        num_items=num_items,
        cold_items=item_index.get_indexer(cold_raw),
        test_ratio=split.test_ratio,
        valid_ratio=split.valid_ratio,
        seed=split.seed,
    )


def validate_dataset(dataset: Dataset, split=None) -> None:
    """Checks that training and every evaluation split are usable; raises `DataError` naming the fix."""
    if len(dataset.train) == 0:
        raise DataError(f"{dataset.name}: the training set is empty after splitting; check data.split.*")
    for array, size, kind in (
        (dataset.train.users, dataset.num_users, "user"),
        (dataset.train.items, dataset.num_items, "item"),
    ):
        if len(array) and not 0 <= int(array.min()) <= int(array.max()) < size:
            raise DataError(f"{dataset.name}: a training {kind} index is outside [0, {size})")
    ratios = "" if split is None else f" (data.split.method={split.method!r}, test_ratio={split.test_ratio})"
    for name, held_out in dataset.evaluation.items():
        if len(held_out.interactions) == 0:
            raise DataError(
                f"{dataset.name}: evaluation split {name!r} is empty{ratios}; users need more interactions, "
                "or raise data.split.test_ratio / data.split.valid_ratio"
            )
        if held_out.candidate_items is not None and len(held_out.candidate_items) == 0:
            raise DataError(f"{dataset.name}: evaluation split {name!r} has no candidate items")
    if dataset.item_text is not None and len(dataset.item_text) != dataset.num_items:
        raise DataError(f"{dataset.name}: item text covers {len(dataset.item_text)} of {dataset.num_items} items")
    if dataset.item_categories is not None and len(dataset.item_categories) != dataset.num_items:
        raise DataError(
            f"{dataset.name}: item categories cover {len(dataset.item_categories)} of {dataset.num_items} items"
        )
    social = dataset.social
    if social is not None and len(social):
        ends = (min(social.users.min(), social.friends.min()), max(social.users.max(), social.friends.max()))
        if not 0 <= int(ends[0]) <= int(ends[1]) < dataset.num_users:
            raise DataError(f"{dataset.name}: a social link names a user index outside [0, {dataset.num_users})")
