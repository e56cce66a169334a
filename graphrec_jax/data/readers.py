"""File formats in, raw tables out: csv/tsv/parquet tables, MovieLens folders, LightGCN-format files.

Readers return ids as they are written in the file (strings, or int64 where the format
defines integer ids) and leave id maps, filtering and splits to `prepare.py`. Every
problem is a `DataError` naming the file, the line (1-based, header included) or
column, what was expected and how to fix it. Amazon JSON folders live in `amazon.py`.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pandas as pd

from graphrec_jax.data.errors import DataError

# An id is read as an integer only when it is written the way Python prints that integer,
# so "007", "7.0" and "+7" stay strings and round-trip to the exact text of the file.
_CANONICAL_INTEGER = r"-?(?:0|[1-9][0-9]{0,17})"
_COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".zst")
MOVIELENS_GENRES = (
    "unknown, Action, Adventure, Animation, Children's, Comedy, Crime, Documentary, Drama, Fantasy, "
    "Film-Noir, Horror, Musical, Mystery, Romance, Sci-Fi, Thriller, War, Western"
).split(", ")


@dataclasses.dataclass
class RawData:
    """Interactions with raw ids, in file order, and optional item text.

    Attributes:
      interactions: columns "user" and "item" (int64 or str ids), optional "rating" (float64)
        and "timestamp" (int64 seconds); one row per interaction, in file order.
      source: the file or folder read, for messages.
      item_text: raw item id -> {field: text}, or None when the format has no text.
      name: a short name for logs.
    """

    interactions: pd.DataFrame
    source: str
    item_text: dict | None = None
    name: str = ""


@dataclasses.dataclass
class SplitFile:
    """One file in LightGCN line format (`user item item ...`), flattened to pairs.

    Attributes:
      path: the file read.
      users, items: `[n]` raw ids of each pair (int64, or str when read with `integer_ids=False`).
      lines: `[n]` int64 1-based line number of each pair.
      listed_users: `[num_lines]` the user heading each non-blank line, users with no items included.
      listed_lines: `[num_lines]` int64 line number of each listed user.
    """

    path: Path
    users: np.ndarray
    items: np.ndarray
    lines: np.ndarray
    listed_users: np.ndarray
    listed_lines: np.ndarray


def require_file(path: Path, what: str, fix: str) -> Path:
    """Returns `path` if it is a file, else raises a `DataError` saying what was expected there."""
    if not path.is_file():
        where = "is a folder" if path.is_dir() else "does not exist"
        raise DataError(f"{what} {path} {where}; {fix}")
    return path


def decode_text(path: Path, encoding: str = "utf-8") -> str:
    """Reads `path` as `encoding`; a decoding failure names the line and byte and the encoding tried."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"{path}, line {line}: byte 0x{data[error.start]:02x} at offset {error.start} is not valid "
            f"{encoding} (tried {encoding}: {error.reason}); re-save the file as {encoding}"
        ) from None


def infer_separator(path: Path, file_format: str, separator: str) -> str:
    """`separator` if set, else from the extension (.csv ",", .tsv/.txt tab), else from the format."""
    if separator:
        return "\t" if separator in ("\\t", "tab") else separator
    suffixes = [suffix.lower() for suffix in path.suffixes]
    extension = suffixes[-2] if len(suffixes) > 1 and suffixes[-1] in _COMPRESSED else (suffixes or [""])[-1]
    if extension == ".csv":
        return ","
    if extension in (".tsv", ".txt"):
        return "\t"
    return "\t" if file_format == "tsv" else ","


