"""User-user links in: a csv/tsv/parquet table of (user, friend) rows, checked and mapped to `SocialLinks`.

`read_id_pairs` reads any two-column table of ids with the line of every row (the link
file of `data.social.path`, and the pair files of the SocialLGN folder format);
`links_to_index` maps a link table through the user map and normalises it: self-links
dropped, duplicates merged (both with a counted `DataWarning`), both directions added
for undirected data, sorted by (user, friend). Every problem is a `DataError` naming the
file, the line (1-based, header included; parquet: the 1-based row) and the column.
Host code, not jittable.
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from graphrec_jax.data.errors import DataError, warn
from graphrec_jax.data.readers import decode_text, id_column, infer_separator, require_file
from graphrec_jax.data.types import SocialLinks

UNKNOWN_USER_POLICIES = ("error", "add")
_PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclasses.dataclass
class IdPairs:
    """Rows of a two-column id table, in file order, blank lines skipped. Arrays have shape `[n]`.

    Attributes:
      path: the file read.
      columns: the two column names, for messages.
      first, second: raw ids of each row's two columns (str as written and stripped, or
        int64 where a parquet column holds integers).
      lines: int64 1-based line of each row, header included (parquet: 1-based row number).
      row_word: "line" or "row", how `lines` is named in messages.
    """

    path: Path
    columns: tuple[str, str]
    first: np.ndarray
    second: np.ndarray
    lines: np.ndarray
    row_word: str = "line"

    def __len__(self) -> int:
        return len(self.lines)

    def where(self, row: int, column: int) -> str:
        """ "FILE, line N, column 'NAME'" for row `row` (0-based position) and column 0 or 1."""
        return f"{self.path}, {self.row_word} {self.lines[row]}, column {self.columns[column]!r}"


def read_id_pairs(
    path: Path,
    *,
    columns: tuple[str, str],
    keys: tuple[str, str] | None = None,
    separator: str = "",
    what: str = "social link file",
    fix: str = "set data.social.path to a csv, tsv or parquet file with a header line",
) -> IdPairs:
    """Reads the two id columns `columns` of a csv/tsv/parquet table. Not jittable (host I/O).

    The format follows the extension (.parquet/.pq; .csv comma; .tsv/.txt tab) unless
    `separator` is set. `keys` are the config keys naming the columns, quoted in errors;
    `what` and `fix` say what the file is and how to point at the right one.
    """
    path = require_file(Path(path), what, fix)
    if keys and columns[0] == columns[1]:
        raise DataError(f"{keys[0]} and {keys[1]} both name column {columns[0]!r}; they must name two columns")
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        try:
            table = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises several unrelated types for bad files
            raise DataError(f"{path} is not a readable parquet file ({error}); {fix}") from None
        first_line, row_word = 1, "row"
    else:
        text = decode_text(path).removeprefix("\ufeff")  # a byte-order mark is no part of the header
        if not text.strip():
            raise DataError(f"{path} is empty; expected a header line naming the columns, then one row each")
        try:
            table = pd.read_csv(
                io.StringIO(text),
                sep=infer_separator(path, "csv", separator),
                dtype=str,  # ids stay text as written
                keep_default_na=False,
                na_values=[""],
                skip_blank_lines=False,
                skipinitialspace=True,
            )
        except pd.errors.ParserError as error:
            found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
            if found:
                expected, line, seen = found.groups()
                raise DataError(
                    f"{path}, line {line}: expected {expected} fields, as many as the header names, found {seen}; "
                    "check the separator"
                ) from None
            raise DataError(f"{path} could not be parsed as a table: {error}; check the separator") from None
        first_line, row_word = 2, "line"  # line 1 is the header
    named = zip(columns, keys or ("", ""), strict=True)
    missing = [f"{name!r} (set {key})" if key else repr(name) for name, key in named if name not in table.columns]
    if missing:
        found = ", ".join(repr(str(column)) for column in table.columns)
        raise DataError(
            f"{path} has no column {' and no column '.join(missing)}; columns found: {found}. "
            f"The file needs a header line naming its columns; {fix}"
        )
    lines = np.arange(len(table), dtype=np.int64) + first_line
    if row_word == "line":
        blank = table.isna().all(axis=1).to_numpy()
        table, lines = table[~blank], lines[~blank]
    if table.empty:
        raise DataError(f"{path} has a header but no rows; expected one pair of ids per row")
    pairs = IdPairs(path, columns, np.zeros(0), np.zeros(0), lines, row_word)

    def where(position: int):
        return lambda row, _column: pairs.where(row, position)

    pairs.first = id_column(table[columns[0]], where(0), columns[0], needs="two ids")
    pairs.second = id_column(table[columns[1]], where(1), columns[1], needs="two ids")
    return pairs


def check_unknown_user_policy(policy: str) -> str:
    """`policy` if it is one of `UNKNOWN_USER_POLICIES`, else a `DataError` naming the key."""
    if policy not in UNKNOWN_USER_POLICIES:
        raise DataError(
            f"data.social.unknown_users={policy!r} is not one of {', '.join(map(repr, UNKNOWN_USER_POLICIES))}: "
            "'error' rejects a link naming a user without interactions, 'add' makes them users"
        )
    return policy


def links_to_index(links: IdPairs, user_index: pd.Index, *, directed: bool) -> SocialLinks:
    """Maps raw link ids (already unified with the interaction ids) to a normalised `SocialLinks`.

    Args:
      links: the link table; `first` follows (aggregates from) `second`.
      user_index: raw user id -> index (position), covering every user of the dataset.
      directed: keep each link as given; otherwise a link makes both users friends of each other.

    Raises:
      DataError: naming the line, column and id of the first link whose user is not in
        `user_index`, or when only self-links remain.
    """
    codes = []
    for position, raw in enumerate((links.first, links.second)):
        found = user_index.get_indexer(raw)
        if (found < 0).any():
            row = int(np.argmax(found < 0))
            value = raw[row].item() if isinstance(raw[row], np.generic) else raw[row]
            raise DataError(
                f"{links.where(row, position)}: user id {value!r} has no interaction in the data; remove the "
                "link, or set data.social.unknown_users='add' to add such users as users without interactions"
            )
        codes.append(found.astype(np.int64))
    users, friends = codes
    self_link = users == friends
    if self_link.any():
        warn(f"dropped {int(self_link.sum())} self-links (a user linked to themself) in {links.path}")
        users, friends = users[~self_link], friends[~self_link]
    if len(users) == 0:
        raise DataError(f"{links.path}: every link joins a user to themself; no social links remain")
    size = len(user_index)
    keys, counts = np.unique(users * size + friends, return_counts=True)
    if (counts > 1).any():
        warn(
            f"merged {int((counts - 1).sum())} duplicate rows in {links.path}: {int((counts > 1).sum())} "
            f"({links.columns[0]}, {links.columns[1]}) links occurred more than once; each is kept once"
        )
    if not directed:  # a friendship listed in both directions is not a duplicate
        keys = np.union1d(keys, (keys % size) * size + keys // size)
    return SocialLinks(keys // size, keys % size)
