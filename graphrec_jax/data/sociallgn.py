"""The SocialLGN folder format: a predefined train/test split, friend links, and HetRec LastFM text.

`data.path` is the dataset root (holding `preprocessed/` and `raw/`) or the preprocessed
folder itself (its sibling `../raw` is then used when present). The preprocessed folder
holds `train_set.txt` and `test_set.txt` (CSV, header `user,item`) and `trust.txt` (CSV,
header `user,friend`), all with 0-based contiguous indices, which stay the raw ids (ints)
so that figures compare with SocialLGN's. Its `itemReindex.json` maps HetRec artist ids
to item indices (`{"artist id": index}`).

When `raw/` exists, item text comes from the HetRec files there: "title" is the artist
name (`artists.dat`, UTF-8) and "tags" the artist's ten most assigned tags
(`user_taggedartists.dat` assignments, names from `tags.dat`, which is latin-1),
comma-separated, most users first, ties by tag name. Host code, not jittable.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np
import pandas as pd

from graphrec_jax.data.amazon import load_json
from graphrec_jax.data.errors import DataError, warn
from graphrec_jax.data.readers import SplitFile, decode_text, require_file
from graphrec_jax.data.social import IdPairs, read_id_pairs

TRAIN_FILE, TEST_FILE, TRUST_FILE, ITEM_REINDEX_FILE = "train_set.txt", "test_set.txt", "trust.txt", "itemReindex.json"
NUM_TAGS = 10
_INDEX = r"0|[1-9][0-9]{0,17}"


@dataclasses.dataclass
class SocialLGNFolder:
    """A SocialLGN folder, read but not yet mapped to a `Dataset`.

    Attributes:
      train, test: the pair files as `SplitFile`s (int64 raw ids = the files' indices).
      links: the rows of trust.txt; `first` is the user, `second` the friend (int64); None
        when not read.
      num_items: items are the indices 0..num_items-1 (the largest seen, plus one).
      item_text: item index -> {"title", "tags"}, or None when there is no raw/ folder.
      source: the preprocessed folder, for messages.
      name: a short name for logs (the dataset root's folder name).
    """

    train: SplitFile
    test: SplitFile
    links: IdPairs | None
    num_items: int
    item_text: dict[int, dict[str, str]] | None
    source: str
    name: str


def locate_folders(path: Path) -> tuple[Path, Path]:
    """(preprocessed folder, raw folder) for a dataset root or a preprocessed folder; raw may not exist."""
    if (path / "preprocessed").is_dir():
        return path / "preprocessed", path / "raw"
    if (path / TRAIN_FILE).is_file():
        return path, path.parent / "raw"
    if not path.is_dir():
        raise DataError(f"SocialLGN folder {path} does not exist; set data.path to the folder holding preprocessed/")
    found = ", ".join(sorted(entry.name for entry in path.iterdir())) or "nothing"
    raise DataError(
        f"{path} is not a SocialLGN folder: expected preprocessed/ (with {TRAIN_FILE}, {TEST_FILE}, {TRUST_FILE}) "
        f"or those files themselves; found {found}"
    )


def read_sociallgn(path: Path, *, read_links: bool = True) -> SocialLGNFolder:
    """Reads the split files, trust.txt (with `read_links`) and, when raw/ exists, the artist text.

    Not jittable (host I/O).
    """
    preprocessed, raw = locate_folders(Path(path))
    fix = "data.path must be a SocialLGN folder"
    train = _pair_file(preprocessed / TRAIN_FILE, ("user", "item"), fix)
    test = _pair_file(preprocessed / TEST_FILE, ("user", "item"), fix)
    trust = None
    if read_links:
        trust = read_id_pairs(
            preprocessed / TRUST_FILE,
            columns=("user", "friend"),
            separator=",",
            what="SocialLGN link file",
            fix=f"{fix} holding {TRUST_FILE} (CSV, header user,friend)",
        )
        trust.first, trust.second = _indices(trust, 0), _indices(trust, 1)
    num_items = int(max(train.items.max(initial=-1), test.items.max(initial=-1))) + 1
    item_text = None
    if raw.is_dir():
        artists = _read_item_reindex(preprocessed / ITEM_REINDEX_FILE)
        num_items = max(num_items, int(artists.to_numpy().max(initial=-1)) + 1)
        item_text = _read_artist_text(raw, artists, num_items)
    name = preprocessed.parent.name if preprocessed.name == "preprocessed" else preprocessed.name
    return SocialLGNFolder(train, test, trust, num_items, item_text, str(preprocessed), name)


def _pair_file(path: Path, columns: tuple[str, str], fix: str) -> SplitFile:
    pairs = read_id_pairs(
        path,
        columns=columns,
        separator=",",
        what="SocialLGN split file",
        fix=f"{fix} holding {path.name} (CSV, header {','.join(columns)})",
    )
    users, items = _indices(pairs, 0), _indices(pairs, 1)
    return SplitFile(path, users, items, pairs.lines, users, pairs.lines)


def _indices(pairs: IdPairs, position: int) -> np.ndarray:
    """`[n]` int64 ids of one column; each must be a 0-based integer index."""
    raw = pairs.first if position == 0 else pairs.second
    text = pd.Series(raw, dtype=object).astype(str)
    bad = ~text.str.fullmatch(_INDEX).to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            f"{pairs.where(row, position)}: {raw[row]!r} is not a 0-based integer index; SocialLGN files hold "
            "non-negative integer ids"
        )
    return text.to_numpy().astype(np.int64)


def _read_item_reindex(path: Path) -> pd.Series:
    """HetRec artist id (int64 index of the series) -> item index (int64 values)."""
    require_file(path, "SocialLGN item id map", f"put {path.name} (artist id -> item index) beside {TRAIN_FILE}")
    payload = load_json(path)
    if not isinstance(payload, dict) or not payload:
        raise DataError(f'{path}: expected a non-empty JSON object {{"artist id": item index}}')
    keys = pd.Series(list(payload), dtype=object)
    bad_key = ~keys.str.fullmatch(_INDEX).to_numpy()
    values = list(payload.values())
    bad_value = np.array([isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values])
    if bad_key.any() or bad_value.any():
        row = int(np.argmax(bad_key | bad_value))
        raise DataError(
            f"{path}: entry {keys[row]!r}: {values[row]!r} must map an integer artist id to a 0-based item index"
        )
    indices = np.asarray(values, dtype=np.int64)
    if len(np.unique(indices)) != len(indices):
        raise DataError(f"{path}: two artist ids map to the same item index; each index must be used once")
    return pd.Series(indices, index=keys.to_numpy().astype(np.int64))


def _read_dat(path: Path, columns: tuple[str, ...], integer_columns: tuple[str, ...], encoding: str) -> pd.DataFrame:
    """The named columns of a tab-separated HetRec file; integer columns parsed, each error naming its line."""
    require_file(path, "HetRec file", "the raw/ folder beside preprocessed/ must hold the HetRec LastFM files")
    text = decode_text(path, encoding)
    try:  # quotes are literal in HetRec files ("Weird Al" Yankovic)
        table = pd.read_csv(
            io.StringIO(text),
            sep="\t",
            dtype=str,
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            skip_blank_lines=False,
        )
    except pd.errors.ParserError as error:
        raise DataError(f"{path} could not be parsed as tab-separated fields: {error}") from None
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path} is empty; expected a header line ({chr(9).join(columns)}), then one row each"
        ) from None
    missing = [column for column in columns if column not in table.columns]
    if missing:
        found = ", ".join(repr(str(column)) for column in table.columns)
        raise DataError(f"{path} has no column {', '.join(map(repr, missing))}; columns found: {found}")
    lines = np.arange(len(table), dtype=np.int64) + 2
    table = table.fillna("")
    blank = (table == "").all(axis=1).to_numpy()
    table, lines = table[~blank][list(columns)], lines[~blank]
    for column in integer_columns:
        values = table[column].str.strip()
        bad = ~values.str.fullmatch(_INDEX).to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"{path}, line {lines[row]}, column {column!r}: {values.iloc[row]!r} is not an integer id")
        table[column] = values.to_numpy().astype(np.int64)
    return table.assign(line=lines)


def _read_artist_text(raw: Path, artists: pd.Series, num_items: int) -> dict[int, dict[str, str]]:
    """item index -> {"title": artist name, "tags": top tags, comma-separated} for items 0..num_items-1."""
    names = _read_dat(raw / "artists.dat", ("id", "name"), ("id",), "utf-8")
    names = names.drop_duplicates("id", keep="last").set_index("id")["name"].str.strip()
    titles = names.reindex(artists.index)
    missing = int(titles.isna().sum()) + num_items - len(artists)
    if missing:
        warn(f"{missing} of {num_items} items have no row in {raw / 'artists.dat'}; they get an empty title")
    title_of = dict.fromkeys(range(num_items), "")
    title_of.update(zip(artists.tolist(), titles.fillna("").tolist(), strict=True))
    tags_of = _top_tags(raw, artists)
    return {item: {"title": title_of[item], "tags": ", ".join(tags_of.get(item, ()))} for item in range(num_items)}


def _top_tags(raw: Path, artists: pd.Series) -> dict[int, list[str]]:
    """item index -> its `NUM_TAGS` tags assigned by most users (ties by name); untagged items are absent."""
    tags = _read_dat(raw / "tags.dat", ("tagID", "tagValue"), ("tagID",), "latin-1")
    tag_names = tags.drop_duplicates("tagID", keep="last").set_index("tagID")["tagValue"].str.strip()
    assigned = _read_dat(
        raw / "user_taggedartists.dat", ("userID", "artistID", "tagID"), ("userID", "artistID", "tagID"), "utf-8"
    )
    names = tag_names.reindex(assigned["tagID"].to_numpy())
    unknown = names.isna().to_numpy()
    if unknown.any():
        row = int(np.argmax(unknown))
        raise DataError(
            f"{raw / 'user_taggedartists.dat'}, line {assigned['line'].iloc[row]}: tag id "
            f"{int(assigned['tagID'].iloc[row])} is not listed in {raw / 'tags.dat'}"
        )
    items = artists.reindex(assigned["artistID"].to_numpy())  # artists no user listened to are no items
    table = pd.DataFrame({"user": assigned["userID"].to_numpy(), "item": items.to_numpy(), "tag": names.to_numpy()})
    table = table[table["tag"] != ""].dropna(subset=["item"]).drop_duplicates()
    counts = table.groupby(["item", "tag"]).size().rename("users").reset_index()
    counts = counts.sort_values(["item", "users", "tag"], ascending=[True, False, True], kind="stable")
    top = counts.groupby("item").head(NUM_TAGS)
    return {int(item): group.tolist() for item, group in top.groupby("item", sort=False)["tag"]}