def read_table(
    path: Path,
    *,
    file_format: str,
    user_column: str,
    item_column: str,
    rating_column: str = "",
    timestamp_column: str = "",
    separator: str = "",
) -> RawData:
    """Reads a csv/tsv/parquet table of interactions. Not jittable (host I/O).

    Ids are kept as written (strings; parquet integer columns stay integers). The rating and
    timestamp columns are optional: a missing one is simply absent from the result.
    """
    require_file(path, "data file", f"set data.path to a {file_format} file")
    if file_format == "parquet":
        try:
            table = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises several unrelated types for bad files
            raise DataError(f"{path} is not a readable parquet file ({error}); check data.format") from None
        first_line, row_word = 1, "row"
    else:
        if path.suffix.lower() in _COMPRESSED:
            source = path  # pandas decompresses; decoding errors then carry no line number
        else:
            source = io.StringIO(decode_text(path))
        if path.stat().st_size == 0 or (isinstance(source, io.StringIO) and not source.getvalue().strip()):
            raise DataError(f"{path} is empty; expected a header line naming the columns, then one row each")
        try:
            table = pd.read_csv(
                source,
                sep=infer_separator(path, file_format, separator),
                dtype={user_column: str, item_column: str},  # ids stay text as written
                keep_default_na=False,
                na_values=[""],
                skip_blank_lines=False,
                skipinitialspace=True,
            )
        except pd.errors.ParserError as error:
            raise DataError(f"{path} could not be parsed as {file_format}: {error}; check data.separator") from None
        except UnicodeDecodeError as error:
            raise DataError(f"{path} is not valid utf-8 once decompressed ({error.reason}); re-save as utf-8") from None
        first_line, row_word = 2, "line"  # line 1 is the header
    if table.empty:
        raise DataError(f"{path} has a header but no rows; expected one interaction per row")
    wanted = {"data.user_column": user_column, "data.item_column": item_column}
    missing = [f"{name!r} (set {key})" for key, name in wanted.items() if name not in table.columns]
    if missing:
        found = ", ".join(repr(str(column)) for column in table.columns)
        raise DataError(
            f"{path} has no column {' and no column '.join(missing)}; columns found: {found}. "
            "The file needs a header line; set the data.*_column keys to its column names"
        )
    lines = np.arange(len(table), dtype=np.int64) + first_line
    if file_format != "parquet":
        blank = table.isna().all(axis=1).to_numpy()
        table, lines = table[~blank], lines[~blank]

    def where(row: int, column: str) -> str:
        return f"{path}, {row_word} {lines[row]}, column {column!r}"

    out = {
        "user": _id_column(table[user_column], where, user_column),
        "item": _id_column(table[item_column], where, item_column),
    }
    if rating_column and rating_column in table.columns:
        out["rating"] = _number_column(table[rating_column], where, rating_column, "a number (the rating)")
    if timestamp_column and timestamp_column in table.columns:
        out["timestamp"] = _timestamp_column(table[timestamp_column], where, timestamp_column)
    return RawData(pd.DataFrame(out), str(path), name=path.name.split(".")[0])


def _id_column(column: pd.Series, where, name: str) -> np.ndarray:
    """Ids as `[n]` int64 (integer or integral float columns) or str objects, stripped of spaces."""
    missing = column.isna().to_numpy()
    if missing.any():
        row = int(np.argmax(missing))
        raise DataError(f"{where(row, name)}: the id is empty; every row needs a user and an item id")
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64)
        fractional = values != np.round(values)
        if fractional.any():
            row = int(np.argmax(fractional))
            raise DataError(
                f"{where(row, name)}: id {float(values[row])!r} is not an integer; ids must be integers or text"
            )
        return values.astype(np.int64)
    text = column.astype(str).str.strip()
    empty = (text == "").to_numpy()
    if empty.any():
        row = int(np.argmax(empty))
        raise DataError(f"{where(row, name)}: the id is blank; every row needs a user and an item id")
    return text.to_numpy(dtype=object)


def _shown(value) -> str:
    return "an empty value" if pd.isna(value) else repr(value)


def _number_column(column: pd.Series, where, name: str, expected: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:  # the parser met text somewhere in the column; find it
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            f"{where(row, name)}: {_shown(column.iloc[row])} is not {expected}; fix or delete that row, "
            "or point the data.*_column key at another column"
        )
    return values


def _timestamp_column(column: pd.Series, where, name: str) -> np.ndarray:
    """`[n]` int64 seconds from integer/float seconds, datetime columns or parseable date strings."""
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=np.int64)
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        dates = column
    else:
        numbers = pd.to_numeric(column, errors="coerce")
        values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isfinite(values).all():
            return np.floor(values).astype(np.int64)
        dates = None
        if numbers.isna().all() and column.notna().all():  # date strings rather than numbers
            dates = pd.to_datetime(column, errors="coerce", utc=True, format="mixed")
    bad = dates.isna().to_numpy() if dates is not None else ~np.isfinite(values)
    if not bad.any():
        return _seconds(dates)
    row = int(np.argmax(bad))
    raise DataError(
        f"{where(row, name)}: {_shown(column.iloc[row])} is not a timestamp; expected integer seconds or a "
        "date such as 2021-03-04 12:00:00 in every row of the column"
    )


def _seconds(dates: pd.Series) -> np.ndarray:
    if dates.dt.tz is None:
        dates = dates.dt.tz_localize("UTC")
    epoch = pd.Timestamp(0, tz="UTC")
    return ((dates - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def read_movielens(folder: Path) -> RawData:
    """Reads a MovieLens-100K-style folder: `u.data` and, when present, `u.item` (+ `u.genre`).

    Item text has the fields "title" and "genres" (comma-separated genre names).
    """
    if not folder.is_dir():
        raise DataError(f"MovieLens folder {folder} does not exist; set data.path to the folder holding u.data")
    path = require_file(folder / "u.data", "MovieLens ratings file", "data.path must hold u.data")
    text = decode_text(path)
    if not text.strip():
        raise DataError(f"{path} is empty; expected tab-separated lines: user, item, rating, timestamp")
    names = ["user", "item", "rating", "timestamp"]
    try:
        table = pd.read_csv(io.StringIO(text), sep="\t", header=None, dtype={0: str, 1: str}, skip_blank_lines=False)
    except pd.errors.ParserError as error:
        raise DataError(f"{path}: {error}; expected 4 tab-separated fields per line") from None
    if table.shape[1] != 4:
        raise DataError(
            f"{path}, line 1: expected 4 tab-separated fields (user, item, rating, timestamp), "
            f"found {table.shape[1]}; u.data is tab-separated"
        )
    table.columns = names
    blank = table.isna().all(axis=1).to_numpy()
    lines = np.arange(1, len(table) + 1)[~blank]
    table = table[~blank]

    def where(row: int, name: str) -> str:
        return f"{path}, line {lines[row]}, field {name!r}"

    interactions = pd.DataFrame(
        {
            "user": _id_column(table["user"], where, "user"),
            "item": _id_column(table["item"], where, "item"),
            "rating": _number_column(table["rating"], where, "rating", "a number (the rating)"),
            "timestamp": _timestamp_column(table["timestamp"], where, "timestamp"),
        }
    )
    item_text = _read_movielens_items(folder) if (folder / "u.item").is_file() else None
    return RawData(interactions, str(folder), item_text=item_text, name=folder.name)


def _read_movielens_items(folder: Path) -> dict:
    genres = list(MOVIELENS_GENRES)
    if (folder / "u.genre").is_file():
        genre_lines = [line for line in decode_text(folder / "u.genre").splitlines() if line.strip()]
        genres = [line.split("|")[0] for line in genre_lines]
    path = folder / "u.item"
    data = path.read_bytes()
    # The format defines latin-1; a copy someone re-saved as UTF-8 decodes cleanly as UTF-8,
    # which a genuine latin-1 file with accented titles (bytes >= 0x80 alone) never does.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    expected = 5 + len(genres)
    item_text = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != expected:
            raise DataError(
                f"{path}, line {number}: expected {expected} '|'-separated fields (id|title|release date|"
                f"video release|url|{len(genres)} genre flags), found {len(fields)}"
            )
        flags = fields[5:]
        if any(flag not in ("0", "1") for flag in flags):
            raise DataError(f"{path}, line {number}: genre flags must be 0 or 1, found {'|'.join(flags)!r}")
        item_id = fields[0].strip()
        if not item_id:
            raise DataError(f"{path}, line {number}: the item id (first field) is empty")
        chosen = [genre for genre, flag in zip(genres, flags, strict=True) if flag == "1"]
        item_text[item_id] = {"title": fields[1].strip(), "genres": ", ".join(chosen)}
    return item_text


def read_split_file(path: Path, *, integer_ids: bool = True) -> SplitFile:
    """Reads LightGCN line format: each line `user item item ...`, whitespace-separated.

    With `integer_ids` (the LightGCN format) every token must be a non-negative integer; the
    parse is vectorised over the whole file. Without it, tokens are kept as strings.
    A line holding only a user is allowed (a user with no items in this file).
    """
    require_file(path, "split file", "check data.path and the data.split.* file keys")
    data = path.read_bytes()
    if not data.strip():
        return SplitFile(path, *(np.zeros(0, dtype=np.int64) for _ in range(5)))
    if integer_ids:
        tokens, token_lines = _integer_tokens(path, data)
    else:
        tokens, token_lines = _text_tokens(path, data)
    first = np.ones(len(tokens), dtype=bool)
    first[1:] = token_lines[1:] != token_lines[:-1]
    line_of_pair = np.cumsum(first) - 1
    listed_users = tokens[first]
    return SplitFile(
        path,
        users=listed_users[line_of_pair[~first]],
        items=tokens[~first],
        lines=token_lines[~first],
        listed_users=listed_users,
        listed_lines=token_lines[first],
    )


def _integer_tokens(path: Path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """`[t]` int64 token values and `[t]` 1-based line numbers, parsed digit-wise in numpy."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    is_digit = (buffer >= ord("0")) & (buffer <= ord("9"))
    is_space = (buffer == ord(" ")) | (buffer == ord("\t")) | (buffer == ord("\n")) | (buffer == ord("\r"))
    newlines = np.flatnonzero(buffer == ord("\n"))
    bad = ~(is_digit | is_space)
    if bad.any():
        position = int(np.argmax(bad))
        line = int(np.searchsorted(newlines, position)) + 1
        line_start = newlines[line - 2] + 1 if line > 1 else 0
        line_end = newlines[line - 1] if line <= len(newlines) else len(data)
        text = data[line_start:line_end].decode("utf-8", "replace")
        token = next((part for part in text.split() if not part.isdigit()), text)
        raise DataError(
            f"{path}, line {line}: token {token!r} is not a non-negative integer id; each line must read "
            f"`user item item ...` with integer ids separated by spaces (line: {text[:80]!r})"
        )
    previous = np.concatenate([[False], is_digit[:-1]])
    following = np.concatenate([is_digit[1:], [False]])
    starts = np.flatnonzero(is_digit & ~previous)
    ends = np.flatnonzero(is_digit & ~following)
    lengths = ends - starts + 1
    if lengths.max() > 18:
        token = int(np.argmax(lengths))
        line = int(np.searchsorted(newlines, starts[token])) + 1
        raise DataError(f"{path}, line {line}: an id with {lengths[token]} digits is too long for an integer id")
    digit_positions = np.flatnonzero(is_digit)
    token_of_digit = np.repeat(np.arange(len(starts)), lengths)
    powers = np.power(np.int64(10), (ends[token_of_digit] - digit_positions).astype(np.int64))
    digits = (buffer[digit_positions] - ord("0")).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    values = np.add.reduceat(digits * powers, offsets)
    token_lines = np.searchsorted(newlines, starts).astype(np.int64) + 1
    return values, token_lines


def _text_tokens(path: Path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    del data  # decoded again so that a bad byte is reported with its line
    text = decode_text(path)
    tokens, token_lines = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        parts = line.split()
        tokens.extend(parts)
        token_lines.extend([number] * len(parts))
    return np.asarray(tokens, dtype=object), np.asarray(token_lines, dtype=np.int64)


def read_id_list(path: Path, *, integer_ids: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Reads ids listed one per line (or whitespace-separated): `([n] ids, [n] 1-based line numbers)`."""
    require_file(path, "id list", "check data.split.cold_items_file")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path} is empty; expected one id per line")
    return _integer_tokens(path, data) if integer_ids else _text_tokens(path, data)


def unify_ids(columns: list[np.ndarray]) -> list[np.ndarray]:
    """Gives ids of one kind (user or item), gathered from several sources, one type.

    All become int64 when every id is an integer or is written as a canonical decimal integer
    ("42", not "042" or "42.0"); otherwise all become strings exactly as written. So "007"
    stays "007", and a MovieLens item 5 read from u.data matches "5" read from u.item.
    """
    columns = [np.asarray(column) for column in columns]
    textual = [column for column in columns if column.dtype.kind not in "iu"]
    all_integers = all(
        pd.Series(column, dtype=object).astype(str).str.fullmatch(_CANONICAL_INTEGER).all() for column in textual
    )
    if all_integers:
        return [column.astype(np.int64) for column in columns]
    return [column.astype(str).astype(object) for column in columns]
